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
import base64
import concurrent.futures
import functools
import getpass
import json
import os
import posixpath
import shlex
import socket
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from ..errors import DeviceError, InputError
from ..inventory import Device
from . import RUNNERS, check_extra_names, device_side_dir
from .local import JOB_FILE, SCRIPT, _context, _Streams, check_protocol, parse_result

PROBE_SCRIPT = "ec_probe.py"
AGENT_PREFIX = "@ec-agent "  # ssh_agent.PREFIX (not imported: it needs fcntl, which Windows hosts lack)
AGENT_FOLDER_LOCK = ".ec-lock"  # ssh_agent.FOLDER_LOCK, the lock file inside each job folder
AGENT_START_SLACK_S = 30.0  # beyond the lock wait: starting python on a slow device
KILL_GRACE_S = 10.0  # for the agent to kill the job and remove its folder
KEEPALIVE_INTERVAL_S = 15.0  # a silently dead link is noticed after ~3 of these
DEVICE_BACKSTOP_S = 60.0  # the agent kills a job this long after the host's own job timeout
TERM_GRACE_S = 5.0  # ssh_agent.TERM_GRACE_S: SIGTERM -> SIGKILL of a job on the device
# A job that locks Jetson clocks gets longer: ec_clocks allows `jetson_clocks --restore` 60 s
# (COMMAND_TIMEOUT_S), and a SIGKILL half-way through would leave the clocks pinned.
CLOCKS_TERM_GRACE_S = 75.0
CLOCKS_STORE = "jetson_clocks.store"  # ec_clocks.STORE_FILE, kept in the workdir


class _Dropped(Exception):
    """The connection died after login; run_ssh retries once."""

    def __init__(self, phase: str, reason: str):
        super().__init__(f"{phase}: {reason}")
        self.phase, self.reason = phase, reason


@dataclass
class _Endpoint:
    """Where a device really is, after its ssh config: for connecting and for messages."""

    name: str
    host: str
    port: int
    user: str
    known_hosts: Path
    key: Optional[Path]
    kwargs: dict

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}"

    @property
    def where(self) -> str:
        return f"{self.login}:{self.port}" if ":" not in self.host else f"{self.user}@[{self.host}]:{self.port}"

    @property
    def known_as(self) -> str:
        """The host as known_hosts and ssh-keygen -R name it."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _asyncssh():
    try:
        import asyncssh
    except ImportError:
        raise InputError("the ssh transport needs asyncssh, which is not installed",
                         hint="pip install 'edgecompress[ssh]'") from None
    return asyncssh


def _run_sync(make_coroutine: Callable):
    """Run a coroutine to the end from sync code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # e.g. inside a notebook
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


def _user_file(value: Optional[str], default: Optional[Path], device: Device, key: str) -> Optional[Path]:
    """A file the device entry names (it must exist), or the default when that exists."""
    if value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise InputError(f"device '{device.name}': {key} file {path} does not exist",
                             hint=f"fix devices.{device.name}.{key} in devices.yaml")
        return path
    return default if default is not None and default.is_file() else None


def _check_host(device: Device) -> None:
    """`host: pi@192.168.1.20` is an ssh habit; asyncssh would look up the name `pi@192.168.1.20`."""
    user, at, host = device.host.rpartition("@")
    if at:
        raise InputError(f"device '{device.name}': host '{device.host}' holds a user name as well",
                         hint=f"split it in devices.yaml: devices.{device.name}.user: {user} and "
                              f"devices.{device.name}.host: {host}")


def _check_private_key(key: Optional[Path], device: Device) -> None:
    """A key: that names the public half (id_ed25519.pub) cannot log in."""
    if key is None:
        return
    try:
        head = key.read_bytes()[:16]
    except OSError:
        head = b""
    if key.suffix == ".pub" or head.startswith((b"ssh-", b"ecdsa-", b"sk-ssh-", b"sk-ecdsa-")):
        private = key.with_suffix("") if key.suffix == ".pub" else key
        raise InputError(f"device '{device.name}': key file {key} is a public key",
                         hint=f"use the private key, without .pub: devices.{device.name}.key: {private}")


