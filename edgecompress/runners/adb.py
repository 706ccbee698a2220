"""The adb runner: a LiteRT model measured on an Android phone with the user's `benchmark_model`,
returning the same result as the other runners (DESIGN.md, runner job and result).

One job: talk to the adb server (adbutils; ADB_SERVER_SOCKET=tcp:HOST:PORT or
ANDROID_ADB_SERVER_HOST/_PORT, default 127.0.0.1:5037), take the phone's lock
(/data/local/tmp/edgecompress/lock), push the model, benchmark_model and the battery sampler (an sh
loop) into a fresh job-XXXXXX folder, suspend charging (`dumpsys battery unplug`), start the
sampler in the background, then run one shell program: device state, idle baseline,
`taskset MASK benchmark_model ...`, device state. The host pulls the logs and computes the result.
Afterwards, always (success, failure, timeout, Ctrl-C): `dumpsys battery reset`, the job's
processes killed, its folder removed, the lock released.

benchmark_model is never downloaded: devices.yaml names the user's binary. adbutils is imported
inside the functions that need it (the [android] extra)."""
from __future__ import annotations

import contextlib
import getpass
import json
import os
import posixpath
import shlex
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..errors import DeviceError, EdgeCompressError, InputError
from ..inventory import Device
from ..procs import pid_alive
from . import PROTOCOL_VERSION, RUNNERS
from . import android_power as power
from . import benchmark_model as bm

BASE = "/data/local/tmp/edgecompress"
LOCK = f"{BASE}/lock"
CONTROL_TIMEOUT_S = 60.0  # one short adb command (dumpsys can take seconds on a busy phone)
LOCK_POLL_S = 1.0
LOCK_GRACE_S = 120.0  # a lock older than its holder's timeout plus this is stale
HEARTBEAT_S = 2.0  # how often the host tells the phone's watchdog that it is alive
HEARTBEAT_STALE_S = 10  # the watchdog restores the phone after this long without a heartbeat
HEARTBEAT_TIMEOUT_S = 5.0  # one heartbeat call; a slower link counts as gone
WATCHDOG_MARGIN_S = 60  # past the job's timeout, the host's own cleanup has had its chance
STOP_POLL_S = 0.2  # how soon a job that is told to stop (another thread's Ctrl-C) notices
DEFAULT_SAMPLE_MS = 100.0
ENERGY_SOURCES = ("battery", "powerstats")
JOB_KEYS = ("protocol_version", "model", "runtime", "runtime_options", "inputs", "warmup", "runs", "max_runs",
            "energy", "idle_seconds", "seed", "report_outputs", "energy_interval_ms", "energy_device_index")
GET_BINARY = ("build it with bazel from the TensorFlow / LiteRT sources (in TensorFlow: `bazel build -c opt "
              "--config=android_arm64 tensorflow/lite/tools/benchmark:benchmark_model`), or download the prebuilt "
              "nightly benchmark_model for android_aarch64 linked from the LiteRT / TensorFlow Lite "
              "performance-measurement docs")
_host_locks: Dict[tuple, threading.Lock] = {}
_host_locks_guard = threading.Lock()


def _adbutils():
    try:
        import adbutils
    except ImportError:
        raise InputError("the adb transport needs adbutils, which is not installed",
                         hint="pip install 'edgecompress[android]'") from None
    return adbutils


def server_address() -> tuple:
    """(host, port) of the adb server: ADB_SERVER_SOCKET (adb's own, tcp:[HOST:]PORT), else
    ANDROID_ADB_SERVER_HOST / ANDROID_ADB_SERVER_PORT, else 127.0.0.1:5037."""
    spec = os.environ.get("ADB_SERVER_SOCKET")
    if spec:
        kind, _, rest = spec.partition(":")
        host, _, port = rest.rpartition(":")
        if kind != "tcp" or not port.isdigit():
            raise InputError(f"ADB_SERVER_SOCKET={spec!r} is not tcp:PORT or tcp:HOST:PORT",
                             hint="only a TCP adb server is supported, e.g. ADB_SERVER_SOCKET=tcp:127.0.0.1:5037")
        return host.strip("[]") or "127.0.0.1", int(port)
    port = os.environ.get("ANDROID_ADB_SERVER_PORT") or "5037"
    if not port.isdigit():
        raise InputError(f"ANDROID_ADB_SERVER_PORT={port!r} is not a port number")
    return os.environ.get("ANDROID_ADB_SERVER_HOST") or "127.0.0.1", int(port)


