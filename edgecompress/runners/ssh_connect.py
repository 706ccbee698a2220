"""The ssh runner's connection: where a device really is after its ssh config (_Endpoint), the
checks of its inventory entry, host-key verification with messages that say what was offered, and
the asyncssh connection itself. asyncssh is imported on first use (the [ssh] extra)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import DeviceError, InputError
from ..inventory import Device

KEEPALIVE_INTERVAL_S = 15.0  # a silently dead link is noticed after ~3 of these


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
