"""Deploys from each kind of input, through the real CLI: an .onnx file (dynamic sizes, external
weights, a fixed batch of one), label-free data, an image folder, labels in another order."""
import json
import subprocess
import sys

import numpy as np

from e2eutil import deploy
from ecutil import fast_sets, make_data, run_cli


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
    # no FP32 student is timed: an .onnx input has none (report.html plotted the original re-timed under that name)
    assert m["metrics"]["measured_on"]["inputs"] == {"original": timed, "compressed": timed}
    assert summary["before"]["params"] == summary["after"]["params"] > 0, "the table counts the file's weights, not '-'"

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
    m = json.loads((tmp_path / "o" / "net-host-cpu" / "manifest.json").read_text())
    assert summary["accuracy_metric"] == "agreement"
    assert summary["after"]["accuracy"] == m["metrics"]["parity"][-1]["original_agreement"], "the check's figure"
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