class _Phone:
    """One device on the adb server; every call maps adb failures to DeviceError naming it."""

    def __init__(self, adbutils, client, device: Device, server: tuple):
        self.adbutils, self.device, self.server = adbutils, device, server
        self.handle = client.device(device.serial)
        self.where = f"device '{device.name}' (serial {device.serial})"

    @contextlib.contextmanager
    def talking(self, doing: str, timeout_s: float):
        try:
            yield
        except self.adbutils.AdbTimeout:
            raise DeviceError(f"{self.where}: {doing} did not answer within {timeout_s:g} s",
                              hint=f"check the phone and its link: adb -s {self.device.serial} get-state") from None
        except (self.adbutils.AdbError, OSError, EOFError) as e:
            raise DeviceError(f"{self.where}: {doing} failed: {e or type(e).__name__}",
                              hint=f"check the phone and its link: adb -s {self.device.serial} get-state") from None

    def sh(self, command: str, doing: str, timeout_s: float = CONTROL_TIMEOUT_S, whole: bool = False) -> tuple:
        """(exit code, stdout, stderr) of `command` run by the phone's sh. `whole`: a Ctrl-C waits
        for the answer. For a command that changes the phone's state: cut off, adbd hangs up its sh
        but the step it was running (a mkdir, `dumpsys battery unplug`) may finish after the
        cleanup that should undo it has run."""
        deferred = _sigint_deferred() if whole else contextlib.nullcontext()
        with deferred, self.talking(doing, timeout_s):
            # no trailing newline: without shell_v2, adbutils appends `; echo X4EXIT:$?` to learn the exit code
            out = self.handle.shell2(command.rstrip("\n"), timeout=timeout_s, v2=True)
        if not (out.stdout or out.stderr):  # shell v1 (no shell_v2 feature): one merged stream
            return out.returncode, out.output, ""
        return out.returncode, out.stdout, out.stderr

    def push(self, source, path: str, mode: int, doing: str) -> None:
        with self.talking(doing, CONTROL_TIMEOUT_S):
            self.handle.sync.push(source, path, mode=mode)

    def read(self, path: str) -> Optional[str]:
        """A phone file's text, or None when it does not exist."""
        with self.talking(f"reading {path}", CONTROL_TIMEOUT_S):
            try:
                return self.handle.sync.read_bytes(path).decode("utf-8", "replace")
            except self.adbutils.AdbTimeout:
                raise
            except self.adbutils.AdbError:  # the phone answered FAIL: no such file
                return None


def _check_server(host: str, port: int, timeout_s: float) -> None:
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise DeviceError(f"no adb server answers at {host}:{port} ({e.strerror or e})",
                          hint="start one with `adb start-server` (Android platform-tools), or point "
                               "ADB_SERVER_SOCKET=tcp:HOST:PORT at a running one") from None


