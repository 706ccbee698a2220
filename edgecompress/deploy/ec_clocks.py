"""Jetson clocks pinned for a job (`lock_clocks: true`): record the power mode, store the clock
settings, run `jetson_clocks`, and always restore them afterwards. Standard library only, Python >= 3.8.

Commands (../shared/reference/devices.md): `nvpmodel -q` prints the power mode (`NV Power Mode: 25W`
then its id `1` on the next line, as public logs show), `jetson_clocks --store FILE` / `--restore FILE`
save and restore the settings, `jetson_clocks` pins the maximum clocks of the current mode, `--show`
prints governors and frequencies. They are looked up on PATH (tests put fakes there); when this
process is not root they run through `sudo -n`, which fails at once, with sudo's reason, where no
password-less rule allows them.

The restore runs on success, on an exception, and on SIGTERM, SIGINT or SIGHUP: handlers raise
Interrupted in the main thread, the `finally` restores (deferring further signals until it is done),
and ec_bench then exits 128 + signal. A closed stderr (the link to the host dropped) cannot stop it:
progress lines are best effort, and the restore runs before its message is written.

What the restore needs lives outside the job folder, in the state folder ($EDGECOMPRESS_CLOCKS_DIR,
which ssh_agent sets to the workdir; else the job folder): the stored settings (`jetson_clocks.store`)
and a record (`jetson_clocks.state`) that is non-empty from the store until a restore succeeded. A
record found at the start of a job means an earlier job was killed (SIGKILL, OOM) or failed to
restore: its stored settings are restored first, before anything is stored again, so pinned clocks
are never taken as the baseline. ssh_agent does the same when it takes the device lock.
"""
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

STORE_FILE = "jetson_clocks.store"
STATE_FILE = "jetson_clocks.state"  # ssh_agent.CLOCKS_STATE_FILE
STATE_DIR_ENV = "EDGECOMPRESS_CLOCKS_DIR"  # ssh_agent.CLOCKS_DIR_ENV
COMMAND_TIMEOUT_S = 60
SHOW_LINES = 60
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
POWER_MODE = re.compile(r"NV Power Mode:\s*(.+?)\s*$")


class ClockError(RuntimeError):
    """Clocks could not be locked or restored; the message names the command and what it printed."""


class Interrupted(BaseException):
    """A termination signal arrived while clocks were locked (BaseException: no `except Exception`
    on the way may swallow it); raised after the clocks were restored."""

    def __init__(self, signum):
        BaseException.__init__(self, signum)
        self.signum, self.restored = signum, None

    def __str__(self):
        said = {True: "; Jetson clocks were restored", False: "; restoring the Jetson clocks FAILED", None: ""}
        return "interrupted by %s%s" % (signal.Signals(self.signum).name, said[self.restored])


