"""End to end through the real CLI: Torch-Pruning, distillation, ONNX export, ORT INT8, the
local runner in its own process, and the bundle on disk."""
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ecutil import fast_sets, make_data, run_cli, train_weights


def deploy(*args):
    code, out, err = run_cli("deploy", *args)
    assert code == 0, err
    return out, err


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One fast deploy of a user model with labelled .npz data, shared by the bundle tests."""
    from ecutil import MODEL_SRC

    root = tmp_path_factory.mktemp("built")
    (root / "net.py").write_text(MODEL_SRC)
    x, y = make_data()
    np.savez(root / "data.npz", x=x, y=y, labels=np.array(["nw", "ne", "sw", "se"]))
    weights = train_weights(root / "net.pt", x, y)
    out, err = deploy(f"{root}/net.py:build", "--weights", weights, "--target", "host-cpu", "--data", root / "data.npz",
                      "--out", root / "dist", "--json", *fast_sets("distill.steps=150"))
    return root, json.loads(out), err


def test_bundle_layout_and_manifest(built):
    root, summary, _ = built
    folder = root / "dist" / "net-host-cpu"
    assert Path(summary["bundle"]) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "example.py", "labels.txt", "manifest.json",
                                                        "model.onnx", "parity.npz", "report.html"]
    m = json.loads((folder / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["target"] == "host-cpu" and m["runtime"]["name"] == "onnxruntime"
    assert m["inputs"][0]["shape"][1:] == [1, 8, 8] and m["inputs"][0]["quantization"]["scale"] > 0
    p = m["compression"]["pruning"]
    assert p["structure"] == "channel" and p["params_after"] < p["params_before"] / 3
    assert m["compression"]["distillation"]["steps"] == 150
    assert m["compression"]["quantization"]["precision"] == "int8"
    lat = m["metrics"]["latency_ms"]
    assert set(lat) == {"original", "compressed"} and lat["compressed"]["n"] >= 20
    assert m["metrics"]["measured_on"]["where"] == "host" and "not on the host-cpu target" in m["metrics"]["measured_on"]["note"]
    assert m["metrics"]["measured_on"]["threads"] == min(2, os.cpu_count())
    assert m["metrics"]["energy_mj_per_inference"] is None and "no power source" in m["metrics"]["energy_reason"]
    acc = m["metrics"]["accuracy"]
    assert acc["metric"] == "accuracy" and acc["teacher"] > 0.95 and acc["student"] > acc["teacher"] - 0.1
    assert m["provenance"]["profile"]["prune"]["ratio"] == 0.5 and m["provenance"]["profile"]["distill"]["steps"] == 150
    assert (folder / "labels.txt").read_text().split() == ["nw", "ne", "sw", "se"]
    assert set(m["files"]) == {"README.md", "example.py", "labels.txt", "model.onnx", "parity.npz", "report.html"}
    curve = m["compression"]["distillation"]["loss_curve"]
    assert len(curve) == 50 and [p[1] for p in curve] == list(range(3, 151, 3)) and {p[0] for p in curve} == {1}
    assert curve[-1][2] < curve[0][2], "the recorded loss falls as the student learns"


def test_zip_holds_the_same_files(built):
    root, _, _ = built
    with zipfile.ZipFile(root / "dist" / "net-host-cpu.zip") as zf:
        names = sorted(zf.namelist())
    assert names == sorted(f"net-host-cpu/{n}" for n in ["README.md", "example.py", "labels.txt", "manifest.json",
                                                         "model.onnx", "parity.npz", "report.html"])
    assert not [p for p in (root / "dist").iterdir() if p.name.startswith(".")], "no temp or work folders left"


def test_summary_table_and_json(built):
    _, summary, _ = built
    assert summary["before"]["params"] > summary["after"]["params"]
    assert summary["speedup_p50"] == pytest.approx(summary["before"]["p50_ms"] / summary["after"]["p50_ms"])
    from edgecompress.report import table

    text = table(summary)
    for row in ("model file", "params", "MACs", "accuracy", "p50 latency", "Measured on the build host"):
        assert row in text
    assert "x faster" in text or "x slower" in text  # a tiny model on a busy host can come out either way


def test_summary_table_says_slower_and_larger_rather_than_a_ratio_below_one(built):
    import copy

    from edgecompress.report import table

    _, summary, _ = built
    worse = copy.deepcopy(summary)
    worse["after"].update(p50_ms=summary["before"]["p50_ms"] * 2, bytes=summary["before"]["bytes"] * 4)
    text = table(worse)
    assert "2.00x slower" in text and "4.00x larger" in text
    assert "faster" not in text and not any(f"0.{d}" in line and "x faster" in line for line in text.splitlines()
                                            for d in range(10))


def test_report_page_shows_the_bundles_figures(built):
    """report.html: the same before/after cells as the printed table, the latency of both models with
    their run counts, the loss curve, every check and why energy is missing; one page, no script."""
    from html.parser import HTMLParser

    from edgecompress import report

    root, summary, _ = built
    page = (root / "dist" / "net-host-cpu" / "report.html").read_text()
    m = json.loads((root / "dist" / "net-host-cpu" / "manifest.json").read_text())
    text = []
    parser = HTMLParser()
    parser.handle_data = text.append
    parser.feed(page)
    words = " ".join(text)
    for row in report.table_rows(summary)[1:]:
        assert all(cell in words for cell in row), row
    for model, lat in m["metrics"]["latency_ms"].items():
        assert f"{lat['p50']:.3g}" in words and str(lat["n"]) in words
    assert page.count("<svg") == 2 and "<script" not in page and "http" not in page.replace("http://www.w3.org", "")
    points = page.split('aria-label="distillation loss"')[1].split('points="')[1].split('"')[0].split()
    assert len(points) == len(m["compression"]["distillation"]["loss_curve"]) == 50
    for check in m["metrics"]["parity"]:
        assert check["what"] in words
    assert "no power source" in words and "Not measured" in words


def test_report_page_escapes_names_and_skips_what_was_not_measured():
    from edgecompress import report_html

    lat = {"p50": 1.0, "p90": 1.2, "p99": 2.0, "mean": 1.1, "std": 0.1, "min": 0.9, "max": 9.0, "n": 10}
    m = {"name": "<b>net</b>", "target": "host-cpu", "runtime": {"name": "onnxruntime", "version": "1"},
         "model": {"file": "model.onnx"}, "provenance": {"edgecompress_version": "0", "torch_version": "2", "data": "d"},
         "compression": {"pruning": {"structure": "none"}, "distillation": {"steps": 0, "loss_curve": []},
                         "quantization": {"precision": "fp32"}},
         "metrics": {"measured_on": {"note": "here"}, "latency_ms": {"original": lat, "compressed": lat},
                     "accuracy": {"metric": "agreement", "teacher": 1.0, "student": 0.9, "samples": 5},
                     "energy": {"original": None, "compressed": None}, "energy_reason": "no sensor"}}
    s = {"before": {"bytes": 10, "params": None, "macs": None, "accuracy": 1.0, "p50_ms": 1.0},
         "after": {"bytes": 5, "params": None, "macs": None, "accuracy": 0.9, "p50_ms": 1.0},
         "accuracy_metric": "agreement", "measured_on_text": "here.\nwarning: busy"}
    page = report_html.page(m, s)
    assert "<b>net</b>" not in page and "&lt;b&gt;net&lt;/b&gt;" in page
    assert page.count("<svg") == 1, "no loss curve without distillation"
    assert "<h2>Rounds</h2>" not in page and "class=warn>warning: busy" in page
    # figures a tool or a diverged run can give: 0 ms, a NaN loss; the page is still drawn, without them
    zero = dict(lat, p50=0.0, min=0.0, p90=0.0, p99=0.0)
    m["metrics"]["latency_ms"] = {"original": lat, "compressed": zero}
    m["compression"]["distillation"]["loss_curve"] = [[1, 1, 2.0], [1, 2, float("nan")], [1, 3, 1.0]]
    page = report_html.page(m, s)
    assert "nan" not in page.lower() and page.count("<svg") == 2


def test_example_program_classifies_one_input(built):
    root, _, _ = built
    folder = root / "dist" / "net-host-cpu"
    out = subprocess.run([sys.executable, "example.py"], cwd=folder, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    top = out.stdout.split()[0]
    assert top in {"nw", "ne", "sw", "se"}
    np.save(root / "flat.npy", make_data(n=1, seed=5)[0][0][0])  # 8x8, no channel: the same numbers
    out = subprocess.run([sys.executable, str(folder / "example.py"), str(root / "flat.npy")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split()[0] in {"nw", "ne", "sw", "se"}, out.stderr
    for bad, said in ((root / "nowhere.npy", "no such file"), (root / "wrong.npy", "takes one sample of shape [1, 8, 8]")):
        if bad.name == "wrong.npy":
            np.save(bad, np.zeros((3, 5), np.float32))
        out = subprocess.run([sys.executable, str(folder / "example.py"), str(bad)], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 1 and said in out.stderr and "Traceback" not in out.stderr, out.stderr
    np.save(root / "one.npy", make_data(n=1, seed=5)[0][0])
    out = subprocess.run([sys.executable, str(folder / "example.py"), str(root / "one.npy")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split()[0] in {"nw", "ne", "sw", "se"}
    # built from .npz arrays: how an image becomes the input is unknown, and the manifest and example say so
    pre = json.loads((folder / "manifest.json").read_text())["inputs"][0]["preprocessing"]
    assert pre["mean"] is None and pre["size"] is None and "data.npz" in pre["note"]
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "photo.png")
    out = subprocess.run([sys.executable, str(folder / "example.py"), str(root / "photo.png")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "preprocessed arrays" in out.stderr and ".npy" in out.stderr
    assert "Traceback" not in out.stderr


def test_verify_passes_then_catches_a_changed_file(built, tmp_path):
    root, _, _ = built
    code, out, err = run_cli("verify", root / "dist" / "net-host-cpu.zip")
    assert code == 0 and "6 files match" in out and "OK" in out, err  # 6 listed; the manifest is not in its own list
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(root / "dist" / "net-host-cpu", copy)
    with open(copy / "labels.txt", "a") as fh:
        fh.write("extra\n")
    code, _, err = run_cli("verify", copy)
    assert code == 3 and "labels.txt" in err and "sha256" in err


def test_bench_a_bundle_json(built):
    root, _, _ = built
    code, out, err = run_cli("bench", root / "dist" / "net-host-cpu", "--runs", "30", "--seconds", "0", "--json")
    assert code == 0, err
    result = json.loads(out)["results"][0]
    assert result["device_name"] == "this host" and result["latency_ms"]["n"] >= 30
    assert result["latency_ms"]["min"] <= result["latency_ms"]["p50"] <= result["latency_ms"]["max"]


def test_bench_table_shows_the_p50_drift_and_the_warnings(built):
    root, _, _ = built
    code, out, err = run_cli("bench", root / "dist" / "net-host-cpu", "--runs", "30", "--seconds", "1.2")
    assert code == 0, err
    head, rule, row = out.splitlines()[:3]
    assert "p50 drift" in head and row.startswith("this host")
    drift = [cell for cell in row.split() if cell.endswith("%")]
    assert len(drift) == 1 and float(drift[0][:-1]) >= 0
    assert "energy on this host: not measured" in out
    assert "p50 drift: how far the p50s of consecutive parts (>= 0.5 s each) of the timed window spread; above 10%" in out


def test_onnx_input_skips_pruning_and_quantizes(tmp_path, model_file, npz_data):
    import torch

    from ecutil import MODEL_SRC

    ns = {}
    exec(MODEL_SRC, ns)
    onnx_path = tmp_path / "given.onnx"
    torch.onnx.export(ns["build"]().eval(), (torch.zeros(1, 1, 8, 8),), str(onnx_path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})  # any image size
    out, _ = deploy(onnx_path, "--target", "host-cpu", "--data", npz_data, "--out", tmp_path / "o", "--json",
                    *fast_sets())
    summary = json.loads(out)
    m = json.loads((tmp_path / "o" / "given-host-cpu" / "manifest.json").read_text())
    assert m["compression"]["pruning"]["structure"] == "none" and m["compression"]["distillation"]["steps"] == 0
    assert m["compression"]["quantization"]["precision"] == "int8" and m["inputs"][0]["name"] == "x"
    assert summary["after"]["bytes"] < 0.7 * summary["before"]["bytes"]  # int8 weights, plus QDQ scales
    timed = [{"name": "x", "shape": [1, 1, 8, 8]}]  # the data's size, not 1x1 for the dynamic height and width
    assert m["metrics"]["measured_on"]["inputs"] == {"original": timed, "compressed": timed}

    code, _, err = run_cli("bench", onnx_path, "--runs", "5", "--seconds", "0.1")
    assert code == 2 and "'x' ['n', 1, 'h', 'w'] has dynamic dimensions" in err, err
    assert "--input-shape 1x1x224x224" in err, "the example keeps the model's fixed channel count"
    code, _, err = run_cli("bench", onnx_path, "--input-shape", "1x3x8x8")
    assert code == 2 and "the shape given, 1x3x8x8, does not fit it" in err, err
    code, out, err = run_cli("bench", onnx_path, "--input-shape", "4x1x8x8", "--runs", "5", "--seconds", "0.1",
                             "--rounds", "1")
    assert code == 0 and "timed on this host: x 4x1x8x8 float32, " in out, out + err  # the batch asked for
    for args in ([onnx_path, "--input-shape", "1x1x8x8"], [tmp_path / "o" / "given-host-cpu"]):
        code, out, err = run_cli("bench", *args, "--runs", "5", "--seconds", "0.1", "--rounds", "1", "--json")
        assert code == 0, err
        result = json.loads(out)["results"][0]
        assert [(i["name"], i["shape"]) for i in result["inputs"]] == [("x", [1, 1, 8, 8])], args
        assert not [w for w in result["warnings"] if "dynamic" in w]


def test_onnx_with_its_weights_in_a_data_file_beside_it(tmp_path, npz_data):
    """torch.onnx.export (torch >= 2.9) keeps the weights in NAME.onnx.data: deploy and bench carry them."""
    import onnx
    import torch

    from ecutil import MODEL_SRC

    ns = {}
    exec(MODEL_SRC, ns)
    torch.onnx.export(ns["build"]().eval(), (torch.zeros(1, 1, 8, 8),), str(tmp_path / "one.onnx"), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    onnx.save(onnx.load(str(tmp_path / "one.onnx")), str(tmp_path / "split.onnx"), save_as_external_data=True,
              location="split.onnx.data", size_threshold=0)
    assert (tmp_path / "split.onnx").stat().st_size < 0.2 * (tmp_path / "split.onnx.data").stat().st_size
    out, _ = deploy(tmp_path / "split.onnx", "--target", "host-cpu", "--data", npz_data, "--out", tmp_path / "o",
                    "--json", *fast_sets())
    summary = json.loads(out)
    assert summary["before"]["bytes"] > (tmp_path / "split.onnx.data").stat().st_size, "the original, whole"
    code, out, err = run_cli("verify", tmp_path / "o" / "split-host-cpu")
    assert code == 0 and "top-1 agreement with the original ONNX model: 100.00%" in out, out + err
    code, out, err = run_cli("bench", tmp_path / "split.onnx", "--runs", "5", "--seconds", "0.1", "--json")
    assert code == 0, err
    assert json.loads(out)["results"][0]["latency_ms"]["n"] >= 5


def test_onnx_with_a_fixed_batch_of_one(tmp_path, npz_data):
    """torch.onnx.export without dynamic axes fixes the batch at 1: every check feeds it one at a time."""
    import onnx
    import torch

    from ecutil import MODEL_SRC

    ns = {}
    exec(MODEL_SRC, ns)
    torch.onnx.export(ns["build"]().eval(), (torch.zeros(1, 1, 8, 8),), str(tmp_path / "fixed.onnx"), dynamo=False,
                      input_names=["x"], opset_version=18)
    out, _ = deploy(tmp_path / "fixed.onnx", "--target", "host-cpu", "--data", npz_data, "--out", tmp_path / "o",
                    "--json", *fast_sets())
    m = json.loads((tmp_path / "o" / "fixed-host-cpu" / "manifest.json").read_text())
    assert m["inputs"][0]["shape"] == [1, 1, 8, 8] and m["metrics"]["accuracy"]["samples"] == 40
    opset = {o.domain: o.version for o in onnx.load(str(tmp_path / "o" / "fixed-host-cpu" / "model.onnx")).opset_import}
    assert m["model"]["opset"] == opset[""] == 18, "the file's own opset, not the profile's export.opset (17)"


def test_label_free_data_reports_agreement(tmp_path, model_file):
    x, _ = make_data()
    np.savez(tmp_path / "x_only.npz", x=x)
    out, err = deploy(f"{model_file}:build", "--target", "host-cpu", "--data", tmp_path / "x_only.npz",
                      "--out", tmp_path / "o", "--json", *fast_sets())
    summary = json.loads(out)
    assert summary["accuracy_metric"] == "agreement" and 0 <= summary["after"]["accuracy"] <= 1
    m = json.loads((tmp_path / "o" / "net-host-cpu" / "manifest.json").read_text())
    assert m["compression"]["distillation"]["losses"] == ["soft"] and "(soft, label-free)" in err  # ce needs labels
    assert m["compression"]["distillation"]["label_free"] is True and not (tmp_path / "o" / "net-host-cpu" / "labels.txt").exists()


def test_image_folder_input(tmp_path):
    from PIL import Image

    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))\n")
    rng = np.random.default_rng(0)
    for label, colour in (("red", 0), ("blue", 2)):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(24):
            arr = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
            arr[..., colour] = 200
            Image.fromarray(arr).save(tmp_path / "imgs" / label / f"{i}.png")
    out, _ = deploy(f"{tmp_path}/net.py:build", "--target", "host-cpu", "--data", tmp_path / "imgs",
                    "--input-shape", "1x3x16x16", "--out", tmp_path / "o", "--json",
                    *fast_sets("quantize.calibration_samples=16", "prune.round_to=4"))
    m = json.loads((tmp_path / "o" / "net-host-cpu" / "manifest.json").read_text())
    assert m["labels"] == ["blue", "red"] and m["inputs"][0]["shape"][1:] == [3, 16, 16]
    assert m["inputs"][0]["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    code = subprocess.run([sys.executable, str(tmp_path / "o" / "net-host-cpu" / "example.py"),
                           str(tmp_path / "imgs" / "red" / "0.png")], capture_output=True, text=True, timeout=60)
    assert code.returncode == 0 and code.stdout.split()[0] in {"red", "blue"}, code.stderr


def test_unstructured_pruning_is_a_size_gain(tmp_path, model_file, npz_data):
    out, _ = deploy(f"{model_file}:build", "--target", "host-cpu", "--data", npz_data, "--out", tmp_path / "o",
                    "--json", *fast_sets("prune.structure=unstructured", "prune.ratio=0.7", "quantize.precision=fp32"))
    summary = json.loads(out)
    assert summary["after"]["params"] == summary["before"]["params"], "no channels removed"
    assert summary["after"]["nonzero_params"] < 0.45 * summary["after"]["params"]
    assert summary["after"]["bytes"] == pytest.approx(summary["before"]["bytes"], rel=0.05), "dense file, same size"
    assert summary["after"]["deflated_bytes"] < 0.6 * summary["before"]["deflated_bytes"], "zeros compress when zipped"
    m = json.loads((tmp_path / "o" / "net-host-cpu" / "manifest.json").read_text())
    assert m["compression"]["quantization"] == {"precision": "fp32"}, "no INT8 settings for a model not quantized"


def test_ctrl_c_keeps_checkpoint_and_resume_finishes(tmp_path, model_file, npz_data):
    """A real process, a real SIGINT: the run stops with a checkpoint and no bundle; --resume
    continues from that checkpoint (not from zero) and writes the bundle."""
    args = [sys.executable, "-m", "edgecompress.cli", "deploy", f"{model_file}:build", "--target", "host-cpu",
            "--data", str(npz_data), "--out", str(tmp_path / "o"), "--json",
            *fast_sets("distill.steps=1200", "distill.checkpoint_every=20", "prune.iterative_steps=2")]
    env = dict(os.environ, EDGECOMPRESS_PROGRESS="0")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ckpt = tmp_path / "o" / ".net-host-cpu.work" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and ckpt.exists()
    assert not (tmp_path / "o" / "net-host-cpu").exists() and not (tmp_path / "o" / "net-host-cpu.zip").exists()

    changed = subprocess.run(args + ["--set", "distill.lr=0.01", "--resume"], capture_output=True, text=True,
                             env=env, timeout=120)
    assert changed.returncode == 2 and "made with other prune or distill settings" in changed.stderr, \
        "another distillation recipe cannot resume"
    assert "--force instead of --resume" in changed.stderr
    x2, y2 = make_data(seed=7)
    np.savez(tmp_path / "other.npz", x=x2, y=y2)
    other = [str(tmp_path / "other.npz") if a == str(npz_data) else a for a in args]
    changed = subprocess.run(other + ["--resume"], capture_output=True, text=True, env=env, timeout=120)
    assert changed.returncode == 2 and "made with other data" in changed.stderr, "other data cannot resume"
    saved = ckpt.read_bytes()
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2 and "did not finish" in again.stderr and "--resume" in again.stderr, again.stderr
    assert ckpt.read_bytes() == saved, "a run without --resume must not overwrite the interrupted run's progress"

    finished = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert "--resume: continuing round 1 at step" in finished.stderr
    m = json.loads((tmp_path / "o" / "net-host-cpu" / "manifest.json").read_text())
    assert m["compression"]["distillation"]["steps"] == 600  # the last round's share of 1200 steps
    curve = m["compression"]["distillation"]["loss_curve"]
    assert [(p[0], p[1]) for p in curve] == [(r, s) for r in (1, 2) for s in range(12, 601, 12)], \
        "the loss curve survives the interruption: both rounds, every point, none twice"
    assert not ckpt.parent.exists(), "the checkpoint is removed once the bundle is written"


def test_force_discards_an_interrupted_runs_progress(tmp_path, model_file, npz_data):
    work = tmp_path / "o" / ".net-host-cpu.work"
    work.mkdir(parents=True)
    (work / "checkpoint.pt").write_bytes(b"progress of an interrupted run")
    out, err = deploy(f"{model_file}:build", "--target", "host-cpu", "--data", npz_data, "--out", tmp_path / "o",
                      "--json", "--force", *fast_sets())
    assert "--force: discarding the progress of the earlier run" in err
    assert json.loads(out)["bundle"] and not work.exists()


@pytest.mark.parametrize("sets", [
    ("prune.importance=taylor",),
    ("prune.importance=bn_scale", "prune.sparsity_training.steps=20", "prune.sparsity_training.reg=0.001"),
])
def test_importance_variants_run_end_to_end(tmp_path, model_file, npz_data, sets):
    out, err = deploy(f"{model_file}:build", "--target", "host-cpu", "--data", npz_data, "--out", tmp_path / "o",
                      "--json", *fast_sets(*sets))
    summary = json.loads(out)
    assert summary["after"]["params"] < summary["before"]["params"] / 3
    if "prune.sparsity_training.steps=20" in sets:
        assert "slimming" in err or "prune 1/1 (channel, bn_scale)" in err
    m = json.loads((tmp_path / "o" / "net-host-cpu" / "manifest.json").read_text())
    assert m["compression"]["pruning"]["importance"] == sets[0].split("=")[1]


def test_a_larger_named_teacher_teaches(tmp_path, model_file, npz_data):
    (tmp_path / "big.py").write_text(
        "import torch.nn as nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(64, 4))\n")
    out, err = deploy(f"{model_file}:build", "--teacher", f"{tmp_path}/big.py:build", "--target", "host-cpu",
                      "--data", npz_data, "--out", tmp_path / "o", "--json", *fast_sets())
    m = json.loads((tmp_path / "o" / "net-host-cpu" / "manifest.json").read_text())
    assert m["compression"]["distillation"]["teacher"] == f"{tmp_path}/big.py:build"
    assert m["compression"]["distillation"]["teacher_params"] == 64 * 9 + 64 + 64 * 4 + 4


def test_a_teacher_with_other_classes_is_refused(tmp_path, model_file, npz_data):
    (tmp_path / "other.py").write_text("import torch.nn as nn\n"
                                       "def build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 7))\n")
    code, _, err = run_cli("deploy", f"{model_file}:build", "--teacher", f"{tmp_path}/other.py:build", "--target",
                           "host-cpu", "--data", npz_data, "--out", tmp_path / "o", *fast_sets())
    assert code == 2 and "--teacher" in err and "(7,)" in err and "(4,)" in err


def test_two_four_survives_distillation_and_export(tmp_path, model_file, npz_data):
    out, err = deploy(f"{model_file}:build", "--target", "host-cpu", "--data", npz_data, "--out", tmp_path / "o",
                      "--json", *fast_sets("prune.structure=2:4", "quantize.precision=fp32"))
    m = json.loads((tmp_path / "o" / "net-host-cpu" / "manifest.json").read_text())
    pruning = m["compression"]["pruning"]
    assert pruning["structure"] == "2:4" and pruning["masked_layers"] == ["3"]  # conv 16->32; conv 0 has C=1
    assert pruning["two_four"]["masked_layers"] == 1 and len(pruning["two_four"]["sparse_onnx_weights"]) >= 1
    assert "2:4 pattern intact" in err
    assert "2:4 sparsity speeds up only TensorRT's sparse tensor cores; onnxruntime runs the model dense" in err
    from edgecompress import verify

    layers = verify.two_four_layers(tmp_path / "o" / "net-host-cpu" / "model.onnx")
    assert sorted(layers.values())[0] == 0, "the bundled model keeps the pattern"


def test_android_bundle_with_full_integer_tflite(tmp_path, model_file, npz_data):
    pytest.importorskip("litert_torch", reason="the [tflite] extra is not installed")
    out, err = deploy(f"{model_file}:build", "--target", "android-arm64", "--data", npz_data, "--out", tmp_path,
                      "--json", *fast_sets())
    folder = tmp_path / "net-android-arm64"
    m = json.loads((folder / "manifest.json").read_text())
    assert m["runtime"]["name"] == "litert" and {k: m["model"][k] for k in ("file", "format", "opset")} == {
        "file": "model.tflite", "format": "tflite", "opset": None} and m["model"]["parameters"] > 0
    inp, outp = m["inputs"][0], m["outputs"][0]
    assert inp["layout"] == "NHWC" and inp["shape"] == [1, 8, 8, 1] and inp["dtype"] == "int8"
    assert inp["quantization"]["scale"] > 0 and outp["quantization"]["scale"] > 0
    kotlin = (folder / "ModelRunner.kt").read_text()
    assert f"inputZeroPoint = {inp['quantization']['zero_point']}" in kotlin and "@" not in kotlin.split("package")[1]
    assert m["metrics"]["latency_ms"]["compressed"]["n"] >= 20
    assert m["metrics"]["device_state"]["runtime"] == "litert"
    from importlib.metadata import version

    assert m["provenance"]["litert_torch_version"] == version("litert-torch")
    assert m["provenance"]["ai_edge_litert_version"] == version("ai-edge-litert")
    run = subprocess.run([sys.executable, str(folder / "example.py")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (tmp_path / "photo.png").write_bytes(b"not read")
    run = subprocess.run([sys.executable, str(folder / "example.py"), str(tmp_path / "photo.png")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1 and ".npy" in run.stderr and "Traceback" not in run.stderr, run.stderr
    code, _, err = run_cli("verify", folder)
    assert code == 0, err
    # the bare .tflite, as a user who has one from elsewhere would bench it: LiteRT, android-arm64's settings
    code, out, err = run_cli("bench", folder / "model.tflite", "--runs", "5", "--seconds", "0.1", "--json")
    assert code == 0, err
    result = json.loads(out)["results"][0]
    assert result["device"]["runtime"] == "litert" and result["latency_ms"]["n"] >= 5
    (tmp_path / "fake.tflite").write_bytes(b"\0" * 64)
    code, _, err = run_cli("bench", tmp_path / "fake.tflite")
    assert code == 2 and "is not a TFLite model" in err


def test_lock_clocks_reaches_the_device_side(built):
    """--lock-clocks asks the device side to pin clocks with jetson_clocks; this host has none, so
    the device side refuses clearly instead of measuring with clocks it could not pin."""
    root, _, _ = built
    code, out, err = run_cli("bench", root / "dist" / "net-host-cpu", "--runs", "5", "--seconds", "0",
                             "--lock-clocks")
    assert code == 4 and "jetson_clocks" in err
    from edgecompress import bench, profile

    prof, _ = profile.load("jetson-orin-nano", ["bench.lock_clocks=true"])
    assert bench.make_job(prof.bench, "tensorrt")["lock_clocks"] is True
    assert "lock_clocks" not in bench.make_job(profile.load("host-cpu")[0].bench, "onnxruntime")


def test_bench_table_prints_a_dash_for_statistics_a_tool_did_not_give():
    from edgecompress.cli import bench_table

    device = {"arch": "aarch64", "runtime": "tensorrt", "runtime_version": "10.3"}
    trtexec_timed = {"device_name": "orin", "device": device,
                     "latency_ms": {"p50": 1.25, "p90": None, "p99": 2.5, "mean": 1.3, "n": 200}, "load_ms": 5.0,
                     "energy": None, "energy_reason": "timed by trtexec", "warnings": []}
    table = bench_table([trtexec_timed])
    row = table.splitlines()[2].split()
    assert row[:7] == ["orin", "aarch64", "tensorrt", "10.3", "1.250", "-", "2.500"]
    assert "p50 drift:" not in table  # no row has a drift figure: no footnote


def test_a_bare_model_file_is_timed_with_the_named_devices_settings(tmp_path):
    """bench model.onnx --device lab-pi: the Pi's bench settings (4 threads), not this host's (2);
    a .tflite takes the settings of the first device whose runtime is LiteRT."""
    from edgecompress.inventory import Device
    from edgecompress.artifact import _profile_for_file

    pi, orin, phone = (Device(name=n, target=t, transport=tr) for n, t, tr in
                       (("lab-pi", "raspberry-pi-5", "ssh"), ("lab-orin", "jetson-orin-nano", "ssh"),
                        ("pixel", "android-arm64", "adb")))
    assert _profile_for_file(Path("m.onnx"), [None]).name == "host-cpu"
    assert _profile_for_file(Path("m.onnx"), [orin, pi]).name == "raspberry-pi-5"  # TensorRT does not load .onnx here
    assert _profile_for_file(Path("m.onnx"), [pi]).bench.threads == 4
    assert _profile_for_file(Path("m.tflite"), [pi, phone]).name == "android-arm64"
    assert _profile_for_file(Path("m.tflite"), [None]).runtime == "litert"


def test_an_image_folder_keeps_the_images_size_unless_told_or_they_differ(tmp_path):
    """32x32 images stay 32x32 (resizing them to 224 made a tiny model 50x slower to distill);
    images of several sizes go to the default 224x224; preprocess.size / --input-shape win."""
    from PIL import Image

    from edgecompress import data
    from edgecompress.profile import Preprocess

    for label in ("a", "b"):
        (tmp_path / "same" / label).mkdir(parents=True)
        (tmp_path / "mixed" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((32, 40, 3), 50 * i, np.uint8)).save(tmp_path / "same" / label / f"{i}.png")
            Image.fromarray(np.zeros((20 + i, 30, 3), np.uint8)).save(tmp_path / "mixed" / label / f"{i}.png")
    same = data.load(str(tmp_path / "same"), Preprocess(), None)
    assert same.x.shape == (6, 3, 32, 40) and "own size, 32x40" in same.preprocessing["note"]
    mixed = data.load(str(tmp_path / "mixed"), Preprocess(), None)
    assert mixed.x.shape == (6, 3, 224, 224) and "3 sizes" in mixed.preprocessing["note"]
    (tmp_path / "photos" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(tmp_path / "photos" / "a" / "0.jpg")
    photos = data.load(str(tmp_path / "photos"), Preprocess(), None)  # a camera's size is not a model's
    assert photos.x.shape == (1, 3, 224, 224) and "from 300x400" in photos.preprocessing["note"]
    told = data.load(str(tmp_path / "same"), Preprocess(), (1, 3, 16, 16))
    assert told.x.shape == (6, 3, 16, 16) and told.preprocessing["size"] == [16, 16]


def test_a_large_accuracy_cost_is_said_with_the_knob_that_helps():
    from edgecompress.describe import _accuracy_warning

    acc = {"metric": "accuracy", "teacher": 1.0, "student": 0.4125, "student_fp32": 0.42, "samples": 80}
    said = _accuracy_warning(acc, quantized=True)
    assert said.startswith("warning: accuracy fell 58.75 points (100.00% -> 41.25%) on 80 held-out samples")
    assert "distill.steps" in said and "prune.ratio" in said and "quantiz" not in said
    said = _accuracy_warning(dict(acc, student_fp32=0.99), quantized=True)  # the FP32 student kept it
    assert "quantization lost it" in said and "calibration_samples" in said
    assert "quantiz" not in _accuracy_warning(dict(acc, student_fp32=0.99), quantized=False)
    assert _accuracy_warning(dict(acc, student=0.985), quantized=True) is None  # 1.5 points: within what it costs
    agree = {"metric": "agreement", "teacher": 1.0, "student": 0.9, "samples": 10}
    assert "agreement with the original fell 10.00 points" in _accuracy_warning(agree, quantized=True)


def test_the_build_host_times_with_no_more_threads_than_it_has(monkeypatch):
    """A Pi profile's 4 threads on a 2-CPU build host would time the threads' fight over the CPUs."""
    from edgecompress import bench, profile
    from edgecompress.inventory import Device

    pi = profile.load("raspberry-pi-5")[0].bench
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert pi.threads == 4 and bench.settings_here(pi, None, quiet=True).threads == 2
    assert bench.settings_here(pi, Device(name="lab-pi", target="raspberry-pi-5"), quiet=True).threads == 4
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert bench.settings_here(pi, None, quiet=True).threads == 4


def test_labels_in_another_order_than_the_models_are_warned_about(tmp_path, npz_data, model_file):
    """A trained model scored at chance on its labels: the classes are most likely in another order."""
    from ecutil import train_weights

    x, y = np.load(npz_data)["x"], np.load(npz_data)["y"]
    weights = train_weights(tmp_path / "w.pt", x, y)
    np.savez(tmp_path / "shuffled.npz", x=x, y=(y + 1) % 4)  # every class renamed to the next one
    _, err = deploy(f"{model_file}:build", "--weights", weights, "--target", "host-cpu", "--data",
                    tmp_path / "shuffled.npz", "--out", tmp_path / "o", *fast_sets("distill.steps=5"))
    assert "warning: the original model is right on 0.0% of 128 training samples, no better than chance" in err, err
    assert "sorted folder-name order" in err
    _, err = deploy(f"{model_file}:build", "--weights", weights, "--target", "host-cpu", "--data", npz_data,
                    "--out", tmp_path / "o2", *fast_sets("distill.steps=5"))
    assert "the original model is right on" not in err


def test_an_input_shape_a_fixed_size_bundle_cannot_use_is_said(built):
    root, _, _ = built
    code, _, err = run_cli("bench", root / "dist" / "net-host-cpu", "--input-shape", "1x1x16x16", "--runs", "5",
                           "--seconds", "0.1", "--rounds", "1", "--json")
    assert code == 0 and "note: --input-shape is not used: model.onnx has a fixed size" in err, err


def test_a_check_that_fails_after_distillation_resumes_without_distilling_again(tmp_path, model_file, npz_data):
    """The FP32 export check fails (an impossible tolerance) after distillation: the hint says the
    student is kept, and --resume with the check loosened goes on from it."""
    args = [f"{model_file}:build", "--target", "host-cpu", "--data", npz_data, "--out", tmp_path / "o",
            *fast_sets("distill.steps=60")]
    code, _, err = run_cli("deploy", *args, "--set", "verify.max_abs_diff=1e-12")
    assert code == 3 and "the distilled student is kept" in err and "--resume" in err, err
    code, _, err = run_cli("deploy", *args, "--resume")
    assert code == 0, err
    assert "--resume: continuing round 1 at step 60" in err and "distill 1/1: 60 steps" in err, err


def test_json_output_still_shows_a_person_the_warnings_and_a_skipped_distillation(tmp_path, model_file, npz_data):
    from ecutil import train_weights

    x, y = np.load(npz_data)["x"], np.load(npz_data)["y"]
    weights = train_weights(tmp_path / "w.pt", x, y)
    out, err = deploy(f"{model_file}:build", "--weights", weights, "--target", "host-cpu", "--data", npz_data,
                      "--out", tmp_path / "o", "--json", *fast_sets("distill.steps=0", "prune.ratio=0.9",
                                                                      "prune.round_to=1"))
    summary = json.loads(out)
    assert "distill 1/1: skipped (distill.steps=0)" in err
    assert summary["accuracy_note"] and summary["accuracy_note"] in err, (summary["after"], err)


class _Planted:
    """A file planted in a shared --out as OUT/.NAME.work/checkpoint.pt: unpickled, it creates a marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_planted_checkpoint_is_refused_on_resume_and_never_runs(tmp_path, model_file, npz_data):
    """F8: --resume unpickled the checkpoint with weights_only=False before any check."""
    import torch

    work = tmp_path / "o" / ".net-host-cpu.work"
    work.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    torch.save({"x": _Planted(marker)}, work / "checkpoint.pt")  # as the reliability review planted it
    code, _, err = run_cli("deploy", f"{model_file}:build", "--target", "host-cpu", "--data", npz_data,
                           "--out", tmp_path / "o", "--resume", *fast_sets())
    assert code == 2 and not marker.exists(), err
    assert f"the checkpoint {work / 'checkpoint.pt'} was not loaded" in err and "--force" in err and "delete" in err


def test_a_factory_without_weights_builds_the_same_model_every_run(model_file):
    """Without --weights the factory's random initial weights are the teacher: a resumed run (or the
    same command again) must get the same one."""
    import torch

    from edgecompress import pipeline

    before = torch.get_rng_state()
    first, second = (pipeline._seeded_load(f"{model_file}:build", None).module.state_dict() for _ in range(2))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert torch.equal(torch.get_rng_state(), before), "the caller's random state is left as it was"
