"""A compressed model ready for a back end: a user's own residual net, loaded, checked and pruned
through the real stages (inputs.load_and_check, compress.run), distilled for a few steps."""
import textwrap

import numpy as np
import pytest

from ecutil import make_data, train_weights

RESIDUAL_SRC = '''
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = Block(16)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


def build():
    return Net()
'''


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "resnet_user.py").write_text(textwrap.dedent(RESIDUAL_SRC))
    x, y = make_data(400)
    np.savez(folder / "data.npz", x=x, y=y)
    weights = train_weights(folder / "w.pt", x, y, source=RESIDUAL_SRC)
    return folder, f"{folder / 'resnet_user.py'}:build", str(weights), str(folder / "data.npz")


@pytest.fixture(scope="module")
def compressed_for(user_model):
    """compressed_for(target, *overrides) -> (inputs, compressed), the run's work folder made."""
    from edgecompress import compress, inputs
    from edgecompress.pipeline import DeployOptions

    folder, spec, weights, data = user_model

    def make(target: str, *overrides: str):
        sets = ["distill.steps=20", "quantize.calibration_samples=32", "verify.samples=64", *overrides]
        opts = DeployOptions(model=spec, weights=weights, data=data, target=target, overrides=sets,
                             out=folder / f"out-{target}-{len(overrides)}")
        run = inputs.load_and_check(opts)
        run.work.mkdir(parents=True, exist_ok=True)
        return run, compress.run(run, resume=False)
    return make
