"""The device end of the ssh runner: `PYTHON -c SOURCE CONFIG_JSON`, started by ssh.py.

Standard library only, Python >= 3.8, never imports edgecompress: ssh.py sends this file's source
as the `-c` argument, so it runs before any job folder exists. It does the steps that must happen
on the device, in this order:

1. the device lock (`lock: true`): flock on WORKDIR/device.lock, held until the job's process has
   gone. The kernel drops a flock when its holders die, so a lock can never go stale; the file
   holds its owner (host, pid, since) for whoever waits. While waiting it reports `busy`, and gives
   up after `wait_s`.
2. stale job folders: each job folder holds a flock on its own `.ec-lock` for as long as its agent
   or job process lives; a folder whose lock can be taken was left by a killed connection, and goes.
3. a fresh job folder WORKDIR/jobs/job-XXXX, mode 700 (mkdtemp), reported as `ready`.
4. on `{"run": [script, args...]}` from the host, runs `python script args...` in the folder in its
   own session (so one killpg ends it and anything it started); its stdout and stderr are this
   process's, so the result and progress lines go straight to the host.
5. when the job ends (`exit CODE`), or the host says `kill`, or `kill_after_s` passed (a backstop
   for a host that vanished without the connection closing), or the host's side of stdin closes
   (the connection died), or a SIGHUP/SIGTERM comes: kill the job's process group, remove the
   folder, exit.

Messages to the host are stdout lines starting with PREFIX; the job's own stdout comes between
`started` and `exit`."""
import errno
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PREFIX = "@ec-agent "
POLL_S = 0.2
BUSY_EVERY_S = 5.0
FOLDER_LOCK = ".ec-lock"
UNLOCKED_FOLDER_GRACE_S = 600.0  # a folder without its lock file is stale only when this old


class HostGone(Exception):
    """stdin closed: the connection died or the host gave up."""


def say(kind, payload=None):
    line = PREFIX + kind + ("" if payload is None else " " + json.dumps(payload))
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        raise HostGone()


class Stdin:
    """Host commands, one per line, read without blocking so the agent notices EOF at once."""

    def __init__(self):
        self.buffer = b""

    def poll(self, timeout):
        """The next complete line (str), None when none came within timeout; HostGone at EOF."""
        if b"\n" not in self.buffer:
            ready, _, _ = select.select([0], [], [], timeout)
            if ready:
                data = os.read(0, 65536)
                if not data:
                    raise HostGone()
                self.buffer += data
        if b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            return line.decode("utf-8", "replace").strip()
        return None


def try_flock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


def read_owner(path):
    try:
        with open(path) as f:
            return json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None


def with_age(owner):
    if isinstance(owner, dict) and isinstance(owner.get("since_epoch"), (int, float)):
        owner = dict(owner, busy_s=round(time.time() - owner["since_epoch"], 1))
    return owner


def take_device_lock(path, owner, wait_s, stdin):
    """The fd holding the device lock; reports `busy` while another job holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    started = time.monotonic()
    failures, last_said, last_owner = 0, None, None
    while not try_flock(fd):
        failures += 1
        now = time.monotonic()
        holder = read_owner(path)
        # the first failure is not reported: a probe peeks at the lock for a few microseconds
        if failures > 1 and (last_said is None or holder != last_owner or now - last_said >= BUSY_EVERY_S):
            say("busy", with_age(holder))
            last_said, last_owner = now, holder
        if now - started >= wait_s:
            say("gaveup", with_age(holder))
            sys.exit(3)
        if stdin.poll(POLL_S) == "kill":
            raise HostGone()
    mine = dict(owner, agent_pid=os.getpid(), since_epoch=time.time(),
                since=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(mine).encode(), 0)
    return fd


def peek_device_lock(path):
    """The lock's owner when a job holds it, else None (for a probe, which takes no lock)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if try_flock(fd):
            return None
        return with_age(read_owner(path)) or {}
    finally:
        os.close(fd)  # also releases the lock if we took it


