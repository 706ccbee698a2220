"""The latency-budget search (prune.latency_budget_ms): the smallest channel ratio whose pruned
model, converted by the target's own back end, reaches the budget on the bench device. It times
what the deploy will ship (an INT8 .onnx for ONNX Runtime, a .tflite for LiteRT, an engine on the
Jetson), so it works wherever the bench device can time the runtime."""
from __future__ import annotations

import copy
import dataclasses
import json
from typing import Callable, Dict, Optional, Tuple

from . import bench, prune
from .console import log
from .errors import StageError

BUDGET_RATIOS = [round(0.05 * i, 2) for i in range(1, 19)]  # 5% .. 90% of the channels removed


def fit(inputs, backend, resume: bool) -> Tuple[object, Optional[dict]]:
    """(inputs with the profile the budget chose, what the search found); without a budget, the
    inputs as they are and None. The result is kept in the work folder, so --resume continues
    with the same ratio."""
    prof = inputs.prof
    budget_ms, saved = prof.prune.latency_budget_ms, inputs.work / "latency_budget.json"
    if budget_ms is None:
        return inputs, None
    log(f"prune: prune.latency_budget_ms {budget_ms} chooses the ratio, so prune.ratio {prof.prune.ratio} (the "
        "profile's or --set's) is not used")
    found = json.loads(saved.read_text()) if resume and saved.is_file() else None
    if found is None or found["budget_ms"] != budget_ms:  # a changed budget is searched again
        found = search(_prober(inputs, backend), budget_ms, _where(inputs))
        saved.write_text(json.dumps(found))
    if found["ratio"] == 0:
        log(f"prune: the unpruned model already reaches {budget_ms} ms on {_where(inputs)}: no pruning")
        update = {"structure": "none"}
    else:
        log(f"prune: {found['ratio']:.0%} of the channels removed reaches the {budget_ms} ms budget on "
            f"{_where(inputs)}")
        update = {"ratio": found["ratio"]}
    prof = prof.model_copy(update={"prune": prof.prune.model_copy(update=update)})
    return dataclasses.replace(inputs, prof=prof), found


def _where(inputs) -> str:
    return inputs.device.name if inputs.device else "this host"


def _prober(inputs, backend) -> Callable[[float], float]:
    """p50 in ms of the model pruned by `ratio` (L2 in one step: which channels go does not change
    the speed), converted by the back end and timed briefly on the bench device."""
    import torch

    prof = inputs.prof
    example = torch.from_numpy(inputs.train.x[:1])
    short = bench.settings_here(prof.bench, inputs.device, quiet=True).model_copy(
        update={"runs": 20, "seconds": 1.0, "warmup_runs": 5, "warmup_seconds": 0.3, "energy": "none",
                "idle_seconds": 0, "rounds": 1})

    def p50_at(ratio: float) -> float:
        model = copy.deepcopy(inputs.source.module).eval()
        if ratio:
            prune.prune_channels_(model, prof.prune.model_copy(update={"ratio": ratio, "iterative_steps": 1,
                                                                       "importance": "l2"}), example)
        probe = backend.for_timing(model, inputs, "probe")
        return bench.measure({"probe": probe}, short, prof.runtime, inputs.device, quiet=True)["probe"]["latency_ms"]["p50"]
    return p50_at


def search(p50_at: Callable[[float], float], budget_ms: float, where: str) -> dict:
    """The smallest ratio in BUDGET_RATIOS whose p50 meets the budget: a coarse grid first, then a
    bisection below the first grid ratio that meets it."""
    probes: Dict[str, float] = {}

    def meets(ratio: float) -> bool:
        probes[f"{ratio:.2f}"] = p50 = p50_at(ratio)
        log(f"prune: latency budget {budget_ms} ms: {ratio:.0%} of the channels removed -> p50 {p50:.3f} ms")
        return p50 <= budget_ms

    if meets(0.0):
        return {"ratio": 0.0, "budget_ms": budget_ms, "probes_p50_ms": probes}
    # Latency need not fall as the ratio grows (narrow layers can run slower kernels: a walkthrough saw
    # 90% slower than 50%), so a coarse grid is probed first and the search refines below the first
    # grid ratio that meets the budget, rather than trusting the widest ratio alone.
    grid = [i for i, r in enumerate(BUDGET_RATIOS) if round(r * 100) % 25 == 0] + [len(BUDGET_RATIOS) - 1]
    hi = next((i for i in sorted(set(grid)) if meets(BUDGET_RATIOS[i])), None)
    if hi is None:
        tried = ", ".join(f"{float(r):.0%} -> {p:.3f} ms" for r, p in probes.items())
        raise StageError("prune", f"prune.latency_budget_ms {budget_ms} is out of reach on {where}: no ratio probed "
                         f"met it ({tried})", hint="raise the budget, set prune.ratio yourself, or start from a "
                                                   "smaller model")
    lo = max([i for i in grid if i < hi], default=-1) + 1  # bisect between the grid point below and hi
    while lo < hi:
        mid = (lo + hi) // 2
        if meets(BUDGET_RATIOS[mid]):
            hi = mid
        else:
            lo = mid + 1
    return {"ratio": BUDGET_RATIOS[hi], "budget_ms": budget_ms, "probes_p50_ms": probes}


def outcome(found: dict, compressed: dict) -> dict:
    """Whether the deployed model, distilled and measured with the full bench budget, met it."""
    p50 = compressed["latency_ms"]["p50"]
    met = p50 <= found["budget_ms"]
    note = (f"prune: latency budget {found['budget_ms']} ms: the compressed model's p50 is {p50:.3f} ms "
            f"({'met' if met else 'missed: the probe was faster; the device may be busy (see the p50 drift)'})")
    return {"budget_ms": found["budget_ms"], "ratio": found["ratio"], "p50_ms": p50, "met": met, "note": note}
