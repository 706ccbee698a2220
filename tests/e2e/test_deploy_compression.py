"""Deploys through the real CLI with each compression choice: unstructured and 2:4 pruning, the
importance criteria, a named teacher; and the factory's seeded build a resume relies on."""
import json

import pytest

from e2eutil import deploy
from ecutil import fast_sets, run_cli


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


@pytest.mark.parametrize("sets", [
    ("prune.importance=taylor",),
    ("prune.importance=bn_scale", "prune.sparsity_training.steps=20", "prune.sparsity_training.reg=0.001"),
])
def test_importance_variants_run_end_to_end(tmp_path, model_file, npz_data, sets):
    out, err = deploy(f"{model_file}:build", "--target", "host-cpu", "--data", npz_data, "--out", tmp_path / "o",
                      "--json", *fast_sets(*sets))
    summary = json.loads(out)
    assert summary["after"]["params"] < summary["before"]["params"] / 3
    m = json.loads((tmp_path / "o" / "net-host-cpu" / "manifest.json").read_text())
    curve = m["compression"]["distillation"]["loss_curve"]
    if "prune.sparsity_training.steps=20" in sets:  # network slimming ran first: its 20 steps are round 0
        assert "prune 1/1 (channel, bn_scale): 1,364 params" in err
        assert [p[:2] for p in curve if p[0] == 0] == [[0, s] for s in range(1, 21)]
    else:
        assert {p[0] for p in curve} == {1}, "no slimming round without sparsity training"
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
    assert pruning["two_four"]["masked_layers"] == 1 and pruning["two_four"]["sparse_onnx_weights"] == ["/3/Conv"]
    assert "2:4 pattern intact" in err
    assert "2:4 sparsity speeds up only TensorRT's sparse tensor cores; onnxruntime runs the model dense" in err
    from edgecompress import verify

    layers = verify.two_four_layers(tmp_path / "o" / "net-host-cpu" / "model.onnx")
    assert sorted(layers.values())[0] == 0, "the bundled model keeps the pattern"


def test_a_factory_without_weights_builds_the_same_model_every_run(model_file):
    """Without --weights the factory's random initial weights are the teacher: a resumed run (or the
    same command again) must get the same one."""
    import torch

    from edgecompress import inputs

    before = torch.get_rng_state()
    first, second = (inputs.seeded_load(f"{model_file}:build", None).module.state_dict() for _ in range(2))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert torch.equal(torch.get_rng_state(), before), "the caller's random state is left as it was"
