"""The LiteRT bundle's example.py takes an image as the ONNX one does (the walkthrough's Android bundle
refused a PNG although its preprocessing was recorded in the manifest)."""
import subprocess
import sys

import numpy as np
import pytest

from ecutil import fast_sets, run_cli

pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_torch")

NET = '''
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x):
        return self.head(self.features(x))


def build():
    return Net()
'''


def test_the_litert_example_classifies_an_image(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["dark", "light"]):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(0, 100, (12, 12, 3)) + 150 * c
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "img" / name / f"{i}.png")
    (tmp_path / "net.py").write_text(NET)
    code, _, err = run_cli("deploy", f"{tmp_path / 'net.py'}:build", "--target", "android", "--data", tmp_path / "img",
                           "--out", tmp_path / "o", *fast_sets("verify.min_top1_agreement=0"))
    assert code == 0, err
    folder = tmp_path / "o" / "net-android-arm64"
    out = subprocess.run([sys.executable, "example.py", str(tmp_path / "img" / "light" / "3.png")], cwd=folder,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] in ("dark", "light")
    missing = subprocess.run([sys.executable, "example.py", "nope.png"], cwd=folder, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 1 and "nope.png: no such file" in missing.stderr
