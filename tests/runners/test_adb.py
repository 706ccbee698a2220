"""The adb runner end to end against a stand-in adb server (tests/adb_standin.py) that speaks the
real host protocol to adbutils and plays a phone with real `sh` in a sandbox: battery files driven
by a known power profile, fake dumpsys/taskset/getprop, and a fake benchmark_model that prints the
real output formats. Plus the pure parts: unit and sign detection, integration, PowerStats."""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from edgecompress.errors import DeviceError, InputError
from edgecompress.inventory import Device
from edgecompress.runners import RUNNERS
from edgecompress.runners import android_power as power

pytest.importorskip("adbutils", reason="the adb runner needs adbutils: pip install 'edgecompress[android]'")

from adb_standin import AdbStandIn, Phone, PowerProfile, write_fake_benchmark_model  # noqa: E402
from edgecompress.runners import adb  # noqa: E402
from edgecompress.runners.adb import check_adb, run_adb  # noqa: E402

SERIAL = "EC-PIXEL-1"
LAT_US = 20000.0
RAILS = {"S4M_VDD_CPUCL2": ("CPU(BIG)", 150.0, 1650.0), "VSYS_PWR_DISPLAY": ("Display", 350.0, 350.0)}


def job(**changes) -> dict:
    base = {"protocol_version": 1, "runtime": "litert", "runtime_options": {"threads": 4},
            "warmup": {"runs": 1, "seconds": 0.1}, "runs": {"count": 10, "seconds": 1.2},
            "energy": "battery", "idle_seconds": 0.4}
    base.update(changes)
    return base


class Lab:
    """One stand-in server with one phone, a model and the user's benchmark_model on the host."""

    def __init__(self, tmp: Path, monkeypatch, profile: PowerProfile, version: int = 41, **phone_kw):
        self.phone = Phone(tmp / "phone", SERIAL, profile, **phone_kw)
        self.server = AdbStandIn({SERIAL: self.phone}, version=version).__enter__()
        monkeypatch.delenv("ADB_SERVER_SOCKET", raising=False)
        monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(self.server.port))
        self.model = tmp / "net int8.tflite"
        self.model.write_bytes(b"TFL3" + bytes(2000))
        self.device = Device(name="pixel", target="android-arm64", transport="adb", serial=SERIAL,
                             benchmark_model=str(write_fake_benchmark_model(tmp / "benchmark_model")))

    def base(self) -> Path:
        return self.phone.root / "data/local/tmp/edgecompress"

    def assert_clean(self) -> None:
        """Charging restored after it was suspended, no job folder, no lock, no benchmark running."""
        batteries = self.phone.calls("dumpsys battery")
        assert batteries[-1] == "dumpsys battery reset" and batteries.count("dumpsys battery unplug") == 1
        assert self.phone.job_folders() == [] and not (self.base() / "lock").exists()
        assert not self.phone.busy


@pytest.fixture
def make_lab(tmp_path, monkeypatch):
    labs = []

    def make(profile: PowerProfile | None = None, **kw) -> Lab:
        labs.append(Lab(tmp_path / str(len(labs)), monkeypatch, profile or PowerProfile(), **kw))
        return labs[-1]

    yield make
    for lab in labs:
        lab.server.__exit__(None, None, None)


def test_registered():
    from edgecompress.runners.adb import AdbRunner

    assert RUNNERS.get("adb") is AdbRunner and AdbRunner.stoppable


