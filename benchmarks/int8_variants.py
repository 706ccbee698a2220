"""How to quantize for ONNX Runtime's CPU kernels: measured, not assumed (issue 2, item 7).

ResNet-18 (224x224, random weights) at 50% channels, exported to ONNX, then quantized every way the
profile allows; each variant's p50 latency on this host with 2 threads, and its top-1 agreement with
the FP32 model on random inputs (information only: random weights). Writes
benchmarks/results/int8_variants.json. The profiles' defaults follow the fastest variant."""
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "models"))

VARIANTS = {
    "uint8 act, int8 per-channel weights": {},
    "uint8 act, int8 per-channel, reduce_range": {"reduce_range": True},
    "uint8 act, int8 per-tensor weights": {"per_channel": False},
    "int8 act, int8 per-channel weights": {"activations": "int8"},
}


def p50_ms(path: Path, x: np.ndarray, runs: int = 60) -> float:
    from edgecompress import verify

    session = verify.onnx_session(path, threads=2)
    name = session.get_inputs()[0].name
    for _ in range(10):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main() -> int:
    import torch
    from resnet import resnet18

    from edgecompress import export, prune, quantize, verify
    from edgecompress.profile import Export, Prune, Quantize

    rng = np.random.default_rng(0)
    calib = rng.normal(0, 1, (32, 3, 224, 224)).astype(np.float32)
    held = rng.normal(0, 1, (16, 3, 224, 224)).astype(np.float32)
    model, example = resnet18().eval(), torch.from_numpy(calib[:1])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        original = export.export_onnx(model, example, tmp / "original.onnx", Export())
        student = copy.deepcopy(model)
        prune.prune_channels_(student, Prune(ratio=0.5, round_to=8), example)
        fp32 = export.export_onnx(student, example, tmp / "fp32.onnx", Export())
        ref = verify.onnx_outputs(fp32, held)[0].argmax(1)
        results["FP32 original"] = {"p50_ms": p50_ms(original, calib[:1])}
        results["FP32 50% channels"] = {"p50_ms": p50_ms(fp32, calib[:1])}
        for label, options in VARIANTS.items():
            q = quantize.quantize_int8(fp32, tmp / "q.onnx", calib, Quantize(**options), "input")
            agree = float((verify.onnx_outputs(q, held)[0].argmax(1) == ref).mean())
            results[label] = {"p50_ms": p50_ms(q, calib[:1]), "top1_agreement_random_inputs": agree}
    base = results["FP32 original"]["p50_ms"]
    for r in results.values():
        r["speedup_vs_fp32_original"] = round(base / r["p50_ms"], 2)
    out = {"benchmark": "int8_variants", "measured_on": f"this host ({platform.machine()}), ONNX Runtime, 2 threads",
           "runs_each": 60, "results": results}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "int8_variants.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