def _endpoint(asyncssh, device: Device) -> _Endpoint:
    """Connection settings (key logins only), resolved through the ssh config for messages."""
    if device.transport != "ssh" or not device.host:
        raise InputError(f"device '{device.name}' is not an ssh device with a host",
                         hint="give it transport: ssh and host: ADDRESS or an ssh config alias")
    _check_host(device)
    config = _user_file(device.ssh_config, Path("~/.ssh/config").expanduser(), device, "ssh_config")
    key = _user_file(device.key, None, device, "key")
    _check_private_key(key, device)
    known = Path(device.known_hosts or "~/.ssh/known_hosts").expanduser()
    kwargs = dict(host=device.host, config=[str(config)] if config else [],
                  connect_timeout=device.connect_timeout_s, login_timeout=device.connect_timeout_s,
                  keepalive_interval=KEEPALIVE_INTERVAL_S, keepalive_count_max=3,
                  password_auth=False, kbdint_auth=False, gss_auth=False, gss_kex=False,
                  host_based_auth=False, known_hosts=_known_hosts(asyncssh, known, device))
    if device.port is not None:
        kwargs["port"] = device.port
    if device.user:
        kwargs["username"] = device.user
    if key is not None:
        kwargs["client_keys"] = [str(key)]
    try:
        options = asyncssh.SSHClientConnectionOptions(**kwargs)
    except (asyncssh.KeyImportError, ValueError, OSError) as e:
        raise InputError(f"device '{device.name}': cannot use its ssh settings (key {key or 'from ssh config/agent'},"
                         f" ssh config {config or 'none'}): {e}",
                         hint="an encrypted key must be loaded into ssh-agent (ssh-add KEY) and left out of "
                              "devices.yaml") from None
    return _Endpoint(device.name, options.host, options.port, options.username, known, key, kwargs)


def _known_hosts(asyncssh, path: Path, device: Device):
    try:
        return asyncssh.read_known_hosts(str(path)) if path.is_file() else asyncssh.import_known_hosts("")
    except (ValueError, OSError) as e:
        raise InputError(f"device '{device.name}': known_hosts file {path} cannot be read: {e}",
                         hint="fix or remove the bad line; each line is `HOST KEYTYPE KEY`") from None


def _host_key_error(ep: _Endpoint, offered: dict, reason: str) -> DeviceError:
    """Unknown host: the command that trusts it. Changed key: a loud refusal. Never accepted."""
    if "key" not in offered:  # refused before any comparison (a revoked key, an untrusted CA)
        return DeviceError(f"device {ep.name} ({ep.where}): its host key was refused: {reason}. Nothing was sent "
                           f"to it.", hint=f"check the entries for {ep.known_as} in {ep.known_hosts}")
    fingerprint = offered["key"].get_fingerprint()
    known_hosts = shlex.quote(str(ep.known_hosts))
    check = "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub, run on the device itself"
    if offered["known"]:
        return DeviceError(
            f"HOST KEY CHANGED for device {ep.name} ({ep.where}): the key it offers ({fingerprint}) is not the "
            f"one {ep.known_hosts} holds for {ep.known_as}. Someone may be intercepting the connection, or the "
            f"device was reinstalled. Nothing was sent to it.",
            hint=f"only if you know it was reinstalled: compare {fingerprint} with the device's own ({check}), "
                 f"then replace the old entry: ssh-keygen -R {shlex.quote(ep.known_as)} -f {known_hosts}")
    mkdir = "" if ep.known_hosts.parent.is_dir() else f"mkdir -p {shlex.quote(str(ep.known_hosts.parent))} && "
    return DeviceError(
        f"device {ep.name} ({ep.where}) is not in {ep.known_hosts}; its host key ({fingerprint}) was not "
        f"accepted. Nothing was sent to it.",
        hint=f"to trust it, run: {mkdir}ssh-keyscan -p {ep.port} {shlex.quote(ep.host)} >> {known_hosts}  "
             f"-- but first check that the fingerprint above is the device's own ({check})")