def connect(device: Device) -> _Phone:
    """The phone, after checking that the adb server lists its serial in state `device`."""
    if device.transport != "adb" or not device.serial:
        raise InputError(f"device '{device.name}' is not an adb device with a serial",
                         hint="give it transport: adb and serial: SERIAL (USB) or HOST:PORT (adb over Wi-Fi)")
    adbutils = _adbutils()
    host, port = server_address()
    _check_server(host, port, device.connect_timeout_s)
    client = adbutils.AdbClient(host=host, port=port, socket_timeout=CONTROL_TIMEOUT_S)
    try:
        listed = {info.serial: info.state for info in client.list()}
    except (adbutils.AdbError, OSError) as e:
        raise DeviceError(f"the adb server at {host}:{port} did not list its devices: {e}",
                          hint="restart it: adb kill-server && adb start-server") from None
    state = listed.get(device.serial)
    if state is None:
        wifi = ":" in device.serial
        raise DeviceError(
            f"device '{device.name}': serial {device.serial} is not connected to the adb server at {host}:{port} "
            f"(it lists: {', '.join(f'{s} ({st})' for s, st in listed.items()) or 'no devices'})",
            hint=f"run `adb connect {device.serial}` (adb over Wi-Fi)" if wifi else
            "plug the phone in with USB debugging on, check `adb devices`, and fix serial: in devices.yaml")
    if state != "device":
        advice = {"unauthorized": "unlock the phone and accept the USB debugging prompt",
                  "offline": "reconnect the cable or run `adb reconnect`"}.get(state, "check `adb devices`")
        raise DeviceError(f"device '{device.name}': serial {device.serial} is {state}", hint=advice)
    return _Phone(adbutils, client, device, (host, port))


# ---- the job: checked on the host before the phone is touched -------------------------------------

@dataclass
class _Plan:
    model: Path
    binary: Path
    opts: dict
    warmup: dict
    runs: dict
    energy: str
    idle_s: float
    sample_s: float
    warnings: List[str] = field(default_factory=list)


def _binary(device: Device) -> Path:
    if not device.benchmark_model:
        raise InputError(f"device '{device.name}' has no benchmark_model binary configured; edgecompress never "
                         f"downloads it",
                         hint=f"{GET_BINARY}; then add `benchmark_model: /path/to/benchmark_model` under "
                              f"devices.{device.name} in devices.yaml")
    path = Path(device.benchmark_model).expanduser()
    if not path.is_file():
        raise InputError(f"device '{device.name}': benchmark_model {path} does not exist",
                         hint=f"fix devices.{device.name}.benchmark_model in devices.yaml; to get the binary, "
                              f"{GET_BINARY}")
    return path


def _plan(job: dict, model: Path, device: Device, extra_files: Optional[dict]) -> _Plan:
    if not model.is_file():
        raise InputError(f"model file not found: {model}", hint="pass the path of an existing .tflite file")
    unknown = sorted(set(job) - set(JOB_KEYS))
    if unknown:
        raise InputError(f"unknown job key(s) for the adb runner: {', '.join(unknown)}")
    if job.get("protocol_version") != PROTOCOL_VERSION:
        raise InputError(f"job protocol_version must be {PROTOCOL_VERSION}, got {job.get('protocol_version')!r}")
    if job.get("runtime") != "litert":
        raise InputError(f"the adb runner runs LiteRT (.tflite) models with benchmark_model, not runtime "
                         f"{job.get('runtime')!r}", hint="use a profile whose runtime is litert (family android)")
    if extra_files or job.get("inputs") or job.get("report_outputs"):
        raise InputError("benchmark_model draws its own random inputs: the adb runner takes no inputs, extra "
                         "files or report_outputs")
    try:
        opts = bm.options(job.get("runtime_options") or {})
    except ValueError as e:
        raise InputError(str(e)) from None
    energy = job.get("energy", "auto")
    plan = _Plan(model=model, binary=_binary(device), opts=opts, warmup=dict(job.get("warmup") or {}),
                 runs=dict(job.get("runs") or {}), energy=energy, idle_s=float(job.get("idle_seconds", 1.0)),
                 sample_s=float(job.get("energy_interval_ms") or DEFAULT_SAMPLE_MS) / 1000.0)
    if job.get("max_runs") is not None and job["max_runs"] < int(plan.runs.get("count", 50)):
        plan.warnings.append("max_runs is not applied: benchmark_model has no run cap in this runner")
    return plan


# ---- the phone's lock ------------------------------------------------------------------------------

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


# ---- one run on the phone --------------------------------------------------------------------------

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


