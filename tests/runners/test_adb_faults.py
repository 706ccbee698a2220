"""Faults during `edgecompress bench MODEL --device PHONE` (finding F2 of the reliability review):
SIGINT, SIGTERM and SIGKILL of the host while benchmark_model runs, and two benches at once on one
phone. The CLI runs as a real subprocess, as a user starts it, against the adb stand-in
(tests/adb_standin.py): real adb protocol, real `sh` and processes on the "phone", and the stand-in
hangs up a shell whose client has gone, as adbd does. Afterwards the phone must be as it was found:
charging restored (the battery calls end with `reset`), no benchmark_model running, no job folder,
no lock, so the next bench starts at once."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("adbutils", reason="the adb runner needs adbutils: pip install 'edgecompress[android]'")

from adb_standin import AdbStandIn, Phone, PowerProfile, write_fake_benchmark_model  # noqa: E402
from edgecompress.runners import adb  # noqa: E402

SERIAL = "EC-PIXEL-1"
CLI = Path(sys.executable).with_name("edgecompress")


class PhoneLab:
    """Stand-in phones on one adb server (devices pixel, pixel2, ...), their devices.yaml, a .tflite
    and the environment a subprocess CLI needs. `phone` is the first."""

    def __init__(self, tmp: Path, count: int = 1, shell: str = "sh"):
        self.phones = [Phone(tmp / f"phone{i}", f"{SERIAL}{'-%d' % i if i else ''}", PowerProfile(), shell=shell)
                       for i in range(count)]
        self.phone = self.phones[0]
        self.server = AdbStandIn({p.serial: p for p in self.phones}).__enter__()
        binary = str(write_fake_benchmark_model(tmp / "benchmark_model"))
        self.names = ["pixel" + (str(i + 1) if i else "") for i in range(count)]
        inventory = tmp / "devices.yaml"
        inventory.write_text(yaml.safe_dump({"devices": {name: {
            "target": "android-arm64", "transport": "adb", "serial": p.serial, "job_timeout_s": 120,
            "benchmark_model": binary} for name, p in zip(self.names, self.phones)}}))
        self.model = tmp / "model.tflite"
        self.model.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(2000))
        self.env = {k: v for k, v in os.environ.items() if k not in ("ADB_SERVER_SOCKET", "ANDROID_ADB_SERVER_HOST")}
        self.env.update(ANDROID_ADB_SERVER_PORT=str(self.server.port), EDGECOMPRESS_DEVICES=str(inventory))

    @property
    def base(self) -> Path:
        return self.phone.root / "data/local/tmp/edgecompress"

    def bench(self, seconds: float, *devices: str) -> subprocess.Popen:
        # SIGINT back to its default: a shell's background job (pytest run with &) ignores it, and
        # Python would then keep ignoring it
        named = [w for name in (devices or ("pixel",)) for w in ("--device", name)]
        return subprocess.Popen([str(CLI), "bench", str(self.model), *named, "--runs", "5", "--warmup", "1",
                                 "--seconds", f"{seconds:g}"], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def wait_busy(self, proc: subprocess.Popen) -> None:
        """Until benchmark_model runs on every phone, then a little longer: well inside the run."""
        deadline = time.monotonic() + 60
        while not all(p.busy for p in self.phones):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "benchmark_model never started"
            time.sleep(0.05)
        time.sleep(0.3)

    def leftovers(self) -> list:
        """What the phones still show of a job: empty when they are as they were found."""
        left = []
        for phone in self.phones:
            base = phone.root / "data/local/tmp/edgecompress"
            left += [f"{phone.serial}: job folder {p.name}" for p in phone.job_folders()]
            left += [f"{phone.serial}: lock"] if (base / "lock").exists() else []
            left += [f"{phone.serial}: process {c}" for c in phone.processes() if "benchmark_model" in c]
            batteries = phone.calls("dumpsys battery")
            if batteries and batteries[-1] != "dumpsys battery reset":
                left.append(f"{phone.serial}: charging suspended (battery calls: {batteries})")
        return left

    def wait_clean(self, within_s: float) -> list:
        deadline = time.monotonic() + within_s
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.leftovers()

    def close(self) -> None:
        self.server.__exit__(None, None, None)
        for phone in self.phones:  # a failed test must not leave the "phone's" processes behind
            for pid in phone.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def lab(tmp_path):
    made = PhoneLab(tmp_path)
    yield made
    made.close()


def assert_next_bench_starts_at_once(lab: PhoneLab) -> None:
    proc = lab.bench(0.3)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "waiting for pixel" not in err and "busy" not in err
    assert lab.leftovers() == []


MKSH = pytest.mark.skipif(shutil.which("mksh") is None, reason="mksh (Android's /system/bin/sh) not installed")
SLOW = pytest.mark.slow  # a second shell or a guard of what already worked: opt-in, to keep the default run short


@pytest.mark.parametrize("signum, code, shell", [
    (signal.SIGINT, 130, "sh"), (signal.SIGTERM, 143, "sh"),
    pytest.param(signal.SIGINT, 130, "mksh", marks=[MKSH, SLOW]),
], ids=["SIGINT", "SIGTERM", "SIGINT-mksh"])
def test_interrupt_mid_benchmark_restores_the_phone_before_exit(tmp_path, signum, code, shell):
    lab = PhoneLab(tmp_path, shell=shell)
    try:
        _interrupt_mid_benchmark(lab, signum, code)
    finally:
        lab.close()


def _interrupt_mid_benchmark(lab: PhoneLab, signum: int, code: int) -> None:
    proc = lab.bench(60)
    lab.wait_busy(proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert ("interrupted" if signum == signal.SIGINT else "terminated") in err
    # restored by the time the command has returned, not later by the phone's watchdog
    assert lab.leftovers() == []
    calls = lab.phone.calls("dumpsys battery")
    assert calls == ["dumpsys battery unplug", "dumpsys battery reset"]
    assert "killed" in lab.phone.benchmark_log()
    assert_next_bench_starts_at_once(lab)


@pytest.mark.parametrize("request_part, delay_s", [
    ("mkdir /data/local/tmp/edgecompress/lock", 0), ("ours()", 0), ("mkdir /data/local/tmp/edgecompress/job-", 0),
    ("sync:", 0), ("sync:", 0.05), ("watchdog.sh", 0), ("getprop", 0), ("battery unplug", 0),
    ("sampler.sh", 0), ("run.pid", 0), ("run.pid", 0.15),
], ids=["lock", "leftovers", "folder", "copy", "copy+", "watchdog", "props", "unplug", "sampler", "run", "run+"])
def test_ctrl_c_at_any_point_leaves_the_phone_as_found(lab, request_part, delay_s):
    """SIGINT the moment the phone receives each step of a job's start (the request is still being
    served): taking the lock, making the folder, copying, starting the watchdog and the sampler,
    suspending charging, starting the run."""
    seen = len(lab.server.requests)
    proc = lab.bench(60)
    deadline = time.monotonic() + 60
    while not any(request_part in r for r in lab.server.requests[seen:]):
        assert proc.poll() is None and time.monotonic() < deadline, f"no request with {request_part!r}"
        time.sleep(0.001)
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert lab.leftovers() == []
    assert lab.phone.calls("dumpsys battery") in ([], ["dumpsys battery unplug", "dumpsys battery reset"])
    assert lab.phone.processes() == []  # nor the watchdog or the sampler


def test_sigkill_of_the_host_is_restored_by_the_phone_watchdog(lab):
    proc = lab.bench(60)
    lab.wait_busy(proc)
    proc.kill()
    proc.communicate(timeout=30)
    assert lab.leftovers() != []  # nothing on the host could run
    # the watchdog notices that the heartbeat stopped
    assert lab.wait_clean(adb.HEARTBEAT_STALE_S + 15) == []
    assert "killed" in lab.phone.benchmark_log()
    assert_next_bench_starts_at_once(lab)


@pytest.mark.parametrize("shell", ["sh", pytest.param("mksh", marks=MKSH)])
def test_sigkill_then_the_next_bench_takes_the_dead_jobs_lock_at_once_and_restores_first(tmp_path, shell):
    lab = PhoneLab(tmp_path, shell=shell)
    try:
        _sigkill_then_next_bench(lab)
    finally:
        lab.close()


def _sigkill_then_next_bench(lab: PhoneLab) -> None:
    proc = lab.bench(60)
    lab.wait_busy(proc)
    proc.kill()
    proc.communicate(timeout=30)
    started = time.monotonic()
    nxt = lab.bench(0.3)
    _, err = nxt.communicate(timeout=90)
    assert nxt.returncode == 0, err
    assert "waiting for pixel" not in err and time.monotonic() - started < adb.HEARTBEAT_STALE_S
    assert lab.leftovers() == []
    calls = lab.phone.calls("dumpsys battery")
    # the dead job's charging is reset before the new job suspends it again
    assert calls == ["dumpsys battery unplug", "dumpsys battery reset", "dumpsys battery unplug",
                     "dumpsys battery reset"]
    log = lab.phone.benchmark_log()
    assert "killed" in log and "overlap" not in log


def test_two_benches_at_once_on_one_phone_take_turns(lab):
    first, second = lab.bench(1), lab.bench(1)
    errs = []
    for proc in (first, second):
        _, err = proc.communicate(timeout=120)
        errs.append(err)
        assert proc.returncode == 0, err
    assert any("waiting for pixel" in e for e in errs)
    assert "overlap" not in lab.phone.benchmark_log()  # never two benchmark_models at once
    calls = lab.phone.calls("dumpsys battery")
    assert calls == ["dumpsys battery unplug", "dumpsys battery reset"] * 2
    assert lab.leftovers() == []


def test_ctrl_c_with_several_devices_restores_each_before_exit(tmp_path):
    """Two phones at once (measure_on_devices' worker threads): Ctrl-C in the main thread stops both
    workers and waits for their cleanup; it used to leave daemon threads that the interpreter killed."""
    two = PhoneLab(tmp_path, count=2)
    try:
        proc = two.bench(60, "pixel", "pixel2")
        two.wait_busy(proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert two.leftovers() == [], err
        for phone in two.phones:
            assert "killed" in phone.benchmark_log()
            assert phone.calls("dumpsys battery") == ["dumpsys battery unplug", "dumpsys battery reset"]
    finally:
        two.close()


def test_a_lock_held_by_a_dead_process_of_this_host_is_stale_at_once(lab):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (lab.base / "lock").mkdir(parents=True)
    uptime = int(float(Path("/proc/uptime").read_text().split()[0]))
    (lab.base / "lock" / "owner").write_text(f"{uptime} " + json.dumps(
        {"host": socket.gethostname(), "pid": dead.pid, "user": "me", "token": "t0", "hold_s": 3600}) + "\n")
    assert_next_bench_starts_at_once(lab)
    # a stale lock may hide a suspended charge: reset before the new job's own unplug
    assert lab.phone.calls("dumpsys battery")[0] == "dumpsys battery reset"


def test_a_holder_of_the_same_name_on_another_machine_is_waited_for(tmp_path):
    """Two machines may share a host name (localhost, a cloned VM): a pid that is dead here may be
    a live job there, so its boot id must match too."""
    from edgecompress.runners.adb import _holder_dead

    dead = subprocess.Popen(["true"])
    dead.wait()
    here = {"host": socket.gethostname(), "pid": dead.pid, "boot": adb._boot_id()}
    assert _holder_dead(here) and _holder_dead(dict(here, boot=None))
    assert not _holder_dead(dict(here, boot="0e1f-other-machine"))
    assert not _holder_dead(dict(here, host="lab-pc")) and not _holder_dead(dict(here, pid=os.getppid()))


@SLOW
def test_a_live_holder_of_this_host_is_waited_for(lab):
    lab.base.mkdir(parents=True)
    (lab.base / "lock").mkdir()
    uptime = int(float(Path("/proc/uptime").read_text().split()[0]))
    (lab.base / "lock" / "owner").write_text(f"{uptime} " + json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "user": "me", "token": "t1", "hold_s": 3600}) + "\n")
    release = threading.Timer(3.0, lambda: shutil.rmtree(lab.base / "lock"))
    release.start()
    proc = lab.bench(0.3)
    _, err = proc.communicate(timeout=90)
    release.join()
    assert proc.returncode == 0, err
    assert "waiting for pixel" in err and lab.leftovers() == []


# ---- the phone's watchdog script alone, in the shells that play the phone's sh -------------------

# dash: the stand-in's sh here, already run end to end above; mksh: Android's /system/bin/sh
SHELLS = [pytest.param("dash", marks=[pytest.mark.skipif(shutil.which("dash") is None, reason="dash not installed"),
                                      SLOW]), pytest.param("mksh", marks=MKSH)]


class WatchedJob:
    """A job folder with a watchdog (power.WATCHDOG_SH) run by `shell`, a fake dumpsys that logs its
    calls, a "benchmark_model" (a sleep whose command line names the folder) and a foreign process
    whose pid sits in a pid file (a pid reused since): the watchdog must leave that one alone."""

    def __init__(self, tmp: Path, shell: str, stale_ticks: int = 2, max_s: int = 60, unplugged: bool = True):
        from edgecompress.runners import android_power as power

        self.folder, self.lock, self.log = tmp / "job-x1", tmp / "lock", tmp / "calls.txt"
        self.folder.mkdir(parents=True)
        self.lock.mkdir()
        (self.lock / "owner").write_text('12 {"token":"tok-1"}\n')
        (tmp / "bin").mkdir()
        (tmp / "bin" / "dumpsys").write_text(f'#!/bin/sh\necho "dumpsys $*" >> {self.log}\n')
        (tmp / "bin" / "dumpsys").chmod(0o755)
        (self.folder / "watchdog.sh").write_text(power.WATCHDOG_SH)
        (self.folder / "heartbeat").touch()
        if unplugged:
            (self.folder / "unplugged").touch()
        self.bench = subprocess.Popen(["sh", "-c", 'sleep 60; : "$0"', f"{self.folder}/benchmark_model"])
        self.foreign = subprocess.Popen(["sleep", "60"])
        (self.folder / "benchmark.pid").write_text(f"{self.bench.pid}\n")
        (self.folder / "sampler.pid").write_text(f"{self.foreign.pid}\n")
        env = dict(os.environ, PATH=f"{tmp / 'bin'}:{os.environ['PATH']}")
        self.watchdog = subprocess.Popen([shell, str(self.folder / "watchdog.sh"), str(self.folder), str(self.lock),
                                          "tok-1", str(max_s), str(stale_ticks)], env=env)

    def calls(self) -> list:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def close(self) -> None:
        for proc in (self.watchdog, self.bench, self.foreign):
            proc.kill()
            proc.wait()


@pytest.fixture
def watched(tmp_path):
    made = []
    yield lambda *a, **kw: made.append(WatchedJob(tmp_path / str(len(made)), *a, **kw)) or made[-1]
    for job in made:
        job.close()


@pytest.mark.parametrize("shell", SHELLS)
def test_watchdog_restores_when_the_heartbeat_stops(watched, shell):
    job = watched(shell, stale_ticks=2)
    assert job.watchdog.wait(timeout=20) == 0
    assert job.calls() == ["dumpsys battery reset"]
    assert job.bench.wait(timeout=5) is not None  # killed
    assert job.foreign.poll() is None  # its pid file named it, its command line does not
    assert not job.folder.exists() and not job.lock.exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_watchdog_restores_when_the_folder_is_removed_and_keeps_a_lock_not_its_own(watched, shell):
    job = watched(shell, stale_ticks=30)
    (job.lock / "owner").write_text('12 {"token":"tok-2"}\n')  # the next job's lock
    time.sleep(1.5)  # the watchdog has seen the folder, its marker and pids
    for name in ("heartbeat", "unplugged", "benchmark.pid", "sampler.pid", "watchdog.sh"):
        (job.folder / name).unlink(missing_ok=True)
    job.folder.rmdir()
    assert job.watchdog.wait(timeout=10) == 0
    assert job.calls() == ["dumpsys battery reset"] and job.bench.wait(timeout=5) is not None
    assert job.lock.exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_watchdog_ends_the_job_at_its_deadline_without_touching_charging_it_left_alone(watched, shell):
    job = watched(shell, stale_ticks=30, max_s=2, unplugged=False)
    beats = threading.Event()
    keeper = threading.Thread(target=lambda: [(job.folder / "heartbeat").touch() for _ in iter(
        lambda: beats.wait(0.3), True) if job.folder.exists()], daemon=True)
    keeper.start()
    try:
        assert job.watchdog.wait(timeout=15) == 0
    finally:
        beats.set()
    assert job.calls() == [] and job.bench.wait(timeout=5) is not None and not job.folder.exists()


# ---- measure_on_devices alone: which workers a Ctrl-C waits for ----------------------------------

@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler, also when pytest runs as a shell's background job (SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_waits_for_the_cleanup_of_stoppable_jobs_only(monkeypatch, tmp_path, ctrl_c_raises):
    """A runner that takes `stop` is told to stop and waited for (its cleanup runs before the
    KeyboardInterrupt leaves); one that cannot be stopped does not hold the exit for its whole job."""
    from edgecompress import bench, profile
    from edgecompress.inventory import Device

    cleaned, release = [], threading.Event()

    class Phone:  # a Runner that can be stopped mid-job
        stoppable = True

        def __init__(self, device):
            self.device = device

        def run(self, job, path, *, extra_files=None, fetch_dir=None, on_progress=None, stop=None):
            stop.wait(30)
            time.sleep(0.5)  # its cleanup, on the phone
            cleaned.append(self.device.name)
            raise KeyboardInterrupt

    class Board(Phone):  # one that cannot: bench must not wait for it
        stoppable = False

        def run(self, job, path, *, extra_files=None, fetch_dir=None, on_progress=None, stop=None):
            assert stop is None  # never handed to a runner that says it cannot stop
            release.wait(30)
            return {}

    monkeypatch.setattr(bench, "runner", lambda device: (Phone if device.transport == "adb" else Board)(device))
    devices = [Device(name="pixel", target="android-arm64", transport="adb", serial="X"),
               Device(name="pi", target="android-arm64", transport="ssh", host="h")]
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    cfg = profile.load("android-arm64")[0].bench
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            bench.measure_on_devices(model, cfg, "litert", devices, quiet=True)
        assert cleaned == ["pixel"] and time.monotonic() - started < 10
    finally:
        release.set()
