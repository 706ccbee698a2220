"""The device end of the ssh runner: `PYTHON -c SOURCE CONFIG_JSON`, started by ssh.py.

Standard library only, Python >= 3.8, never imports edgecompress: ssh.py sends this file's source
as the `-c` argument, so it runs before any job folder exists. It does the steps that must happen
on the device, in this order:

1. the device lock (`lock: true`): flock on WORKDIR/device.lock, held until the job's process has
   gone. The kernel drops a flock when its holders die, so a lock can never go stale; the holder's
   account writes its owner (host, pid, since) to WORKDIR/device.owner.UID.json for whoever waits.
   While waiting it reports `busy`, and gives up after `wait_s`.
2. Jetson clocks an earlier job pinned and never restored (its record WORKDIR/jetson_clocks.state is
   not empty: it was killed, or its restore failed) are restored from WORKDIR/jetson_clocks.store,
   before any job runs (`restoring_clocks`; `clocks_pinned` when that fails, and no job runs).
3. stale job folders: each job folder holds a flock on its own `.ec-lock` for as long as its agent
   or job process lives; a folder whose lock can be taken was left by a killed connection, and goes.
4. a fresh job folder WORKDIR/jobs/job-XXXX, mode 700 (mkdtemp), reported as `ready`.
5. on `{"run": [script, args...]}` from the host, runs `python script args...` in the folder in its
   own session (so one killpg ends it and anything it started), with $EDGECOMPRESS_CLOCKS_DIR set to
   the workdir (ec_clocks keeps its store there, where it outlives the folder). The job's stdout and
   stderr are pipes this agent copies to its own: when the link drops the job never sees EPIPE, and
   the agent keeps reading while the job restores what it changed.
6. when the job ends (`exit CODE`), or the host says `kill`, or `kill_after_s` passed (a backstop
   for a host that vanished without the connection closing), or the host's side of stdin closes
   (the connection died), or a SIGHUP/SIGTERM comes: SIGTERM to the job's process group, SIGKILL
   after `term_grace_s` (the host gives a job that locks clocks longer than its restore may take),
   `clocks_pinned` if the job's clock record is still set, remove the folder, exit.

Several device accounts can share one workdir (made `mkdir -m 1777` by an admin): the lock files
are mode 0666 and opened read-only for flock, jobs/ is sticky (1777) with each account's folders
mode 700, and each account cleans only its own stale folders.

Messages to the host are stdout lines starting with PREFIX; the job's own stdout comes between
`started` and `exit`."""
import errno
import fcntl
import json
import os
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

PREFIX = "@ec-agent "
POLL_S = 0.2
BUSY_EVERY_S = 5.0
FOLDER_LOCK = ".ec-lock"
UNLOCKED_FOLDER_GRACE_S = 600.0  # a folder without its lock file is stale only when this old
CLOCKS_DIR_ENV = "EDGECOMPRESS_CLOCKS_DIR"  # ec_clocks.STATE_DIR_ENV
CLOCKS_STATE_FILE = "jetson_clocks.state"  # ec_clocks.STATE_FILE
CLOCKS_STORE_FILE = "jetson_clocks.store"  # ec_clocks.STORE_FILE
CLOCKS_COMMAND_TIMEOUT_S = 60  # ec_clocks.COMMAND_TIMEOUT_S
OWNER_FILE = "device.owner.%d.json"  # per account: nobody can forge another account's record
DRAIN_S = 2.0  # for the job's last output once it exited


class HostGone(Exception):
    """stdin closed: the connection died or the host gave up."""


_stdout = {"mid_line": False}  # the relayed job output ended without a newline


def say(kind, payload=None):
    line = PREFIX + kind + ("" if payload is None else " " + json.dumps(payload))
    try:
        sys.stdout.write(("\n" if _stdout["mid_line"] else "") + line + "\n")
        sys.stdout.flush()
        _stdout["mid_line"] = False
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


def open_shared(path, flags=os.O_RDONLY):
    """fd of a file several device accounts share, mode 0666 whatever the umask. An existing file is
    opened without O_CREAT: a sticky folder (fs.protected_regular) refuses O_CREAT on others' files."""
    try:
        return open_existing(path, flags)
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    except FileExistsError:
        return open_existing(path, flags)
    os.fchmod(fd, 0o666)
    return fd


def open_existing(path, flags):
    try:
        return os.open(path, flags | os.O_NOFOLLOW)
    except PermissionError:
        info = os.stat(path)
        raise PermissionError("%s belongs to uid %d with mode %03o (made before workdirs could be shared), so "
                              "uid %d cannot open it: its owner can share it with `chmod 666 %s`"
                              % (path, info.st_uid, stat.S_IMODE(info.st_mode), os.geteuid(), path))


def read_json(path):
    try:
        with open(path) as f:
            return json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None