def test_end_to_end_battery_energy_matches_the_profile(make_lab):
    """Also: a stale lock and a job folder left by a dead job are cleaned up first, charging reset."""
    lab = make_lab(PowerProfile(idle_mw=1000, run_mw=3000))
    (lab.base() / "job-dead01").mkdir(parents=True)
    (lab.base() / "lock").mkdir()
    (lab.base() / "lock" / "owner").write_text('999999999 {"host": "gone", "hold_s": 10}\n')  # after a reboot
    seen = []
    result = run_adb(job(), lab.model, device=lab.device, on_progress=seen.append)

    lat = result["latency_ms"]
    assert lat["n"] == 60 and lat["mean"] == pytest.approx(20.0) and lat["p50"] == pytest.approx(19.98)
    assert lat["p90"] is None and lat["method"] == "benchmark_model (us)" and lat["p95"] == pytest.approx(20.6)
    assert result["first_run_ms"] == pytest.approx(50.0) and result["load_ms"] == pytest.approx(30.5)
    assert result["peak_rss_mb"] == pytest.approx(93.2383)
    energy = result["energy"]
    assert energy["source"] == "battery" and result["energy_reason"] is None
    # 5%: the stand-in's own thread switches the battery between idle and run power, and on a
    # loaded 2-core machine it does so late enough to move the average by 3% (seen once in a CI run beside other work)
    assert energy["avg_power_mw"] == pytest.approx(3000, rel=0.05)
    assert energy["idle_power_mw"] == pytest.approx(1000, rel=0.05)
    assert energy["mj_per_inference_total"] == pytest.approx(3000 * LAT_US / 1e6, rel=0.05)
    assert energy["mj_per_inference_net"] == pytest.approx(2000 * LAT_US / 1e6, rel=0.08)
    assert energy["samples"] >= 8 and energy["window_s"] == pytest.approx(1.2)
    assert energy["units"]["current"] == "uA" and energy["units"]["voltage"] == "uV"
    assert energy["units"]["sign"].startswith("contract")
    dev = result["device"]
    assert (dev["model"], dev["arch"], dev["android_version"]) == ("Stand-in Pixel", "arm64-v8a", "14")
    assert dev["clocks_mhz_before"]["cpu4"] == 2850.0 and dev["temperatures_c_after"]["cpu_big"] == 41.25
    assert dev["thermal_status_after"] == "none" and dev["throttled"] is False
    assert result["runner"] == "adb" and result["device_name"] == "pixel" and result["warnings"] == []

    taskset = lab.phone.calls("taskset")
    assert len(taskset) == 1 and taskset[0].startswith("taskset f0 /data/local/tmp/edgecompress/job-")
    argv = json.loads(lab.phone.benchmark_log()[0][len("argv "):])
    assert argv[0].startswith("--graph=/data/local/tmp/edgecompress/job-") and argv[0].endswith("/model.tflite")
    assert {"--num_threads=4", "--warmup_runs=1", "--warmup_min_secs=0.1", "--num_runs=10", "--min_secs=1.2",
            "--use_xnnpack=true", "--report_peak_memory_footprint=true"} <= set(argv)
    # the stale lock's job may have left charging suspended: reset before this job suspends it
    assert lab.phone.calls("dumpsys battery") == ["dumpsys battery reset", "dumpsys battery unplug",
                                                  "dumpsys battery reset"]
    assert any("running benchmark_model" in s for s in seen)
    lab.assert_clean()


def test_powerstats_rails_preferred_with_the_battery_as_cross_check(make_lab):
    lab = make_lab(PowerProfile(idle_mw=1000, run_mw=3000, rails=RAILS))
    result = run_adb(job(energy="auto", energy_interval_ms=50), lab.model, device=lab.device)
    energy = result["energy"]
    assert energy["source"] == "powerstats" and energy["rails"] == sorted(RAILS)
    # The PowerStats delta spans the whole benchmark_model process, whose start (here a Python
    # interpreter) is not busy: a little low, by design.
    assert energy["avg_power_mw"] == pytest.approx(2000, rel=0.05)
    assert energy["idle_power_mw"] == pytest.approx(500, rel=0.03)
    assert energy["rail_avg_power_mw"]["VSYS_PWR_DISPLAY"] == pytest.approx(350, rel=0.03)
    assert energy["mj_per_inference_total"] == pytest.approx(2000 * LAT_US / 1e6, rel=0.05)
    assert energy["cross_check"]["battery"]["avg_power_mw"] == pytest.approx(3000, rel=0.03)
    lab.assert_clean()


@pytest.mark.parametrize("unit, flipped", [("mA", False), ("uA", True)], ids=["mA", "flipped-sign"])
def test_vendor_units_and_sign_are_detected(make_lab, unit, flipped):
    lab = make_lab(PowerProfile(idle_mw=800, run_mw=2400, current_unit=unit, flipped=flipped))
    result = run_adb(job(energy_interval_ms=50), lab.model, device=lab.device)
    energy = result["energy"]
    assert energy["units"]["current"] == unit
    assert energy["units"]["sign"].startswith("flipped" if flipped else "contract")
    assert energy["avg_power_mw"] == pytest.approx(2400, rel=0.03)
    assert energy["mj_per_inference_total"] == pytest.approx(2400 * LAT_US / 1e6, rel=0.03)
    assert result["device"]["battery"]["units_detected"]["current"] == unit


