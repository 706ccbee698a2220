"""ec_bench.py with energy, run as the device runs it (a separate process), its power source a fixture
sysfs tree (job key `sysfs_root`, test only) whose counters a writer thread here keeps moving; and
ec_probe.py, the `edgecompress devices check` probe."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysfs_trees import Profile, Writer, orin_nano, rapl_two_sockets
from test_ec_bench import CPU_SPEEDS, bench_at, python38

DEPLOY = Path(__file__).resolve().parents[2] / "edgecompress" / "deploy"
CONTRACT_KEYS = {"source", "rails", "total_rail", "summed_rails", "samples", "window_s", "idle_power_mw",
                 "avg_power_mw", "mj_per_inference_total", "mj_per_inference_net", "update_interval_s", "note"}


@pytest.fixture
def rapl_root(memory_root):
    """Two packages drawing a steady 3 W and 1.5 W, package-0 wrapping every ~0.3 s."""
    return memory_root, rapl_two_sockets(memory_root, Profile(3000.0), Profile(1500.0), max_range_uj=1000000)


def test_a_rapl_run_returns_the_energy_object(job_dir, run_bench, small_job, rapl_root):
    root, counters = rapl_root
    job = small_job(energy="rapl", sysfs_root=str(root), idle_seconds=0.2, runs={"count": 20, "seconds": 0.4})
    with Writer(counters):
        code, result, out, err = run_bench(job_dir, job)
    assert code == 0, result
    energy = result["energy"]
    assert CONTRACT_KEYS <= set(energy) and result["energy_reason"] is None
    assert energy["source"] == "rapl" and energy["rails"] == ["package-0", "package-1"]
    assert (energy["total_rail"], energy["summed_rails"]) == (None, ["package-0", "package-1"])
    # Loose: the writer lives in this process and the reader in another, so a busy machine can hold
    # the writer back by tens of ms. The 2 % accuracy checks are in-process, in test_ec_power.py.
    assert energy["avg_power_mw"] == pytest.approx(4500.0, rel=0.1)
    assert energy["idle_power_mw"] == pytest.approx(4500.0, rel=0.1)
    n = result["latency_ms"]["n"]
    assert energy["window_s"] == result["timed_window_s"] >= 0.4
    assert energy["mj_per_inference_total"] == pytest.approx(energy["avg_power_mw"] * energy["window_s"] / n)
    assert energy["mj_per_inference_net"] == pytest.approx(
        (energy["avg_power_mw"] - energy["idle_power_mw"]) * energy["window_s"] / n)
    assert energy["samples"] >= 4 and energy["idle_window_s"] >= 0.2
    assert counters[0].wraps >= 2
    assert "progress: idle 0.2 s for the power baseline" in err
    assert "progress: energy from rapl (rails package-0, package-1)" in err
    assert not any("lengthened" in w for w in result["warnings"])


def test_a_short_run_is_lengthened_to_the_sources_minimum_window(job_dir, run_bench, small_job, rapl_root):
    root, counters = rapl_root
    job = small_job(energy="rapl", sysfs_root=str(root), idle_seconds=0, runs={"count": 5}, energy_interval_ms=2)
    with Writer(counters):
        code, result, _, _ = run_bench(job_dir, job)
    assert code == 0, result
    assert result["timed_window_s"] >= 0.01 and result["latency_ms"]["n"] > 5  # 10 RAPL updates of 1 ms
    assert any(w.startswith("timed window lengthened from ") and "rapl energy window holds 10 sensor updates"
               in w for w in result["warnings"])
    energy = result["energy"]
    assert energy["idle_power_mw"] is None and energy["mj_per_inference_net"] is None
    assert "no idle baseline" in energy["note"] and energy["sample_interval_s"] == 0.002


def test_the_run_cap_never_cuts_the_energy_window_short(job_dir, run_bench, small_job, rapl_root):
    root, counters = rapl_root
    job = small_job(energy="rapl", sysfs_root=str(root), idle_seconds=0, runs={"count": 3}, max_runs=3)
    with Writer(counters):
        code, result, _, _ = run_bench(job_dir, job)
    assert code == 0, result
    energy = result["energy"]
    assert result["energy_reason"] is None and energy["source"] == "rapl"
    assert result["timed_window_s"] >= energy["min_window_s"] and result["latency_ms"]["n"] > 3
    assert energy["mj_per_inference_total"] == pytest.approx(
        energy["avg_power_mw"] * energy["window_s"] / result["latency_ms"]["n"])  # every run, not the cap's 3
    assert any(w.startswith("timed window lengthened from ") for w in result["warnings"])
    assert not any("max_runs" in w for w in result["warnings"])


@pytest.mark.parametrize("speed", sorted(CPU_SPEEDS))
def test_the_device_state_comes_from_the_same_root(job_dir, run_bench, run_standin, small_job, memory_root, speed):
    for channel in orin_nano(memory_root, Profile(5000.0), Profile(1000.0), Profile(1200.0)):
        channel.write(0.0)  # static values: no writer needed
    for k in range(4):
        folder = memory_root / f"sys/devices/system/cpu/cpu{k}/cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_cur_freq").write_text("1510400\n")
        (folder / "scaling_governor").write_text("schedutil\n")
    gpu = memory_root / "sys/class/devfreq/17000000.ga10b"
    (gpu / "device/of_node").mkdir(parents=True)
    (gpu / "device/of_node/name").write_bytes(b"ga10b\x00")
    for name, value in (("cur_freq", 624750000), ("max_freq", 624750000), ("min_freq", 306000000)):
        (gpu / name).write_text("%d\n" % value)
    code, result, _, _ = bench_at(speed, job_dir, run_bench, run_standin,
                                  small_job(energy="auto", sysfs_root=str(memory_root), idle_seconds=0.1,
                                            runs={"count": 5, "seconds": 0.1}))
    assert code == 0, result
    device = result["device"]
    assert device["governor"] == "schedutil" and device["clocks_mhz_before"]["cpu3"] == 1510.4
    assert device["gpu_clocks_hz_after"]["17000000.ga10b"]["max_hz"] == 624750000
    assert device["throttled"] is False and device["throttle_reason"] is None
    assert any("governor is 'schedutil'" in w for w in result["warnings"])
    energy = result["energy"]
    assert energy["source"] == "ina3221" and energy["total_rail"] == "VDD_IN"
    assert energy["avg_power_mw"] == pytest.approx(5000.0, rel=0.002)  # static files: exactly VDD_IN
    assert any("idle window lengthened from 0.10 s to 0.50 s" in w for w in result["warnings"])
    assert energy["window_s"] == result["timed_window_s"] >= 0.5  # lengthened to 10 updates of 50 ms


def test_a_named_source_that_is_absent_says_why(job_dir, run_bench, small_job, tmp_path):
    (tmp_path / "empty").mkdir()
    code, result, _, _ = run_bench(job_dir, small_job(energy="ina3221", sysfs_root=str(tmp_path / "empty")))
    assert code == 0, result
    assert result["energy"] is None
    assert result["energy_reason"] == ("energy source 'ina3221' is not available here: no INA3221 hwmon device "
                                       "under {0}/sys/bus/i2c/drivers/ina3221 and {0}/sys/class/hwmon"
                                       .format(tmp_path / "empty"))


@pytest.mark.skipif(__import__("importlib").util.find_spec("pynvml") is not None,
                    reason="pynvml is importable here, so auto may find a GPU")
def test_auto_with_nothing_there_names_every_place(job_dir, run_bench, small_job, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # no tegrastats, no vcgencmd
    code, result, _, _ = run_bench(job_dir, small_job(energy="auto", sysfs_root=str(tmp_path)))
    assert code == 0, result
    assert result["energy"] is None
    reason = result["energy_reason"]
    assert reason.startswith("no power source found: looked at ina3221: ")
    for name in ("ina3221x: ", "tegrastats: ", "nvml: ", "rapl: ", "pi5_pmic: "):
        assert "; " + name in reason


@pytest.mark.parametrize("changes, message", [
    ({"energy": "battery"}, "job.energy 'battery' is not known; valid: auto, none, ina3221, ina3221x, "
                            "tegrastats, nvml, rapl, pi5_pmic"),
    ({"energy_interval_ms": 0}, "job.energy_interval_ms must be a number >= 1, got 0"),
    ({"energy_device_index": -1}, "job.energy_device_index must be an integer >= 0, got -1"),
    ({"sysfs_root": "no/such/folder"}, "job.sysfs_root is not a folder: "),
    ({"energy_intervall_ms": 5}, "unknown key(s) in job: energy_intervall_ms"),
])
def test_bad_energy_keys_are_job_errors(job_dir, run_bench, small_job, changes, message):
    code, result, _, _ = run_bench(job_dir, small_job(**changes))
    assert code == 1 and message in result["error"]


def run_probe(python, *args):
    done = subprocess.run([python, str(DEPLOY / "ec_probe.py")] + list(args), capture_output=True, text=True,
                          timeout=60)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def test_the_probe_prints_one_json_line_with_runtimes_and_power_sources(memory_root):
    import onnxruntime

    orin_nano(memory_root, Profile(5000.0), Profile(1000.0), Profile(1200.0))
    probe = run_probe(sys.executable, "--sysfs-root", str(memory_root))
    assert probe["protocol_version"] == 1
    assert {"arch", "python", "platform", "hostname", "cpu_count", "governor", "temperatures_c"} <= set(probe)
    assert probe["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert probe["runtimes"]["onnxruntime"] == onnxruntime.__version__
    assert set(probe["runtimes"]) == {"onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorrt"}
    names = [s["name"] for s in probe["power_sources"]]
    assert names == ["ina3221", "ina3221x", "tegrastats", "nvml", "rapl", "pi5_pmic"]
    ina = probe["power_sources"][0]
    assert ina == {"name": "ina3221", "available": True, "reason": "INA3221 rails VDD_IN, VDD_CPU_GPU_CV, VDD_SOC"}
    assert probe["power_sources"][4]["available"] is False


@pytest.mark.skipif(python38() is None, reason="no Python 3.8 interpreter (set EC_PYTHON38)")
def test_the_probe_runs_on_python38(tmp_path):
    probe = run_probe(python38(), "--sysfs-root", str(tmp_path))
    assert probe["python"].startswith("3.8.")
    assert all(s["available"] is False for s in probe["power_sources"] if s["name"] in ("ina3221", "rapl"))