def _recording_client(asyncssh, ep: _Endpoint, offered: dict):
    class Client(asyncssh.SSHClient):
        def validate_host_public_key(self, host, addr, port, key):  # only called for an untrusted key
            offered["key"] = key
            offered["known"] = bool(asyncssh.match_known_hosts(ep.kwargs["known_hosts"], host, addr,
                                                               port if port != 22 else None)[0])
            return False

    return Client


async def _connect(asyncssh, ep: _Endpoint):
    """An open connection, or DeviceError saying why not and what to do."""
    offered: dict = {}
    reach = f"check that the device is on and reachable: ssh -p {ep.port} {shlex.quote(ep.login)}"
    try:
        return await asyncssh.connect(client_factory=_recording_client(asyncssh, ep, offered), **ep.kwargs)
    except asyncssh.HostKeyNotVerifiable as e:
        raise _host_key_error(ep, offered, e.reason) from None
    except asyncssh.PermissionDenied:
        key = f"-i {shlex.quote(str(ep.key))} " if ep.key else ""
        raise DeviceError(f"device {ep.name} ({ep.where}) refused the key login for user {ep.user}",
                          hint=f"install your public key on it: ssh-copy-id {key}-p {ep.port} {shlex.quote(ep.login)}"
                               " (only key logins are used: key: in devices.yaml, the ssh config's IdentityFile, "
                               "or ssh-agent)") from None
    except asyncssh.DisconnectError as e:
        raise DeviceError(f"device {ep.name} ({ep.where}) closed the connection during login: {e.reason}",
                          hint=reach) from None
    except asyncio.TimeoutError:
        raise DeviceError(f"could not connect to device {ep.name} ({ep.where}) within "
                          f"{ep.kwargs['connect_timeout']:g} s",
                          hint=f"{reach}; a slow link needs a larger connect_timeout_s in devices.yaml") from None
    except OSError as e:
        raise DeviceError(f"cannot reach device {ep.name} ({ep.where}): {e.strerror or e}", hint=reach) from None


@functools.lru_cache(maxsize=1)
def _agent_source() -> str:
    """The agent as one shell-safe word: base64 of its compressed source, run with exec."""
    source = (Path(__file__).with_name("ssh_agent.py")).read_bytes()
    packed = base64.b64encode(zlib.compress(source, 9)).decode("ascii")
    return f"import base64,zlib;exec(zlib.decompress(base64.b64decode('{packed}')))"


def _remote_program(path: str) -> str:
    """The device's python for its shell: quoted, with a leading ~/ left to the device's $HOME."""
    if path == "~" or path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"' + (f"/{shlex.quote(rest)}" if rest else "")
    return shlex.quote(path)


def _agent_command(device: Device, lock: bool, timeout_s: float, fetch: bool = False,
                   term_grace_s: float = TERM_GRACE_S) -> str:
    """The one line the device's login shell runs; every word is quoted."""
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "user": _local_user()}
    config = {"workdir": device.workdir, "lock": lock, "wait_s": timeout_s, "owner": owner,
              "kill_after_s": timeout_s + DEVICE_BACKSTOP_S, "fetch": fetch, "term_grace_s": term_grace_s}
    return " ".join(["exec", _remote_program(device.python), "-c", shlex.quote(_agent_source()),
                     shlex.quote(json.dumps(config))])


def _local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (e.g. a bare container)
        return str(os.getuid())