def test_benchmark_failure_still_restores_charging_and_removes_the_folder(make_lab):
    lab = make_lab(benchmark={"mode": "fail"})
    with pytest.raises(DeviceError, match=r"(?s)benchmark_model failed on net int8.tflite \(exit code 1\).*CONV_2D"):
        run_adb(job(), lab.model, device=lab.device)
    lab.assert_clean()


def _interrupt_when_busy(phone: Phone) -> threading.Thread:
    """Ctrl-C (a real SIGINT to this process) once the fake benchmark_model runs, never otherwise."""
    def fire():
        deadline = time.monotonic() + 20
        while not phone.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        if phone.busy:
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler, also when pytest runs as a shell's background job (SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_mid_run_restores_charging_and_kills_the_benchmark(make_lab, ctrl_c_raises):
    lab = make_lab(benchmark={"mode": "hang"})
    thread = _interrupt_when_busy(lab.phone)
    with pytest.raises(KeyboardInterrupt):
        run_adb(job(), lab.model, device=lab.device, timeout_s=30)
    thread.join()
    assert "killed" in lab.phone.benchmark_log()
    lab.assert_clean()


def test_timeout_kills_the_benchmark_and_cleans_up(make_lab):
    lab = make_lab(benchmark={"mode": "hang"})
    with pytest.raises(DeviceError, match="did not finish within the job timeout"):
        run_adb(job(), lab.model, device=lab.device, timeout_s=2.5)
    assert "killed" in lab.phone.benchmark_log()
    lab.assert_clean()


def test_charging_phone_gives_no_battery_energy_and_says_why(make_lab):
    lab = make_lab(PowerProfile(status="Charging"), benchmark={"format": "plain"})
    result = run_adb(job(runs={"count": 10, "seconds": 0.6}), lab.model, device=lab.device)
    assert result["energy"] is None and "'Charging'" in result["energy_reason"]
    assert "adb over Wi-Fi" in result["energy_reason"]
    assert any("p50 is the mean" in w for w in result["warnings"])  # the plain format has no median
    assert any("timed window 0.60 s is short" in w for w in result["warnings"])
    lab.assert_clean()


def test_energy_none_leaves_charging_alone(make_lab):
    lab = make_lab(benchmark={"format": "all_same"}, thermal_status=2)
    result = run_adb(job(energy="none", runtime_options={"delegate": "gpu", "cpu_mask": "c0"}, idle_seconds=0,
                         runs={"count": 5, "seconds": 0.3}), lab.model, device=lab.device)
    assert result["energy"] is None and result["energy_reason"] == "energy: none in the job"
    assert result["latency_ms"]["std"] == 0.0 and result["latency_ms"]["p50"] == pytest.approx(20.0)
    assert result["device"]["throttled"] is True and "moderate" in result["device"]["throttle_reason"]
    assert lab.phone.calls("dumpsys battery") == []
    assert lab.phone.calls("taskset")[0].startswith("taskset c0 ")
    assert "--use_gpu=true" in lab.phone.benchmark_log()[0]
    assert lab.phone.job_folders() == [] and not (lab.base() / "lock").exists()


def test_busy_phone_waits_then_gives_up_naming_the_holder(make_lab):
    lab = make_lab()
    uptime = int(float(Path("/proc/uptime").read_text().split()[0]))
    (lab.base() / "lock").mkdir(parents=True)
    (lab.base() / "lock" / "owner").write_text(f'{uptime} {{"host": "lab-pc", "pid": 77, "hold_s": 3600}}\n')
    seen = []
    with pytest.raises(DeviceError, match="busy for 1.5 s with a job from host lab-pc"):
        run_adb(job(), lab.model, device=lab.device, timeout_s=1.5, on_progress=seen.append)
    assert any("waiting for pixel" in s for s in seen)
    assert (lab.base() / "lock").exists() and lab.phone.calls("dumpsys battery") == []  # not ours to remove


@pytest.mark.parametrize("version", [41, 40], ids=["tport", "transport"])
def test_check_adb_reports_the_phone(make_lab, version):
    lab = make_lab(PowerProfile(rails=RAILS), version=version)
    info = check_adb(lab.device)
    assert (info["model"], info["android_version"], info["arch"]) == ("Stand-in Pixel", "14", "arm64-v8a")
    assert info["benchmark_model"]["configured"] and info["battery"]["readable"]
    assert info["battery"]["status"] == "Discharging" and info["busy"] is None
    assert {s["name"]: s["available"] for s in info["power_sources"]} == {"battery": True, "powerstats": True}
    assert lab.phone.calls("dumpsys battery") == []
    assert any(r.startswith("host:tport:serial:" if version == 41 else "host:transport:") for r in lab.server.requests)


