"""LiteRT (issue 5): 50% channels + full-integer INT8 .tflite against the FP32 original, on this host
with ai-edge-litert (XNNPACK, 2 threads), for the demo and for ResNet-18, all measured in one run.

For each model: the original as an FP32 .tflite, the pruned student as FP32 (what pruning alone
buys) and as full-integer INT8 (the deployed model); all channels-last (NHWC input), as on a phone.
Latency comes from the device side (ec_bench.py through the local runner, runtime "litert"), each
model in its own process, in three rounds (original, pruned, INT8, then again) so drift shows; p50 is the median of the rounds'.
- demo: the cached teacher, 50% channels (round_to 8), 600 distillation steps (the arm profile's
  budget), calibrated on 128 training digits; accuracy on the 359 held-out digits.
- ResNet-18 (224x224, random weights): 50% channels, no distillation (nothing to learn from random
  weights), calibrated on 64 random inputs; agreement on 32 random inputs is near-tie noise for the
  original (random logits), so the INT8 cost is also given against the pruned FP32 student.

Writes benchmarks/results/litert_int8.json."""
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "models"))
THREADS = 2
ROUNDS = 3


def pruned(model, example, ratio=0.5, round_to=8):
    from edgecompress import prune
    from edgecompress.profile import Prune

    student = copy.deepcopy(model)
    prune.prune_channels_(student, Prune(ratio=ratio, round_to=round_to), example)
    return student.eval()


def convert(original, student, example, calib, folder: Path, name: str) -> dict:
    from edgecompress.backends import tflite as litert

    times, paths = {}, {}
    for label, model, int8 in [("original_fp32", original, False), ("pruned_fp32", student, False),
                               ("pruned_int8", student, True)]:
        t0 = time.perf_counter()
        path = folder / f"{name}_{label}.tflite"
        if int8:
            litert.quantize_tflite_int8(model, example, calib, path, channels_last=True)
        else:
            litert.export_tflite(model, example, path, channels_last=True)
        times[label] = round(time.perf_counter() - t0, 1)
        paths[label] = path
    return {"paths": paths, "convert_seconds": times}


def latencies(paths: dict) -> dict:
    from edgecompress import bench
    from edgecompress.profile import Bench

    cfg = Bench(threads=THREADS, warmup_runs=10, warmup_seconds=1.0, runs=100, seconds=4.0, energy="none",
                idle_seconds=0)
    rounds = [bench.measure(paths, cfg, "litert", quiet=True) for _ in range(ROUNDS)]
    out = {}
    for label in paths:
        p50s = [r[label]["latency_ms"]["p50"] for r in rounds]
        out[label] = {"p50_ms_per_round": [round(v, 4) for v in p50s], "p50_ms": round(float(np.median(p50s)), 4),
                      "p90_ms": round(float(np.median([r[label]["latency_ms"]["p90"] for r in rounds])), 4),
                      "runs": [r[label]["latency_ms"]["n"] for r in rounds],
                      "runtime_options": rounds[0][label]["runtime_options"],
                      "bytes": paths[label].stat().st_size}
    out["runtime_version"] = rounds[0]["original_fp32"]["device"]["runtime_version"]
    return out


def quality(paths: dict, refs: dict, x: np.ndarray, y) -> dict:
    """Each .tflite against PyTorch: top-1 agreement with the original and with the pruned student,
    accuracy where labels exist."""
    from edgecompress import verify
    from edgecompress.backends import tflite as litert

    out = {}
    for label, path in paths.items():
        got = litert.tflite_outputs(path, x, threads=THREADS)
        vs_original = verify.compare(label, got, refs["original"], ["logits"], y)
        vs_student = verify.compare(label, got, refs["student"], ["logits"], None)
        out[label] = {"top1_agreement_vs_original": vs_original.top1_agreement,
                      "top1_agreement_vs_pruned_torch": vs_student.top1_agreement,
                      "max_abs_diff_vs_own_torch": (vs_student if label != "original_fp32" else vs_original)
                      .outputs[0].max_abs_diff,
                      "accuracy": vs_original.accuracy}
    out["max_abs_logit_torch"] = {"original": float(np.abs(refs["original"][0]).max()),
                                  "pruned": float(np.abs(refs["student"][0]).max())}
    out["torch_accuracy"] = {"original": vs_original.reference_accuracy,
                             "pruned": None if y is None else float((refs["student"][0].argmax(1) == y).mean())}
    return out


