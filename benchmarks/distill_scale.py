"""Issue 15's performance goals for distillation where the work fits, measured on this host (and on a GPU when
one is lent): writes benchmarks/results/distill_scale.json.

- overhead: edgecompress's distill_ against a bare PyTorch loop over the same student, teacher, loss (soft KD at
  T=4 + CE, alpha 0.7), AdamW, batch and data, on the same device, in alternating rounds. Goal: within 10%.
- scaling: the same deploy as 1 process and under torchrun with 2 (gloo), the manifests' steps/s and images/s
  (one global batch of 64 either way: honest figures on a 2-core host, where 2 processes share 2 cores).
- resnet18: a ResNet-18 student at 224x224 (batch 32): steps/s on the CPU here; on a GPU fp32 and bf16 when there
  is one (--device cuda). Goal on an H100/H200-class GPU: at least 50x the 2-core CPU.
- memory: the peak RSS of a whole deploy on a 2 GB memory-mapped .npz (18,000 samples of 3x96x96). Goal: under 1 GB.

    .venv/bin/python benchmarks/distill_scale.py [--parts overhead scaling resnet18 memory] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "models"))
sys.path.insert(0, str(HERE))
from machine import describe_cpu  # noqa: E402

RESULTS = HERE / "results" / "distill_scale.json"
MODELS = HERE / "models" / "scale_models.py"


def _data(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(0, 0.5, (n, 3, size, size)).astype(np.float32)
    for i, c in enumerate(y):  # each class brightens one quadrant
        r, col = divmod(int(c), 2)
        x[i, :, r * size // 2:(r + 1) * size // 2, col * size // 2:(col + 1) * size // 2] += 1.0
    return x, y.astype(np.int64)


def _pair(device: str):
    import copy

    import torch

    import scale_models
    from edgecompress import prune
    from edgecompress.profile import Prune

    torch.manual_seed(0)
    teacher = scale_models.small().eval()
    student = copy.deepcopy(teacher)
    prune.prune_channels_(student, Prune(ratio=0.5, round_to=8), torch.zeros(1, 3, 32, 32))
    return teacher.to(device), student.to(device)


def bare_loop(steps: int, device: str, x, y, batch: int = 64) -> float:
    """steps/s of the loop a user writes by hand: the same batches, loss and optimizer as distill_."""
    import math

    import torch
    import torch.nn.functional as F

    from edgecompress.distill import batch_indices

    teacher, student = _pair(device)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=1e-4)
    xt, yt, t_temp, alpha = torch.from_numpy(x), torch.from_numpy(y), 4.0, 0.7
    student.train()
    start = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.from_numpy(batch_indices(len(x), batch, step))
        xb, yb = xt[idx].to(device), yt[idx].to(device)
        with torch.no_grad():
            t = teacher(xb)
        s = student(xb)
        soft = F.kl_div(F.log_softmax(s / t_temp, 1), F.log_softmax(t / t_temp, 1), reduction="batchmean",
                        log_target=True) * t_temp * t_temp
        loss = alpha * soft + (1 - alpha) * F.cross_entropy(s, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        float(loss.detach())  # distill_ reads the loss every step too
    return steps / (time.perf_counter() - start)


def edgecompress_loop(steps: int, device: str, x, y, work: Path) -> float:
    from edgecompress import distill
    from edgecompress.data import Dataset
    from edgecompress.profile import Distill

    teacher, student = _pair("cpu")
    cfg = Distill(steps=steps, losses=["soft", "ce"], device=device, precision="fp32")  # defaults otherwise
    start = time.perf_counter()
    distill.distill_(student, teacher, Dataset(x, y, "bench"), cfg, steps=steps, seconds=None,
                     checkpoint=work / "ckpt.pt", meta={"round": 1})
    return steps / (time.perf_counter() - start)


def overhead(args, work: Path) -> dict:
    x, y = _data(2048, 32)
    rounds = {"bare PyTorch loop": [], "edgecompress distill_": []}
    for _ in range(args.rounds):
        rounds["bare PyTorch loop"].append(round(bare_loop(args.steps, args.device, x, y), 2))
        rounds["edgecompress distill_"].append(round(edgecompress_loop(args.steps, args.device, x, y, work), 2))
    bare, ours = (float(np.median(v)) for v in rounds.values())
    cost = 1 - ours / bare
    return {"what": f"steps/s, {args.steps} steps x {args.rounds} alternating rounds, batch 64, 3x32x32, SmallNet "
                    "50% channels student, soft KD (T=4) + CE, AdamW, cosine lr; edgecompress at its defaults "
                    "(checkpoint every 100 steps)",
            "device": args.device, "rounds_steps_per_s": rounds, "median_steps_per_s": {"bare": bare, "edgecompress": ours},
            "overhead_pct": round(100 * cost, 1), "goal": "within 10%",
            "verdict": "holds" if cost <= 0.10 else "missed"}


def _deploy(cmd: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)


def scaling(args, work: Path) -> dict:
    x, y = _data(4096, 32, seed=1)
    np.savez(work / "scale.npz", x=x, y=y)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    deploy = ["deploy", f"{MODELS}:small", "--data", str(work / "scale.npz"), "--target", "arm", "--force",
              "--set", f"distill.steps={args.scale_steps}", "--set", "bench.runs=20", "--set", "bench.seconds=0",
              "--set", "bench.rounds=1", "--set", "verify.min_top1_agreement=0"]
    torchrun = Path(sys.executable).with_name("torchrun")
    out = {}
    for label, cmd in (("1 process", [sys.executable, "-m", "edgecompress", *deploy, "--out", str(work / "p1")]),
                       ("2 processes (torchrun, gloo)", [str(torchrun), "--standalone", "--nproc-per-node=2", "-m",
                                                        "edgecompress", *deploy, "--out", str(work / "p2")])):
        load = os.getloadavg()
        done = _deploy(cmd, work, env)
        if done.returncode:
            out[label] = {"error": done.stderr[-1500:]}
            continue
        folder = work / ("p1" if label.startswith("1") else "p2")
        m = json.loads(next(folder.glob("*/manifest.json")).read_text())
        out[label] = dict(m["compression"]["distillation"]["training"], final_loss=m["compression"]["distillation"]["final_loss"],
                          load_average_before=[round(v, 2) for v in load])
    return {"what": f"the same deploy ({args.scale_steps} steps, global batch 64, 3x32x32), OMP_NUM_THREADS=1 per "
                    "process, on this 2-core host", "runs": out}


def resnet18(args) -> dict:
    import torch
    import torch.nn.functional as F

    import resnet

    out = {}
    precisions = ["fp32"] + (["bf16"] if args.device == "cuda" else [])
    for precision in precisions:
        device = args.device
        teacher, student = resnet.resnet18().eval().to(device), resnet.resnet18().to(device)
        if device == "cuda":
            teacher, student = (m.to(memory_format=torch.channels_last) for m in (teacher, student))
        opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
        xb = torch.randn(32, 3, 224, 224, device=device)
        steps = 3 if device == "cpu" else 30
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                with torch.no_grad():
                    t = teacher(xb)
                loss = F.kl_div(F.log_softmax(student(xb) / 4, 1), F.log_softmax(t / 4, 1), reduction="batchmean",
                                log_target=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            float(loss)
            if i:  # the first step warms up
                times.append(time.perf_counter() - t0)
        out[f"{device} {precision}"] = round(1 / float(np.median(times)), 3)
    record = {"what": "ResNet-18 student and teacher at 224x224, batch 32, soft KD, AdamW: steps/s (median step)",
              "steps_per_s": out, "torch_threads": torch.get_num_threads()}
    if args.device != "cuda":
        record["gpu"] = "not run: no GPU was lent to this task (the 50x goal needs one)"
    return record


def memory(args, work: Path) -> dict:
    """A deploy on a 2 GB uncompressed .npz, in a child process whose peak RSS is read afterwards."""
    n, size = 18000, 96
    path = work / "big.npz"
    xs = np.lib.format.open_memmap(work / "x.npy", mode="w+", dtype=np.float32, shape=(n, 3, size, size))
    y = np.zeros(n, np.int64)
    for start in range(0, n, 1000):
        part_x, part_y = _data(min(1000, n - start), size, seed=start)
        xs[start:start + len(part_x)], y[start:start + len(part_y)] = part_x, part_y
    xs.flush()
    del xs
    np.save(work / "y.npy", y)
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        z.write(work / "x.npy", "x.npy")
        z.write(work / "y.npy", "y.npy")
    (work / "x.npy").unlink()
    size_gb = path.stat().st_size / 1e9
    child = f"""
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "edgecompress", "deploy", "{MODELS}:small", "--data", "{path}",
                       "--target", "arm", "--out", "{work / 'mem'}", "--force", "--set", "distill.steps={args.memory_steps}",
                       "--set", "bench.runs=20", "--set", "bench.seconds=0", "--set", "bench.rounds=1",
                       "--set", "verify.min_top1_agreement=0"], capture_output=True, text=True)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.stderr.write(done.stderr[-3000:])
