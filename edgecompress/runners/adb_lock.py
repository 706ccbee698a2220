"""The adb runner's guards around one job on the phone: the lock (this process's jobs take turns,
then the phone's lock directory, taken over when its holder is dead or past its time), the recovery
of what dead jobs left, the host's heartbeat for the phone-side watchdog, and the cleanup that
restores the phone whatever happened."""
from __future__ import annotations

import contextlib
import getpass
import json
import os
import shlex
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..errors import DeviceError
from ..procs import pid_alive
from .adb_phone import BASE, LOCK, _Phone

LOCK_POLL_S = 1.0
LOCK_GRACE_S = 120.0  # a lock older than its holder's timeout plus this is stale
HEARTBEAT_S = 2.0  # how often the host tells the phone's watchdog that it is alive
HEARTBEAT_STALE_S = 10  # the watchdog restores the phone after this long without a heartbeat
HEARTBEAT_TIMEOUT_S = 5.0  # one heartbeat call; a slower link counts as gone
STOP_POLL_S = 0.2  # how soon a job that is told to stop (another thread's Ctrl-C) notices
_host_locks: Dict[tuple, threading.Lock] = {}
_host_locks_guard = threading.Lock()


def _check_stop(stop: Optional[threading.Event]) -> None:
    """A job told to stop (Ctrl-C reached the main thread while this one runs a device's job) ends the
    way Ctrl-C ends it in the main thread, through the same cleanup."""
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def _host_lock(phone: _Phone, timeout_s: float, stop: Optional[threading.Event] = None):
    """Jobs from this process take turns before asking the phone's lock."""
    key = (*phone.server, phone.device.serial)
    with _host_locks_guard:
        lock = _host_locks.setdefault(key, threading.Lock())
    deadline = time.monotonic() + timeout_s
    while not lock.acquire(timeout=STOP_POLL_S):
        _check_stop(stop)
        if time.monotonic() > deadline:
            raise DeviceError(f"{phone.where} stayed busy with another job of this process for {timeout_s:g} s")
    try:
        yield
    finally:
        lock.release()


def _owner(token: str, hold_s: float) -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid
        user = str(os.getuid())
    return json.dumps({"host": socket.gethostname(), "boot": _boot_id(), "pid": os.getpid(), "user": user,
                       "token": token, "hold_s": hold_s}, separators=(",", ":"))


def _boot_id() -> Optional[str]:
    """This machine's boot (Linux): two machines that share a host name (`localhost`, a cloned VM) are
    told apart, so a live job on the other is never taken for a dead pid here."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _try_lock(phone: _Phone, owner: str) -> Optional[dict]:
    """None when taken; else the holder ({..., since (phone uptime s), now, stale})."""
    command = (f"mkdir -p {BASE} && read up rest < /proc/uptime && if mkdir {LOCK} 2>/dev/null; then "
               f"echo \"${{up%.*}} \"{shlex.quote(owner)} > {LOCK}/owner && echo @locked; else "
               f"echo \"@busy ${{up%.*}}\"; cat {LOCK}/owner 2>/dev/null; fi")
    code, out, err = phone.sh(command, "taking the device lock", whole=True)
    lines = out.strip().splitlines()
    if code != 0 or not lines:
        raise DeviceError(f"{phone.where}: cannot create {LOCK} (exit code {code}): {err.strip()}",
                          hint="/data/local/tmp must be writable by the shell user")
    if lines[0] == "@locked":
        return None
    now = int(lines[0].split()[1])
    since, _, text = (lines[1] if len(lines) > 1 else "0 {}").partition(" ")
    try:
        holder = dict(json.loads(text), since=int(since))
    except ValueError:
        holder = {"since": int(since) if since.isdigit() else 0}
    expired = now < holder["since"] or now > holder["since"] + holder.get("hold_s", 0) + LOCK_GRACE_S
    holder["stale"] = expired or _holder_dead(holder)
    return holder


def _holder_dead(holder: dict) -> bool:
    """A holder from this host whose process has ended: its lock is stale now, not after its timeout
    (Ctrl-C, kill -9 or a crash of an earlier run). A pid this process cannot signal is alive."""
    pid, boot, here = holder.get("pid"), holder.get("boot"), _boot_id()
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    if boot and here and boot != here:  # another machine of the same name, or this one before a reboot
        return False
    if pid == os.getpid():  # this process's jobs take turns (_host_lock): a lock of ours is left over
        return True
    return not pid_alive(pid)


def _lock(phone: _Phone, job: "_Job", timeout_s: float, say: Callable[[str], None],
          stop: Optional[threading.Event] = None) -> None:
    """Take the phone's lock (waiting up to timeout_s), then restore what dead jobs left (_recover)."""
    deadline, took_stale = time.monotonic() + timeout_s, False
    job.locked = True  # before the phone may take it: releasing is a no-op unless the lock names job.token
    while True:
        _check_stop(stop)
        holder = _try_lock(phone, _owner(job.token, timeout_s))
        if holder is None:
            break
        who = f"host {holder.get('host', '?')} (pid {holder.get('pid', '?')}, user {holder.get('user', '?')})"
        if holder["stale"]:
            say(f"{phone.device.name}: the lock of a job that has ended ({who}) is stale; taking it over")
            phone.sh(f"rm -rf {LOCK}", "removing a stale device lock")
            took_stale = True
            continue
        if time.monotonic() > deadline:
            raise DeviceError(f"{phone.where} stayed busy for {timeout_s:g} s with a job from {who}; gave up",
                              hint=f"try again when it has ended; a dead job's lock expires by itself, or remove "
                                   f"it: adb -s {phone.device.serial} shell rm -rf {LOCK}")
        say(f"waiting for {phone.device.name}: busy with a job from {who}")
        time.sleep(LOCK_POLL_S)
    _recover(phone, took_stale)


