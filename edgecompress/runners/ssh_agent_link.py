"""The host's side of the ssh agent (ssh_agent.py, the program the device runs for each job): the
command line that starts it, its message stream, and the errors that name what it reported."""
from __future__ import annotations

import asyncio
import base64
import functools
import getpass
import json
import os
import shlex
import socket
import zlib
from pathlib import Path
from typing import Tuple

from ..errors import DeviceError
from ..inventory import Device
from .local import _context, _Streams
from .ssh_connect import _Endpoint

AGENT_PREFIX = "@ec-agent "  # ssh_agent.PREFIX (not imported: it needs fcntl, which Windows hosts lack)
AGENT_FOLDER_LOCK = ".ec-lock"  # ssh_agent.FOLDER_LOCK, the lock file inside each job folder
AGENT_START_SLACK_S = 30.0  # beyond the lock wait: starting python on a slow device
KILL_GRACE_S = 10.0  # for the agent to kill the job and remove its folder
DEVICE_BACKSTOP_S = 60.0  # the agent kills a job this long after the host's own job timeout
TERM_GRACE_S = 5.0  # ssh_agent.TERM_GRACE_S: SIGTERM -> SIGKILL of a job on the device
# A job that locks Jetson clocks gets longer: ec_clocks allows `jetson_clocks --restore` 60 s
# (COMMAND_TIMEOUT_S), and a SIGKILL half-way through would leave the clocks pinned.
CLOCKS_TERM_GRACE_S = 75.0
CLOCKS_STORE = "jetson_clocks.store"  # ec_clocks.STORE_FILE, kept in the workdir


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
