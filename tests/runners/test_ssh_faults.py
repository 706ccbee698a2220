"""Jetson clocks pinned by --lock-clocks over a real ssh link (tests/sshd.py) under faults: kill -9
and Ctrl-C of the host, a dropped link that the runner retries, a slow or failed restore, and a
workdir shared by two device accounts (reliability review F1, F4, F9).

The device's python is a wrapper that puts the fake jetson_clocks of tests/fakes/jetson/ on PATH;
it keeps the clocks' state in a file (default or pinned), so each test can tell how the device was
left: clocks as found, no job folder, no job process, and a result that never says restored while
they are pinned."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("asyncssh", reason="the ssh runner needs asyncssh: pip install 'edgecompress[ssh]'")

from edgecompress.errors import DeviceError  # noqa: E402
from edgecompress.runners import ssh  # noqa: E402
from edgecompress.runners.ssh import run_ssh  # noqa: E402
from ecutil import processes_inside, tripling_model, wait_until  # noqa: E402

FAKES = Path(__file__).resolve().parents[1] / "fakes" / "jetson"
AGENT = Path(ssh.__file__).with_name("ssh_agent.py")
LONG = {"runs": {"count": 1, "seconds": 60}, "max_runs": 10**9}


def job(**changes):
    base = {"protocol_version": 1, "runtime": "onnxruntime", "runtime_options": {"threads": 1},
            "warmup": {"runs": 3}, "runs": {"count": 20}, "energy": "none", "lock_clocks": True}
    base.update(changes)
    return base


class Jetson:
    """The ssh device with fake Jetson tools: its clock state, its log and its leftovers."""

    def __init__(self, sshd, root: Path):
        self.clocks = root / "clocks"
        self.clocks.mkdir()
        (self.clocks / "state").write_text("default\n")
        (self.clocks / "clocks.log").write_text("")
        self.python = root / "pywrap.sh"
        self.python.write_text(f"#!/bin/sh\nexport PATH={shlex.quote(str(FAKES))}:\"$PATH\"\n"
                               f"export FAKE_JETSON_DIR={shlex.quote(str(self.clocks))}\n"
                               f"exec {shlex.quote(sys.executable)} \"$@\"\n")
        self.python.chmod(0o755)
        self.workdir = root / "wd"
        self.device = sshd.device(self.workdir, name="jet", python=str(self.python), job_timeout_s=60.0)

    def state(self) -> str:
        return (self.clocks / "state").read_text().strip()

    def log(self) -> list:
        return (self.clocks / "clocks.log").read_text().splitlines()

    def restore(self, sleep_s: float | None = None, fail: bool = False) -> None:
        for name, wanted in (("restore_sleep_s", sleep_s is not None), ("restore_fail", fail)):
            path = self.clocks / name
            if wanted:
                path.write_text(f"{sleep_s}\n" if name == "restore_sleep_s" else "1\n")
            elif path.exists():
                path.unlink()

    def left_behind(self) -> dict:
        jobs = self.workdir / "jobs"
        return {"state": self.state(), "job folders": sorted(p.name for p in jobs.iterdir()) if jobs.is_dir() else [],
                "processes": processes_inside(self.workdir)}

    def wait_as_found(self, timeout_s: float = 30.0) -> dict:
        """What the device holds once it settled: as found is default clocks and nothing left."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            left = self.left_behind()
            if left == AS_FOUND:
                return left
            time.sleep(0.1)
        return self.left_behind()


AS_FOUND = {"state": "default", "job folders": [], "processes": []}


@pytest.fixture
def jetson(sshd, tmp_path):
    return Jetson(sshd, tmp_path)


@pytest.fixture
def model(tmp_path):
    return tripling_model(tmp_path / "model.onnx")




# ---- the host dies or is interrupted: the real CLI in its own process --------------------------------