def _run_script(folder: str, bench_line: str, plan: _Plan, powerstats: bool) -> str:
    """The shell program of one run, sent as the adb shell command (a few hundred bytes): marks on the
    phone's uptime clock around the idle window and the benchmark, state before and after."""
    q, ps = shlex.quote, f"dumpsys {power.POWERSTATS_SERVICE} delta"
    cpu = f"{power.CPU_DIR}/cpu[0-9]*/cpufreq"
    lines = [
        f"cd {q(folder)} || exit 97",
        "echo $$ > run.pid",
        'mark() { read t rest < /proc/uptime; echo "$1 $t" >> marks.txt; }',
        "state() {",
        f"  {{ dumpsys thermalservice; echo \"battery_status $(cat {power.BATTERY_DIR}/status 2>/dev/null)\"",
        f"    for f in {cpu}/scaling_cur_freq {cpu}/scaling_governor; do",
        '      [ -r "$f" ] && read v < "$f" && echo "$f $v"; done; } > "state_$1.txt" 2>&1; }',
        "state before",
        f"{ps} > /dev/null 2>&1" if powerstats else "",
        "mark idle_start",
        f"sleep {plan.idle_s:g}" if plan.idle_s > 0 else "",
        "mark idle_end",
        f"{ps} > powerstats_idle.txt 2>&1" if powerstats else "",
        "mark bench_start",
        f"{bench_line} > benchmark.log 2>&1 &",
        "echo $! > benchmark.pid",
        "wait $!",
        "rc=$?",
        "mark bench_end",
        f"{ps} > powerstats_run.txt 2>&1" if powerstats else "",
        "state after",
        "(exit $rc)",  # the last command's status, also where adbutils appends an echo of $? (no shell_v2)
    ]
    return "\n".join(line for line in lines if line) + "\n"


def _stage(phone: _Phone, plan: _Plan, job: _Job, say) -> str:
    """A fresh job folder with the model, benchmark_model and sampler; the benchmark's shell line."""
    # named here, and known to cleanup before the phone makes it: a Ctrl-C during the call leaves none
    job.folder = folder = f"{BASE}/job-{job.token[:12]}"
    code, out, err = phone.sh(f"mkdir -p {BASE} && mkdir {folder}", "creating the job folder", whole=True)
    if code != 0:
        raise DeviceError(f"{phone.where}: cannot create a job folder in {BASE}: {err.strip() or out.strip()}")
    say(f"copying {plan.model.name} and benchmark_model to {phone.device.name}")
    model = posixpath.join(folder, "model.tflite")
    phone.push(plan.model, model, 0o600, f"copying {plan.model.name}")
    phone.push(plan.binary, posixpath.join(folder, "benchmark_model"), 0o700, "copying benchmark_model")
    phone.push(power.SAMPLER_SH.encode(), posixpath.join(folder, "sampler.sh"), 0o600, "copying the sampler")
    phone.push(power.WATCHDOG_SH.encode(), posixpath.join(folder, "watchdog.sh"), 0o600, "copying the watchdog")
    code, _, err = phone.sh(f"chmod +x {shlex.quote(folder)}/benchmark_model", "making benchmark_model executable")
    if code != 0:
        raise DeviceError(f"{phone.where}: chmod +x benchmark_model failed: {err.strip()}")
    args = bm.arguments(model, plan.opts, plan.warmup, plan.runs)
    return bm.command(posixpath.join(folder, "benchmark_model"), args, plan.opts["cpu_mask"])


def _probe_battery(phone: _Phone) -> dict:
    """{readable, current_now, voltage_now, status, reason}: can the sampler read the battery?"""
    names = ("current_now", "voltage_now", "status")
    command = "; ".join(f"echo \"{n}=$(cat {power.BATTERY_DIR}/{n} 2>/dev/null)\"" for n in names)
    _, out, _ = phone.sh(command, "reading the battery")
    values = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
    info = {n: values.get(n, "").strip() or None for n in names}
    numeric = all((info[n] or "").lstrip("-").isdigit() for n in names[:2])
    info["readable"] = numeric
    info["reason"] = None if numeric else f"{power.BATTERY_DIR}/current_now and voltage_now are not readable numbers"
    return info


