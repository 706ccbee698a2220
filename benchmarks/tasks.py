"""Issue 13's performance goal for a detector and a segmenter, on this host: each is trained for a few
minutes on shapes this script draws (no downloads), then deployed through the real CLI as a user does
(`edgecompress deploy benchmarks/models/task_bench_models.py:build_detector --weights ... --target arm
--data ... --postprocess ... --metric ...`: 50% channels, distillation, INT8). From each bundle's
manifest: the task metric of the original, the FP32 student and the deployed INT8 model (mAP@0.5 with
box recall and precision against the labels; mean IoU against the masks), box-level parity against the
original, the p50 latency of both and the speed-up; the goal: deployed within 0.01 of the original's
metric and >= 3x faster p50. For the detector also INT8 everywhere against the head kept in float
(`quantize.keep_float`, where this edgecompress has it).

    .venv/bin/python benchmarks/tasks.py [--only detector|segmenter] [--train-steps N] [--reuse-weights] [--set KEY=VALUE ...]
                                         [--keep-float auto|on|off] [--work DIR]

Writes benchmarks/results/tasks.json and tasks.md."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "benchmarks" / "models" / "task_bench_models.py"
CODE = ROOT / "benchmarks" / "models" / "task_bench_code.py"
RESULTS = ROOT / "benchmarks" / "results"
SIZE = 64  # canvas side in pixels
GRID = 8  # the detector's anchor grid (stride 8)
ANCHOR = 0.25  # as task_bench_code.ANCHOR
MAX_OBJECTS = 4
CLASSES = 3  # square, disc, triangle
HEAD_MODULES = ["head.box", "head.score"]  # the detector's output convs (task_bench_models.DetectionHead)
GOAL_METRIC_DROP = 0.01  # 1 point on a 0-1 metric
GOAL_SPEEDUP = 3.0


# ---------------------------------------------------------------- data

@dataclass
class Shapes:
    x: np.ndarray  # (N, 3, 64, 64) float32
    masks: np.ndarray  # (N, 64, 64) int64: 0 background, 1 + class
    boxes: np.ndarray  # (N, MAX_OBJECTS, 4) float32 cx cy w h in [0, 1]; zeros where no object
    classes: np.ndarray  # (N, MAX_OBJECTS) int64; -1 where no object


def _shape_mask(kind: int, r: int, c: int, s: int) -> np.ndarray:
    """A filled square, disc or upward triangle of side s with its top-left corner at (r, c)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    inside = (rows >= r) & (rows < r + s) & (cols >= c) & (cols < c + s)
    if kind == 1:  # disc
        centre = (s - 1) / 2
        inside &= (rows - r - centre) ** 2 + (cols - c - centre) ** 2 <= (s / 2) ** 2
    elif kind == 2:  # triangle: apex at the top centre, base at the bottom
        half_width = (rows - r + 1) / s * s / 2
        inside &= np.abs(cols - c - (s - 1) / 2) <= half_width
    return inside


def _place(rng, count: int):
    """Up to `count` boxes (r, c, s) that do not overlap and whose centres fall in distinct grid cells."""
    placed, cells = [], set()
    for _ in range(count * 20):
        if len(placed) == count:
            break
        s = int(rng.integers(8, 23))
        r, c = (int(v) for v in rng.integers(0, SIZE - s + 1, 2))
        cell = (int((r + s / 2) / SIZE * GRID), int((c + s / 2) / SIZE * GRID))
        apart = all(r + s + 1 <= r2 or r2 + s2 + 1 <= r or c + s + 1 <= c2 or c2 + s2 + 1 <= c for r2, c2, s2 in placed)
        if apart and cell not in cells:
            placed.append((r, c, s))
            cells.add(cell)
    return placed


def _outline(r: int, c: int, s: int) -> np.ndarray:
    """A distractor: a hollow square (2-pixel outline), which is not one of the classes."""
    outer = _shape_mask(0, r, c, s)
    return outer & ~_shape_mask(0, r + 2, c + 2, s - 4)


