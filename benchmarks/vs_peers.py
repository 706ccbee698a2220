"""edgecompress against the tools a user would pick instead, on one host, the same teacher and data.

Models: (a) the animals demo's CNN teacher, (b) benchmarks/models/mobilenet_animals.py trained on the animals
training split. Rows per model: the FP32 original; ORT quantize_static with its defaults (a first try);
Microsoft Olive's quantization (run in its own venv, --olive-python); Torch-Pruning L2 + CE fine-tuning + ORT
INT8 by hand; edgecompress deploy (defaults, and quantize.method=qat) through the real CLI. Every row's .onnx
is timed again here, in one process, alternating files, 1 intra-op thread, so all rows are timed alike.

Olive: `olive quantize` (its CLI's INT8, which without a Hugging Face dataset makes dynamic quantization) and its
static-quantization workflow searched over every setting it offers, scored on validation rows (olive_static_config).

  python benchmarks/vs_peers.py [--models animals-cnn mobilenet] [--only edgecompress]

Writes benchmarks/results/vs_peers.json; benchmarks/plot_vs_peers.py draws it (PNG, the [bench] extra).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MOBILENET = ROOT / "benchmarks" / "models" / "mobilenet_animals.py"
THREADS = 1  # intra-op threads for every row: the host's 2 cores are shared
CALIBRATION_IMAGES = 128


@dataclass
class Row:
    model: str
    row: str
    onnx: str
    accuracy: float | None = None
    p50_ms: float | None = None
    params: int | None = None
    settings: str = ""
    failed: str | None = None


def split():
    """The demo's data and its seeded split (the held-out rows are the demo's held-out test rows)."""
    from edgecompress.data import split_indices
    from edgecompress.demo import animals

    data = animals.dataset()
    train_idx, held_idx = split_indices(len(data), 0.2)
    return data.subset(np.sort(train_idx)), data.subset(held_idx)


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    hits = 0
    for i in range(0, len(x), 256):
        hits += int((sess.run(None, {name: x[i:i + 256]})[0].argmax(1) == y[i:i + 256]).sum())
    return hits / len(x)


def time_all(paths: list, runs: int, warmup: int = 20) -> dict:
    """p50 (ms) of batch-1 runs, all files in one process, alternating file by file each round."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    sessions = {p: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in paths}
    feeds = {p: {s.get_inputs()[0].name: np.random.rand(1, 1, 28, 28).astype(np.float32)} for p, s in sessions.items()}
    times = {p: [] for p in paths}
    for r in range(warmup + runs):
        for p, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[p])
            if r >= warmup:
                times[p].append((time.perf_counter() - t0) * 1e3)
    return {p: float(np.median(t)) for p, t in times.items()}