def test_phone_without_shell_v2(make_lab):
    """Before Android 7 there is no shell_v2: adbutils falls back to `shell:` and echoes $? itself."""
    lab = make_lab(features="cmd,stat_v2")
    result = run_adb(job(energy="none", idle_seconds=0, runs={"count": 5, "seconds": 0.3}), lab.model,
                     device=lab.device)
    assert result["latency_ms"]["n"] == 15 and result["device"]["arch"] == "arm64-v8a"
    assert not any(r.startswith("shell,v2:") for r in lab.server.requests)
    assert lab.phone.job_folders() == []


def test_unknown_serial_is_a_device_error_naming_it(make_lab):
    lab = make_lab()
    other = lab.device.model_copy(update={"serial": "192.168.1.50:5555"})
    with pytest.raises(DeviceError, match=r"serial 192\.168\.1\.50:5555 is not connected.*EC-PIXEL-1") as exc:
        run_adb(job(), lab.model, device=other)
    assert "adb connect 192.168.1.50:5555" in str(exc.value)


def test_unauthorized_phone_says_to_accept_the_prompt(make_lab):
    lab = make_lab(state="unauthorized")
    with pytest.raises(DeviceError, match="is unauthorized") as exc:
        check_adb(lab.device)
    assert "accept the USB debugging prompt" in str(exc.value)


