"""The ssh runner: the same job and result as the local runner, measured on a device over SSH.

One job is one connection (asyncssh; key logins only; host keys checked against known_hosts,
never accepted silently). On the device, ssh_agent.py (sent as the `-c` argument of the device's
python) takes the device lock, removes job folders left by killed connections, makes a fresh
mode-700 job folder, and runs `python ec_bench.py job.json` there once the host has pushed the
device side, the model, the extra files and the job over SFTP. Progress lines stream to
on_progress; the result is the job's last stdout line. When the connection dies the agent sees
its stdin close and kills the job, so nothing outlives the host; a dropped connection is retried
once on a new connection and job folder.

asyncssh is imported inside the functions that need it (the [ssh] extra)."""
from __future__ import annotations

import asyncio
import json
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from ..errors import DeviceError, InputError
from ..inventory import Device
from . import RUNNERS, check_extra_names, device_side_dir
from .local import JOB_FILE, SCRIPT, _context, check_protocol, parse_result
# the connection and the agent's host side live in their own modules; the names tests and
# benchmarks/ssh_roundtrip.py use stay importable from here
from .ssh_agent_link import (AGENT_FOLDER_LOCK, AGENT_PREFIX, AGENT_START_SLACK_S, CLOCKS_STORE,  # noqa: F401
                             CLOCKS_TERM_GRACE_S, TERM_GRACE_S, _Agent, _agent_command, _agent_failed,
                             _agent_source, _clocks_still_pinned, _how_it_ended, _owner_text, _pinned_note,
                             _remote_program)
from .ssh_connect import _asyncssh, _connect, _Dropped, _endpoint, _Endpoint, _run_sync  # noqa: F401

PROBE_SCRIPT = "ec_probe.py"


async def _ready(ep: _Endpoint, device: Device, agent: _Agent, wait_s: float, on_progress) -> dict:
    """The agent's `ready` payload, after it took the device lock (reporting the wait)."""
    deadline = asyncio.get_running_loop().time() + wait_s + AGENT_START_SLACK_S
    while True:
        kind, payload = await agent.event(deadline)
        if kind == "ready":
            return payload
        if kind == "restoring_clocks":
            deadline += CLOCKS_TERM_GRACE_S
            if on_progress is not None:
                on_progress(f"device {ep.name}: restoring the Jetson clocks an earlier job left pinned (pid "
                            f"{payload.get('pid', '?')}, since {payload.get('since', '?')})")
        elif kind == "clocks_pinned":
            raise _clocks_still_pinned(ep, agent)
        elif kind == "busy":
            if on_progress is not None:
                on_progress(f"waiting for device {ep.name}: busy with {_owner_text(payload)}")
        elif kind in ("gaveup", "timeout"):
            raise DeviceError(f"device {ep.name} ({ep.where}) stayed busy for {wait_s:g} s with "
                              f"{_owner_text(payload)}; gave up waiting",
                              hint="try again when that job has ended, or raise the job timeout; the device "
                                   "lock is released as soon as its job ends or its connection drops")
        elif kind in ("eof", "error"):
            await agent.process.wait_closed()
            if agent.process.exit_status is None and agent.process.exit_signal is None:
                raise _Dropped("waiting for the device lock", "the connection closed")
            raise _agent_failed(ep, device, agent, kind, payload)


async def _upload(conn, folder: str, files: List[Tuple[str, Path]], job_bytes: Optional[bytes]) -> None:
    async with conn.start_sftp_client() as sftp:
        async def write_job() -> None:
            async with sftp.open(posixpath.join(folder, JOB_FILE), "wb") as f:
                await f.write(job_bytes)

        puts = [sftp.put(str(source), posixpath.join(folder, name)) for name, source in files]
        await asyncio.gather(*puts, *([write_job()] if job_bytes is not None else []))


