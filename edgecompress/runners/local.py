"""The local runner: the device side runs on this host, as a separate process in a temp job folder,
exactly as it would on a device (same files, same job, same result), minus the transport.

Nothing heavy is imported here: the child process imports the runtime, the host never does."""
from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional

from ..errors import DeviceError, InputError
from ..procs import pid_alive
from . import PROTOCOL_VERSION, RUNNERS, check_extra_names, device_side_dir

PROGRESS = "progress: "
STDERR_TAIL_LINES = 50
JOB_FILE = "job.json"
SCRIPT = "ec_bench.py"


def device_side_scripts() -> list:
    return [p for p in device_side_dir().glob("*.py") if p.name != "__init__.py"]


def stage_job(folder: Path, job: dict, model_path: Path, extra_files: Dict[str, Path]) -> None:
    """Fill `folder` as a device's job folder: device-side programs, model, extra files, job.json."""
    scripts = device_side_scripts()
    check_extra_names(extra_files, {p.name for p in scripts} | {JOB_FILE, model_path.name})
    for script in scripts:
        shutil.copy2(script, folder / script.name)
    shutil.copyfile(model_path, folder / model_path.name)
    for name, source in extra_files.items():
        shutil.copyfile(source, folder / name)
    (folder / JOB_FILE).write_text(json.dumps(dict(job, model=model_path.name), indent=1))


def _pump(stream, name: str, lines: queue.Queue) -> None:
    """Forward a pipe's lines to the queue, then None: the caller's thread handles them in order."""
    for line in stream:
        lines.put((name, line.rstrip("\r\n")))
    lines.put((name, None))


TERM_GRACE_S = 5.0


def _kill(process: subprocess.Popen) -> None:
    """Kill the whole process group, so a runtime's worker processes die with the benchmark."""
    if process.poll() is not None:
        return
    try:
        if os.name == "posix":
            # SIGTERM first: the device side restores what it changed (clocks) before it exits
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except ProcessLookupError:  # it exited between the poll and the kill
        pass
    process.wait()


class _Streams:
    """stdout lines, the tail of non-progress stderr lines, and the last progress message."""

    def __init__(self) -> None:
        self.stdout: list = []
        self.stderr_tail: collections.deque = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.last_progress: Optional[str] = None

    def take(self, name: str, line: str, on_progress: Optional[Callable[[str], None]]) -> None:
        if name == "stdout":
            self.stdout.append(line)
        elif line.startswith(PROGRESS):
            self.last_progress = line[len(PROGRESS):]
            if on_progress is not None:
                on_progress(self.last_progress)
        else:
            self.stderr_tail.append(line)


def _end_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the host process dies (kill -9 of edgecompress), as a
    device's agent does when its connection drops, so the device side restores what it changed and
    stops instead of running on in its own session with nobody to read its result."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:  # the host died before the call took effect
        os._exit(143)


OWNER_FILE = ".host-pid"