def demo_case(folder: Path) -> dict:
    import torch

    from edgecompress import demo, distill, prune, verify
    from edgecompress.data import split
    from edgecompress.profile import Distill

    teacher, _ = demo.teacher(0.2)
    train, held = split(demo.dataset(), 0.2)
    example = torch.from_numpy(train.x[:1])
    student = pruned(teacher, example)
    t0 = time.perf_counter()
    report = distill.distill_(student, teacher, train, Distill(steps=600), steps=600, seconds=None,
                              checkpoint=folder / "demo.ckpt", meta={})
    distill_s = time.perf_counter() - t0
    conv = convert(teacher, student.eval(), example, train.x[:128], folder, "demo")
    refs = {"original": verify.torch_outputs(teacher, held.x), "student": verify.torch_outputs(student, held.x)}
    return {"model": "demo (sklearn digits 1x8x8, 4 conv blocks)", "held_out_samples": len(held),
            "params": [prune.count(teacher, example)[1], prune.count(student, example)[1]],
            "macs": [prune.count(teacher, example)[0], prune.count(student, example)[0]],
            "distill": {"steps": report.steps, "seconds": round(distill_s, 1)},
            "convert_seconds": conv["convert_seconds"], "paths": conv["paths"],
            "quality": quality(conv["paths"], refs, held.x, held.y)}


def resnet_case(folder: Path) -> dict:
    import torch

    from edgecompress import prune, verify
    from resnet import resnet18

    original = resnet18().eval()
    rng = np.random.default_rng(0)
    calib = rng.normal(0, 1, (64, 3, 224, 224)).astype(np.float32)
    x = rng.normal(0, 1, (32, 3, 224, 224)).astype(np.float32)
    example = torch.from_numpy(calib[:1])
    student = pruned(original, example)
    conv = convert(original, student, example, calib, folder, "resnet18")
    refs = {"original": verify.torch_outputs(original, x, batch=8),
            "student": verify.torch_outputs(student, x, batch=8)}
    return {"model": "ResNet-18 (3x224x224, 1000 classes, random weights)", "held_out_samples": len(x),
            "params": [prune.count(original, example)[1], prune.count(student, example)[1]],
            "macs": [prune.count(original, example)[0], prune.count(student, example)[0]],
            "distill": None, "convert_seconds": conv["convert_seconds"], "paths": conv["paths"],
            "quality": quality(conv["paths"], refs, x, None)}


def summarise(case: dict) -> dict:
    lat = latencies(case.pop("paths"))
    p50 = {k: v["p50_ms"] for k, v in lat.items() if isinstance(v, dict)}
    return dict(case, latency=lat,
                speedup_p50={"pruned_fp32_vs_original": round(p50["original_fp32"] / p50["pruned_fp32"], 2),
                             "int8_vs_pruned_fp32": round(p50["pruned_fp32"] / p50["pruned_int8"], 2),
                             "int8_vs_original": round(p50["original_fp32"] / p50["pruned_int8"], 2)})


def main() -> int:
    import torch

    os.environ.setdefault("EDGECOMPRESS_PROGRESS", "0")
    torch.manual_seed(0)
    t0, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ec-litert-") as tmp:
        folder = Path(tmp)
        cases = {"demo": summarise(demo_case(folder)), "resnet18": summarise(resnet_case(folder))}
    import ai_edge_litert
    import litert_torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else None
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    result = {
        "benchmark": "litert_int8",
        "measured_on": f"this host ({platform.machine()}, {cpu}, {os.cpu_count()} cores, "
                       f"avx512_vnni={'avx512_vnni' in flags}, avx_vnni={' avx_vnni' in flags}), "
                       f"LiteRT XNNPACK, {THREADS} threads, NHWC I/O",
        "versions": {"torch": torch.__version__, "litert_torch": litert_torch.__version__,
                     "ai_edge_litert": ai_edge_litert.__version__},
        "compressed": "50% channels (round_to 8, l2) + full-integer INT8 (PT2E, per-channel int8 weights, "
                      "int8 activations and I/O)",
        "cases": cases, "wall_seconds": round(time.perf_counter() - t0, 1),
        # a shared VM: other work raises every latency; the ratios within one round hold up better
        "load_average_1m": {"start": load_before[0], "end": os.getloadavg()[0]},
    }
    out = HERE / "results" / "litert_int8.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: {"speedup_p50": v["speedup_p50"], "p50_ms": {a: b["p50_ms"] for a, b in v["latency"].items()
                                                                      if isinstance(b, dict)},
                          "quality": v["quality"]} for k, v in cases.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