async def _run_in_folder(ep: _Endpoint, agent: _Agent, argv: list, deadline: float, plan: "_Plan") -> int:
    """Exit code of the job; on the deadline the agent kills it and DeviceError says so."""
    what, timeout_s = plan.what, plan.timeout_s
    agent.send(json.dumps({"run": argv}))
    while True:
        kind, payload = await agent.event(deadline)
        if kind == "exit":
            return payload  # the caller fetches artifacts, then lets the agent remove the folder
        if kind == "timeout":
            agent.send("kill")
            if plan.term_grace_s > TERM_GRACE_S and agent.on_progress is not None:
                agent.on_progress(f"job timeout: stopping the job on device {ep.name}, which restores the Jetson "
                                  f"clocks first (up to {plan.term_grace_s:g} s)")
            await agent.finish(plan.term_grace_s)
            raise DeviceError(f"{what} on device {ep.name} ({ep.where}) did not finish within the job timeout of "
                              f"{timeout_s:g} s and was killed{_context(agent.streams)}{_pinned_note(agent)}",
                              hint="raise job_timeout_s in devices.yaml (or the timeout), or lower the job's "
                                   "warmup/runs seconds and counts")
        if kind in ("eof", "error", "killed"):
            await agent.process.wait_closed()
            if agent.process.exit_status is None and agent.process.exit_signal is None:
                raise _Dropped(f"running {what}", "the connection closed")
            raise DeviceError(f"device {ep.name} ({ep.where}): the device side stopped while running {what} "
                              f"({_how_it_ended(agent.process, payload)}){_context(agent.streams)}"
                              f"{_pinned_note(agent)}",
                              hint="look for the OOM killer or a reboot in the device's log (journalctl -k)")


async def _download(conn, folder: str, names: List[str], into: Path) -> None:
    """Copy files the job produced (listed in its result) from the job folder to `into`."""
    into.mkdir(parents=True, exist_ok=True)
    async with conn.start_sftp_client() as sftp:
        for name in names:
            if posixpath.basename(name) != name:
                raise DeviceError(f"the device listed an artifact outside its job folder: {name!r}")
            await sftp.get(posixpath.join(folder, name), str(into / name))


def _session_error(asyncssh, ep: _Endpoint, phase: str, e: Exception) -> Exception:
    """What an exception during a session means: a dropped connection, or a device problem."""
    if isinstance(e, (asyncssh.ConnectionLost, asyncssh.SFTPConnectionLost, asyncssh.DisconnectError,
                      ConnectionError, asyncio.IncompleteReadError)):
        return _Dropped(phase, str(e) or type(e).__name__)
    if isinstance(e, asyncssh.ChannelOpenError):
        return DeviceError(f"device {ep.name} ({ep.where}) refused to open a channel while {phase}: {e.reason}",
                           hint="its sshd must allow sessions and the sftp subsystem (Subsystem sftp in sshd_config)")
    if isinstance(e, asyncssh.SFTPError):
        return DeviceError(f"device {ep.name} ({ep.where}): copying the job to the device failed: {e.reason}",
                           hint="check free space and permissions of workdir on the device")
    return e


def _job_files(model_path: Optional[Path], extra_files: dict, script: str) -> List[Tuple[str, Path]]:
    """(name in the job folder, host file) of everything a job pushes; InputError for a bad one."""
    scripts = [p for p in sorted(device_side_dir().glob("*.py")) if p.name != "__init__.py"]
    if not any(p.name == script for p in scripts):
        raise DeviceError(f"this edgecompress install has no device-side {script} in {device_side_dir()}",
                          hint="reinstall edgecompress")
    files = [(p.name, p) for p in scripts]
    if model_path is not None:
        if not model_path.is_file():
            raise InputError(f"model file not found: {model_path}", hint="pass the path of an existing model file")
        files.append((model_path.name, model_path))
    check_extra_names(extra_files, {name for name, _ in files} | {JOB_FILE, AGENT_FOLDER_LOCK})
    return files + [(name, Path(source)) for name, source in extra_files.items()]


def _parsed(ep: _Endpoint, agent: _Agent, plan: "_Plan", code: int) -> dict:
    """The job's result; its failure says when the clocks may still be pinned."""
    try:
        return parse_result(plan.what, f"on device {ep.name} ({ep.where})", code, agent.streams)
    except DeviceError as e:
        if not _pinned_note(agent) or "may still be pinned" in e.message:
            raise
        raise DeviceError(f"{e.message}{_pinned_note(agent)}", hint=e.hint) from None