def remove_stale_job_folders(root: Optional[Path] = None) -> None:
    """Job folders of local runs whose host process is gone (kill -9: its `finally` never ran). Only
    this account's folders, and only those whose recorded host pid no longer runs."""
    root = Path(root or tempfile.gettempdir())
    for folder in root.glob("edgecompress-job-*"):
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            pid = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def clocks_state_dir() -> Path:
    """Where a local job (bench --lock-clocks run on the Jetson itself) keeps the jetson_clocks store:
    outside its job folder, which goes with the job, so a job killed with SIGKILL leaves what the
    next job needs to restore the clocks (ec_clocks restores a stale store before storing again)."""
    folder = Path(os.environ.get("EDGECOMPRESS_CACHE") or Path.home() / ".cache" / "edgecompress") / "clocks"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def run_process(command: list, folder: Path, on_progress, timeout_s: float) -> tuple:
    """(exit code or None on timeout, streams) of the device side run in `folder`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("EDGECOMPRESS_CLOCKS_DIR", str(clocks_state_dir()))
    try:
        process = subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
                                   errors="replace", start_new_session=(os.name == "posix"),
                                   preexec_fn=_end_with_parent if sys.platform.startswith("linux") else None)
    except OSError as e:
        raise DeviceError(f"cannot start the device side with {command[0]}: {e}",
                          hint="pass python= an interpreter that has the runtime installed") from e
    lines: queue.Queue = queue.Queue()
    for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr")):
        threading.Thread(target=_pump, args=(stream, name, lines), daemon=True).start()
    streams, open_pipes = _Streams(), 2
    deadline = time.monotonic() + timeout_s
    try:
        while open_pipes:
            try:
                name, line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None, streams
            if line is None:
                open_pipes -= 1
            else:
                streams.take(name, line, on_progress)
        return process.wait(timeout=max(0.1, deadline - time.monotonic())), streams
    except subprocess.TimeoutExpired:
        return None, streams
    finally:
        _kill(process)  # no-op when it exited; otherwise a timeout or the caller's exception


def _context(streams: _Streams) -> str:
    parts = []
    if streams.last_progress:
        parts.append(f"last progress: {streams.last_progress}")
    if streams.stderr_tail:
        parts.append(f"stderr (last {len(streams.stderr_tail)} lines):\n" + "\n".join(streams.stderr_tail))
    return "".join("\n" + p for p in parts)


def parse_result(what: str, where: str, code: Optional[int], streams: _Streams) -> dict:
    """The result JSON from the last stdout line, or DeviceError saying what went wrong `where`
    ("on the local runner", "on device X (user@host:port)"); shared by every runner."""
    last = next((line for line in reversed(streams.stdout) if line.strip()), "")
    try:
        result = json.loads(last)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        shown = "\n".join(streams.stdout[-5:]) or "(nothing)"
        raise DeviceError(f"{what} {where} printed no result JSON (exit code {code}); "
                          f"stdout ended with:\n{shown}{_context(streams)}")
    if result.get("error") or code != 0:
        raise DeviceError(f"{what} failed {where} (exit code {code}): "
                          f"{result.get('error', 'no error message')}{_context(streams)}")
    return result


def check_protocol(result: dict, model_name: str, where: str) -> dict:
    if result.get("protocol_version") != PROTOCOL_VERSION:
        raise DeviceError(f"the device side {where} answered protocol_version {result.get('protocol_version')!r} "
                          f"for {model_name}; this host speaks {PROTOCOL_VERSION}",
                          hint="use the same edgecompress version on both sides (the host pushes the device side "
                               "with each job, so this means a changed device-side file)")
    return result


def fetch_artifacts(folder: Path, names: list, into: Path) -> None:
    """Copy the files a job produced (its result's `artifacts`) out of the job folder."""
    into.mkdir(parents=True, exist_ok=True)
    for name in names:
        if Path(name).name != name:
            raise DeviceError(f"the device side listed an artifact outside its job folder: {name!r}")
        shutil.copy(folder / name, into / name)


def interpreter(device) -> str:
    """The Python that runs the device side: a `transport: local` device's `python` where the
    inventory sets it, else this interpreter (the one that has edgecompress and its runtime; the
    inventory's default `python3` is meant for a board's own Python)."""
    if device is None or "python" not in device.model_fields_set:
        return sys.executable
    return os.path.expanduser(device.python)


def run_local(job: dict, model_path: Path, *, device=None, extra_files: dict | None = None,
              on_progress: Callable[[str], None] | None = None, timeout_s: float | None = None,
              python: str | None = None, fetch_dir: Path | None = None) -> dict:
    """Run `job` on `model_path` in a separate process on this host and return its result.

    `device`: a `transport: local` inventory entry (its python and job_timeout_s; the result is named
    after it), as the ssh and adb runners take theirs; None: this host, unnamed. extra_files maps a
    name in the job folder to a host file (e.g. the .npy inputs the job names); on_progress gets
    each progress message; the process is killed after timeout_s (default: the device's
    job_timeout_s, else 600 s). The temp job folder is always removed. Raises InputError for a
    missing model or extra file, DeviceError when the device side fails, times out or prints no result."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise InputError(f"model file not found: {model_path}", hint="pass the path of an existing model file")
    timeout_s = float(timeout_s or (device.job_timeout_s if device is not None else 600.0))
    where = "on the local runner" if device is None else f"on device {device.name} (this host)"
    remove_stale_job_folders()
    folder = Path(tempfile.mkdtemp(prefix="edgecompress-job-"))
    try:
        (folder / OWNER_FILE).write_text(str(os.getpid()))
        stage_job(folder, job, model_path, dict(extra_files or {}))
        code, streams = run_process([python or interpreter(device), SCRIPT, JOB_FILE], folder, on_progress, timeout_s)
        if code is None:
            named = "" if device is None else f" {where}"
            raise DeviceError(f"the benchmark of {model_path.name}{named} did not finish within {timeout_s:g} s "
                              f"and was killed{_context(streams)}",
                              hint="raise the timeout, or lower the job's warmup/runs seconds and counts")
        result = check_protocol(parse_result(f"the benchmark of {model_path.name}", where, code, streams),
                                model_path.name, where)
        if fetch_dir is not None:
            fetch_artifacts(folder, result.get("artifacts") or [], Path(fetch_dir))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    named = {} if device is None else {"device_name": device.name}
    return dict(result, runner="local", measured_on="host", **named)


PROBE_SCRIPT = "ec_probe.py"


def check_local(device) -> dict:
    """`edgecompress devices check` for a `transport: local` device: the device-side probe run on
    this host with the device's Python, as check_ssh runs it on a board: arch, Python, runtimes,
    power sources. DeviceError when that Python cannot run it."""
    folder = Path(tempfile.mkdtemp(prefix="edgecompress-probe-"))
    python = interpreter(device)
    where = f"on device {device.name} (this host, {python})"
    try:
        for script in device_side_scripts():
            shutil.copy2(script, folder / script.name)
        code, streams = run_process([python, PROBE_SCRIPT], folder, None, float(device.job_timeout_s))
        if code is None:
            raise DeviceError(f"the device probe {where} did not finish within {device.job_timeout_s:g} s"
                              f"{_context(streams)}", hint=f"check that {python} starts")
        info = parse_result("the device probe", where, code, streams)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return dict(info, device_name=device.name, host="this host", busy=None)


class LocalRunner:
    """The Runner for this host (device None) or a `transport: local` inventory device."""

    stoppable = False  # a job here ends with the host process (its child gets SIGTERM), not on `stop`

    def __init__(self, device=None) -> None:
        self.device = device

    def run(self, job: dict, model: Path, *, extra_files: Optional[Dict[str, Path]] = None,
            fetch_dir: Optional[Path] = None, on_progress: Optional[Callable[[str], None]] = None,
            stop=None) -> dict:
        return run_local(job, model, device=self.device, extra_files=extra_files, on_progress=on_progress,
                         fetch_dir=fetch_dir)

    def check(self) -> dict:
        if self.device is None:
            raise InputError("devices check probes an inventory device, not this host",
                             hint="name a device from devices.yaml (transport: local probes this host)")
        return check_local(self.device)


RUNNERS.register("local")(LocalRunner)
