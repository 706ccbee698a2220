"""The benchmark stage, host side: turns a profile's `bench` section into runner jobs (see
DESIGN.md, runner job contract) and runs them through a runner: a process on this host, or a device
from the inventory over its transport. The same device-side program runs in every case."""
from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .runners import PROTOCOL_VERSION, runner
NOISY_SPREAD_PCT = 10.0  # the device side's threshold for its drift warning (ec_bench.NOISY_SPREAD_PCT)


@dataclass
class Model:
    """One model to measure, with what its runtime needs besides the bench settings."""

    path: Path
    runtime: str
    options: Optional[dict] = None  # runtime_options; default: {"threads": bench.threads}
    extra_files: Dict[str, Path] = field(default_factory=dict)  # e.g. calibration data
    fetch_dir: Optional[Path] = None  # where the job's artifacts (an engine) come back to


def make_job(cfg, runtime: str, options: Optional[dict] = None, inputs: Optional[list] = None) -> dict:
    """Inputs are left to the device side: it draws random inputs shaped like the model's own
    (dynamic batch set to 1), so no input name or shape can disagree with the model; `inputs`
    (inputs.random entries) only for a model whose other dimensions are dynamic: see random_inputs."""
    job = {
        "protocol_version": PROTOCOL_VERSION,
        "runtime": runtime,
        "runtime_options": {"threads": cfg.threads} if options is None else options,
        "warmup": {"runs": cfg.warmup_runs, "seconds": cfg.warmup_seconds},
        "runs": {"count": cfg.runs, "seconds": cfg.seconds},
        "energy": cfg.energy,
        "energy_interval_ms": cfg.energy_interval_ms,
        "idle_seconds": cfg.idle_seconds,
        "max_runs": cfg.max_runs,
    }
    if cfg.lock_clocks:
        job["lock_clocks"] = True
    if inputs:
        job["inputs"] = {"random": inputs}
    return job


def random_inputs(model: Path, runtime: str, shape: Optional[Sequence[int]]) -> Optional[list]:
    """inputs.random for a model whose non-batch dimensions are dynamic, as its runtime's back end
    reads the file (an ONNX model's height and width: the data's shape, else the device side would
    time it at 1x1). None when only the batch is dynamic, or the runtime times models as built."""
    from .backends import BACKENDS

    return BACKENDS.get(runtime).random_inputs(model, shape)


_print_lock = threading.Lock()


def _log_progress(label: str) -> Callable[[str], None]:
    """On a terminal, one line rewritten in place; in a log, only the start and the end."""
    tty = sys.stderr.isatty()

    def show(text: str) -> None:
        with _print_lock:
            if tty:
                print(f"\r\033[K  bench {label}: {text}", end="", file=sys.stderr, flush=True)
            elif not any(word in text for word in ("warmup ", "timed ")) or " in " in text:
                print(f"  bench {label}: {text}", file=sys.stderr, flush=True)
    return show


def _takes_stop(device) -> bool:
    """Whether the device's runner can be told to stop mid-job (a `stop` Event)."""
    return runner(device).stoppable


def measure(models: Dict[str, object], cfg, runtime: str, device=None, quiet: bool = False,
            input_shape: Optional[Sequence[int]] = None, stop: Optional[threading.Event] = None) -> Dict[str, dict]:
    """Each model in its own device-side process, one after the other, in one call: the original
    and the compressed model are measured in the same run under the same conditions. With
    cfg.rounds > 1 the models take turns that many times, each turn with its share of the budget,
    and each model's result is its median round (see median_round). A value is a model file (run
    with `runtime` and the bench threads) or a Model. `input_shape`: the data's, one sample with
    its batch dimension, for models whose non-batch dimensions are dynamic. `stop`: set when the run
    is interrupted while this runs in a worker thread; no job starts after it, and a runner that takes
    it ends its job early (through its cleanup), raising KeyboardInterrupt."""
    one = runner(device)
    where = "this host" if device is None else device.name
    turn = round_share(cfg)
    rounds: Dict[str, list] = {label: [] for label in models}
    models = {label: item if isinstance(item, Model) else Model(Path(item), runtime) for label, item in models.items()}
    inputs = {label: random_inputs(m.path, m.runtime, input_shape) for label, m in models.items()}
    for r in range(cfg.rounds):
        for label, m in models.items():
            name = f"{label} on {where}" + (f", round {r + 1}/{cfg.rounds}" if cfg.rounds > 1 else "")
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            rounds[label].append(one.run(make_job(turn, m.runtime, m.options, inputs[label]), m.path,
                                         extra_files=m.extra_files or None, fetch_dir=m.fetch_dir,
                                         on_progress=None if quiet else _log_progress(name),
                                         stop=stop if one.stoppable else None))
    return {label: dict(median_round(results), device_name=where) for label, results in rounds.items()}