def _with_restored_note(result: dict, ready: dict) -> dict:
    """Say in the result that clocks left pinned by an earlier job were restored before it ran."""
    restored = ready.get("restored_clocks")
    if not isinstance(restored, dict) or not isinstance(result.get("warnings"), list):
        return result
    note = (f"the Jetson clocks an earlier job left pinned (pid {restored.get('pid', '?')}, since "
            f"{restored.get('since', '?')}) were restored before this job")
    return dict(result, warnings=result["warnings"] + [note])


@dataclass
class _Plan:
    """One session's work: what to push and run, whether it takes the device lock, its timeout."""

    what: str  # for messages: "the benchmark of model.onnx"
    argv: list  # run in the job folder with the device's python
    files: List[Tuple[str, Path]]
    job_bytes: Optional[bytes]
    lock: bool
    timeout_s: float
    fetch_dir: Optional[Path] = None  # where the job's `artifacts` go; None: nothing is fetched
    phase: str = "connecting"  # what was happening, for a dropped connection's message
    term_grace_s: float = TERM_GRACE_S  # the device's SIGTERM -> SIGKILL; longer when the job locks clocks


async def _session(asyncssh, ep: _Endpoint, device: Device, plan: _Plan, on_progress) -> tuple:
    """One connection: agent, lock, upload, run. (parsed result, agent's ready payload, connect s)."""
    started = time.monotonic()
    plan.phase = "connecting"
    async with await _connect(asyncssh, ep) as conn:
        connect_s = time.monotonic() - started
        try:
            return await _in_session(ep, device, conn, plan, on_progress) + (connect_s,)
        except (DeviceError, InputError, _Dropped):
            raise
        except Exception as e:
            mapped = _session_error(asyncssh, ep, plan.phase, e)
            if mapped is e:
                raise
            raise mapped from e