def read_owner(workdir):
    """The newest owner record of any account (and of device.lock itself, where older agents
    wrote it)."""
    names = [n for n in os.listdir(workdir) if n.startswith("device.owner.")] + ["device.lock"]
    owners = [read_json(os.path.join(workdir, n)) for n in names]
    owners = [o for o in owners if isinstance(o, dict)]
    return max(owners, key=lambda o: o.get("since_epoch") or 0) if owners else None


def write_owner(workdir, owner):
    path = os.path.join(workdir, OWNER_FILE % os.geteuid())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.fchmod(fd, 0o644)  # readable by the other accounts that wait
        os.write(fd, json.dumps(owner).encode())
    finally:
        os.close(fd)


def with_age(owner):
    if isinstance(owner, dict) and isinstance(owner.get("since_epoch"), (int, float)):
        owner = dict(owner, busy_s=round(time.time() - owner["since_epoch"], 1))
    return owner


def take_device_lock(workdir, owner, wait_s, stdin):
    """The fd holding the device lock; reports `busy` while another job holds it."""
    fd = open_shared(os.path.join(workdir, "device.lock"))
    started = time.monotonic()
    failures, last_said, last_owner = 0, None, None
    while not try_flock(fd):
        failures += 1
        now = time.monotonic()
        holder = read_owner(workdir)
        # the first failure is not reported: a probe peeks at the lock for a few microseconds
        if failures > 1 and (last_said is None or holder != last_owner or now - last_said >= BUSY_EVERY_S):
            say("busy", with_age(holder))
            last_said, last_owner = now, holder
        if now - started >= wait_s:
            say("gaveup", with_age(holder))
            sys.exit(3)
        if stdin.poll(POLL_S) == "kill":
            raise HostGone()
    write_owner(workdir, dict(owner, agent_pid=os.getpid(), since_epoch=time.time(),
                              since=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())))
    return fd


def peek_device_lock(workdir):
    """The lock's owner when a job holds it, else None (for a probe, which takes no lock)."""
    fd = open_shared(os.path.join(workdir, "device.lock"))
    try:
        if try_flock(fd):
            return None
        return with_age(read_owner(workdir)) or {}
    finally:
        os.close(fd)  # also releases the lock if we took it


def clock_record(workdir):
    """The record of Jetson clocks a job pinned and has not restored (ec_clocks), or None."""
    record = read_json(os.path.join(workdir, CLOCKS_STATE_FILE))
    if record is None:
        return None
    return dict(record if isinstance(record, dict) else {}, store=os.path.join(workdir, CLOCKS_STORE_FILE),
                command="sudo jetson_clocks --restore %s" % shlex.quote(os.path.join(workdir, CLOCKS_STORE_FILE)))


def unsafe_store(path):
    """ec_clocks.unsafe_store: root's restore writes the stored values to the stored paths, so the
    file must be root's or this account's, writable by its owner alone."""
    try:
        info = os.lstat(path)
    except OSError:
        return None  # jetson_clocks says what is missing
    if not stat.S_ISREG(info.st_mode) or info.st_uid not in (0, os.geteuid()) or info.st_mode & 0o022:
        return ("refusing to hand %s to jetson_clocks as root: it is not a regular file of root or this account "
                "that only its owner can write; remove it" % path)
    return None


def run_restore(store):
    """None when `jetson_clocks --restore STORE` worked, else why not."""
    if unsafe_store(store):
        return unsafe_store(store)
    jetson_clocks = shutil.which("jetson_clocks")
    if jetson_clocks is None:
        return "there is no jetson_clocks on PATH"
    argv = [jetson_clocks, "--restore", store]
    if os.geteuid() != 0:
        argv = ["sudo", "-n"] + argv
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, errors="replace", timeout=CLOCKS_COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "`%s` did not finish: %s" % (" ".join(argv), e)
    if done.returncode != 0:
        return "`%s` failed (exit %d): %s" % (" ".join(argv), done.returncode, done.stdout.strip()[-500:])
    return None


def restore_stale_clocks(workdir):
    """Restore the clocks a killed job left pinned, before any job stores them as its baseline.
    The record (with `error` when that failed), or None when there was nothing to restore."""
    record = clock_record(workdir)
    if record is None:
        return None
    say("restoring_clocks", record)
    record["error"] = run_restore(record["store"])
    if record["error"] is None:
        fd = open_shared(os.path.join(workdir, CLOCKS_STATE_FILE), os.O_WRONLY)
        try:
            os.ftruncate(fd, 0)  # emptied, not removed: it may be another account's file
        finally:
            os.close(fd)
    return record