def settings_here(cfg, device, quiet: bool = False):
    """The bench settings for where the run measures. The profile's threads are the target's cores
    (4 on a Pi); on a build host with fewer, that many threads would fight over the CPUs and the
    latencies would measure the fight: here they are capped at this host's CPUs, and the result
    records the threads used. The profile itself (saved in the bundle) keeps the target's."""
    import os

    cores = os.cpu_count() or 1
    if (device is not None and device.transport != "local") or cfg.threads <= cores:
        return cfg
    if not quiet:
        print(f"bench: {cores} threads on this host, which has {cores} CPUs (the profile's {cfg.threads} are the "
            "target's cores, used when it runs on the device)", file=sys.stderr)
    return cfg.model_copy(update={"threads": cores})


HOST_ROUNDS = 3  # turns on the build host for a profile that takes one on its device


def host_turns(cfg, device, runtime: str):
    """The bench settings on this host for a profile that measures in one turn on its device (Android's: a
    phone's charging and idle windows make turns dear there): HOST_ROUNDS turns of a second each at least, since
    one 1 s turn per model gave a walkthrough's net 15.79x on a shared host where three turns gave 4.77x. Kept as
    they are on a device, for TensorRT (its first turn builds the engine) and where --set bench.rounds chose."""
    on_host = device is None or device.transport == "local"
    if not on_host or cfg.rounds > 1 or "rounds" in cfg.model_fields_set or runtime == "tensorrt":
        return cfg
    return cfg.model_copy(update={"rounds": HOST_ROUNDS, "seconds": max(cfg.seconds, float(HOST_ROUNDS))})


def round_share(cfg):
    """One round's bench settings: its share of the timed runs and seconds; warm-up is not shared,
    since each round is a fresh process that has to warm up again."""
    if cfg.rounds == 1:
        return cfg
    return cfg.model_copy(update={"runs": max(1, math.ceil(cfg.runs / cfg.rounds)),
                                  "seconds": cfg.seconds / cfg.rounds})