def _probe_powerstats(phone: _Phone) -> Optional[str]:
    """None when the PowerStats HAL prints an energy meter; else why not."""
    _, out, err = phone.sh(f"dumpsys {power.POWERSTATS_SERVICE} delta", "asking the PowerStats HAL")
    if power.parse_powerstats(out) is not None:
        return None
    said = (err or out).strip().splitlines()
    return f"no PowerStats HAL energy meter ({said[0] if said else 'no output'})"


def _sources(phone: _Phone, plan: _Plan) -> dict:
    """{battery: why not or None (usable), powerstats: the same} for the sources the job asks for."""
    if plan.energy == "none":
        return {}
    if plan.energy not in ("auto", *ENERGY_SOURCES):
        return {"unsupported": f"energy source {plan.energy!r} does not exist on Android phones; use auto, "
                               f"{' or '.join(ENERGY_SOURCES)}"}
    found = {}
    if plan.energy in ("auto", "battery"):
        found["battery"] = _probe_battery(phone)["reason"]
    if plan.energy in ("auto", "powerstats"):
        found["powerstats"] = _probe_powerstats(phone)
    return found


def _start_sampler(phone: _Phone, plan: _Plan, folder: str, max_s: float) -> None:
    q = shlex.quote
    count = int(max_s / plan.sample_s) + 10
    args = " ".join(q(a) for a in (f"{folder}/sampler.sh", folder, f"{power.BATTERY_DIR}/current_now",
                                   f"{power.BATTERY_DIR}/voltage_now", f"{plan.sample_s:g}", str(count)))
    # A simple command in the background, not `cd DIR && nohup ... &`: mksh (Android's sh) runs such a
    # list in a subshell that keeps adb's output pipe open, and the call would hang until the sampler
    # ends; $! is then the sampler's own pid, which cleanup kills.
    command = f"nohup sh {args} < /dev/null > /dev/null 2>&1 & echo $! > {q(folder)}/sampler.pid"
    code, _, err = phone.sh(command, "starting the battery sampler", whole=True)
    if code != 0:
        raise DeviceError(f"{phone.where}: the battery sampler did not start: {err.strip()}")


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


def _measure(phone: _Phone, plan: _Plan, job: _Job, deadline: float, say) -> dict:
    """Run everything on the phone and pull what it wrote: {files..., rc, sources, props}."""
    props = _props(phone)
    bench_line = _stage(phone, plan, job, say)
    _start_watchdog(phone, job, deadline - time.monotonic() + WATCHDOG_MARGIN_S)
    _check_stop(job.stop)
    sources = _sources(phone, plan)
    if any(name in sources and sources[name] is None for name in ENERGY_SOURCES):
        job.unplugged = True  # set first: a failure inside the call still restores charging
        # the marker first: a watchdog that finds it restores charging if this host dies
        phone.sh(f"touch {shlex.quote(job.folder)}/unplugged && dumpsys battery unplug", "suspending charging",
                 whole=True)
    if "battery" in sources and sources["battery"] is None:
        _start_sampler(phone, plan, job.folder, deadline - time.monotonic() + plan.idle_s)
    powerstats = "powerstats" in sources and sources["powerstats"] is None
    script = _run_script(job.folder, bench_line, plan, powerstats)
    say(f"running benchmark_model on {phone.device.name} ({plan.opts['delegate']}, cpus {plan.opts['cpu_mask']})")
    left = max(1.0, deadline - time.monotonic())
    _check_stop(job.stop)
    try:
        code, out, err = phone.sh(script, "running benchmark_model", timeout_s=left)
        _check_stop(job.stop)  # the keeper killed the run
    except DeviceError as e:
        if "did not answer within" in e.message:
            raise DeviceError(f"{phone.where}: the benchmark of {plan.model.name} did not finish within the job "
                              f"timeout and was killed", hint="raise job_timeout_s in devices.yaml (or the "
                              "timeout), or lower the job's warmup/runs seconds and counts") from None
        raise
    phone.sh(f"touch {shlex.quote(job.folder)}/stop", "stopping the battery sampler")
    files = {name: phone.read(posixpath.join(job.folder, name)) for name in (
        "benchmark.log", "marks.txt", "battery.txt", "powerstats_idle.txt", "powerstats_run.txt",
        "state_before.txt", "state_after.txt")}
    return dict(files, rc=code, shell_output=(out + err).strip(), sources=sources, props=props)


