"""The host side of the device link: each runner takes a job (the protocol in
edgecompress/deploy/ec_bench.py), runs the device side where the model is measured, and returns its
result. Runners are registered by name in RUNNERS."""
from __future__ import annotations

from pathlib import Path

from ..registry import Registry

RUNNERS = Registry("runner")


def device_side_dir() -> Path:
    """The folder of device-side programs (shipped in the wheel) that a runner copies to the device."""
    return Path(__file__).resolve().parent.parent / "deploy"


from . import local  # noqa: E402,F401  (registers "local"; it imports nothing heavy)