def remove_stale(jobs):
    """Remove job folders that no living agent or job holds; returns their names."""
    removed = []
    for name in sorted(os.listdir(jobs)):
        folder = os.path.join(jobs, name)
        if not name.startswith("job-") or not os.path.isdir(folder):
            continue
        if os.stat(folder).st_uid != os.geteuid():
            continue  # another account's: only it can remove it, on its next connect
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
    os.makedirs(jobs, exist_ok=True)
    if os.stat(jobs).st_uid == os.geteuid():
        os.chmod(jobs, 0o1777)  # sticky, like /tmp: every account adds its own private folders
    elif not os.access(jobs, os.W_OK | os.X_OK):
        raise PermissionError("%s belongs to uid %d, so uid %d cannot add its job folder there: its owner can "
                              "share it with `chmod 1777 %s`" % (jobs, os.stat(jobs).st_uid, os.geteuid(), jobs))
    mutex = open_shared(os.path.join(workdir, "jobs.lock"))
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        removed = remove_stale(jobs)
        folder = tempfile.mkdtemp(prefix="job-", dir=jobs)  # mode 700
        fd = os.open(os.path.join(folder, FOLDER_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        os.close(mutex)
    return folder, fd, removed


TERM_GRACE_S = 5.0  # SIGTERM -> SIGKILL when the host names no other (a job that locks no clocks)


class Relay:
    """The job's stdout and stderr, copied to this agent's own. The job writes into pipes that this
    process reads, so a dropped link reaches it as a SIGTERM, never as EPIPE half-way through its
    restore; once the host is gone the output is read and dropped."""

    def __init__(self, child):
        self.targets = {child.stdout.fileno(): 1, child.stderr.fileno(): 2}
        self.pipes = [child.stdout, child.stderr]
        self.host_gone = False

    def pump(self, timeout):
        """Copy whatever the job wrote within timeout; False once both pipes are closed."""
        if not self.targets:
            time.sleep(timeout)
            return False
        ready, _, _ = select.select(list(self.targets), [], [], timeout)
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                del self.targets[fd]
            else:
                self.forward(self.targets[fd], data)
        return bool(self.targets)

    def forward(self, target, data):
        if self.host_gone:
            return
        if target == 1:
            _stdout["mid_line"] = not data.endswith(b"\n")
        try:
            while data:
                data = data[os.write(target, data):]
        except OSError:
            self.host_gone = True

    def drain(self, seconds):
        end = time.monotonic() + seconds
        while self.pump(POLL_S) and time.monotonic() < end:
            pass
        for pipe in self.pipes:
            pipe.close()


def kill_group(child, relay, grace_s):
    """End the job and anything it started (its session's group), also after it exited. SIGTERM
    first, so the job can restore what it changed (Jetson clocks), reading its output meanwhile so
    it never blocks on a full pipe; SIGKILL after grace_s."""
    if child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGTERM)
        except OSError:
            pass
        end = time.monotonic() + grace_s
        while child.poll() is None and time.monotonic() < end:
            relay.pump(POLL_S)
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:  # nothing left in the group
        pass
    child.wait()


def run_job(argv, folder, held_fds, stdin, config):
    """Exit code of the job, or None when it was killed: the host asked, or kill_after_s passed
    (the host enforces the job timeout; this is the backstop for a host that vanished silently)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    env[CLOCKS_DIR_ENV] = config["workdir"]
    grace_s = float(config.get("term_grace_s", TERM_GRACE_S))
    sys.stdout.flush()
    # the job inherits the lock fds: the device stays locked while it lives, even if this agent dies
    child = subprocess.Popen([sys.executable] + list(argv), cwd=folder, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                             pass_fds=held_fds)
    relay = Relay(child)
    try:
        say("started", child.pid)
        deadline = time.monotonic() + config["kill_after_s"]
        while child.poll() is None:
            relay.pump(POLL_S)
            if stdin.poll(0.0) == "kill" or time.monotonic() > deadline:
                kill_group(child, relay, grace_s)
                return None
        return child.returncode
    finally:
        kill_group(child, relay, grace_s)  # leftovers of a finished job; otherwise the host is gone or we failed
        relay.drain(DRAIN_S)


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
    """The first hang-up or SIGTERM ends the job; later ones must not cut its restore short."""
    signal.signal(signum, signal.SIG_IGN)
    raise HostGone()


def main(config):
    # a hang-up or a polite kill ends the job too; handlers (unlike SIG_IGN) do not reach the job
    signal.signal(signal.SIGHUP, host_gone)
    signal.signal(signal.SIGTERM, host_gone)
    stdin = Stdin()
    workdir = os.path.abspath(os.path.expanduser(config["workdir"]))
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    config = dict(config, workdir=workdir)
    held, busy, restored = [], None, None
    if config["lock"]:
        held.append(take_device_lock(workdir, config["owner"], config["wait_s"], stdin))
        restored = restore_stale_clocks(workdir)
        if restored is not None and restored["error"]:
            say("clocks_pinned", restored)
            return 3
    else:
        busy = peek_device_lock(workdir)
    folder, fd, removed = new_job_folder(workdir)
    held.append(fd)
    try:
        say("ready", {"folder": folder, "removed_stale": removed, "busy": busy, "restored_clocks": restored})
        code = run_job(wait_for_run(stdin), folder, held, stdin, config)
        pinned = clock_record(workdir) if config["lock"] else None
        if pinned is not None:  # the job could not restore (killed, or its restore failed)
            say("clocks_pinned", pinned)
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