def _props(phone: _Phone) -> dict:
    names = ("ro.product.model", "ro.build.version.release", "ro.build.version.sdk", "ro.product.cpu.abi")
    _, out, _ = phone.sh("; ".join(f"echo \"{n}=$(getprop {n})\"" for n in names), "reading device properties")
    values = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
    return {"model": values.get(names[0]) or None, "android_version": values.get(names[1]) or None,
            "sdk": values.get(names[2]) or None, "arch": values.get(names[3]) or None}


# ---- cleanup ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def _sigint_deferred():
    """A Ctrl-C during cleanup waits until cleanup is done (main thread only)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    caught: list = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(1))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


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


# ---- the result ------------------------------------------------------------------------------------

def _result(got: dict, plan: _Plan, phone: _Phone) -> dict:
    log = got["benchmark.log"] or ""
    if got["rc"] != 0:
        tail = "\n".join(log.strip().splitlines()[-15:]) or got["shell_output"] or "(no output)"
        hint = ("benchmark_model could not be executed: it must be an android_aarch64 build (check with `file`)"
                if got["rc"] in (126, 127) else "check that the model is a valid .tflite for this delegate")
        raise DeviceError(f"{phone.where}: benchmark_model failed on {plan.model.name} (exit code {got['rc']}); its "
                          f"output ended with:\n{tail}", hint=hint)
    try:
        summary = bm.summarize(log)
    except bm.OutputError as e:
        raise DeviceError(f"{phone.where}: {e}") from None
    marks = power.parse_marks(got["marks.txt"])
    before, after = power.parse_state(got["state_before.txt"]), power.parse_state(got["state_after.txt"])
    energy, reason, units = power.run_energy(got, got["sources"], plan.sample_s, marks, (before, after),
                                             summary["latency_ms"])
    throttled, why = power.throttled(before, after)
    governors = sorted(set(before["governors"].values()))
    device = dict(got["props"], runtime="litert", runtime_version=None, runner_binary="benchmark_model",
                  governor="/".join(governors) or None, governors=before["governors"] or None,
                  clocks_mhz_before=before["clocks_mhz"], clocks_mhz_after=after["clocks_mhz"],
                  temperatures_c_before=before["temperatures_c"], temperatures_c_after=after["temperatures_c"],
                  thermal_status_before=before["status_name"], thermal_status_after=after["status_name"],
                  throttled=throttled, throttle_reason=why, cpu_mask=plan.opts["cpu_mask"],
                  battery={"status_before": before["battery_status"], "status_after": after["battery_status"],
                           "units_detected": units})
    warnings = plan.warnings + summary.pop("warnings") + ([why] if why else [])
    if summary["timed_window_s"] < 1.0:
        warnings.append(f"timed window {summary['timed_window_s']:.2f} s is short; runs.seconds >= 1 gives steadier "
                        f"numbers")
    return dict(summary, protocol_version=PROTOCOL_VERSION, energy=energy, energy_reason=reason, device=device,
                runtime_options=plan.opts, warnings=warnings, host=got["props"]["model"], runner="adb",
                measured_on="device", device_name=phone.device.name)


def run_adb(job: dict, model_path: Path, *, device: Device, extra_files: dict | None = None,
            on_progress: Callable[[str], None] | None = None, timeout_s: float | None = None,
            stop: threading.Event | None = None) -> dict:
    """Measure `model_path` (.tflite) on an adb device with its benchmark_model and return the result.

    The job waits for the phone's lock, then has timeout_s (else device.job_timeout_s) to copy and
    run. InputError for a bad job, model or benchmark_model entry (checked before the phone is
    touched); DeviceError when the phone cannot be reached or the benchmark fails. Charging is
    restored and the job folder removed whatever happens: on Ctrl-C in the main thread, when `stop`
    is set (KeyboardInterrupt, after the same cleanup), and, when this host dies without cleaning
    up, by the job's watchdog on the phone within HEARTBEAT_STALE_S (or by the next job)."""
    plan = _plan(job, Path(model_path), device, extra_files)
    say = on_progress or (lambda _message: None)
    timeout = float(timeout_s or device.job_timeout_s)
    phone = connect(device)
    with _host_lock(phone, timeout, stop):
        state, failed = _Job(stop=stop), None
        try:
            _lock(phone, state, timeout, say, stop)
            got = _measure(phone, plan, state, time.monotonic() + timeout, say)
        except BaseException as e:
            failed = e
            raise
        finally:
            with _sigint_deferred():
                problems = _cleanup(phone, state)
            _report_cleanup(phone, problems, failed)
    return _result(got, plan, phone)


