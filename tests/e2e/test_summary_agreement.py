"""Without labels the summary's figure is the deployed model's top-1 agreement with the original, and
the parity check reports that same figure beside its agreement with the FP32 student (issue 11 item 2:
a review read 'agreement 0%' in the table next to a parity check that said 100%, against another
reference, and took the table for wrong)."""
from __future__ import annotations

import json

import numpy as np

from ecutil import fast_sets, make_data, run_cli

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
