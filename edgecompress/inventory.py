"""The device inventory: `devices.yaml` in the working folder, else
`~/.config/edgecompress/devices.yaml` (DESIGN.md, device inventory contract). Closed schema, like
the profiles: a typo in a device entry is an error that names the file, the device and the key."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InputError
from .registry import closest


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""  # filled from the mapping key
    target: str
    transport: Literal["ssh", "adb", "local"] = "ssh"
    # ssh
    host: Optional[str] = None  # an address, or a Host alias from ~/.ssh/config
    port: Optional[int] = Field(default=None, ge=1, le=65535)  # None: from ~/.ssh/config, else 22
    user: Optional[str] = None
    key: Optional[str] = None  # private key file; None: the ssh config's / agent's keys
    known_hosts: Optional[str] = None  # None: ~/.ssh/known_hosts
    ssh_config: Optional[str] = None  # None: ~/.ssh/config when it exists
    python: str = "python3"  # the device's interpreter that has the runtime installed
    workdir: str = "~/.cache/edgecompress"  # job folders and the device lock live here
    connect_timeout_s: float = Field(default=15.0, gt=0)
    job_timeout_s: float = Field(default=900.0, gt=0)
    # adb
    serial: Optional[str] = None
    benchmark_model: Optional[str] = None


ENTRY_EXAMPLE = "devices: {lab-pi: {target: raspberry-pi-5, transport: ssh, host: 192.168.1.20}}"


def inventory_paths() -> list:
    return [Path.cwd() / "devices.yaml", Path.home() / ".config" / "edgecompress" / "devices.yaml"]


def find_inventory(explicit: Optional[str] = None) -> Optional[Path]:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            what = "is a folder, not a devices.yaml file" if path.is_dir() else "does not exist"
            raise InputError(f"device inventory {path} {what}",
                             hint="name the devices.yaml file itself in --inventory / $EDGECOMPRESS_DEVICES"
                             if path.is_dir() else "check the --inventory / $EDGECOMPRESS_DEVICES path")
        return path
    env = os.environ.get("EDGECOMPRESS_DEVICES")
    if env:
        return find_inventory(env)
    return next((p for p in inventory_paths() if p.is_file()), None)


def load(explicit: Optional[str] = None) -> Dict[str, Device]:
    path = find_inventory(explicit)
    if path is None:
        raise InputError("no device inventory found (looked at " + ", ".join(map(str, inventory_paths()))
                         + "; $EDGECOMPRESS_DEVICES is not set)",
                         hint="write devices.yaml as in the README (devices: NAME: {target, transport, host, ...}) "
                              "in one of those places, or point to yours: export EDGECOMPRESS_DEVICES=FILE")
    from .profile import load_yaml

    data = load_yaml(path, "device inventory", InputError) or {}
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        raise InputError(f"device inventory {path} must have a top-level 'devices:' mapping of NAME: settings",
                         hint=ENTRY_EXAMPLE)
    devices, problems = {}, []
    for name, entry in data["devices"].items():
        if entry is not None and not isinstance(entry, dict):  # `lab-pi: raspberry-pi-5`
            problems.append(f"devices.{name}: {entry!r} is a {type(entry).__name__}, not a mapping of settings: "
                            f"write `{name}:` on a line of its own and its keys indented below it "
                            f"(target: {entry if isinstance(entry, str) else 'PROFILE'}, transport: ssh, host: ...)")
            continue
        try:
            devices[str(name)] = Device.model_validate(dict(entry or {}, name=str(name)))
        except ValidationError as exc:
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"])
                hint = closest(key, Device.model_fields) if err["type"] == "extra_forbidden" else ""
                problems.append(f"devices.{name}.{key}: {err['msg']}.{hint}")
        target = (entry or {}).get("target") if isinstance(entry, dict) else None
        if isinstance(target, str) and (problem := _target_problem(target)):  # also when another key is wrong
            problems.append(f"devices.{name}.target: {problem}")
    if problems:
        raise InputError(f"device inventory {path} has {len(problems)} problem(s):\n  " + "\n  ".join(problems),
                         hint=f"fix those entries in {path}; the README's device inventory section shows every "
                              f"key; an entry looks like {ENTRY_EXAMPLE}")
    return devices


def _target_problem(target: str) -> Optional[str]:
    """A misspelt target is reported where it was written, when the inventory is read."""
    from . import profile
    from .errors import ProfileError

    if target.endswith((".yaml", ".yml")):
        return None  # a profile file: resolved when a run uses the device
    try:
        profile.resolve_name(target)
    except ProfileError as exc:
        return f"{exc.message} Known targets: {', '.join(profile.available())}"
    return None


def get(name: str, explicit: Optional[str] = None) -> Device:
    devices = load(explicit)
    if name not in devices:
        raise InputError(f"unknown device '{name}'.{closest(name, devices)}",
                         hint=f"devices in the inventory: {', '.join(devices) or 'none'}")
    device = devices[name]
    if device.transport == "ssh" and not device.host:
        raise InputError(f"device '{name}' has transport ssh but no host", hint="add host: ADDRESS or an ssh alias")
    remote = sorted(k for k in REMOTE_ONLY_KEYS if getattr(device, k) is not None)
    if device.transport == "local" and remote:
        raise InputError(f"device '{name}' has transport local, which runs on this host, but sets "
                         f"{', '.join(remote)}", hint="set transport: ssh (host) or adb (serial) for another machine, "
                                                      "or remove those keys")
    return device


# keys that name another machine: with transport local they would be ignored, and the run would
# measure this host while the user thinks it measured that one
REMOTE_ONLY_KEYS = ("host", "port", "user", "key", "serial", "benchmark_model")
