"""Models for the QAT benchmark and tests, written as a user writes them: a MobileNetV2-style net
(depthwise separable convolutions in inverted residual blocks, ReLU6, a linear bottleneck) and a small
residual CNN with two outputs in a dict. Factories: `mobilenet`, `residual`. Data: `make_data` draws
textured shapes (10 classes) on a noisy background, 1x32x32, reproducible from a seed."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; a skip where shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_skip = stride == 1 and cin == cout
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                                       nn.BatchNorm2d(hidden), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.use_skip else y


class MobileNetV2Small(nn.Module):
    """A MobileNetV2 for 32x32 single-channel images: stem, 7 inverted residual blocks, 1x1 head conv."""

    def __init__(self, classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6())
        cfg = [(width, 16, 1, 1), (16, 24, 2, 6), (24, 24, 1, 6), (24, 32, 2, 6), (32, 32, 1, 6), (32, 64, 2, 6),
               (64, 64, 1, 6)]
        self.blocks = nn.Sequential(*[InvertedResidual(*c) for c in cfg])
        self.head = nn.Sequential(nn.Conv2d(64, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.head(self.blocks(self.stem(x)))), 1))


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResidualNet(nn.Module):
    """A user's small classifier with a residual block and two outputs: class logits and a feature vector."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = Block(16)
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        f = self.down(self.block(self.stem(x))).mean((2, 3))
        return {"logits": self.fc(f), "features": f}


def mobilenet():
    return MobileNetV2Small()


def residual():
    return ResidualNet()


def make_data(n: int, seed: int = 0) -> tuple:
    """(x float32 (n, 1, 32, 32), y int64 (n,)): ten classes of a shape (disc, square, cross, ring, bars
    in two directions, triangle, diamond, two discs, checker patch) at a random place and size, with a
    random brightness, on a noisy gradient background: hard enough that a small net is not at 100%."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    x = np.empty((n, 1, 32, 32), np.float32)
    y = rng.integers(0, 10, n)
    for i in range(n):
        cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(4, 8)
        dy, dx = yy - cy, xx - cx
        d = np.sqrt(dy ** 2 + dx ** 2)
        k = y[i]
        mask = [d < r, (abs(dy) < r * 0.8) & (abs(dx) < r * 0.8), (abs(dy) < r / 3) | (abs(dx) < r / 3),
                (d < r) & (d > r * 0.6), (np.sin(yy * 1.2) > 0.3) & (d < r * 1.2),
                (np.sin(xx * 1.2) > 0.3) & (d < r * 1.2), (dy > -r) & (abs(dx) < (dy + r) / 2) & (dy < r),
                abs(dy) + abs(dx) < r, (np.sqrt((dy - r / 2) ** 2 + dx ** 2) < r / 2.5) | (np.sqrt((dy + r / 2) ** 2 + dx ** 2) < r / 2.5),
                ((np.floor(yy / 3) + np.floor(xx / 3)) % 2 == 0) & (d < r)][k]
        background = rng.normal(0, 0.35, (32, 32)) + rng.uniform(-0.5, 0.5) * (xx / 32) + rng.uniform(-0.5, 0.5)
        x[i, 0] = background + mask * rng.uniform(0.6, 1.4)
    return x, y.astype(np.int64)
