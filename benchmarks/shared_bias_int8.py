"""INT8 of a model whose convs share one exported bias, before and after quantize.own_initializers.

A freshly initialised model (every BatchNorm folds into a zero bias: what a user tries first, with random
weights) exports its equal biases once, behind Identity nodes. Where ORT's pre-processing stops (its symbolic
shape inference on an upsample by a factor) the quantizer met those biases as non-initializers and left their
convs as DQ -> float Conv -> Q. This script makes benchmarks/tasks.py's segmenter at its initial weights, pruned to
50% channels as --target arm does, and quantizes it as edgecompress did before session 14 (no pre-processing, the
Identity nodes kept) and as it does now; the files are timed in alternating rounds at 1 and 2 threads, and the
ONNX Runtime graph of each is counted (float Conv against QLinearConv).

    .venv/bin/python benchmarks/shared_bias_int8.py [--rounds 5] [--runs 1000] [--out ...]

Writes benchmarks/results/shared_bias_int8.json."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "models"))
sys.path.insert(0, str(HERE))
from segmenter_speed import side_by_side  # noqa: E402  (the same alternating rounds, the same row format)

RESULTS = HERE / "results" / "shared_bias_int8.json"


def files(out: Path) -> dict:
    import torch

    import task_bench_models as models
    from edgecompress import export, outputs, profile, prune, quantize

    torch.manual_seed(0)
    torch.set_num_threads(1)
    prof = profile.load("raspberry-pi-5")[0]
    model = models.build_segmenter().eval()
    x = np.random.default_rng(0).normal(0, 1, (64, 3, 64, 64)).astype(np.float32)
    example = torch.from_numpy(x[:2])
    original = export.export_onnx(outputs.flat(model, example), example[:1], out / "original.onnx", prof.export)
    student = outputs.flat(model, example)
    prune.prune_channels_(student, prof.prune, example)
    fp32 = export.export_onnx(student.eval(), example[:1], out / "student_fp32.onnx", prof.export)
    calib = x[: prof.quantize.calibration_samples]
    real = quantize._pre_process, quantize.own_initializers
    quantize._pre_process = lambda source, pre, tmp: shutil.copy(source, pre)
    quantize.own_initializers = lambda src, dst: src
    try:
        before = quantize.quantize_int8(fp32, out / "int8_before.onnx", calib, prof.quantize, "input", float_tail=True)
    finally:
        quantize._pre_process, quantize.own_initializers = real
    now = quantize.quantize_int8(fp32, out / "int8_now.onnx", calib, prof.quantize, "input", float_tail=True)
    return {"original (FP32)": original, "FP32 student (50% channels)": fp32,
            "INT8 before session 14": before, "INT8 now": now}


def ops(path: Path) -> dict:
    """The node counts of the graph ONNX Runtime runs (after its optimisations)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        counts = Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    return {k: counts[k] for k in ("Conv", "QLinearConv", "DequantizeLinear", "QuantizeLinear")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shared-bias-") as tmp:
        made = files(Path(tmp))
        graphs = {label: ops(path) for label, path in made.items()}
        record = {"what": __doc__.split("\n\n")[0], **side_by_side(made, args.rounds, args.runs)}
    rows = record["rows"]
    for r in rows:
        r["graph"] = graphs[r["file"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for r in rows:
        print(f"{r['threads']} thread(s)  {r['file']:28s} {r['p50_ms']:.4f} ms  {r['speedup_vs_original']:.2f}x  "
              f"{r['graph']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