def median_round(results: List[dict]) -> dict:
    """The round whose p50 is the median (the lower of the middle two for an even count): a whole,
    real measurement (its percentiles, energy and device state belong together), not a blend of
    rounds. `rounds` lists every round's p50 so the spread stays visible."""
    if len(results) == 1:
        return results[0]
    p50s = [(r.get("latency_ms") or {}).get("p50") for r in results]
    if any(p is None for p in p50s):  # a runtime that reports no p50: nothing to choose by
        return dict(results[0], warnings=_all_warnings(results, 0),
                    rounds={"count": len(results), "p50_ms": p50s, "chosen": 1})
    order = sorted(range(len(results)), key=lambda i: p50s[i])
    chosen = order[(len(results) - 1) // 2]
    spread = round(100 * (max(p50s) - min(p50s)) / p50s[chosen], 2) if p50s[chosen] else None
    noisy = [] if spread is None or spread <= NOISY_SPREAD_PCT else [
        f"the rounds' p50s spread by {spread:.0f}%: the device was busy or throttling, so the p50 will not repeat "
        "to better than that"]
    return dict(results[chosen], warnings=_all_warnings(results, chosen) + noisy,
                rounds={"count": len(results), "p50_ms": p50s, "chosen": chosen + 1, "spread_pct": spread})


def _all_warnings(results: List[dict], chosen: int) -> list:
    """The chosen round's warnings, then the other rounds' (throttling, a cut budget) tagged with
    their round: a problem seen in any round is not dropped because another round was chosen."""
    seen = list(results[chosen].get("warnings") or [])
    for i, r in enumerate(results):
        if i != chosen:
            seen += [f"round {i + 1}: {w}" for w in r.get("warnings") or [] if w not in seen]
    return seen


def measure_on_devices(model, cfg, runtime: str, devices: List, quiet: bool = False,
                       input_shape: Optional[Sequence[int]] = None, cap_local_threads: bool = False) -> List[dict]:
    """One job per device, all devices at once (each device runs one job at a time anyway). `model`:
    a model file, or a Model with its runtime's options. A device's failure is its row's `error`;
    Ctrl-C (KeyboardInterrupt, also SIGTERM through the CLI) is raised once every device's job has
    run its cleanup (the device restored, its job folder and lock gone). cap_local_threads: on a device
    that is this host, the profile's threads are capped at its CPUs (settings_here)."""
    label = model.path.name if isinstance(model, Model) else Path(model).name

    def one(device, stop=None) -> dict:
        try:
            here = settings_here(cfg, device, quiet) if cap_local_threads else cfg
            return measure({label: model}, here, runtime, device, quiet, input_shape, stop)[label]
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # reported in the device's row, after every job has ended
            return {"device_name": "this host" if device is None else device.name, "error": str(exc),
                    "exit_code": getattr(exc, "exit_code", 3 if device is None else 4)}

    try:
        # one device in the main thread: Ctrl-C reaches its runner, whose cleanup then runs
        results = [one(devices[0])] if len(devices) == 1 else _in_threads(one, devices, quiet)
    finally:
        if sys.stderr.isatty() and not quiet:
            print(file=sys.stderr)  # end the in-place progress line
    return results


def _in_threads(one: Callable, devices: List, quiet: bool) -> List[dict]:
    """one(device, stop) for each device in its own thread. The main thread waits; on Ctrl-C it sets
    `stop`, so each runner that takes it ends its job through its cleanup, and waits for those before
    raising: a daemon thread would be killed at exit with its device left unplugged or locked. A
    runner that cannot be stopped (its job would hold the exit for as long as it runs) stays a daemon
    thread, whose device side cleans up when the connection drops, as before."""
    results: List[Optional[dict]] = [None] * len(devices)
    stop, ended = threading.Event(), [threading.Event() for _ in devices]
    stoppable = [_takes_stop(d) for d in devices]

    def work(i: int) -> None:
        try:
            results[i] = one(devices[i], stop)
        except (KeyboardInterrupt, SystemExit):  # told to stop: the main thread raises it
            pass
        finally:
            ended[i].set()

    launched: List[threading.Event] = []
    try:
        for i in range(len(devices)):
            if stoppable[i]:
                launched.append(ended[i])  # first: a Ctrl-C inside start() still waits for this one
            threading.Thread(target=work, args=(i,), name=f"bench-{devices[i].name}", daemon=not stoppable[i]).start()
        _wait(ended)
    except KeyboardInterrupt:
        stop.set()
        _wait_for_cleanup(launched, quiet)
        raise
    return results


def _wait(ended: List[threading.Event]) -> None:
    # Events, not Thread.join: on Python 3.11 a join interrupted by Ctrl-C marks the thread as
    # ended while it still runs (bpo-45274's fix), and nothing would wait for its cleanup any more
    for event in ended:
        event.wait()


def _wait_for_cleanup(ended: List[threading.Event], quiet: bool) -> None:
    """Wait for the stopped workers; another Ctrl-C does not leave them half-way."""
    if not quiet:
        print("\ninterrupted: stopping the jobs and restoring the devices first", file=sys.stderr, flush=True)
    while True:
        try:
            return _wait(ended)
        except KeyboardInterrupt:
            if not quiet:
                print("still restoring the devices: waiting for their jobs' cleanup", file=sys.stderr, flush=True)


def round_speedups(original: dict, compressed: dict) -> Optional[List[float]]:
    """original / compressed p50 of each round: the pairs that ran side by side."""
    a, b = (original.get("rounds") or {}).get("p50_ms"), (compressed.get("rounds") or {}).get("p50_ms")
    if not a or not b or len(a) != len(b) or any(not x or not y for x, y in zip(a, b)):
        return None
    return [round(x / y, 3) for x, y in zip(a, b)]


def speedup(original: dict, compressed: dict) -> Optional[float]:
    try:
        return original["latency_ms"]["p50"] / compressed["latency_ms"]["p50"]
    except (KeyError, TypeError, ZeroDivisionError):
        return None
