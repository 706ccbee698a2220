"""FP16 targets are checked in FP16 arithmetic (the walkthrough: a Jetson FP16 deploy had no check of
FP16 at all, and android-gpu's 'FP16' check ran in FP32 on the CPU)."""
import json

import numpy as np
import pytest

from ecutil import fast_sets, make_data, run_cli

NET = '''
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, c, gain):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.gain = gain

    def forward(self, x):
        # a scaled intermediate: exact in FP32, past FP16's 65504 (inf) when gain is large
        return (x + self.bn(self.conv(x)).relu()) * self.gain / self.gain


class Net(nn.Module):
    def __init__(self, gain=1.0):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.block = Block(16, gain)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


def build():
    return Net()


def overflowing():
    return Net(gain=1e6)
'''


@pytest.fixture
def files(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    x, y = make_data()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    return tmp_path


def test_a_jetson_fp16_deploy_checks_the_student_in_fp16(files):
    code, _, err = run_cli("deploy", f"{files / 'net.py'}:build", "--target", "jetson", "--data", files / "d.npz",
                           "--out", files / "o", *fast_sets())
    assert code == 0, err
    m = json.loads((files / "o" / "net-jetson-orin-nano" / "manifest.json").read_text())
    fp16 = [c for c in m["metrics"]["parity"] if c["what"].startswith("student in FP16 arithmetic")]
    assert len(fp16) == 1 and fp16[0]["top1_agreement"] >= 0.85 and fp16[0]["tolerance"]["min_top1_agreement"]
    assert 0 < fp16[0]["outputs"][0]["max_abs_diff"] < 0.1  # FP16 rounds: not the FP32 model run again
    assert "verify: FP16" in err


def test_a_model_that_overflows_fp16_is_stopped_naming_the_output(files):
    code, _, err = run_cli("deploy", f"{files / 'net.py'}:overflowing", "--target", "jetson", "--data",
                           files / "d.npz", "--out", files / "o", *fast_sets("distill.steps=0"))
    assert code == 3, err
    assert "student in FP16 arithmetic" in err and "is not finite" in err
    assert not (files / "o" / "overflowing-jetson-orin-nano").exists()


def test_android_gpu_names_what_its_tflite_check_ran(files):
    pytest.importorskip("litert_torch")
    code, _, err = run_cli("deploy", f"{files / 'net.py'}:build", "--target", "android-gpu", "--data", files / "d.npz",
                           "--out", files / "o", *fast_sets())
    assert code == 0, err
    m = json.loads((files / "o" / "net-android-gpu" / "manifest.json").read_text())
    whats = [c["what"] for c in m["metrics"]["parity"]]
    assert any(w.startswith("student in FP16 arithmetic") for w in whats)
    assert any("the GPU delegate runs in FP16; here run in FP32" in w for w in whats)