def _report_cleanup(phone: _Phone, problems: List[str], failed: Optional[BaseException]) -> None:
    if not problems:
        return
    text = f"cleanup on {phone.where} failed: " + "; ".join(problems)
    fix = f"run: adb -s {phone.device.serial} shell dumpsys battery reset; adb -s {phone.device.serial} shell rm -rf " \
          f"{BASE}/job-*"
    if failed is None:
        raise DeviceError(text, hint=fix)
    if isinstance(failed, EdgeCompressError):
        failed.hint = f"{failed.hint + '; ' if failed.hint else ''}also, {text} -- {fix}"
    else:  # Ctrl-C: nothing after this says it, and the phone may not be as it was found
        print(f"warning: {text}\n  -> {fix}", file=sys.stderr)


def check_adb(device: Device) -> dict:
    """Reachability and what a job needs: model, Android version, ABI, benchmark_model configured,
    battery and PowerStats readable. Takes no lock and changes nothing on the phone."""
    phone = connect(device)
    props = _props(phone)
    try:
        binary, binary_reason = str(_binary(device)), None
    except InputError as e:
        binary, binary_reason = None, str(e)
    battery = _probe_battery(phone)
    _, out, _ = phone.sh(f"cat {LOCK}/owner 2>/dev/null", "reading the device lock")
    busy = out.strip() or None
    # A PowerStats delta dump resets the baseline of a running job's delta: skip it while busy.
    powerstats = "device busy with a job; not asked" if busy else _probe_powerstats(phone)
    return dict(props, device_name=device.name, serial=device.serial, server=f"{phone.server[0]}:{phone.server[1]}",
                hostname=props["model"], python=None, runtimes={"benchmark_model": binary},
                benchmark_model={"configured": binary is not None, "path": binary, "reason": binary_reason},
                battery=battery, busy=busy,
                power_sources=[{"name": "battery", "available": battery["readable"], "reason": battery["reason"] or
                                f"status {battery['status']}"},
                               {"name": "powerstats", "available": powerstats is None,
                                "reason": powerstats or "PowerStats HAL energy meter"}])


class AdbRunner:
    """The Runner for a `transport: adb` (Android) device."""

    stoppable = True  # run_adb polls `stop` and ends the job through its cleanup (charging restored)

    def __init__(self, device: Device) -> None:
        self.device = device

    def run(self, job: dict, model: Path, *, extra_files: Optional[dict] = None, fetch_dir: Optional[Path] = None,
            on_progress: Optional[Callable[[str], None]] = None, stop: Optional[threading.Event] = None) -> dict:
        # fetch_dir is unused: benchmark_model produces no artifacts to fetch
        return run_adb(job, model, device=self.device, extra_files=extra_files, on_progress=on_progress, stop=stop)

    def check(self) -> dict:
        return check_adb(self.device)


RUNNERS.register("adb")(AdbRunner)
