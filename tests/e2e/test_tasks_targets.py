"""Every task model of test_tasks on the targets test_tasks does not deploy it to, with and without
the data's labels (masks), as a user moves a model from one device to another: the task is found
the same way, every output reaches the bundle, the deployed file meets its task's tolerance, `verify`
re-checks the bundle, and the example program prints the task's answer."""
from __future__ import annotations

import pytest

from ecutil import run_cli
from test_tasks import _deploy, _example, _one_thread, data  # noqa: F401  (fixtures)

CASES = [  # model, target, data file, what example.py's first line has (a .tflite names its outputs
    # serving_default_output_0_output, its tensor's name)
    ("detector", "android", "shapes.npz", "anchor "),
    ("segmenter", "arm", "shapes.npz", "class "),  # no masks: taught by the teacher alone (pixel_kl)
    ("segmenter", "jetson", "shapes_masks.npz", "class "),
    ("embedder", "android", "shapes.npz", "32 values"),
    ("embedder", "jetson", "shapes.npz", "32 values"),
    ("regressor", "arm", "shapes.npz", "output_0"),
    ("regressor", "android", "shapes.npz", "output_0"),
]
OUTPUTS = {"detector": 2, "segmenter": 1, "embedder": 1, "regressor": 2}
TASKS = {"detector": "detection", "segmenter": "segmentation", "embedder": "embedding", "regressor": "regression"}


@pytest.mark.parametrize("model, target, data_file, first", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_task_model_deploys_to_each_target(data, tmp_path, model, target, data_file, first):
    folder, weights = data
    m, stdout, err, bundle = _deploy(model, target, folder / data_file, tmp_path / "out", weights.get(model))
    assert m["task"] == TASKS[model] and len(m["outputs"]) == OUTPUTS[model]
    if model == "segmenter":
        assert m["compression"]["distillation"]["losses"] == (["pixel_kl", "pixel_ce"] if "masks" in data_file
                                                              else ["pixel_kl"])
    deployed = m["metrics"]["parity"][-1]
    if deployed["tolerance"] and "max_abs_diff" not in deployed["tolerance"]:  # quantized: the task's own figure
        (key, limit), = deployed["tolerance"].items()
        assert deployed["task_agreement"] >= limit, (key, deployed["task_agreement"])
    code, verify_out, verify_err = run_cli("verify", str(bundle))
    assert code == 0, verify_err
    readme = (bundle / "README.md").read_text()  # what the outputs are, in the task's words; no labels.txt promised
    assert f"Outputs ({TASKS[model]}): " in readme and "class indices" not in readme and "labels.txt" not in readme
    if OUTPUTS[model] > 1:  # each output named as the model names it (a .tflite's tensors: serving_default_..._output)
        said = verify_out + verify_err
        assert all(f"{o.get('model_name') or o['name']} " in said for o in m["outputs"]), said
        assert not [o["name"] for o in m["outputs"] if o.get("model_name") and o["name"] in said], said
    printed = _example(bundle)
    assert printed and first in printed[0], printed
    if model == "segmenter":  # the mask as a picture, beside the class areas
        from PIL import Image

        assert printed[-1].startswith("mask: mask.png") and Image.open(bundle / "mask.png").size == (32, 32)
    if model == "embedder":  # two inputs: their cosine similarity, 1 for the same sample twice
        import subprocess
        import sys

        import numpy as np

        x = np.load(bundle / "parity.npz")["x"]
        np.save(tmp_path / "a.npy", x[0])
        np.save(tmp_path / "b.npy", x[1])
        run = [sys.executable, "example.py", str(tmp_path / "a.npy")]
        same = subprocess.run(run + [str(tmp_path / "a.npy")], cwd=bundle, capture_output=True, text=True, timeout=120)
        other = subprocess.run(run + [str(tmp_path / "b.npy")], cwd=bundle, capture_output=True, text=True, timeout=120)
        assert "cosine similarity of the two inputs: 1.0000" in same.stdout, same.stdout + same.stderr
        cosine = float(other.stdout.strip().splitlines()[-1].split()[-1])
        assert -1 <= cosine < 0.9999, other.stdout


@pytest.mark.litert
def test_the_users_decode_and_metric_on_litert_read_the_models_own_output_names(data, tmp_path):
    """A .tflite names its outputs serving_default_output_0_output; the user's decode and metric were
    written for the model's names (output_0, a dict's keys), in the deploy and in the bundle's example."""
    from test_tasks import MODELS

    folder, weights = data
    code_file = MODELS / "task_user_code.py"
    m, stdout, err, bundle = _deploy("detector", "android", folder / "shapes_boxes.npz", tmp_path / "det",
                                     weights["detector"], "--postprocess", f"{code_file}:decode",
                                     "--metric", f"{code_file}:map50")
    assert [o.get("model_name") for o in m["outputs"]] == ["output_0", "output_1"]
    figures = m["metrics"]["user_figures"]
    assert figures["metric"]["original"]["map50"] > 0.3 and figures["boxes"]["deployed"]["reference_boxes"] > 0
    printed = _example(bundle)  # decoded by the shipped postprocess.py with the model's names
    assert printed and all(line.startswith("class ") and " box " in line for line in printed), printed
    m, *_ = _deploy("segmenter", "android", folder / "shapes_masks.npz", tmp_path / "seg", weights["segmenter"],
                    "--metric", f"{code_file}:miou")
    miou = m["metrics"]["user_figures"]["metric"]
    assert miou["original"]["miou"] > 0.5 and 0 < miou["deployed"]["miou"] <= 1, miou  # the teacher learned the masks