def start_cli_bench(jetson: Jetson, model: Path, tmp_path: Path) -> subprocess.Popen:
    fields = jetson.device.model_dump(exclude={"name"}, exclude_none=True)
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(yaml.safe_dump({"devices": {"jet": fields}}))
    env = dict(os.environ, EDGECOMPRESS_DEVICES=str(inventory))
    argv = [sys.executable, "-c", "import sys; from edgecompress.cli import main; sys.exit(main())", "bench",
            str(model), "--device", "jet", "--lock-clocks", "--threads", "1", "--rounds", "1", "--runs", "1",
            "--seconds", "60"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_the_host_killed_or_interrupted_mid_job_leaves_the_clocks_restored(jetson, model, tmp_path, signum):
    host = start_cli_bench(jetson, model, tmp_path)
    try:
        assert wait_until(lambda: jetson.state() == "pinned", 60), host.stderr.read() if host.poll() else "not pinned"
        time.sleep(1.0)  # into the timed runs, whose progress lines go to the host every 0.5 s
        host.send_signal(signum)
        host.wait(timeout=30)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    assert host.returncode == (-signal.SIGKILL if signum == signal.SIGKILL else 130), host.stderr.read()
    assert jetson.wait_as_found() == AS_FOUND
    assert any("restore done (state now: default)" in line for line in jetson.log())
    assert (jetson.workdir / "jetson_clocks.state").read_text() == ""


# ---- the link drops and the host survives: the runner retries ----------------------------------------

def dropping(sshd, what_they_ran: bool, messages: list, times: int = 1):
    """on_progress that kills the sshd session processes a second into the timed runs of each of the
    first `times` attempts."""
    drop = {"armed": True, "left": times}

    def progress(message):
        messages.append(message)
        if message.startswith("connection to device"):  # the runner retries: a new attempt
            drop["armed"] = True
        if message.startswith("timed ") and drop["armed"] and drop["left"] > 0:
            drop.update(armed=False, left=drop["left"] - 1)
            time.sleep(1.0)
            sshd.kill_sessions(what_they_ran=what_they_ran)
    return progress


def test_a_dropped_link_is_retried_and_the_retry_never_stores_pinned_clocks(sshd, jetson, model):
    """Only the link dies: the device's agent sees it and the job restores its clocks. The retry
    then stores the default clocks as its baseline, and its result says restored only because they are."""
    messages = []
    result = run_ssh(job(runs={"count": 1, "seconds": 3}, max_runs=10**9), model, device=jetson.device,
                     on_progress=dropping(sshd, False, messages))
    assert any(m.startswith("connection to device jet dropped while running") for m in messages)
    stores = [line for line in jetson.log() if line.startswith("jetson_clocks --store")]
    assert len(stores) == 2 and all(line.endswith("(state default)") for line in stores), jetson.log()
    device = result["device"]
    assert device["clocks_locked"] is True and device["clocks_restored"] is True
    assert any("clocks default" in line for line in device["jetson_clocks_show_before"])
    assert jetson.wait_as_found() == AS_FOUND


def test_a_drop_that_kills_the_job_too_is_restored_by_the_next_job_before_it_stores(sshd, jetson, model):
    """The session and everything it ran die at once (as on an OOM kill): no restore can run there.
    The retry's agent restores the pinned clocks from the store kept in the workdir first."""
    messages = []
    result = run_ssh(job(runs={"count": 1, "seconds": 3}, max_runs=10**9), model, device=jetson.device,
                     on_progress=dropping(sshd, True, messages))
    log = jetson.log()
    first_restore = next(i for i, line in enumerate(log) if line.startswith("jetson_clocks --restore"))
    second_store = [i for i, line in enumerate(log) if line.startswith("jetson_clocks --store")][1]
    assert log[first_restore].endswith("(state pinned)") and first_restore < second_store
    assert log[second_store].endswith("(state default)"), log
    assert any(m.startswith("device jet: restoring the Jetson clocks an earlier job left pinned") for m in messages)
    assert any(w.startswith("the Jetson clocks an earlier job left pinned") for w in result["warnings"])
    assert result["device"]["clocks_restored"] is True
    assert any("clocks default" in line for line in result["device"]["jetson_clocks_show_before"])
    assert jetson.wait_as_found() == AS_FOUND


def test_a_link_that_drops_twice_is_reported_with_the_restore_command_and_the_device_restores(sshd, jetson,
                                                                                             model):
    with pytest.raises(DeviceError) as caught:
        run_ssh(job(**LONG), model, device=jetson.device, on_progress=dropping(sshd, False, [], times=2))
    assert "again after one retry on a new connection" in str(caught.value)
    assert f"run `sudo jetson_clocks --restore {jetson.workdir / 'jetson_clocks.store'}` on it" in str(caught.value)
    assert jetson.wait_as_found() == AS_FOUND


# ---- slow and failed restores ------------------------------------------------------------------------

def test_a_restore_slower_than_the_old_grace_finishes_after_a_job_timeout(jetson, model):
    jetson.restore(sleep_s=7)  # the agent used to SIGKILL the job 5 s after its SIGTERM
    started, messages = time.monotonic(), []
    with pytest.raises(DeviceError) as caught:
        run_ssh(job(**LONG), model, device=jetson.device, timeout_s=4, on_progress=messages.append)
    assert "did not finish within the job timeout of 4 s and was killed" in str(caught.value)
    assert "job timeout: stopping the job on device jet, which restores the Jetson clocks first (up to 75 s)" \
        in messages
    assert "may still be pinned" not in str(caught.value)
    assert time.monotonic() - started < 40
    assert jetson.wait_as_found() == AS_FOUND
    assert any("restore done (state now: default)" in line for line in jetson.log())


def test_a_failed_restore_says_the_clocks_may_be_pinned_and_the_next_job_restores_them(jetson, model):
    jetson.restore(fail=True)
    with pytest.raises(DeviceError) as caught:
        run_ssh(job(**LONG), model, device=jetson.device, timeout_s=4)
    store = jetson.workdir / "jetson_clocks.store"
    assert f"the Jetson clocks may still be pinned: run `sudo jetson_clocks --restore {store}`" in str(caught.value)
    assert jetson.state() == "pinned" and store.read_text().strip() == "default"  # the store is kept

    with pytest.raises(DeviceError) as caught:  # the device stays refused while they cannot be restored
        run_ssh(job(), model, device=jetson.device)
    assert "an earlier job left its Jetson clocks pinned" in str(caught.value)
    assert f"run `sudo jetson_clocks --restore {store}` on the device" in str(caught.value)
    assert not any(line.count("--store") for line in jetson.log()[-3:])

    jetson.restore()
    result = run_ssh(job(), model, device=jetson.device)
    assert any(w.startswith("the Jetson clocks an earlier job left pinned") for w in result["warnings"])
    assert any("clocks default" in line for line in result["device"]["jetson_clocks_show_before"])
    assert jetson.wait_as_found() == AS_FOUND


def test_the_agent_never_hands_root_a_store_file_another_account_could_write(jetson, model):
    jetson.workdir.mkdir()
    (jetson.workdir / "jetson_clocks.state").write_text(json.dumps({"pid": 4242}))
    store = jetson.workdir / "jetson_clocks.store"
    store.write_text("/etc/passwd:owned\n")
    store.chmod(0o666)
    with pytest.raises(DeviceError, match="an earlier job left its Jetson clocks pinned.*refusing to hand"):
        run_ssh(job(), model, device=jetson.device)
    assert not any("--restore" in line for line in jetson.log())


def test_a_job_that_locks_clocks_gets_a_grace_longer_than_the_restore_timeout():
    sys.path.insert(0, str(AGENT.parents[1] / "deploy"))
    import ec_clocks

    assert ssh.CLOCKS_TERM_GRACE_S > ec_clocks.COMMAND_TIMEOUT_S
    assert ssh.CLOCKS_STORE == ec_clocks.STORE_FILE
    agent = AGENT.read_text()
    for name in ("STATE_FILE", "STORE_FILE", "STATE_DIR_ENV", "COMMAND_TIMEOUT_S"):
        assert repr(getattr(ec_clocks, name)).replace("'", '"') in agent, name


# ---- one workdir, two device accounts ----------------------------------------------------------------

SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"


def agent(workdir: Path, as_nobody: bool, umask: int = 0o077) -> subprocess.Popen:
    config = {"workdir": str(workdir), "lock": True, "wait_s": 20, "owner": {"host": "h", "pid": 1, "user": "u"},
              "kill_after_s": 30}
    argv = [SYSTEM_PYTHON, str(AGENT), json.dumps(config)]
    return subprocess.Popen((SETPRIV if as_nobody else []) + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.umask(umask))


@pytest.mark.skipif(os.geteuid() != 0 or not Path(SYSTEM_PYTHON).is_file(),
                    reason="needs root, to run the second account (nobody) with setpriv")
def test_two_accounts_share_one_workdir_and_its_lock():
    shared = Path(tempfile.mkdtemp(prefix="ec-shared-"))
    try:
        shared.chmod(0o1777)  # as an admin prepares it
        first = agent(shared, as_nobody=False)  # root holds the device first, with a tight umask
        assert first.stdout.readline().startswith("@ec-agent ready ")
        for name in ("device.lock", "jobs.lock"):
            assert (shared / name).stat().st_mode & 0o777 == 0o666, name
        assert (shared / "jobs").stat().st_mode & 0o7777 == 0o1777

        second = agent(shared, as_nobody=True)
        busy = second.stdout.readline()
        assert busy.startswith("@ec-agent busy ") and json.loads(busy.split(" ", 2)[2])["user"] == "u", \
            busy + second.stderr.read()
        first.stdin.close()  # the first job's host is gone: its agent ends, the lock goes
        assert first.wait(timeout=20) == 5
        ready = second.stdout.readline()
        assert ready.startswith("@ec-agent ready "), ready + second.stderr.read()
        folder = Path(json.loads(ready.split(" ", 2)[2])["folder"])
        assert folder.parent == shared / "jobs" and folder.stat().st_uid != 0
        second.stdin.close()
        assert second.wait(timeout=20) == 5 and not folder.exists()
    finally:
        for process in (p for p in locals().values() if isinstance(p, subprocess.Popen)):
            if process.poll() is None:
                process.kill()
                process.wait()
        subprocess.run(["rm", "-rf", str(shared)], check=False)


@pytest.mark.skipif(os.geteuid() != 0 or not Path(SYSTEM_PYTHON).is_file(),
                    reason="needs root, to run the second account (nobody) with setpriv")
def test_a_lock_file_an_older_agent_kept_private_is_named_with_the_command_that_shares_it():
    shared = Path(tempfile.mkdtemp(prefix="ec-shared-"))
    try:
        shared.chmod(0o1777)
        (shared / "device.lock").write_text("")
        (shared / "device.lock").chmod(0o600)
        second = agent(shared, as_nobody=True)
        out, _ = second.communicate(timeout=20)
        assert second.returncode == 2
        assert f"cannot open it: its owner can share it with `chmod 666 {shared / 'device.lock'}`" in out, out
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)