# Watchdogs first (kill -9: they must not act now), then the jobs' shells, samplers and benchmark_models
# (SIGTERM, then SIGKILL for any still there after a second). A pid is killed only while its command
# line names its job folder, so a pid reused since is left alone.
_LEFTOVERS_SH = """\
ours() { tr '\\000' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF "$2"; }
left=
for d in @BASE@/job-*; do
  [ -d "$d" ] || continue
  [ -e "$d/unplugged" ] && echo @unplugged
  for f in watchdog run sampler benchmark; do
    p=; [ -f "$d/$f.pid" ] && read p < "$d/$f.pid"
    [ -n "$p" ] && ours "$p" "$d" || continue
    if [ "$f" = watchdog ]; then kill -9 "$p"; else kill "$p" && left="$left $p:$d"; fi
  done 2>/dev/null
done
[ -n "$left" ] && sleep 1
for pd in $left; do ours "${pd%%:*}" "${pd#*:}" && kill -9 "${pd%%:*}" 2>/dev/null; done
rm -rf @BASE@/job-*
true
"""


def _recover(phone: _Phone, took_stale: bool) -> None:
    """What dead jobs left, undone before this job stores anything: charging reset after a stale lock
    (its job may have suspended it, even before it had a folder to say so) or where a left folder
    says so; their watchdogs stopped (they would act in the middle of this job); their benchmark_model,
    sampler and shell ended; their folders removed. Restore first, report after."""
    failed = _reset_charging(phone) if took_stale else None
    _, out, _ = phone.sh(_LEFTOVERS_SH.replace("@BASE@", BASE),
                         "ending the processes of earlier jobs and removing their folders")
    if not took_stale and "@unplugged" in out.split():
        failed = _reset_charging(phone)
    if failed:
        raise DeviceError(f"{phone.where}: an earlier job did not end cleanly, and restoring charging after it "
                          f"failed: {failed}", hint=f"run: adb -s {phone.device.serial} shell dumpsys battery reset")


def _reset_charging(phone: _Phone) -> Optional[str]:
    """None when `dumpsys battery reset` worked; else what it said."""
    code, _, err = phone.sh("dumpsys battery reset", "restoring charging after a job that did not end cleanly")
    return None if code == 0 else f"dumpsys battery reset: exit code {code} {err.strip()}"


