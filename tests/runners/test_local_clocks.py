"""A local job keeps the jetson_clocks store outside its job folder (the folder goes with the job, so a
SIGKILLed local job on a Jetson would leave nothing for the next job to restore from)."""
import json
import os
import stat
import sys

from edgecompress.procs import pid_alive
from edgecompress.runners import local


def test_a_local_job_is_told_a_lasting_private_folder_for_the_clocks_store(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGECOMPRESS_CLOCKS_DIR", raising=False)
    script = "import json, os; print(json.dumps({'dir': os.environ.get('EDGECOMPRESS_CLOCKS_DIR')}))"
    code, streams = local.run_process([sys.executable, "-c", script], tmp_path, None, 30)
    assert code == 0
    told = json.loads(streams.stdout[-1])["dir"]
    assert told == str(tmp_path / "cache" / "clocks") and not told.startswith(str(tmp_path / "job"))
    assert stat.S_IMODE(os.stat(told).st_mode) == 0o700


def test_the_device_side_ends_when_the_host_is_killed(tmp_path):
    """kill -9 of the host: the local device side gets SIGTERM (restoring what it changed) instead of
    running on in its own session (the fault suite found its job folder left behind)."""
    import signal
    import subprocess
    import time

    child = "import os, time; open('child.pid', 'w').write(str(os.getpid())); time.sleep(60)"
    host = ("import sys; from pathlib import Path; from edgecompress.runners import local; "
            f"local.run_process([sys.executable, '-c', {child!r}], Path({str(tmp_path)!r}), None, 120)")
    proc = subprocess.Popen([sys.executable, "-c", host])
    pid_file = tmp_path / "child.pid"
    deadline = time.time() + 30
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and pid_alive(child_pid):
        time.sleep(0.05)
    assert not pid_alive(child_pid)


def test_job_folders_of_a_dead_host_are_removed_and_a_live_ones_kept(tmp_path):
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "edgecompress-job-dead").mkdir()
    (tmp_path / "edgecompress-job-dead" / local.OWNER_FILE).write_text(str(dead.pid))
    (tmp_path / "edgecompress-job-live").mkdir()
    (tmp_path / "edgecompress-job-live" / local.OWNER_FILE).write_text(str(os.getpid()))
    local.remove_stale_job_folders(tmp_path)
    assert not (tmp_path / "edgecompress-job-dead").exists() and (tmp_path / "edgecompress-job-live").exists()
