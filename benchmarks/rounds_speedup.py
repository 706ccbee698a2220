"""Does bench.rounds make the speed-up repeat better? ResNet-18 (224x224, random weights) FP32
against its 50%-channel INT8 copy, measured through the real bench stage and local runner
(`bench.measure`, a fresh device-side process per turn), N times with rounds=1 and N times with
rounds=3, the two settings alternating so that noise on a shared machine hits both alike. Both
use the host-cpu profile's budget (3 s of timed runs per model, 2 threads); with rounds=3 each
turn gets 1 s. Reports each trial's speed-up and the spread of each setting's speed-ups
((max - min) / median). Writes benchmarks/results/rounds_speedup.json (or --out)."""
import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "models"))
sys.path.insert(0, str(HERE))
from machine import describe_cpu, measured_on  # noqa: E402


def build(folder: Path) -> dict:
    import torch
    from resnet import resnet18

    from edgecompress import export, prune, quantize
    from edgecompress.profile import Export, Prune, Quantize

    calib = np.random.default_rng(0).normal(0, 1, (32, 3, 224, 224)).astype(np.float32)
    model, example = resnet18().eval(), torch.from_numpy(calib[:1])
    original = export.export_onnx(model, example, folder / "original.onnx", Export())
    student = copy.deepcopy(model)
    prune.prune_channels_(student, Prune(ratio=0.5, round_to=8), example)
    fp32 = export.export_onnx(student, example, folder / "student.onnx", Export())
    return {"original": original,
            "compressed": quantize.quantize_int8(fp32, folder / "student-int8.onnx", calib, Quantize(), "input")}


def spread_pct(values: list) -> float:
    return round(100 * (max(values) - min(values)) / statistics.median(values), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "rounds_speedup.json")
    args = parser.parse_args()
    from edgecompress import bench, profile

    base = profile.load("host-cpu", ["bench.energy=none", "bench.idle_seconds=0"])[0].bench
    settings = {"rounds=1": base.model_copy(update={"rounds": 1}), "rounds=3": base.model_copy(update={"rounds": 3})}
    t0 = time.perf_counter()
    trials = {k: [] for k in settings}
    with tempfile.TemporaryDirectory(prefix="ec-rounds-") as tmp:
        models = build(Path(tmp))
        for _ in range(args.trials):
            for label, cfg in settings.items():
                r = bench.measure(models, cfg, "onnxruntime", quiet=True)
                trials[label].append({"speedup_p50": round(bench.speedup(r["original"], r["compressed"]), 3),
                                      "p50_ms": [r["original"]["latency_ms"]["p50"], r["compressed"]["latency_ms"]["p50"]],
                                      "rounds": {k: (v.get("rounds") or {}).get("p50_ms") for k, v in r.items()}})
    result = {"benchmark": "rounds_speedup", "measured_on": measured_on("ONNX Runtime", base.threads),
              "cpu": describe_cpu(), "budget": f"{base.seconds:g} s timed per model, warm-up {base.warmup_seconds:g} s "
                                              "per process", "trials": trials,
              "speedup_spread_pct": {k: spread_pct([t["speedup_p50"] for t in v]) for k, v in trials.items()},
              "speedup_median": {k: statistics.median(t["speedup_p50"] for t in v) for k, v in trials.items()},
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup_spread_pct", "speedup_median", "wall_seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