class _Agent:
    """The agent process on the device: its messages, and the job's stdout and stderr, in order."""

    def __init__(self, process, on_progress):
        self.process, self.on_progress = process, on_progress
        self.clocks_pinned = None  # the agent's `clocks_pinned` record: the job could not restore them
        self.streams = _Streams()
        self.lines: asyncio.Queue = asyncio.Queue()
        self.open_streams = 2
        self.pumps = [asyncio.ensure_future(self._pump(process.stdout, "stdout")),
                      asyncio.ensure_future(self._pump(process.stderr, "stderr"))]

    async def _pump(self, reader, name: str) -> None:
        try:
            async for line in reader:
                await self.lines.put((name, line.rstrip("\r\n")))
        except Exception as e:  # the connection died under the reader
            await self.lines.put(("error", e))
        await self.lines.put((name, None))

    async def event(self, deadline: float) -> Tuple[str, object]:
        """The next agent message as (kind, payload), ("eof", None) or ("timeout", None)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                name, line = await asyncio.wait_for(self.lines.get(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return "timeout", None
            if name == "error":
                raise line
            if line is None:
                self.open_streams -= 1
                if self.open_streams == 0:
                    return "eof", None
            elif name == "stdout" and line.startswith(AGENT_PREFIX):
                kind, _, payload = line[len(AGENT_PREFIX):].partition(" ")
                payload = json.loads(payload) if payload else None
                if kind == "clocks_pinned":
                    self.clocks_pinned = payload
                return kind, payload
            else:
                self.streams.take(name, line, self.on_progress)

    def send(self, message: str) -> None:
        self.process.stdin.write(message + "\n")

    async def finish(self, term_grace_s: float = TERM_GRACE_S) -> None:
        """Wait for the agent to end the job (SIGTERM, then SIGKILL after term_grace_s), remove its
        folder and exit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + term_grace_s + KILL_GRACE_S
        while self.open_streams and (await self.event(deadline))[0] not in ("eof", "timeout"):
            pass


def _how_it_ended(process, payload) -> str:
    if process.exit_signal:
        return f"killed by signal {process.exit_signal[0]}"
    return str(payload) if payload else f"exit code {process.exit_status}"


def _owner_text(owner) -> str:
    if not isinstance(owner, dict) or not owner:
        return "a job (owner unknown)"
    busy = f", {owner['busy_s']:.0f} s" if isinstance(owner.get("busy_s"), (int, float)) else ""
    return (f"job from host {owner.get('host', '?')} (pid {owner.get('pid', '?')}, user {owner.get('user', '?')})"
            f" since {owner.get('since', '?')}{busy}")


def _pinned_note(agent: _Agent) -> str:
    """What to run when the device says the job could not restore its Jetson clocks."""
    pinned = agent.clocks_pinned
    if not isinstance(pinned, dict):
        return ""
    why = f" ({pinned['error']})" if pinned.get("error") else ""
    return (f"\nthe Jetson clocks may still be pinned{why}: run `{pinned.get('command')}` on the device (the next "
            f"job on it tries that first)")


def _clocks_still_pinned(ep: _Endpoint, agent: _Agent) -> DeviceError:
    pinned = agent.clocks_pinned or {}
    return DeviceError(f"device {ep.name} ({ep.where}): an earlier job left its Jetson clocks pinned (pid "
                       f"{pinned.get('pid', '?')}, since {pinned.get('since', '?')}), and restoring them failed: "
                       f"{pinned.get('error')}. Nothing ran, so they are not taken as the baseline.",
                       hint=f"run `{pinned.get('command')}` on the device (--lock-clocks needs root or a "
                            f"password-less sudo rule for jetson_clocks), then try again")


def _agent_failed(ep: _Endpoint, device: Device, agent: _Agent, kind: str, payload) -> DeviceError:
    if kind == "error":
        return DeviceError(f"device {ep.name} ({ep.where}): the device side failed in {device.workdir}: {payload}"
                           f"{_context(agent.streams)}", hint="check that workdir in devices.yaml is writable")
    code = agent.process.exit_status
    return DeviceError(f"device {ep.name} ({ep.where}): could not start the device side with "
                       f"`{device.python}` (exit code {code}){_context(agent.streams)}",
                       hint=f"set devices.{device.name}.python to an interpreter on the device (Python >= 3.8)")


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