async def _in_session(ep: _Endpoint, device: Device, conn, plan: _Plan, on_progress) -> tuple:
    plan.phase = "waiting for the device lock" if plan.lock else "starting the device side"
    process = await conn.create_process(_agent_command(device, plan.lock, plan.timeout_s, plan.fetch_dir is not None,
                                                       plan.term_grace_s), encoding="utf-8", errors="replace")
    agent = _Agent(process, on_progress)
    try:
        ready = await _ready(ep, device, agent, plan.timeout_s, on_progress)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + plan.timeout_s  # copying and running share the job timeout
        plan.phase = "copying the job to the device"
        try:
            await asyncio.wait_for(_upload(conn, ready["folder"], plan.files, plan.job_bytes),
                                   max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise DeviceError(f"copying the job to device {ep.name} ({ep.where}) took longer than the job "
                              f"timeout of {plan.timeout_s:g} s",
                              hint="a slow link needs a larger job_timeout_s in devices.yaml") from None
        plan.phase = f"running {plan.what}"
        code = await _run_in_folder(ep, agent, plan.argv, deadline, plan)
        try:
            result = _parsed(ep, agent, plan, code)
            if plan.fetch_dir is not None and result.get("artifacts"):
                plan.phase = "copying the job's artifacts back"
                await _download(conn, ready["folder"], result["artifacts"], plan.fetch_dir)
        finally:
            agent.send("done")
            await agent.finish()
        return _with_restored_note(result, ready), ready
    finally:
        for pump in agent.pumps:
            pump.cancel()


def run_ssh(job: dict, model_path: Path, *, device: Device, extra_files: dict | None = None,
            on_progress: Callable[[str], None] | None = None, timeout_s: float | None = None,
            fetch_dir: Path | None = None) -> dict:
    """Run `job` on `model_path` on an ssh device and return its result, as run_local does.

    The job waits for the device's lock (up to the timeout, reporting who holds it), then has the
    job timeout (timeout_s, else device.job_timeout_s) to copy and run; past it the job is killed
    on the device. A dropped connection is retried once on a new connection. The job folder is
    always removed. InputError for a bad model, extra file or device entry; DeviceError otherwise."""
    asyncssh = _asyncssh()
    ep = _endpoint(asyncssh, device)
    model_path = Path(model_path)
    lock_clocks = bool(job.get("lock_clocks"))
    plan = _Plan(what=f"the benchmark of {model_path.name}", argv=[SCRIPT, JOB_FILE],
                 files=_job_files(model_path, dict(extra_files or {}), SCRIPT),
                 job_bytes=json.dumps(dict(job, model=model_path.name), indent=1).encode(),
                 lock=True, timeout_s=float(timeout_s or device.job_timeout_s),
                 fetch_dir=None if fetch_dir is None else Path(fetch_dir),
                 term_grace_s=CLOCKS_TERM_GRACE_S if lock_clocks else TERM_GRACE_S)
    for attempt in (1, 2):
        try:
            result, _, _ = _run_sync(lambda: _session(asyncssh, ep, device, plan, on_progress))
            break
        except _Dropped as drop:
            if attempt == 2:
                raise DeviceError(f"the connection to device {ep.name} ({ep.where}) dropped while {drop.phase} "
                                  f"({drop.reason}), again after one retry on a new connection"
                                  f"{_dropped_clocks_note(device, lock_clocks)}",
                                  hint=f"check the device and the link (rebooting? out of memory? flaky Wi-Fi?), "
                                       f"then try `edgecompress devices check {ep.name}`") from None
            if on_progress is not None:
                on_progress(f"connection to device {ep.name} dropped while {drop.phase}; retrying on a new "
                            f"connection")
    check_protocol(result, model_path.name, f"on device {ep.name}")
    return dict(result, runner="ssh", measured_on="device", device_name=device.name)


def _dropped_clocks_note(device: Device, lock_clocks: bool) -> str:
    if not lock_clocks:
        return ""
    store = _remote_program(posixpath.join(device.workdir, CLOCKS_STORE))  # quoted, ~/ left to the device
    return (f"\nthe device restores its Jetson clocks itself once it sees the link gone, and the next job there "
            f"does if it could not; to be sure now, run `sudo jetson_clocks --restore {store}` on it")


def check_ssh(device: Device) -> dict:
    """Connect, run the device-side probe (`python ec_probe.py`) in a fresh job folder, and return
    its JSON plus connect_s, the endpoint (host, port, user after the ssh config) and `busy` (the
    owner of the device lock while a job holds it, else None). The probe takes no lock.
    DeviceError says why the device could not be reached or probed."""
    asyncssh = _asyncssh()
    ep = _endpoint(asyncssh, device)
    plan = _Plan(what="the device probe", argv=[PROBE_SCRIPT], files=_job_files(None, {}, PROBE_SCRIPT),
                 job_bytes=None, lock=False, timeout_s=float(device.job_timeout_s))
    try:
        info, ready, connect_s = _run_sync(lambda: _session(asyncssh, ep, device, plan, None))
    except _Dropped as drop:
        raise DeviceError(f"the connection to device {ep.name} ({ep.where}) dropped while {drop.phase} "
                          f"({drop.reason})", hint="check the device and the link, then try again") from None
    return dict(info, connect_s=round(connect_s, 3), device_name=device.name, host=ep.host, port=ep.port,
                user=ep.user, busy=ready.get("busy"))


class SshRunner:
    """The Runner for a `transport: ssh` device."""

    stoppable = False  # a job ends when the link drops (the agent kills it), so bench keeps it a daemon thread

    def __init__(self, device: Device) -> None:
        self.device = device

    def run(self, job: dict, model: Path, *, extra_files: Optional[dict] = None, fetch_dir: Optional[Path] = None,
            on_progress: Optional[Callable[[str], None]] = None, stop=None) -> dict:
        return run_ssh(job, model, device=self.device, extra_files=extra_files, on_progress=on_progress,
                       fetch_dir=fetch_dir)

    def check(self) -> dict:
        return check_ssh(self.device)


RUNNERS.register("ssh")(SshRunner)