def progress(message):
    """A progress line on stderr, best effort: when the host's end is gone (BrokenPipeError) the job
    must still get to its restore."""
    try:
        sys.stderr.write("progress: " + message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def parse_nvpmodel(text):
    """{"mode_name", "mode_id"} from `nvpmodel -q` (also with --verbose's NVPM lines around it)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        match = POWER_MODE.search(line)
        if match:
            following = lines[i + 1] if i + 1 < len(lines) else ""
            return {"mode_name": match.group(1), "mode_id": int(following) if following.isdigit() else None}
    return {"mode_name": None, "mode_id": None}


def as_root(argv):
    """argv, through `sudo -n` when this process is not root (sudo looked up on PATH)."""
    if os.geteuid() == 0:
        return list(argv)
    sudo = shutil.which("sudo")
    if sudo is None:
        raise ClockError("%s needs root, this job runs as uid %d and there is no sudo" % (argv[0], os.geteuid()))
    return [sudo, "-n"] + list(argv)


def run(argv):
    """(exit code, output) of a command; exit code None when it could not run or timed out."""
    try:
        # its own session: the agent's SIGTERM/SIGKILL of the job's group must not cut a restore short
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              errors="replace", timeout=COMMAND_TIMEOUT_S, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    return done.returncode, done.stdout


def checked(argv, what):
    code, out = run(argv)
    if code != 0:
        raise ClockError("%s failed (%s): `%s`: %s" % (what, "exit %s" % code if code is not None else "did not run",
                                                      " ".join(argv), out.strip()[-800:] or "no output"))
    return out


def power_mode():
    """nvpmodel's mode, or {"error": why} (the mode is recorded, not required)."""
    nvpmodel = shutil.which("nvpmodel")
    if nvpmodel is None:
        return {"mode_name": None, "mode_id": None, "error": "nvpmodel not on PATH"}
    code, out = run([nvpmodel, "-q"])
    if code != 0:
        return {"mode_name": None, "mode_id": None, "error": "nvpmodel -q exit %s: %s" % (code, out.strip()[-300:])}
    return parse_nvpmodel(out)


def show(jetson_clocks):
    """`jetson_clocks --show` lines, or None when it cannot say."""
    code, out = run(as_root([jetson_clocks, "--show"]))
    return out.strip().splitlines()[:SHOW_LINES] if code == 0 else None


class _Guard(object):
    """Signal handlers that raise Interrupted, or only note the signal while the restore runs."""

    def __init__(self):
        self.received, self.deferring, self.previous = None, False, {}

    def handle(self, signum, frame):
        if self.received is None:
            self.received = signum
        if not self.deferring:
            raise Interrupted(signum)

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; ec_bench locks from it
        for signum in SIGNALS:
            self.previous[signum] = signal.signal(signum, self.handle)

    def uninstall(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def state_dir(folder):
    """Where the store file and its record live: outside the job folder when the agent says where."""
    return os.environ.get(STATE_DIR_ENV) or folder


def open_shared(path, flags):
    """fd of a file that several device accounts share (mode 0666 whatever the umask). Existing files
    are opened without O_CREAT: a sticky folder (fs.protected_regular) refuses O_CREAT on others' files."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW)
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    except FileExistsError:
        return os.open(path, flags | os.O_NOFOLLOW)
    os.fchmod(fd, 0o666)
    return fd


def read_record(directory):
    """The record of clocks a job pinned and has not restored yet, or None."""
    try:
        with open(os.path.join(directory, STATE_FILE)) as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = {}
    return record if isinstance(record, dict) else {}


def write_record(directory, record):
    """Record (or, with None, clear) pinned clocks; truncating, not deleting: another account may
    have created the file in a shared sticky workdir."""
    fd = open_shared(os.path.join(directory, STATE_FILE), os.O_WRONLY)
    try:
        os.ftruncate(fd, 0)
        if record is not None:
            os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def unsafe_store(path):
    """Why the store file must not go to a root `jetson_clocks --store/--restore`, or None. The
    restore writes each stored value to its stored path as root, so in a workdir that other accounts
    can write to, the file must be root's (jetson_clocks runs as root) or this account's own, and
    writable by its owner alone."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return "%s is not a regular file" % path
    if info.st_uid not in (0, os.geteuid()):
        return "%s belongs to uid %d, neither root nor this account" % (path, info.st_uid)
    if info.st_mode & 0o022:
        return "%s can be written by other accounts (mode %03o)" % (path, stat.S_IMODE(info.st_mode))
    return None


def check_store(path):
    reason = unsafe_store(path)
    if reason is not None:
        raise ClockError("refusing to hand the clocks' store file to jetson_clocks as root: %s; remove it (the "
                         "clocks it held, if any, must then be set again by hand)" % reason)


def restore_command(store):
    return "sudo jetson_clocks --restore %s" % shlex.quote(store)


def restore_stale(jetson_clocks, directory):
    """Restore what an earlier job stored and never restored; the record it left, or None."""
    record = read_record(directory)
    if record is None:
        return None
    store = os.path.join(directory, STORE_FILE)
    check_store(store)
    try:
        checked(as_root([jetson_clocks, "--restore", store]), "restoring the clocks an earlier job left pinned")
    except ClockError as e:
        raise ClockError("%s; nothing was stored or measured, so the pinned clocks are not taken as the baseline: "
                         "run `%s` on the device, then try again" % (e, restore_command(store)))
    write_record(directory, None)
    progress("restored the Jetson clocks an earlier job left pinned (pid %s, since %s)"
             % (record.get("pid", "?"), record.get("since", "?")))
    return record


def restore(jetson_clocks, directory, guard):
    """jetson_clocks --restore, signals deferred, and only then its message (stderr may be gone);
    the record is cleared once it worked. ClockError when it fails."""
    guard.deferring = True
    store = os.path.join(directory, STORE_FILE)
    checked(as_root([jetson_clocks, "--restore", store]), "restoring the clocks (jetson_clocks --restore)")
    write_record(directory, None)
    progress("restored Jetson clocks from %s" % store)


def store_and_record(jetson_clocks, directory):
    """jetson_clocks --store, then the record: from here on a killed job is restored by the next one."""
    store = os.path.join(directory, STORE_FILE)
    check_store(store)  # root writes into an existing file: it must not be another account's
    checked(as_root([jetson_clocks, "--store", store]), "storing the clocks (jetson_clocks --store)")
    write_record(directory, {"pid": os.getpid(), "uid": os.geteuid(), "store": store, "since_epoch": time.time(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})


@contextlib.contextmanager
def locked(folder):
    """Clocks pinned by jetson_clocks for the body, restored after it whatever happens. Yields the
    state for the result's `device`: clocks_locked, nvpmodel, jetson_clocks_show_before/_locked,
    stale_clocks_restored (the record of an earlier job's pinned clocks restored first, or None);
    `clocks_restored` is set once the restore ran."""
    jetson_clocks = shutil.which("jetson_clocks")
    if jetson_clocks is None:
        raise ClockError("lock_clocks asked, but there is no jetson_clocks on PATH: it comes with JetPack (L4T) on "
                         "Jetson devices only; leave lock_clocks out on other devices")
    directory = state_dir(folder)
    stale = restore_stale(jetson_clocks, directory)  # before the baseline is read or stored
    state = {"clocks_locked": False, "clocks_restored": False, "nvpmodel": power_mode(),
             "jetson_clocks_show_before": show(jetson_clocks), "jetson_clocks_show_locked": None,
             "stale_clocks_restored": stale}
    guard = _Guard()
    guard.install()
    try:
        store_and_record(jetson_clocks, directory)
    except BaseException:
        guard.uninstall()  # nothing was changed yet, so nothing to restore
        raise
    body_failed = True
    try:
        progress("locking Jetson clocks (power mode %s)" % state["nvpmodel"].get("mode_name"))
        checked(as_root([jetson_clocks]), "locking the clocks (jetson_clocks)")
        state["clocks_locked"] = True
        state["jetson_clocks_show_locked"] = show(jetson_clocks)
        yield state
        body_failed = False
    finally:
        in_flight = sys.exc_info()[1]
        try:
            restore(jetson_clocks, directory, guard)
            state["clocks_restored"] = True
        except ClockError as e:
            message = "%s; the clocks may still be pinned: run `%s`" % (
                e, restore_command(os.path.join(directory, STORE_FILE)))
            if not body_failed:
                raise ClockError(message)
            progress("%s (the job failed as well)" % message)
        finally:
            guard.uninstall()
            if isinstance(in_flight, Interrupted):
                in_flight.restored = state["clocks_restored"]
        if guard.received is not None and not body_failed:
            raise Interrupted(guard.received)  # a signal during the restore: finish with it now
