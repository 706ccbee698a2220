"""Without labels the summary's figure is the deployed model's top-1 agreement with the original, and
the parity check reports that same figure beside its agreement with the FP32 student (issue 11 item 2:
a review read 'agreement 0%' in the table next to a parity check that said 100%, against another
reference, and took the table for wrong)."""
from __future__ import annotations

import json

import numpy as np

from ecutil import fast_sets, make_data, run_cli
from edgecompress import verify
from edgecompress.records import Accuracy, Compressed, Distillation, Pruning
from edgecompress.summary import accuracy, accuracy_warning

# A user's own class holding torch layers, label-free data: the summary and the stored check must agree.
NET = '''
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))

    def forward(self, x):
        return self.head(self.body(x))


def build():
    return Net()
'''


def test_label_free_summary_equals_the_parity_checks_agreement_with_the_original(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    x, _ = make_data(n=150)  # 30 held out: every held-out sample is among the 32 stored in parity.npz
    np.savez(tmp_path / "x.npz", x=x)
    code, out, err = run_cli("deploy", f"{tmp_path / 'net.py'}:build", "--target", "host-cpu", "--data",
                             tmp_path / "x.npz", "--out", tmp_path / "o", "--json", *fast_sets())
    assert code == 0, err
    summary = json.loads(out)
    bundle = tmp_path / "o" / "net-host-cpu"
    manifest = json.loads((bundle / "manifest.json").read_text())
    deployed_check = manifest["metrics"]["parity"][-1]
    assert summary["accuracy_metric"] == "agreement"
    assert summary["after"]["accuracy"] == deployed_check["original_agreement"]
    assert manifest["metrics"]["accuracy"]["student"] == deployed_check["original_agreement"]
    with np.load(bundle / "parity.npz") as stored:
        assert len(stored["x"]) == deployed_check["samples"] == 30
        recomputed = float((stored["expected"].argmax(1) == stored["original"].argmax(1)).mean())
    assert recomputed == summary["after"]["accuracy"]
    code, out, err = run_cli("verify", bundle)
    assert code == 0, err
    assert f"top-1 agreement with the original model: {summary['after']['accuracy']:.2%}" in out
    assert "(the FP32 student the model was made from)" in out and "at build time, over 30 held-out samples" in out


def _accuracy(original, student, deployed) -> Accuracy:
    """summary.accuracy without labels, for a deployed model whose outputs are `deployed`."""
    compressed = Compressed(student=None, original=None, example=None, reference=[student],
                            reference_original=[original], output_names=["output"], pruning=Pruning("none", 0.0),
                            distillation=Distillation(steps=0, seconds=0.0))
    return accuracy(compressed, _parity(original, student, deployed), held_y=None)


def _parity(original, student, deployed):
    return verify.compare("deployed vs student", [deployed], [student], ["logits"], None, [original])


def test_agreement_with_the_original_and_with_the_student_are_told_apart():
    rng = np.random.default_rng(0)
    original = rng.normal(size=(50, 10)).astype(np.float32) * 5
    student = np.roll(original, 1, axis=1)  # a student that learned other classes
    acc = _accuracy(original, student, student.copy())
    assert acc.metric == "agreement" and acc.teacher == 1.0 and acc.samples == 50
    assert acc.student == acc.student_fp32 == 0.0  # the deployed model matches the student, not the original
    parity = _parity(original, student, student.copy())
    assert parity.top1_agreement == 1.0 and parity.original_agreement == 0.0
    assert "agreement with the original model 0.00%" in parity.table()


def test_a_near_tie_original_is_named_as_the_cause():
    rng = np.random.default_rng(1)
    flat = rng.normal(size=(40, 1000)).astype(np.float32) * 0.01  # random weights: near-tied logits
    acc = _accuracy(flat, np.roll(flat, 3, axis=1), np.roll(flat, 3, axis=1))
    warning = accuracy_warning(acc, quantized=True)
    assert "near tie" in warning and "--weights" in warning
    confident = flat * 1000
    acc = _accuracy(confident, np.roll(confident, 3, axis=1), np.roll(confident, 3, axis=1))
    assert "near tie" not in accuracy_warning(acc, quantized=True)


def test_a_large_accuracy_cost_is_said_with_the_knob_that_helps():
    from dataclasses import replace

    acc = Accuracy("accuracy", teacher=1.0, student=0.4125, student_fp32=0.42, samples=80)
    said = accuracy_warning(acc, quantized=True)
    assert said.startswith("warning: accuracy fell 58.75 points (100.00% -> 41.25%) on 80 held-out samples")
    assert "distill.steps" in said and "prune.ratio" in said and "quantiz" not in said
    said = accuracy_warning(replace(acc, student_fp32=0.99), quantized=True)  # the FP32 student kept it
    assert "quantization lost it" in said and "calibration_samples" in said
    assert "quantiz" not in accuracy_warning(replace(acc, student_fp32=0.99), quantized=False)
    assert accuracy_warning(replace(acc, student=0.985), quantized=True) is None  # 1.5 points: within what it costs
    agree = Accuracy("agreement", teacher=1.0, student=0.9, student_fp32=None, samples=10)
    assert "agreement with the original fell 10.00 points" in accuracy_warning(agree, quantized=True)
