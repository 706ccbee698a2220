"""ec_clocks: Jetson clocks stored, locked and always restored. Fake `jetson_clocks`, `nvpmodel` and
`sudo` scripts on PATH log their calls; the restore must follow a success, an exception, and a
SIGTERM to ec_bench running as the device runs it."""
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ec_clocks

DEPLOY = Path(__file__).resolve().parents[2] / "edgecompress" / "deploy"

JETSON_CLOCKS = """#!/bin/sh
echo "jetson_clocks $*" >> "$FAKE_CLOCKS_LOG"
case "$1" in
  --show) echo "SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Developer Kit"
          echo "cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1510400 CurrentFreq=1510400"
          exit 0 ;;
  --store) [ -n "$FAKE_STORE_FAIL" ] && { echo "cannot write $2"; exit 1; }
           echo "stored settings" > "$2"; exit 0 ;;
  --restore) [ -n "$FAKE_RESTORE_FAIL" ] && { echo "restore broke"; exit 1; }
             [ -f "$2" ] || { echo "no stored file $2"; exit 1; }; exit 0 ;;
  "") [ -n "$FAKE_LOCK_FAIL" ] && { echo "lock broke"; exit 1; }; exit 0 ;;
esac
exit 2
"""
NVPMODEL = """#!/bin/sh
echo "nvpmodel $*" >> "$FAKE_CLOCKS_LOG"
echo "NV Power Mode: 25W"
echo "1"
"""
SUDO = """#!/bin/sh
[ "$1" = "-n" ] && shift
echo "sudo $*" >> "$FAKE_CLOCKS_LOG"
exec "$@"
"""


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """PATH with the fake tools first; returns a reader of the logged calls (paths shortened)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("jetson_clocks", JETSON_CLOCKS), ("nvpmodel", NVPMODEL), ("sudo", SUDO)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "clocks.log"
    log.write_text("")
    monkeypatch.setenv("PATH", "%s%s%s" % (bin_dir, os.pathsep, os.environ["PATH"]))
    monkeypatch.setenv("FAKE_CLOCKS_LOG", str(log))

    def calls():
        return [line.replace(str(bin_dir) + "/", "").replace(str(tmp_path) + "/", "").strip()
                for line in log.read_text().splitlines()]
    return calls


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.delenv(ec_clocks.STATE_DIR_ENV, raising=False)
    path = tmp_path / "job"
    path.mkdir()
    return path


@pytest.fixture
def state(tmp_path, monkeypatch):
    """The workdir as ssh_agent names it: the store and its record live there, not in the job folder."""
    path = tmp_path / "workdir"
    path.mkdir()
    monkeypatch.setenv(ec_clocks.STATE_DIR_ENV, str(path))
    return path


STORE = "job/" + ec_clocks.STORE_FILE
LOCKED_SEQUENCE = ["nvpmodel -q", "jetson_clocks --show", "jetson_clocks --store " + STORE, "jetson_clocks",
                   "jetson_clocks --show"]
RESTORE = "jetson_clocks --restore " + STORE


@pytest.mark.parametrize("text, expected", [
    ("NV Power Mode: 25W\n1\n", {"mode_name": "25W", "mode_id": 1}),
    ("NV Power Mode: MAXN\n0\n", {"mode_name": "MAXN", "mode_id": 0}),
    ("NV Fan Mode:quiet\nNV Power Mode: MODE_15W_6CORE\n2\n", {"mode_name": "MODE_15W_6CORE", "mode_id": 2}),
    ("NVPM VERB: Config file: /etc/nvpmodel.conf\nNVPM VERB: Current mode: NV Power Mode: 25W\n1\n"
     "NVPM VERB: PARAM CPU_ONLINE: ARG CORE_0: PATH /sys/devices/system/cpu/cpu0/online\n",
     {"mode_name": "25W", "mode_id": 1}),
    ("NV Power Mode: 15W\n", {"mode_name": "15W", "mode_id": None}),
    ("nvpmodel: command failed\n", {"mode_name": None, "mode_id": None}),
])
def test_nvpmodel_query_output(text, expected):
    assert ec_clocks.parse_nvpmodel(text) == expected


def test_a_successful_body_is_bracketed_by_store_lock_and_restore(fakes, folder):
    with ec_clocks.locked(str(folder)) as state:
        assert fakes() == LOCKED_SEQUENCE
        assert state["clocks_locked"] and not state["clocks_restored"]
    assert fakes() == LOCKED_SEQUENCE + [RESTORE]
    assert state["clocks_restored"] is True
    assert state["nvpmodel"] == {"mode_name": "25W", "mode_id": 1}
    assert state["jetson_clocks_show_before"][1].startswith("cpu0: Online=1 Governor=schedutil")
    assert state["jetson_clocks_show_locked"] is not None


def test_an_exception_in_the_body_still_restores(fakes, folder):
    with pytest.raises(RuntimeError, match="model broke"):
        with ec_clocks.locked(str(folder)):
            raise RuntimeError("model broke")
    assert fakes()[-1] == RESTORE


def test_a_failed_lock_still_restores(fakes, folder, monkeypatch):
    monkeypatch.setenv("FAKE_LOCK_FAIL", "1")
    locking_failed = r"locking the clocks \(jetson_clocks\) failed \(exit 1\).*lock broke"
    with pytest.raises(ec_clocks.ClockError, match=locking_failed):
        with ec_clocks.locked(str(folder)):
            pass
    assert fakes()[-1] == RESTORE


def test_a_failed_store_changes_nothing_and_restores_nothing(fakes, folder, monkeypatch):
    monkeypatch.setenv("FAKE_STORE_FAIL", "1")
    handlers = {s: signal.getsignal(s) for s in ec_clocks.SIGNALS}
    with pytest.raises(ec_clocks.ClockError, match="storing the clocks"):
        with ec_clocks.locked(str(folder)):
            pass
    assert fakes()[-1] == "jetson_clocks --store " + STORE
    assert {s: signal.getsignal(s) for s in ec_clocks.SIGNALS} == handlers


def test_a_failed_restore_after_success_is_an_error_that_says_what_to_run(fakes, folder, monkeypatch):
    monkeypatch.setenv("FAKE_RESTORE_FAIL", "1")
    with pytest.raises(ec_clocks.ClockError) as e:
        with ec_clocks.locked(str(folder)):
            pass
    assert "restore broke" in str(e.value) and "sudo jetson_clocks --restore" in str(e.value)


def test_without_jetson_clocks_the_error_says_where_it_comes_from(folder, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ec_clocks.ClockError, match="no jetson_clocks on PATH: it comes with JetPack"):
        with ec_clocks.locked(str(folder)):
            pass


def test_a_sigterm_in_the_body_restores_then_raises_interrupted(fakes, folder):
    handlers = {s: signal.getsignal(s) for s in ec_clocks.SIGNALS}
    with pytest.raises(ec_clocks.Interrupted) as e:
        with ec_clocks.locked(str(folder)):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    assert e.value.signum == signal.SIGTERM and str(e.value) == "interrupted by SIGTERM; Jetson clocks were restored"
    assert fakes()[-1] == RESTORE
    assert {s: signal.getsignal(s) for s in ec_clocks.SIGNALS} == handlers


def test_not_root_runs_the_clock_commands_through_sudo_n(fakes, folder, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with ec_clocks.locked(str(folder)):
        pass
    assert "sudo jetson_clocks --store " + STORE in fakes() and fakes()[-2:] == ["sudo " + RESTORE, RESTORE]
    assert "nvpmodel -q" in fakes() and "sudo nvpmodel -q" not in fakes()  # querying needs no root


def test_the_store_and_its_record_live_in_the_state_folder_until_the_restore(fakes, folder, state):
    with ec_clocks.locked(str(folder)):
        assert (state / ec_clocks.STORE_FILE).is_file() and not (folder / ec_clocks.STORE_FILE).exists()
        record = json.loads((state / ec_clocks.STATE_FILE).read_text())
        assert record["pid"] == os.getpid() and record["store"] == str(state / ec_clocks.STORE_FILE)
        assert stat.S_IMODE((state / ec_clocks.STATE_FILE).stat().st_mode) == 0o666  # shared by accounts
    assert fakes()[-1] == "jetson_clocks --restore workdir/" + ec_clocks.STORE_FILE
    assert ec_clocks.read_record(str(state)) is None


def test_a_failed_restore_keeps_the_store_and_its_record_for_the_next_job(fakes, folder, state, monkeypatch):
    monkeypatch.setenv("FAKE_RESTORE_FAIL", "1")
    with pytest.raises(ec_clocks.ClockError) as e:
        with ec_clocks.locked(str(folder)):
            pass
    store = state / ec_clocks.STORE_FILE
    assert "the clocks may still be pinned: run `sudo jetson_clocks --restore %s`" % store in str(e.value)
    assert store.is_file() and ec_clocks.read_record(str(state))["pid"] == os.getpid()


def test_clocks_an_earlier_job_left_pinned_are_restored_before_anything_is_stored(fakes, folder, state):
    (state / ec_clocks.STORE_FILE).write_text("stored settings")
    (state / ec_clocks.STATE_FILE).write_text(json.dumps({"pid": 4242, "since": "2030-01-01 10:00:00 UTC"}))
    with ec_clocks.locked(str(folder)) as locked_state:
        pass
    calls = fakes()
    restore = "jetson_clocks --restore workdir/" + ec_clocks.STORE_FILE
    assert calls[0] == restore and calls.index(restore) < calls.index("jetson_clocks --show") \
        < calls.index("jetson_clocks --store workdir/" + ec_clocks.STORE_FILE)
    assert locked_state["stale_clocks_restored"]["pid"] == 4242 and locked_state["clocks_restored"] is True


def test_clocks_left_pinned_that_cannot_be_restored_are_never_stored_as_the_baseline(fakes, folder, state,
                                                                                       monkeypatch):
    (state / ec_clocks.STATE_FILE).write_text(json.dumps({"pid": 4242}))
    monkeypatch.setenv("FAKE_RESTORE_FAIL", "1")
    with pytest.raises(ec_clocks.ClockError, match="an earlier job left pinned.*run `sudo jetson_clocks --restore "):
        with ec_clocks.locked(str(folder)):
            pass
    assert not any("--store" in c for c in fakes()) and ec_clocks.read_record(str(state)) is not None


# ---- through ec_bench, as the device runs it ------------------------------------------------------------

def bench(job_dir, job):
    (job_dir / "job.json").write_text(json.dumps(job))
    return subprocess.Popen([sys.executable, str(DEPLOY / "ec_bench.py"), "job.json"], cwd=job_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ec_bench_reports_the_locked_clocks_and_restores_them(fakes, job_dir, small_job):
    out, err = bench(job_dir, small_job(lock_clocks=True)).communicate(timeout=60)
    result = json.loads(out)
    assert "error" not in result, result
    device = result["device"]
    assert device["clocks_locked"] is True and device["clocks_restored"] is True
    assert device["nvpmodel"] == {"mode_name": "25W", "mode_id": 1}
    assert fakes()[-1].startswith("jetson_clocks --restore ") and fakes()[-1].endswith(ec_clocks.STORE_FILE)
    assert "progress: locking Jetson clocks (power mode 25W)" in err


def test_ec_bench_restores_after_a_failed_job(fakes, job_dir, small_job):
    process = bench(job_dir, small_job(lock_clocks=True, inputs={"npy": {"x": "missing.npy"}}))
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 1 and "npy file for input 'x' not found" in json.loads(out)["error"]
    assert fakes()[-1].startswith("jetson_clocks --restore ")


def test_ec_bench_restores_after_sigterm_and_exits_143(fakes, job_dir, small_job):
    process = bench(job_dir, small_job(lock_clocks=True, runs={"count": 1, "seconds": 60}))
    for line in process.stderr:  # wait until the timed runs are under way
        if line.startswith("progress: timed "):
            break
    assert fakes()[-1] == "jetson_clocks --show" and not any("--restore" in c for c in fakes())
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert json.loads(out) == {"protocol_version": 1,
                               "error": "interrupted by SIGTERM; Jetson clocks were restored"}
    assert fakes()[-1].startswith("jetson_clocks --restore ")


def test_ec_bench_restores_after_sigterm_even_when_its_stderr_reader_is_gone(fakes, job_dir, small_job):
    """The link drops: nobody reads the job's stderr any more, so every progress line raises
    BrokenPipeError. The restore must still run on the SIGTERM that follows."""
    process = bench(job_dir, small_job(lock_clocks=True, runs={"count": 1, "seconds": 60}))
    for line in process.stderr:
        if line.startswith("progress: timed "):
            break
    process.stderr.close()
    time.sleep(1.0)  # the timed loop's progress lines now hit the closed pipe
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert any(c.startswith("jetson_clocks --restore ") for c in fakes()), fakes()
    assert json.loads(process.stdout.read())["error"] == "interrupted by SIGTERM; Jetson clocks were restored"


def test_ec_bench_without_jetson_clocks_fails_clearly(job_dir, small_job, tmp_path):
    (job_dir / "job.json").write_text(json.dumps(small_job(lock_clocks=True)))
    env = dict(os.environ, PATH=str(tmp_path / "empty"))
    done = subprocess.run([sys.executable, str(DEPLOY / "ec_bench.py"), "job.json"], cwd=job_dir, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"].startswith("lock_clocks asked, but there is no jetson_clocks on PATH")
    assert "Traceback" not in done.stderr


def test_lock_clocks_must_be_a_boolean(job_dir, run_bench, small_job):
    code, result, _, _ = run_bench(job_dir, small_job(lock_clocks="yes"))
    assert code == 1 and result["error"] == "job.lock_clocks must be true or false, got 'yes'"


def test_a_store_file_another_account_could_write_is_never_handed_to_root(fakes, folder, state):
    """jetson_clocks --restore writes each stored value to its stored path as root: in a shared
    workdir a store file others can write would let them choose what root writes where."""
    store = state / ec_clocks.STORE_FILE
    store.write_text("/etc/passwd:owned\n")
    store.chmod(0o666)
    (state / ec_clocks.STATE_FILE).write_text(json.dumps({"pid": 4242}))
    with pytest.raises(ec_clocks.ClockError, match="can be written by other accounts"):
        with ec_clocks.locked(str(folder)):
            pass
    (state / ec_clocks.STATE_FILE).write_text("")
    with pytest.raises(ec_clocks.ClockError, match="refusing to hand the clocks' store file"):
        with ec_clocks.locked(str(folder)):
            pass
    assert not any("--restore" in c or "--store" in c for c in fakes())