"""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=7200,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))
    code, peak_kib = (int(v) for v in done.stdout.split()[-2:])
    peak_gb = peak_kib * 1024 / 1e9
    return {"what": f"a whole deploy (--target arm, {args.memory_steps} distillation steps) on a {size_gb:.2f} GB "
                    f"uncompressed .npz ({n} samples of 3x{size}x{size}); peak RSS of the largest process",
            "exit_code": code, "file_gb": round(size_gb, 2), "peak_rss_gb": round(peak_gb, 3),
            "seconds": round(time.perf_counter() - start, 1), "goal": "under 1 GB",
            "verdict": "holds" if code == 0 and peak_gb < 1.0 else "missed",
            **({"stderr_tail": done.stderr[-1500:]} if code else {})}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["overhead", "scaling", "resnet18", "memory"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=150, help="overhead: steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale-steps", type=int, default=300)
    parser.add_argument("--memory-steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    if args.device == "cpu":
        torch.set_num_threads(2)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    record.update({"cpu": describe_cpu(), "torch": torch.__version__,
                   "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})
    with tempfile.TemporaryDirectory(prefix="ec-scale-") as tmp:
        work = Path(tmp)
        for part in args.parts:
            load = os.getloadavg()
            started = time.perf_counter()
            result = {"overhead": lambda: overhead(args, work), "scaling": lambda: scaling(args, work),
                      "resnet18": lambda: resnet18(args), "memory": lambda: memory(args, work)}[part]()
            result["load_average_before_after"] = [round(v, 2) for v in load + os.getloadavg()]
            result["seconds_total"] = round(time.perf_counter() - started, 1)
            record[part if args.device == "cpu" else f"{part} ({args.device})"] = result
            args.out.write_text(json.dumps(record, indent=2) + "\n")
            print(part, json.dumps(result, indent=1)[:1500], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