def remove_stale(jobs):
    """Remove job folders that no living agent or job holds; returns their names."""
    removed = []
    for name in sorted(os.listdir(jobs)):
        folder = os.path.join(jobs, name)
        if not name.startswith("job-") or not os.path.isdir(folder):
            continue
        try:
            fd = os.open(os.path.join(folder, FOLDER_LOCK), os.O_RDONLY)
        except OSError:
            if time.time() - os.stat(folder).st_mtime > UNLOCKED_FOLDER_GRACE_S:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(name)
            continue
        try:
            if try_flock(fd):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(name)
        finally:
            os.close(fd)
    return removed


def new_job_folder(workdir):
    """(folder, fd holding its lock, names of stale folders removed), under a short mutex so no
    cleaner sees the new folder before its lock is held."""
    jobs = os.path.join(workdir, "jobs")
    os.makedirs(jobs, mode=0o700, exist_ok=True)
    mutex = os.open(os.path.join(workdir, "jobs.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        removed = remove_stale(jobs)
        folder = tempfile.mkdtemp(prefix="job-", dir=jobs)  # mode 700
        fd = os.open(os.path.join(folder, FOLDER_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        os.close(mutex)
    return folder, fd, removed


TERM_GRACE_S = 5.0


def kill_group(child):
    """End the job and anything it started (its session's group), also after it exited. SIGTERM
    first, so the job can restore what it changed (Jetson clocks), then SIGKILL."""
    if child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(timeout=TERM_GRACE_S)
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:  # nothing left in the group
        pass
    child.wait()


def run_job(argv, folder, held_fds, stdin, kill_after_s):
    """Exit code of the job, or None when it was killed: the host asked, or kill_after_s passed
    (the host enforces the job timeout; this is the backstop for a host that vanished silently)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    sys.stdout.flush()
    # the job inherits the lock fds: the device stays locked while it lives, even if this agent dies
    child = subprocess.Popen([sys.executable] + list(argv), cwd=folder, env=env, stdin=subprocess.DEVNULL,
                             start_new_session=True, pass_fds=held_fds)
    try:
        say("started", child.pid)
        deadline = time.monotonic() + kill_after_s
        while child.poll() is None:
            if stdin.poll(POLL_S) == "kill" or time.monotonic() > deadline:
                kill_group(child)
                return None
        return child.returncode
    finally:
        kill_group(child)  # leftovers of a finished job; otherwise the host is gone or we failed


def wait_for_run(stdin):
    while True:
        line = stdin.poll(3600.0)
        if line == "kill":
            raise HostGone()
        if line:
            return json.loads(line)["run"]


def wait_for_fetch(stdin, wait_s):
    """Keep the folder while the host copies the job's artifacts back (an engine, a cache)."""
    end = time.time() + wait_s
    while time.time() < end:
        if stdin.poll(max(0.0, end - time.time())) in ("done", "kill"):
            return


def host_gone(signum, frame):
    raise HostGone()


def main(config):
    # a hang-up or a polite kill ends the job too; handlers (unlike SIG_IGN) do not reach the job
    signal.signal(signal.SIGHUP, host_gone)
    signal.signal(signal.SIGTERM, host_gone)
    stdin = Stdin()
    workdir = os.path.abspath(os.path.expanduser(config["workdir"]))
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    lock_path = os.path.join(workdir, "device.lock")
    held, busy = [], None
    if config["lock"]:
        held.append(take_device_lock(lock_path, config["owner"], config["wait_s"], stdin))
    else:
        busy = peek_device_lock(lock_path)
    folder, fd, removed = new_job_folder(workdir)
    held.append(fd)
    try:
        say("ready", {"folder": folder, "removed_stale": removed, "busy": busy})
        code = run_job(wait_for_run(stdin), folder, held, stdin, config["kill_after_s"])
        say("killed" if code is None else "exit", code)
        if code is not None and config.get("fetch"):
            wait_for_fetch(stdin, config["kill_after_s"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(json.loads(sys.argv[1])))
    except HostGone:
        sys.exit(5)
    except Exception as e:  # report it in one line; the traceback goes to stderr for the host's tail
        import traceback

        traceback.print_exc()
        try:
            say("error", "%s: %s" % (type(e).__name__, e))
        except HostGone:
            pass
        sys.exit(2)