def export(model, path: Path) -> Path:
    import torch

    torch.onnx.export(model.eval(), (torch.zeros(1, 1, 28, 28),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    return path


class _Reader:
    def __init__(self, x: np.ndarray):
        self.rows = iter([{"x": x[i:i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.rows, None)


def ort_first_try(fp32: Path, calib: np.ndarray, out: Path) -> str:
    """ORT docs' example: quant_pre_process then quantize_static with its defaults (QDQ, MinMax, per-tensor,
    QInt8 activations and weights as in the docs' example... defaults: activation QInt8, weight QInt8)."""
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out), _Reader(calib))
    return f"quant_pre_process + quantize_static defaults (QDQ, MinMax, per-tensor, QInt8/QInt8), {len(calib)} images"


def ort_careful(fp32: Path, calib: np.ndarray, out: Path) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return f"QDQ, per-channel int8 weights, uint8 activations, MinMax, {len(calib)} images"


def tp_ce(model, train, ratio: float, steps: int, batch: int, lr: float, seed: int):
    """Torch-Pruning MagnitudePruner, L2 importance, round_to 8, then CE fine-tuning (AdamW, cosine) on the images
    shifted and mirrored as the teacher was trained (the issue's by-hand baseline used shifts and flips too)."""
    import copy

    import torch
    import torch_pruning as tp

    torch.manual_seed(seed)
    student = copy.deepcopy(model).train()
    example = torch.zeros(1, 1, 28, 28)
    last = [m for m in student.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.MagnitudePruner(student, example, importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=ratio, round_to=8, ignored_layers=[last])
    pruner.step()
    opt = torch.optim.AdamW(student.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    from edgecompress.demo.animals import _augment

    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    gen, tgen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.from_numpy(gen.choice(len(x), batch, replace=False))
        loss = torch.nn.functional.cross_entropy(student(_augment(x[idx], tgen)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return student.eval()


def edgecompress_deploy(model_args: list, out: Path, sets: list) -> tuple:
    """The real CLI, as a user runs it; returns (the deployed .onnx, the manifest)."""
    args = [str(ROOT / ".venv" / "bin" / "edgecompress"), "deploy", *model_args, "--target", "arm",
            "--out", str(out), "--force", "--json"]
    for s in sets:
        args += ["--set", s]
    done = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    bundle = Path(json.loads(done.stdout)["bundle"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    listed = [bundle / f for f in manifest["files"] if f.endswith(".onnx")]
    deployed = bundle / "model.onnx"  # the deployed file; a bundle may also list others
    return (deployed if deployed.exists() else listed[0]), manifest


def olive_quantize(olive_python: str, fp32: Path, calib_npz: Path, out: Path) -> tuple:
    """`olive quantize` in Olive's own venv; returns (the .onnx, the passes it ran / its error)."""
    args = [str(Path(olive_python).parent / "olive"), "quantize", "-m", str(fp32), "--algorithm", "rtn",
            "--implementation", "ort", "--precision", "int8", "-o", str(out)]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr[-1500:]}")
    return next(out.rglob("*.onnx")), done.stdout[-1500:]


OLIVE_SCRIPT = ROOT / "benchmarks" / "olive_user_script.py"
OLIVE_CHOSEN = ("quant_format", "per_channel", "reduce_range", "quant_preprocess", "calibrate_method",
                "activation_type", "precision")


def olive_static_config(fp32: Path, calib_npz: Path, val_npz: Path, out: Path) -> dict:
    """Olive's static-quantization workflow as its docs build one: OnnxStaticQuantization over its own search
    space (QDQ or QOperator, per-channel or not, MinMax/Entropy/Percentile, int8/uint8, reduce_range,
    pre-processing), each candidate scored by accuracy on validation rows from the training split (at most 1
    point below the original: Olive's goal) and then by latency; Olive keeps the best."""
    def rows(name, path, batch, post=None):
        config = {"name": name, "type": "DataContainer", "user_script": str(OLIVE_SCRIPT),
                  "load_dataset_config": {"type": "animals_rows", "rows": str(path)},
                  "dataloader_config": {"batch_size": batch}}
        if post:
            config["post_process_data_config"] = {"type": post}
        return config

    accuracy = {"name": "accuracy", "type": "accuracy", "data_config": "val",
                "sub_types": [{"name": "accuracy_score", "priority": 1, "higher_is_better": True,
                               "goal": {"type": "max-degradation", "value": 0.01},
                               "metric_config": {"task": "multiclass", "num_classes": 10}}]}
    latency = {"name": "latency", "type": "latency", "data_config": "latency",
               "sub_types": [{"name": "avg", "priority": 2}],
               "user_config": {"inference_settings": {"onnx": {"session_options": {"intra_op_num_threads": THREADS}}}}}
    return {
        "input_model": {"type": "ONNXModel", "model_path": str(fp32)},
        "systems": {"local": {"type": "LocalSystem", "accelerators": [
            {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
        "data_configs": [rows("calib", calib_npz, 1), rows("val", val_npz, 64, "text_classification_post_process"),
                         rows("latency", calib_npz, 1)],
        "evaluators": {"common": {"type": "OnnxEvaluator", "metrics": [accuracy, latency]}},  # a type: without it 0.13 fails
        "passes": {"quantization": {"type": "OnnxStaticQuantization", "data_config": "calib"}},
        # every combination of its search space (Olive 0.13's random sampler ignored max_samples: 73 of 96 ran)
        "search_strategy": {"execution_order": "joint", "sampler": "sequential"},
        "evaluator": "common", "host": "local", "target": "local", "evaluate_input_model": True,
        "cache_dir": str(out / "cache"), "output_dir": str(out / "output"),
    }


def olive_static(olive_python: str, fp32: Path, train, out: Path) -> tuple:
    """`olive run` of olive_static_config in Olive's venv; returns (its best .onnx, what it ran and chose)."""
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(12345).permutation(len(train.x))
    calib_npz, val_npz = out / "calib.npz", out / "val.npz"
    np.savez(calib_npz, x=train.x[:CALIBRATION_IMAGES], y=train.y[:CALIBRATION_IMAGES])
    np.savez(val_npz, x=train.x[order[:1000]], y=train.y[order[:1000]])  # validation rows, never the held-out
    config = out / "workflow.json"
    config.write_text(json.dumps(olive_static_config(fp32, calib_npz, val_npz, out), indent=1))
    args = [str(Path(olive_python).parent / "olive"), "run", "--config", str(config)]
    done = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr[-1500:]}")
    best = out / "output" / "model.onnx"
    if not best.exists():
        raise RuntimeError(f"olive run wrote no {best}: {done.stdout[-1500:]}")
    return best, olive_summary(out / "output" / "footprint.json")


def olive_summary(footprint: Path) -> str:
    """What Olive tried and kept: the number of candidates, and the settings and scores of its Pareto front
    (validation accuracy against its own average latency; model.onnx is its pick from that front)."""
    nodes = [n for n in json.loads(footprint.read_text()).values() if n.get("from_pass")]
    front = []
    for n in (n for n in nodes if n.get("is_pareto_frontier")):
        chosen = {k: n["pass_run_config"].get(k) for k in OLIVE_CHOSEN}
        scores = {k: round(v["value"], 5) for k, v in n["metrics"]["value"].items()}
        front.append(f"{chosen} -> {scores}")
    return (f"olive run: OnnxStaticQuantization over {len(nodes)} settings, each scored on 1,000 validation rows "
            f"(accuracy within 1 point, then average latency); Pareto front: " + "; ".join(front))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--olive-python", default="/work/olive-venv/bin/python")
    ap.add_argument("--only", choices=["all", "edgecompress"], default="all")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/vs_peers"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--models", nargs="+", choices=["animals-cnn", "mobilenet"], default=["animals-cnn", "mobilenet"])
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from edgecompress.demo import animals

    args.work.mkdir(parents=True, exist_ok=True)
    train, held = split()
    calib = train.x[:CALIBRATION_IMAGES]
    teacher, weights = animals.teacher(0.2)
    rows = []
    if args.only == "all":
        rows += peer_rows("animals-cnn", teacher, train, held, calib, args)
    rows += ec_rows("animals-cnn", ["--demo", "animals"], args.work, held)
    if "mobilenet" in args.models:
        net, weights, data = mobilenet_teacher(train, args.work / "mobilenet")
        if args.only == "all":
            rows += peer_rows("mobilenet", net, train, held, calib, args)
        rows += ec_rows("mobilenet", [f"{MOBILENET}:build", "--weights", str(weights), "--data", str(data)],
                        args.work, held)
    paths = [Path(r.onnx) for r in rows if r.failed is None]
    load_before = os.getloadavg()
    p50 = time_all(paths, args.runs)
    for r in rows:
        if r.failed is None:
            r.p50_ms = round(p50[Path(r.onnx)], 4)
    out = ROOT / "benchmarks" / "results" / "vs_peers.json"
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from machine import describe_cpu

    olive = subprocess.run([args.olive_python, "-c", "import olive; print(olive.__version__)"], capture_output=True,
                           text=True).stdout.strip() or "not installed"
    out.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": describe_cpu(),
                               "olive_ai": olive, "threads": THREADS, "runs": args.runs,
                               "load_before_after": [load_before, os.getloadavg()],
                               "rows": [asdict(r) for r in rows]}, indent=1))
    for r in rows:
        print(f"{r.model:12s} {r.row:24s} acc={r.accuracy} p50={r.p50_ms} {r.failed or ''}")


def mobilenet_teacher(train, work: Path) -> tuple:
    """benchmarks/models/mobilenet_animals.py trained as the demo trains its CNN (12 epochs, shifts and flips,
    the training split only); its weights and the training split as an .npz, for the CLI rows."""
    import importlib.util

    import torch

    from edgecompress.demo import animals

    work.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.spec_from_file_location("mobilenet_animals", MOBILENET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    net, weights, data = module.build(), work / "mobilenet.pt", work / "train.npz"
    if weights.exists():
        net.load_state_dict(torch.load(weights, weights_only=True))
    else:
        t0 = time.perf_counter()
        animals._train(net, train.x, train.y, seed=0)
        torch.save(net.state_dict(), weights)
        print(f"mobilenet teacher trained in {time.perf_counter() - t0:.0f} s")
    np.savez(data, x=train.x, y=train.y)
    return net.eval(), weights, data


def peer_rows(name, model, train, held, calib, args) -> list:
    work = args.work / name
    work.mkdir(exist_ok=True)
    fp32 = export(model, work / "fp32.onnx")
    rows = [Row(name, "fp32", str(fp32), onnx_accuracy(fp32, held.x, held.y), settings="torch.onnx.export")]
    for label, fn in (("ort-first-try", ort_first_try), ("ort-careful", ort_careful)):
        path = work / f"{label}.onnx"
        rows.append(Row(name, label, str(path), settings=fn(fp32, calib, path)))
        rows[-1].accuracy = onnx_accuracy(path, held.x, held.y)
    student = tp_ce(model, train, 0.5, args.steps, args.batch, 1e-3, 0)
    tp_fp32 = export(student, work / "tp-ce-fp32.onnx")
    path = work / "tp-ce-int8.onnx"
    rows.append(Row(name, "tp+ce+ort-int8", str(path), settings=ort_careful(tp_fp32, calib, path),
                    params=sum(p.numel() for p in student.parameters())))
    rows[-1].accuracy = onnx_accuracy(path, held.x, held.y)
    for label, run in (("olive-quantize-cli", lambda: olive_quantize(args.olive_python, fp32, None, work / "olive")),
                       ("olive-static-search", lambda: olive_static(args.olive_python, fp32, train, work / "olive-static"))):
        try:
            olive_onnx, log = run()
            rows.append(Row(name, label, str(olive_onnx), onnx_accuracy(olive_onnx, held.x, held.y), settings=log))
        except Exception as exc:  # Olive failing is a result to report, not a reason to stop
            rows.append(Row(name, label, "", failed=str(exc)[-1500:]))
    return rows


def ec_rows(name, model_args, work, held) -> list:
    rows = []
    for label, sets in (("edgecompress", []), ("edgecompress-qat", ["quantize.method=qat"])):
        try:
            path, manifest = edgecompress_deploy(model_args, work / name / label, sets)
            rows.append(Row(name, label, str(path), onnx_accuracy(path, held.x, held.y),
                            settings=f"deploy --target arm {' '.join(sets)}"))
        except Exception as exc:
            rows.append(Row(name, label, "", failed=str(exc)[-1500:]))
    return rows


if __name__ == "__main__":
    main()