def _unlock(phone: _Phone, token: str) -> None:
    phone.sh(f"grep -q {shlex.quote(token)} {LOCK}/owner 2>/dev/null && rm -rf {LOCK}; true", "releasing the lock")


@dataclass
class _Job:
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    stop: Optional[threading.Event] = None
    locked: bool = False
    folder: Optional[str] = None
    unplugged: bool = False
    keeper: Optional["_Keeper"] = None


class _Keeper:
    """A host thread beside the job: touches the folder's `heartbeat` every HEARTBEAT_S, the phone
    watchdog's sign that this host is alive, and once the job is told to stop, kills its run so the
    call waiting for it returns (a thread other than the main one gets no KeyboardInterrupt)."""

    def __init__(self, phone: _Phone, job: _Job):
        self.phone, self.job, self.done = phone, job, threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"adb-heartbeat-{phone.device.name}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        q, beat_at, kill_at = shlex.quote(self.job.folder), 0.0, 0.0
        while not self.done.wait(STOP_POLL_S):
            now = time.monotonic()
            try:
                if self.job.stop is not None and self.job.stop.is_set() and now >= kill_at:
                    kill_at = now + 1.0
                    self.phone.sh(f"for p in run benchmark; do [ -f {q}/$p.pid ] && kill $(cat {q}/$p.pid); done "
                                  f"2>/dev/null; true", "stopping the run", timeout_s=HEARTBEAT_TIMEOUT_S)
                if now >= beat_at:
                    beat_at = now + HEARTBEAT_S
                    self.phone.sh(f"touch {q}/heartbeat", "telling the watchdog this host is alive",
                                  timeout_s=HEARTBEAT_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - a missed beat is the watchdog's business; the job's own calls fail
                pass

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=1.0)  # a beat still on its way touches a removed folder: harmless


def _start_watchdog(phone: _Phone, job: _Job, max_s: float) -> None:
    """The phone's own guard for the job (power.WATCHDOG_SH), and the host's heartbeat for it."""
    q, folder = shlex.quote, job.folder
    args = " ".join(q(a) for a in (f"{folder}/watchdog.sh", folder, LOCK, job.token, str(int(max_s) + 1),
                                   str(HEARTBEAT_STALE_S)))
    # a simple command in the background, so that $! is the watchdog's own pid
    command = (f"touch {q(folder)}/heartbeat; nohup sh {args} < /dev/null > /dev/null 2>&1 & "
               f"echo $! > {q(folder)}/watchdog.pid")
    code, _, err = phone.sh(command, "starting the job's watchdog", whole=True)
    if code != 0:
        raise DeviceError(f"{phone.where}: the job's watchdog did not start: {err.strip()}")
    job.keeper = _Keeper(phone, job)


def _cleanup(phone: _Phone, job: _Job) -> List[str]:
    """Restore charging, kill the job's processes, remove its folder, release the lock. The watchdog
    goes first, so that it never acts after this. Every step runs even when an earlier one fails;
    returns what failed."""
    if job.keeper is not None:
        job.keeper.close()
    steps, q = [], shlex.quote(job.folder or "")
    watchdog = f"[ -f {q}/watchdog.pid ] && kill $(cat {q}/watchdog.pid) 2>/dev/null"
    if job.unplugged:
        steps.append(("restoring charging (dumpsys battery reset)", f"{watchdog}; dumpsys battery reset", True))
    if job.folder:
        steps.append(("stopping the job's processes and removing its folder",
                      f"{watchdog}; touch {q}/stop 2>/dev/null; for p in run sampler benchmark; do [ -f {q}/$p.pid ] "
                      f"&& kill $(cat {q}/$p.pid) 2>/dev/null; done; rm -rf {q}", False))
    if job.locked:
        steps.append(("releasing the device lock", None, False))
    problems = []
    for doing, command, checked in steps:
        try:
            if command is None:
                _unlock(phone, job.token)
            else:
                code, _, err = phone.sh(command, doing)
                if code != 0 and checked:
                    problems.append(f"{doing}: exit code {code} {err.strip()}")
        except Exception as e:  # keep going: the next step matters as much
            problems.append(f"{doing}: {e}")
    return problems
