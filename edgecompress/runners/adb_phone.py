"""The adb runner's link to the phone: the adb server's address, the phone on it (every adb call
mapped to DeviceError naming the device), and the read-only probes (properties, battery,
PowerStats) that a job and `devices check` share."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from typing import Optional

from ..errors import DeviceError, InputError
from ..inventory import Device
from . import android_power as power

BASE = "/data/local/tmp/edgecompress"
LOCK = f"{BASE}/lock"
CONTROL_TIMEOUT_S = 60.0  # one short adb command (dumpsys can take seconds on a busy phone)


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


def _props(phone: _Phone) -> dict:
    names = ("ro.product.model", "ro.build.version.release", "ro.build.version.sdk", "ro.product.cpu.abi")
    _, out, _ = phone.sh("; ".join(f"echo \"{n}=$(getprop {n})\"" for n in names), "reading device properties")
    values = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
    return {"model": values.get(names[0]) or None, "android_version": values.get(names[1]) or None,
            "sdk": values.get(names[2]) or None, "arch": values.get(names[3]) or None}


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
