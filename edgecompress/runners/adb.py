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

import posixpath
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from ..errors import DeviceError, EdgeCompressError, InputError
from ..inventory import Device
from . import PROTOCOL_VERSION, RUNNERS
from . import android_power as power
from . import benchmark_model as bm
# the phone link and the job's guards live in their own modules; the names tests and callers use stay here
from .adb_lock import (HEARTBEAT_STALE_S, _boot_id, _check_stop, _cleanup, _holder_dead, _host_lock,  # noqa: F401
                       _Job, _lock, _start_watchdog)
from .adb_phone import BASE, LOCK, _Phone, _probe_battery, _probe_powerstats, _props, _sigint_deferred, connect  # noqa: F401
from .adb_phone import server_address  # noqa: F401

WATCHDOG_MARGIN_S = 60  # past the job's timeout, the host's own cleanup has had its chance
DEFAULT_SAMPLE_MS = 100.0
ENERGY_SOURCES = ("battery", "powerstats")
JOB_KEYS = ("protocol_version", "model", "runtime", "runtime_options", "inputs", "warmup", "runs", "max_runs",
            "energy", "idle_seconds", "seed", "report_outputs", "energy_interval_ms", "energy_device_index")
GET_BINARY = ("build it with bazel from the TensorFlow / LiteRT sources (in TensorFlow: `bazel build -c opt "
              "--config=android_arm64 tensorflow/lite/tools/benchmark:benchmark_model`), or download the prebuilt "
              "nightly benchmark_model for android_aarch64 linked from the LiteRT / TensorFlow Lite "
              "performance-measurement docs")


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


# ---- one run on the phone --------------------------------------------------------------------------


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


# ---- cleanup ---------------------------------------------------------------------------------------


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
        warnings.append(f"timed window {summary['timed_window_s']:.2f} s is short; a window of >= 1 s gives steadier "
                        "numbers (bench.seconds, edgecompress bench --seconds, is shared between the bench.rounds)")
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
