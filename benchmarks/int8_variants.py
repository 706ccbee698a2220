"""How to quantize for ONNX Runtime's CPU kernels: measured, not assumed (issue 2, item 7).

ResNet-18 (224x224, random weights) at 50% channels, exported to ONNX, then quantized every way the
profile allows; each variant's p50 latency on this host with 2 threads, and its top-1 agreement with
the FP32 model on random inputs (information only: random weights). Also: the unpruned model in
INT8 (how much INT8 alone gives on this CPU) and the default variant with FP32 islands where INT8
kernels are slow (the 7x7 stem, the 1x1 downsamples). The variants are measured in rounds, one
after the other in each round, and each figure is the median of its rounds' p50s, so a burst of
noise on this shared host hits one round of every variant rather than all rounds of one. Writes
benchmarks/results/int8_variants.json. The profiles' defaults follow the fastest variant."""
import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "models"))
sys.path.insert(0, str(HERE))
from machine import describe_cpu, measured_on  # noqa: E402

VARIANTS = {
    "uint8 act, int8 per-channel weights": {},
    "uint8 act, int8 per-channel, reduce_range": {"reduce_range": True},
    "uint8 act, int8 per-tensor weights": {"per_channel": False},
    "int8 act, int8 per-channel weights": {"activations": "int8"},
    "uint8 act, uint8 per-channel weights": {"weights": "uint8"},
}
STEM = ["/conv1/Conv"]
DOWNSAMPLES = [f"/layer{i}/layer{i}.0/downsample/downsample.0/Conv" for i in (2, 3, 4)]
ISLANDS = {"default variant, FP32 stem": STEM, "default variant, FP32 downsamples": DOWNSAMPLES,
           "default variant, FP32 stem and downsamples": STEM + DOWNSAMPLES}
ROUNDS = 3


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "int8_variants.json",
                        help="where to write the result (another machine: another file)")
    args = parser.parse_args()
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
        models = {"FP32 original": original, "FP32 50% channels": fp32,
                  "INT8 original (no pruning), default variant": quantize.quantize_int8(
                      original, tmp / "q_original.onnx", calib, Quantize(), "input")}
        for i, (label, options) in enumerate(VARIANTS.items()):
            models[label] = quantize.quantize_int8(fp32, tmp / f"q{i}.onnx", calib, Quantize(**options), "input")
            results[label] = {"top1_agreement_random_inputs":
                              float((verify.onnx_outputs(models[label], held)[0].argmax(1) == ref).mean())}
        for i, (label, exclude) in enumerate(ISLANDS.items()):
            models[label] = quantize.quantize_int8(fp32, tmp / f"island{i}.onnx", calib, Quantize(), "input",
                                                   keep_fp32=exclude)
        rounds = {label: [] for label in models}
        for _ in range(ROUNDS):
            for label, path in models.items():
                rounds[label].append(p50_ms(path, calib[:1]))
        for label, p50s in rounds.items():
            results.setdefault(label, {}).update(p50_ms=float(np.median(p50s)), round_p50s_ms=p50s)
    base = results["FP32 original"]["p50_ms"]
    for r in results.values():
        r["speedup_vs_fp32_original"] = round(base / r["p50_ms"], 2)
    out = {"benchmark": "int8_variants", "measured_on": measured_on("ONNX Runtime", 2), "cpu": describe_cpu(),
           "runs_each": 60, "rounds": ROUNDS, "figure": "median of the rounds' p50s", "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