def draw(n: int, seed: int) -> Shapes:
    """Canvases with 1-4 shapes each, of random colours (the class is the shape, not the colour), on
    a noisy background with a brightness gradient, thin lines and hollow squares that are not objects."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.25, (n, 3, SIZE, SIZE)).astype(np.float32)
    ramp = np.linspace(-0.4, 0.4, SIZE, dtype=np.float32)
    masks = np.zeros((n, SIZE, SIZE), np.int64)
    boxes = np.zeros((n, MAX_OBJECTS, 4), np.float32)
    classes = np.full((n, MAX_OBJECTS), -1, np.int64)
    for i in range(n):
        x[i] += (ramp[None, :] if rng.random() < 0.5 else ramp[:, None]) * rng.uniform(-1, 1)
        for _ in range(int(rng.integers(0, 3))):  # distractors: one-pixel lines
            ch, at = int(rng.integers(0, 3)), int(rng.integers(0, SIZE))
            if rng.random() < 0.5:
                x[i, ch, at, :] += 0.8
            else:
                x[i, ch, :, at] += 0.8
        for _ in range(int(rng.integers(0, 3))):  # distractors: hollow squares, drawn under the objects
            s = int(rng.integers(8, 22))
            r, c = (int(v) for v in rng.integers(0, SIZE - s + 1, 2))
            x[i][:, _outline(r, c, s)] = rng.uniform(0.3, 1.0, (3, 1)).astype(np.float32)
        for j, (r, c, s) in enumerate(_place(rng, int(rng.integers(1, MAX_OBJECTS + 1)))):
            kind = int(rng.integers(0, CLASSES))
            inside = _shape_mask(kind, r, c, s)
            colour = rng.uniform(0.1, 0.9, 3).astype(np.float32)
            colour[rng.integers(0, 3)] = rng.uniform(0.6, 1.0)  # at least one bright channel
            x[i][:, inside] = colour[:, None] + rng.normal(0, 0.1, (3, int(inside.sum()))).astype(np.float32)
            masks[i][inside] = kind + 1
            rows, cols = np.nonzero(inside)
            r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            boxes[i, j] = [(c0 + c1) / 2 / SIZE, (r0 + r1) / 2 / SIZE, (c1 - c0) / SIZE, (r1 - r0) / SIZE]
            classes[i, j] = kind
    return Shapes(x, masks, boxes, classes)


# ---------------------------------------------------------------- training the originals

def _detector_targets(boxes: np.ndarray, classes: np.ndarray):
    """Per anchor (row-major 8x8): the class one-hot (N, 64, K), a positive mask (N, 64) and the raw
    box targets (N, 64, 4): (offset in the cell (0..1), offset, log(w / ANCHOR), log(h / ANCHOR))."""
    n = len(boxes)
    onehot = np.zeros((n, GRID * GRID, CLASSES), np.float32)
    positive = np.zeros((n, GRID * GRID), bool)
    target = np.zeros((n, GRID * GRID, 4), np.float32)
    for i, j in zip(*np.nonzero(classes >= 0)):
        cx, cy, w, h = boxes[i, j]
        col, row = min(int(cx * GRID), GRID - 1), min(int(cy * GRID), GRID - 1)
        a = row * GRID + col
        onehot[i, a, classes[i, j]], positive[i, a] = 1.0, True
        target[i, a] = [cx * GRID - col, cy * GRID - row, np.log(w / ANCHOR), np.log(h / ANCHOR)]
    return onehot, positive, target


def _detector_loss(out, batch: Shapes):
    import torch
    import torch.nn.functional as F

    offsets, logits = out
    onehot, positive, target = (torch.from_numpy(a) for a in _detector_targets(batch.boxes, batch.classes))
    # focal-style weighting: 64 anchors, 1-4 objects; plain BCE learns "nothing anywhere"
    p = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    focal = (bce * ((onehot - p).abs() ** 2) * (0.25 + 0.5 * onehot)).sum() / positive.sum().clamp_min(1)
    pos = offsets[positive]
    box = (F.l1_loss(pos[:, :2].sigmoid(), target[positive][:, :2]) + F.l1_loss(pos[:, 2:], target[positive][:, 2:]))
    return focal + 2 * box


def _segmenter_loss(out, batch: Shapes):
    import torch
    import torch.nn.functional as F

    return F.cross_entropy(out["masks"], torch.from_numpy(batch.masks))


def _subset(s: Shapes, idx) -> Shapes:
    return Shapes(s.x[idx], s.masks[idx], s.boxes[idx], s.classes[idx])


def train(factory: str, loss_fn, steps: int, seed: int, batch: int = 64) -> tuple:
    """The original as its user trained it: fresh drawn canvases every step (never the deploy data),
    Adam with a cosine schedule. Returns (state_dict, seconds, final loss)."""
    import torch

    from edgecompress import models

    torch.manual_seed(seed)
    model = models.load(f"{MODELS}:{factory}", None).module.train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.1)
    pool = draw(4096, seed + 1)  # redrawn in parts as training goes, so the original sees ~ steps*batch/2 canvases
    rng, start, losses = np.random.default_rng(seed), time.time(), []
    for step in range(steps):
        if step and step % 200 == 0:
            fresh = draw(1024, seed + 1000 + step)
            at = rng.choice(len(pool.x), 1024, replace=False)
            pool.x[at], pool.masks[at], pool.boxes[at], pool.classes[at] = fresh.x, fresh.masks, fresh.boxes, fresh.classes
        loss = loss_fn(model(torch.from_numpy(pool.x[idx := rng.integers(0, len(pool.x), batch)])), _subset(pool, idx))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 200 == 0 or step == steps - 1:
            print(f"  train {factory} step {step}/{steps} loss {np.mean(losses[-50:]):.4f}", file=sys.stderr, flush=True)
    return model.eval().state_dict(), time.time() - start, float(np.mean(losses[-50:]))


# ---------------------------------------------------------------- deploying through the CLI

@dataclass
class Run:
    name: str
    command: List[str]
    seconds: float
    exit_code: int
    manifest: Optional[dict]
    summary_table: str
    log_tail: str
    load_average: Optional[list] = None  # 1, 5, 15 min before and after: the host is shared


def deploy(name: str, factory: str, weights: Path, data: Path, metric: str, out: Path, sets: List[str]) -> Run:
    cli = Path(sys.executable).parent / "edgecompress"  # the console script pip installed beside this python
    command = [str(cli), "deploy", f"{MODELS.relative_to(ROOT)}:{factory}",
               "--weights", str(weights), "--target", "arm", "--data", str(data), "--out", str(out), "--force",
               "--metric", f"{CODE.relative_to(ROOT)}:{metric}"]
    if factory == "build_detector":
        command += ["--postprocess", f"{CODE.relative_to(ROOT)}:decode"]
    for s in sets:
        command += ["--set", s]
    print(f"[{name}] {' '.join(command)}", file=sys.stderr, flush=True)
    start, log = time.time(), out.with_suffix(".log")  # the run's progress, to follow with tail -f
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    done.stderr = log.read_text()
    seconds = time.time() - start
    bundle = next((p for p in out.glob("*-raspberry-pi-5") if p.is_dir()), None)
    manifest = json.loads((bundle / "manifest.json").read_text()) if done.returncode == 0 and bundle else None
    print(done.stdout, file=sys.stderr)
    if done.returncode:
        print(done.stderr[-4000:], file=sys.stderr)
    return Run(name, command, round(seconds, 1), done.returncode, manifest, done.stdout, done.stderr[-3000:])


# ---------------------------------------------------------------- figures from a manifest

@dataclass
class Row:
    name: str
    model: str
    metric: str  # the figure the goal reads: map50 or miou
    original: Optional[float]
    student_fp32: Optional[float]
    deployed: Optional[float]
    other_figures: Dict[str, Dict[str, Optional[float]]]  # every figure of --metric, per model
    box_parity_vs_original: Optional[dict]  # deployed's boxes against the original's (IoU 0.5)
    params: Dict[str, Optional[int]]
    macs: Dict[str, Optional[int]]
    p50_ms: Dict[str, Optional[float]]
    speedup_p50: Optional[float]
    keep_float: Optional[object]
    quantization: dict
    distillation: dict
    parity_deployed: dict
    goal_metric_within_1_point: Optional[bool]
    goal_speedup_3x: Optional[bool]
    goal_holds: Optional[bool]
    settings_changed: List[str] = field(default_factory=list)
    seconds: Optional[float] = None
    exit_code: int = 0
    failure: Optional[str] = None


def _figure(user: dict, model: str, key: str) -> Optional[float]:
    return ((user.get("metric") or {}).get(model) or {}).get(key)


def row_of(run: Run, model: str, metric: str, sets: List[str]) -> Row:
    m = run.manifest
    if m is None:
        return Row(run.name, model, metric, None, None, None, {}, None, {}, {}, {}, None, None, {}, {}, {},
                   None, None, None, sets, run.seconds, run.exit_code, run.log_tail[-1500:])
    user = m["metrics"].get("user_figures") or {}
    figures = {who: dict(v) for who, v in (user.get("metric") or {}).items()}
    original, student, deployed = (_figure(user, who, metric) for who in ("original", "student_fp32", "deployed"))
    lat = m["metrics"]["latency_ms"]
    # original, compressed, and student_fp32 where the run timed it too (a keep_float list does)
    p50 = {who: (stats or {}).get("p50") for who, stats in lat.items()}
    speedup = p50["original"] / p50["compressed"] if p50.get("original") and p50.get("compressed") else None
    pruning, quant = m["compression"]["pruning"], m["compression"]["quantization"]
    close = None if original is None or deployed is None else bool(original - deployed <= GOAL_METRIC_DROP)
    fast = None if speedup is None else bool(speedup >= GOAL_SPEEDUP)
    dist = {k: m["compression"]["distillation"].get(k) for k in ("steps", "seconds", "losses", "final_loss", "label_free")}
    return Row(run.name, model, metric, original, student, deployed, figures,
               (user.get("boxes") or {}).get("deployed"),
               {"original": pruning.get("params_before"), "compressed": pruning.get("params_after")},
               {"original": pruning.get("macs_before"), "compressed": pruning.get("macs_after")},
               p50, None if speedup is None else round(speedup, 3), quant.get("keep_float"), quant, dist,
               m["metrics"]["parity"][-1], close, fast, None if close is None or fast is None else close and fast,
               sets, run.seconds)


# ---------------------------------------------------------------- ONNX Runtime's fixed cost per run

def _tiny_onnx(path: Path) -> Path:
    """One 1x1 conv (3 -> 3 channels) on the benchmark's 1x3x64x64 input: ~37 k MACs, so its time per
    run is the runtime's own cost (binding, the thread pool's hand-off, copying the output)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, SIZE, SIZE])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def p50_ms(model: Path, threads: int = 2, runs: int = 3000) -> float:
    """session.run's median time on one zero input, as edgecompress's host bench times it (perf_counter_ns)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros((1, 3, SIZE, SIZE), np.float32)}
    for _ in range(100):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        session.run(None, feed)
        times.append(time.perf_counter_ns() - t)
    return float(np.median(times) / 1e6)


def _out_dir(work: Path, name: str) -> Path:
    return work / name.replace(" ", "_").replace(",", "")


def _original_onnx(factory: str, weights: Path, path: Path) -> Path:
    """The original exported as deploy exports it (edgecompress.export.export_onnx, the profile's opset)."""
    import torch

    from edgecompress import models
    from edgecompress.export import export_onnx
    from edgecompress.profile import Export

    model = models.load(f"{MODELS}:{factory}", str(weights)).module.eval()
    return export_onnx(model, torch.zeros(1, 3, SIZE, SIZE), path, Export())


def overhead(work: Path, names: List[str]) -> dict:
    """The runtime's floor (a one-conv model), and each original and deployed model.onnx timed back to
    back here after the deploys (the same loop for all: a second look at the speed-ups on this shared host)."""
    got = {"threads": "2 (the profile's, capped at this host's CPUs), and 1", "loop": "session.run on a zero input, 100 warm-up, median of 3000", "load_average_before": [
        round(v, 2) for v in os.getloadavg()], "tiny_1x1_conv_p50_ms": round(p50_ms(_tiny_onnx(work / "tiny.onnx")), 4),
        "models": {}}
    factories = {"detector": ("build_detector", "detector"), "segmenter": ("build_segmenter", "segmenter"),
                 "segmenter, wide": ("build_segmenter_wide", "segmenter_wide"),
                 "segmenter, resize": ("build_segmenter_sized", "segmenter")}
    for name in names:
        bundle = next((p for p in _out_dir(work, name).glob("*-raspberry-pi-5") if p.is_dir()), None)
        factory, model = factories[max((k for k in factories if name.startswith(k)), key=len)]
        if bundle:
            original = _original_onnx(factory, work / f"{model}.pt", work / f"{factory}.original.onnx")
            o, c = p50_ms(original), p50_ms(bundle / "model.onnx")
            # one thread too: on a busy host a 2-thread kernel waits for its slower thread at every layer,
            # which costs the bigger FP32 original more than the INT8 file
            o1, c1 = p50_ms(original, threads=1), p50_ms(bundle / "model.onnx", threads=1)
            got["models"][name] = {"original_p50_ms": round(o, 4), "deployed_p50_ms": round(c, 4), "speedup": round(o / c, 3),
                                   "one_thread": {"original_p50_ms": round(o1, 4), "deployed_p50_ms": round(c1, 4),
                                                  "speedup": round(o1 / c1, 3)}}
    got["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return got


# ---------------------------------------------------------------- the host and the record

def cpu() -> dict:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    return {"model_name": name, "avx512_vnni": "avx512_vnni" in flags, "cpus": os.cpu_count(),
            "machine": platform.machine()}


def versions() -> dict:
    import importlib.metadata as md

    got = {"python": platform.python_version()}
    for pkg in ("edgecompress", "torch", "onnxruntime", "onnx", "torch-pruning"):
        try:
            got[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            got[pkg] = None
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    got["git_commit"] = git("rev-parse", "HEAD")
    # several sessions edit this tree at once: the tracked files that differed from that commit when it ran
    got["git_modified_files"] = [ln.split(None, 1)[1] for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return got


def has_keep_float() -> bool:
    from edgecompress.profile import Quantize

    return "keep_float" in Quantize.model_fields


def _fmt(v, digits=4):
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def table(rows: List[Row]) -> str:
    lines = ["| run | metric | original | FP32 student | deployed INT8 | drop | box recall / precision vs labels "
             "(deployed) | box recall / mean IoU vs original | p50 original ms | p50 deployed ms | speed-up | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        drop = None if r.original is None or r.deployed is None else r.original - r.deployed
        dep = r.other_figures.get("deployed", {})
        rp = f"{_fmt(dep.get('recall50'), 3)} / {_fmt(dep.get('precision50'), 3)}" if "recall50" in dep else "-"
        parity = r.box_parity_vs_original or {}
        bp = f"{_fmt(parity.get('recall'), 3)} / {_fmt(parity.get('mean_iou'), 3)}" if parity else "-"
        goal = "failed: exit %d" % r.exit_code if r.exit_code else (
            ("holds" if r.goal_holds else "missed") + f" (metric {'ok' if r.goal_metric_within_1_point else 'missed'}, "
            f"speed {'ok' if r.goal_speedup_3x else 'missed'})")
        lines.append(f"| {r.name} | {r.metric} | {_fmt(r.original)} | {_fmt(r.student_fp32)} | {_fmt(r.deployed)} | "
                     f"{_fmt(drop)} | {rp} | {bp} | {_fmt(r.p50_ms.get('original'), 3)} | "
                     f"{_fmt(r.p50_ms.get('compressed'), 3)} | {_fmt(r.speedup_p50, 2)}x | {goal} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def variants(args) -> List[tuple]:
    """(run name, model, factory, metric, extra --set) in the order they run: the default rows first."""
    common, det = list(args.set or []), list(args.set or []) + list(args.det_set or [])
    out = []
    if args.only in (None, "detector"):
        out.append(("detector", "detector", "build_detector", "map50", det))
    if args.only in (None, "segmenter"):
        out.append(("segmenter", "segmenter", "build_segmenter", "miou", common + list(args.seg_set or [])))
    if args.only == "segmenter_wide" or (args.only is None and args.seg_wide):
        out.append(("segmenter, wide (size check)", "segmenter_wide", "build_segmenter_wide", "miou",
                    common + list(args.seg_set or []) + list(args.wide_set or [])))
    if args.only == "segmenter_sized":
        out.append(("segmenter, resize to constant sizes", "segmenter", "build_segmenter_sized", "miou",
                    common + list(args.seg_set or [])))
    if args.only in (None, "detector") and (has_keep_float() if args.keep_float == "auto" else args.keep_float == "on"):
        out.append(("detector, INT8 everywhere", "detector", "build_detector", "map50", det + ["quantize.keep_float=none"]))
        out.append(("detector, head in float", "detector", "build_detector", "map50",
                    det + [f"quantize.keep_float=[{','.join(HEAD_MODULES)}]"]))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("detector", "segmenter", "segmenter_wide", "segmenter_sized"))
    parser.add_argument("--seg-wide", action="store_true", help="also the segmenter at twice the widths (speed vs size)")
    parser.add_argument("--wide-set", action="append", help="a --set for the wide segmenter's deploy")
    parser.add_argument("--append", action="store_true", help="add this run's rows to the results file's")
    parser.add_argument("--train-steps", type=int, default=1000, help="the detector's training steps (batch 64)")
    parser.add_argument("--seg-train-steps", type=int, default=500, help="the segmenter's (its steps cost 3x)")
    parser.add_argument("--wide-train-steps", type=int, default=300, help="the wide segmenter's")
    parser.add_argument("--samples", type=int, default=2000, help="canvases in the deploy .npz (20%% held out)")
    parser.add_argument("--set", action="append", help="a --set for every deploy")
    parser.add_argument("--det-set", action="append", help="a --set for the detector's deploys")
    parser.add_argument("--seg-set", action="append", help="a --set for the segmenter's deploy")
    parser.add_argument("--keep-float", choices=("auto", "on", "off"), default="auto",
                        help="run the detector's INT8-everywhere / head-in-float pair (auto: where the profile has "
                             "quantize.keep_float)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch's threads here and in the deploys")
    parser.add_argument("--reuse-weights", action="store_true", help="keep the originals trained by an earlier run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgecompress-tasks-bench"))
    parser.add_argument("--results", type=Path, default=RESULTS / "tasks.json")
    parser.add_argument("--floor-only", action="store_true",
                        help="only time the runtime's floor beside the bundles of the last run and add it to the results")
    args = parser.parse_args(argv)
    if args.floor_only:
        record = json.loads(args.results.read_text())
        for row in record["rows"]:  # every model the run timed (a keep_float list's run times the FP32 student too)
            bundle = next((p for p in _out_dir(args.work, row["name"]).glob("*-raspberry-pi-5") if p.is_dir()), None)
            if bundle and row["exit_code"] == 0:
                lat = json.loads((bundle / "manifest.json").read_text())["metrics"]["latency_ms"]
                row["p50_ms"] = {who: (stats or {}).get("p50") for who, stats in lat.items()}
        record["runtime_floor"] = overhead(args.work, [r["name"] for r in record["rows"] if r["exit_code"] == 0])
        args.results.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
        args.results.with_suffix(".md").write_text(markdown(record))
        print(json.dumps(record["runtime_floor"], indent=1))
        return 0

    import torch

    # one torch thread for training here and (OMP_NUM_THREADS) for the deploys' distillation: on this shared
    # 2-core host, two threads next to other work spun so much that a training step took 9x as long;
    # ONNX Runtime's timing threads are the profile's bench.threads, which OMP_NUM_THREADS does not change
    args.previous = json.loads(args.results.read_text()) if args.append and args.results.is_file() else None
    torch.set_num_threads(args.torch_threads)
    os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    shapes = draw(args.samples, seed=12345)  # the user's deploy data: never seen in training
    data = {"detector": args.work / "shapes_boxes.npz", "segmenter": args.work / "shapes_masks.npz"}
    data["segmenter_wide"] = data["segmenter"]
    if not (args.append and data["segmenter"].is_file()):  # --append: the earlier run's files, the same draw
        np.savez(data["detector"], x=shapes.x, gt_boxes=shapes.boxes, gt_classes=shapes.classes)
        np.savez(data["segmenter"], x=shapes.x, y=shapes.masks)
    training, weights = {}, {}
    wanted = {v[1] for v in variants(args)}
    for model, factory, loss in (("detector", "build_detector", _detector_loss),
                                 ("segmenter", "build_segmenter", _segmenter_loss),
                                 ("segmenter_wide", "build_segmenter_wide", _segmenter_loss)):
        if model in wanted:
            weights[model], training[model] = trained(model, factory, loss, args)
    rows, runs = [], []
    for name, model, factory, metric, sets in variants(args):
        load_before = os.getloadavg()
        run = deploy(name, factory, weights[model], data[model], metric, _out_dir(args.work, name), sets)
        run.load_average = [round(v, 2) for v in load_before + os.getloadavg()]
        runs.append(run)
        rows.append(row_of(run, model, metric, sets))
        print(table(rows[-1:]), file=sys.stderr, flush=True)
        write_record(args, rows, runs, training, started)  # after every run: a later failure keeps the earlier rows
    write_record(args, rows, runs, training, started, overhead(args.work, [r.name for r in runs if r.manifest]))
    print(table(rows))
    return 0 if all(r.exit_code == 0 for r in runs) else 1


def trained(model: str, factory: str, loss, args) -> tuple:
    """(weights path, training record); --reuse-weights takes a .pt this script saved earlier with the same steps."""
    import torch

    path, info = args.work / f"{model}.pt", args.work / f"{model}.training.json"
    steps = {"detector": args.train_steps, "segmenter": args.seg_train_steps}.get(model, args.wide_train_steps)
    if args.reuse_weights and path.is_file() and info.is_file() and json.loads(info.read_text())["steps"] == steps:
        return path, json.loads(info.read_text())
    state, seconds, final = train(factory, loss, steps, seed=0)
    torch.save(state, path)
    record = {"steps": steps, "batch": 64, "seconds": round(seconds, 1), "final_loss": round(final, 5),
              "canvases": "drawn fresh as training goes (seeds 1, 1000+step), never the deploy data"}
    info.write_text(json.dumps(record))
    return path, record


def markdown(record: dict) -> str:
    """tasks.md: the table, each run's host load, and the back-to-back re-timing where it was made."""
    cpu_line = f"{record['cpu']['model_name']}, {record['cpu']['cpus']} CPUs, avx512_vnni: {record['cpu']['avx512_vnni']}"
    text = [f"# benchmarks/tasks.py on {cpu_line}", "", table([Row(**r) for r in record["rows"]]), "",
            "Load average (1/5/15 min) before and after each deploy (the host is shared):", ""]
    text += [f"- {r['name']}: {r['load_average_before_after']} ({r['seconds']} s)" for r in record["runs"]]
    floor = record.get("runtime_floor")
    if floor:
        text += ["", f"Re-timed back to back after the deploys (load {floor['load_average_before']} -> "
                 f"{floor['load_average_after']}); a one-conv model (the runtime's floor): {floor['tiny_1x1_conv_p50_ms']} ms", "",
                 "| run | original ms | deployed ms | speed-up | 1 thread: original ms | deployed ms | speed-up |",
                 "|---|---|---|---|---|---|---|"]
        for name, f in floor["models"].items():
            one = f.get("one_thread") or {}
            text.append(f"| {name} | {f['original_p50_ms']} | {f['deployed_p50_ms']} | {f['speedup']}x | "
                        f"{one.get('original_p50_ms', '-')} | {one.get('deployed_p50_ms', '-')} | {one.get('speedup', '-')}x |")
    return "\n".join(text) + "\n"


def write_record(args, rows: List[Row], runs: List[Run], training: dict, started: float,
                 floor: Optional[dict] = None) -> None:
    record = {
        "what": "issue 13 performance goal: a detector and a segmenter trained here, deployed with --target arm "
                "(raspberry-pi-5 profile: 50% channels, distillation, INT8 QDQ on ONNX Runtime), measured on this host",
        "goal": {"max_metric_drop": GOAL_METRIC_DROP, "min_speedup_p50": GOAL_SPEEDUP},
        "cpu": cpu(), "versions": versions(), "data": {
            "canvas": f"3x{SIZE}x{SIZE}", "objects_per_canvas": f"1-{MAX_OBJECTS}", "classes": ["square", "disc", "triangle"],
            "distractors": "0-2 one-pixel lines and 0-2 hollow squares per canvas (background in the masks, no boxes)",
            "deploy_samples": args.samples, "held_out": "20% (the CLI's seeded split)", "seed": 12345},
        "training": training,
        "torch_threads": f"{args.torch_threads} (training here, and OMP_NUM_THREADS for the deploys' distillation)",
        "seconds_total": round(time.time() - started, 1),
        "rows": [asdict(r) for r in rows],
        "runtime_floor": floor,  # None until every deploy is done (timed after them, not during)
        "runs": [{"name": r.name, "seconds": r.seconds, "exit_code": r.exit_code,
                  "load_average_before_after": r.load_average,
                  "command": " ".join(r.command).replace(str(args.work), "$WORK").replace(sys.executable, "python"),
                  "summary_table": r.summary_table} for r in runs],
    }
    if args.append and getattr(args, "previous", None):
        before = args.previous
        record["rows"], record["runs"] = before["rows"] + record["rows"], before["runs"] + record["runs"]
        record["training"] = {**before.get("training", {}), **training}
        record["seconds_total"] += before.get("seconds_total", 0)
        record["runtime_floor"] = record["runtime_floor"] or before.get("runtime_floor")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    args.results.with_suffix(".md").write_text(markdown(record))


if __name__ == "__main__":
    sys.exit(main())