def test_no_adb_server_is_a_device_error(monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ADB_SERVER_SOCKET", f"tcp:127.0.0.1:{port}")
    device = Device(name="p", target="android-arm64", transport="adb", serial="X")
    with pytest.raises(DeviceError, match=f"no adb server answers at 127.0.0.1:{port}") as exc:
        check_adb(device)
    assert "adb start-server" in str(exc.value)


def test_missing_benchmark_model_is_an_input_error_with_the_remedy(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    device = Device(name="pixel-8", target="android-arm64", transport="adb", serial="X")
    with pytest.raises(InputError) as exc:
        run_adb(job(), model, device=device)
    text = str(exc.value)
    assert "never downloads" in text and "bazel" in text and "android_aarch64" in text
    assert "benchmark_model: /path/to/benchmark_model` under devices.pixel-8 in devices.yaml" in text
    missing = device.model_copy(update={"benchmark_model": str(tmp_path / "nope")})
    with pytest.raises(InputError, match="does not exist"):
        run_adb(job(), model, device=missing)


@pytest.mark.parametrize("changes, match", [
    ({"runtime": "onnxruntime"}, "LiteRT"), ({"colour": 1}, "unknown job key"),
    ({"runtime_options": {"providers": []}}, "providers"), ({"inputs": {"npy": {"x": "x.npy"}}}, "random inputs"),
])
def test_bad_jobs_are_input_errors_before_any_connection(tmp_path, changes, match):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    binary = tmp_path / "benchmark_model"
    binary.write_text("")
    device = Device(name="p", target="android-arm64", transport="adb", serial="X", benchmark_model=str(binary))
    with pytest.raises(InputError, match=match):
        run_adb(job(**changes), model, device=device)


@pytest.mark.parametrize("env, expected", [
    ({"ADB_SERVER_SOCKET": "tcp:5038"}, ("127.0.0.1", 5038)),
    ({"ADB_SERVER_SOCKET": "tcp:10.0.0.2:5037"}, ("10.0.0.2", 5037)),
    ({"ANDROID_ADB_SERVER_PORT": "5039"}, ("127.0.0.1", 5039)),
    ({}, ("127.0.0.1", 5037)),
])
def test_server_address_from_the_environment(monkeypatch, env, expected):
    for name in ("ADB_SERVER_SOCKET", "ANDROID_ADB_SERVER_PORT", "ANDROID_ADB_SERVER_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert adb.server_address() == expected


# ---- the pure parts ---------------------------------------------------------------------------------

def _samples(current: float, voltage: float, n: int = 5) -> list:
    return [(i * 0.1, current, voltage) for i in range(n)]


@pytest.mark.parametrize("current, voltage, unit, vunit, sign", [
    (-520000, 3850000, "uA", "uV", -1),   # the Android contract
    (-520, 3850000, "mA", "uV", -1),      # mA (some Samsung, Huawei)
    (520000, 3850000, "uA", "uV", 1),     # sign flipped (some Xiaomi)
    (480, 3850, "mA", "mV", 1),
])
def test_unit_and_sign_detection(current, voltage, unit, vunit, sign):
    units, reason = power.detect(_samples(current, voltage), "Discharging\n")
    assert reason is None
    assert (units["current"], units["voltage"], units["discharge_sign"]) == (unit, vunit, sign)
    watts = power.power_mw(_samples(current, voltage), units)[0][1] / 1000
    assert watts == pytest.approx(abs(current) * (1e-6 if unit == "uA" else 1e-3) * voltage *
                                  (1e-6 if vunit == "uV" else 1e-3))


@pytest.mark.parametrize("samples, status, match", [
    (_samples(-500000, 3.8e6), "Charging", "not 'Discharging'"),
    (_samples(-500000, 3.8e6), None, "unknown"),
    (_samples(0, 3.8e6), "Discharging", "read 0 throughout"),
    (_samples(-500000, 3.8e6, n=1), "Discharging", "1 reading"),
])
def test_detection_refuses_what_cannot_measure_the_load(samples, status, match):
    units, reason = power.detect(samples, status)
    assert units is None and match in reason


def test_trapezoid_uses_only_the_readings_inside_the_window():
    points = [(0.0, 1000.0), (1.0, 1000.0), (2.0, 3000.0), (3.0, 3000.0), (4.0, 9000.0)]
    got = power.integrate(points, 0.5, 3.5)  # 1..2 ramp: 2000 mJ; 2..3: 3000 mJ
    assert got == {"mj": 5000.0, "covered_s": 2.0, "samples": 3, "avg_mw": 2500.0}
    assert power.integrate(points, 5, 6) is None and power.integrate(points, 0.5, 1.5) is None


def test_powerstats_block_parsed_and_turned_into_energy():
    text = """
============= PowerStats HAL 2.0 energy meter ==============
Elapsed time: 2000 ms
  [VSYS_PWR_MODEM]:Modem   123456.0 mWs (200.0)
  [S4M_VDD_CPUCL2]:CPU(BIG)   99999.5 mWs (3000.0)
========== End of PowerStats HAL 2.0 energy meter ==========
"""
    run = power.parse_powerstats(text)
    assert run["elapsed_ms"] == 2000 and run["rails"] == {"VSYS_PWR_MODEM": 200.0, "S4M_VDD_CPUCL2": 3000.0}
    assert run["subsystems"]["S4M_VDD_CPUCL2"] == "CPU(BIG)"
    idle = {"elapsed_ms": 1000.0, "rails": {"VSYS_PWR_MODEM": 100.0, "S4M_VDD_CPUCL2": 100.0}, "subsystems": {}}
    energy, reason = power.powerstats_energy(idle, run, window_s=1.0, runs=100, process_s=1.5)
    # outside the 1.5 s process the rails ran at idle power (0.5 s x 200 mW)
    assert reason is None and energy["idle_power_mw"] == pytest.approx(200.0)
    assert energy["avg_power_mw"] == pytest.approx((3200.0 - 100.0) / 1.5)
    assert energy["mj_per_inference_total"] == pytest.approx(energy["avg_power_mw"] / 100)
    assert power.parse_powerstats("Can't find service: android.hardware.power.stats.IPowerStats/default") is None


def test_thermal_and_cpu_state_parsed():
    thermal = power.parse_thermal("Thermal Status: 3\nCurrent temperatures from HAL:\n"
                                  "\tTemperature{mValue=48.5, mType=0, mName=cpu0, mStatus=3}\n")
    assert thermal == {"status": 3, "status_name": "severe", "temperatures_c": {"cpu0": 48.5}}
    cpu = power.parse_cpu("/sys/devices/system/cpu/cpu10/cpufreq/scaling_cur_freq 1200000\n"
                          "/sys/devices/system/cpu/cpu2/cpufreq/scaling_cur_freq 300000\n"
                          "/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor schedutil\n")
    assert list(cpu["clocks_mhz"]) == ["cpu2", "cpu10"] and cpu["clocks_mhz"]["cpu10"] == 1200.0
    assert cpu["governors"] == {"cpu2": "schedutil"}
    assert power.throttled({"status": 0}, {"status": 0}) == (False, None)
    assert power.throttled({"status": 0}, {"status": 1})[0] is True
