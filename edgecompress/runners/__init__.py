"""The host side of the device link: each runner takes a job (the protocol in
edgecompress/deploy/ec_bench.py), runs the device side where the model is measured, and returns its
result. A transport ("local", "ssh", "adb") registers in RUNNERS a factory device -> Runner;
`runner(device)` imports the transport's module on demand (the ssh one pulls in asyncssh, which a
host-only run never needs) and builds its Runner."""
from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Optional, Protocol


from ..errors import InputError
from ..registry import Registry

if TYPE_CHECKING:
    from ..inventory import Device

# The one host-side copy. The device side (deploy/ec_job.py, deploy/ec_probe.py) never imports
# edgecompress and keeps its own; tests/test_protocol_versions.py holds them all equal.
PROTOCOL_VERSION = 1


class Runner(Protocol):
    """What a transport implements: run one job on the device, and probe the device."""

    device: Optional["Device"]  # None: this host
    stoppable: bool  # whether run() honours `stop` (ends the job through its cleanup mid-way)

    def run(self, job: dict, model: Path, *, extra_files: Optional[Dict[str, Path]] = None,
            fetch_dir: Optional[Path] = None, on_progress: Optional[Callable[[str], None]] = None,
            stop: Optional[threading.Event] = None) -> dict:
        """The job's result (the device side's JSON plus runner, measured_on, device_name).
        InputError for a bad job, model or extra file; DeviceError when the device side fails."""

    def check(self) -> dict:
        """What `edgecompress devices check` prints for the device."""


RUNNERS: Registry = Registry("transport")  # transport name -> factory(device) -> Runner


def runner(device: Optional["Device"]) -> Runner:
    """The Runner for an inventory device; None means this host (transport local)."""
    transport = "local" if device is None else device.transport
    if transport not in RUNNERS:
        try:
            importlib.import_module(f"{__name__}.{transport}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{transport}":
                raise  # the transport exists but a library it needs is missing: say that one
    return RUNNERS.get(transport)(device)


def check(device: "Device") -> dict:
    """`edgecompress devices check` for one device: runner(device).check()."""
    return runner(device).check()


def check_extra_names(extra_files: Dict[str, Path], taken: Iterable[str]) -> None:
    """The one check of a job's extra files, shared by every runner: each name a plain file name in
    the job folder (not "", "." or "..", no folder part), clashing with none of the job's own files
    (`taken`) or another extra file, and each source an existing file. InputError otherwise."""
    taken = set(taken)
    for name, source in extra_files.items():
        if not name or name in (".", "..") or Path(name).name != name or name in taken:
            raise InputError(f"extra file name '{name}' is not a plain file name or clashes with the job's "
                             f"own files ({', '.join(sorted(taken))})",
                             hint="name each extra file by a plain file name that no job file has")
        if not Path(source).is_file():
            raise InputError(f"extra file for '{name}' not found: {source}",
                             hint="pass the path of an existing file")
        taken.add(name)


def device_side_dir() -> Path:
    """The folder of device-side programs (shipped in the wheel) that a runner copies to the device."""
    return Path(__file__).resolve().parent.parent / "deploy"


from . import local  # noqa: E402,F401  (registers "local"; it imports nothing heavy)
