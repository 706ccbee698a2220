"""The benchmark stage, host side: turns a profile's `bench` section into runner jobs (see
DESIGN.md, runner job contract) and runs them through a runner: on this host for now, the same
device-side program that runs on devices."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Dict, Optional

PROTOCOL_VERSION = 1


def make_job(cfg, runtime: str) -> dict:
    """Inputs are left to the device side: it draws random inputs shaped like the model's own
    (dynamic dimensions set to 1), so no input name or shape can disagree with the model."""
    return {
        "protocol_version": PROTOCOL_VERSION,
        "runtime": runtime,
        "runtime_options": {"threads": cfg.threads},
        "warmup": {"runs": cfg.warmup_runs, "seconds": cfg.warmup_seconds},
        "runs": {"count": cfg.runs, "seconds": cfg.seconds},
        "energy": cfg.energy,
        "idle_seconds": cfg.idle_seconds,
    }


def _log_progress(label: str) -> Callable[[str], None]:
    """On a terminal, one line rewritten in place; in a log, only the start and the end."""
    tty = sys.stderr.isatty()

    def show(text: str) -> None:
        if tty:
            print(f"\r\033[K  bench {label}: {text}", end="", file=sys.stderr, flush=True)
        elif not any(word in text for word in ("warmup ", "timed ")) or " in " in text:
            print(f"  bench {label}: {text}", file=sys.stderr, flush=True)
    return show


def measure(models: Dict[str, Path], cfg, runtime: str, quiet: bool = False) -> Dict[str, dict]:
    """Each model in its own device-side process, one after the other, in one call: the original
    and the compressed model are measured in the same run under the same conditions."""
    from .runners import RUNNERS

    run = RUNNERS.get("local")
    results = {}
    for label, path in models.items():
        job = make_job(cfg, runtime)
        results[label] = run(job, path, on_progress=None if quiet else _log_progress(label))
    return results


def speedup(original: dict, compressed: dict) -> Optional[float]:
    try:
        return original["latency_ms"]["p50"] / compressed["latency_ms"]["p50"]
    except (KeyError, TypeError, ZeroDivisionError):
        return None
