"""Issue 14 item 3: quantization-aware distillation against PTQ on a MobileNetV2-style student. A
MobileNetV2-style net (benchmarks/models/qat_models.py: depthwise separable convolutions in inverted
residual blocks) is trained on shapes this script draws (no downloads), then deployed through the real CLI
as a user does, twice with the same budget: `edgecompress deploy benchmarks/models/qat_models.py:mobilenet
--weights ... --data ... --target arm --set quantize.method=ptq|qat` (channels pruned, distillation, INT8 on
ONNX Runtime; with qat the last quantize.qat_fraction of distill.steps trains with fake quantization). From
each bundle's manifest: held-out accuracy of the teacher, the FP32 student and the deployed INT8 file, the
INT8 file's top-1 agreement with its FP32 student, and the p50; from the log the simulated PTQ/QAT parity.

    .venv/bin/python benchmarks/qat.py [--train-steps N] [--distill-steps N] [--seeds 0 1] [--methods ptq qat auto]
                                       [--set KEY=VALUE ...]

Appends to benchmarks/results/qat.json (series: one entry per invocation, its runs with the CPU model and INT8
dot-product flags)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "models"))
MODELS = ROOT / "benchmarks" / "models" / "qat_models.py"
RESULTS = ROOT / "benchmarks" / "results" / "qat.json"
SIZE = 16  # the drawn 32x32 images averaged 2x2: small enough to train on a shared 2-core host


def make_npz(path: Path, n: int, seed: int) -> Path:
    import qat_models

    x, y = qat_models.make_data(n, seed)
    x = x.reshape(n, 1, SIZE, 32 // SIZE, SIZE, 32 // SIZE).mean((3, 5)).astype(np.float32)
    np.savez(path, x=x, y=y)
    return path


def train_teacher(npz: Path, out: Path, steps: int, seed: int) -> dict:
    """The original: MobileNetV2Small with cross-entropy (AdamW, cosine), on the first 80% of the data (the
    deploy holds out its own fifth, verify.held_out_fraction)."""
    import torch

    import qat_models

    torch.set_num_threads(1)  # on a shared 2-core host two threads spin against each other (tests/e2e do the same)
    torch.manual_seed(seed)
    data = np.load(npz)
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    model = qat_models.mobilenet()
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(int(len(x) * 0.8), 64, replace=False))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    torch.save(model.state_dict(), out)
    return {"steps": steps, "seconds": round(time.perf_counter() - t0, 1), "final_loss": round(float(loss), 4)}


def deploy(npz: Path, weights: Path, out: Path, method: str, sets: list) -> dict:
    args = [str(ROOT / ".venv" / "bin" / "edgecompress"), "deploy", f"{MODELS}:mobilenet", "--weights", str(weights),
            "--data", str(npz), "--target", "arm", "--out", str(out), "--force", "--json",
            "--set", f"quantize.method={method}"]
    for s in sets:
        args += ["--set", s]
    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1")  # training in one thread; ORT's bench threads are bench.threads
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"method": method, "failed": done.stderr[-2000:]}
    summary = json.loads(done.stdout)
    manifest = json.loads((Path(summary["bundle"]) / "manifest.json").read_text())
    acc, parity = manifest["metrics"]["accuracy"], manifest["metrics"]["parity"][-1]
    lat = manifest["metrics"]["latency_ms"]
    return {"method": method, "seconds": round(time.perf_counter() - t0, 1),
            "accuracy": {k: acc.get(k) for k in ("teacher", "student_fp32", "student", "samples")},
            "int8_top1_agreement_with_fp32_student": parity.get("top1_agreement"),
            "int8_agreement_with_original": parity.get("original_agreement"),
            "p50_ms": {k: (v or {}).get("p50") if isinstance(v, dict) else v for k, v in lat.items()},
            "quantization": manifest["compression"]["quantization"],
            "qat_log": [ln.strip() for ln in done.stderr.splitlines() if _qat_line(ln.strip())]}


def _qat_line(line: str) -> bool:
    """The log's QAT lines: the decision, the simulated figures, the ranges carried (not the progress)."""
    return line.startswith(("qat:", "quantize:")) and " step " not in line and ("qat" in line.lower()
                                                                                 or "trained" in line)


def main() -> None:
    from machine import describe_cpu

    ap = argparse.ArgumentParser()
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--distill-steps", type=int, default=300)
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--methods", nargs="+", default=["ptq", "qat"], choices=["ptq", "qat", "auto"])
    ap.add_argument("--work", default="/tmp/ec-qat-bench")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    # INT8 everywhere for both (keep_float none), and no tolerance gate: this measures, it does not refuse
    sets = ["prune.ratio=0.5", f"distill.steps={a.distill_steps}", "bench.runs=50", "bench.seconds=1",
            "quantize.keep_float=none", "verify.min_top1_agreement=0", *a.sets]
    runs = []
    for seed in a.seeds:
        npz = make_npz(work / f"shapes-{seed}.npz", a.samples, seed)
        weights = work / f"mobilenet-{seed}.pt"
        teacher = train_teacher(npz, weights, a.train_steps, seed)
        print(f"seed {seed}: teacher trained {teacher}", file=sys.stderr)
        for method in a.methods:
            r = deploy(npz, weights, work / f"out-{seed}-{method}", method, sets)
            print(json.dumps(r)[:600], file=sys.stderr)
            runs.append({"seed": seed, "teacher_training": teacher, **r})
    result = {"benchmark": "QAT vs PTQ, MobileNetV2-style student, --target arm (ONNX Runtime INT8 QDQ)",
              "cpu": describe_cpu(), "data": f"{a.samples} drawn shapes, 10 classes, 1x{SIZE}x{SIZE}",
              "settings": sets, "teacher_train_steps": a.train_steps, "runs": runs,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    before = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    series = before.get("series", [before] if before.get("runs") else [])  # one entry per invocation
    RESULTS.write_text(json.dumps({"series": series + [result]}, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
