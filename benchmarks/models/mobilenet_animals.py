"""A MobileNetV2-style classifier for the animals demo's 1x28x28 silhouettes, written as a user writes it:
a stem, inverted residual blocks (1x1 expand, 3x3 depthwise, linear 1x1 projection, a skip where shapes
allow), a 1x1 head and a linear classifier. Factory: `build` (`mobilenet_animals.py:build`)."""
from __future__ import annotations

import torch
import torch.nn as nn


class InvertedResidual(nn.Module):
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


class AnimalsMobileNet(nn.Module):
    """28x28 -> 14 -> 7 -> 4 through strided blocks; 10 animal classes."""

    def __init__(self, classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6())
        cfg = [(width, 16, 1, 1), (16, 24, 2, 6), (24, 24, 1, 6), (24, 32, 2, 6), (32, 32, 1, 6),
               (32, 64, 2, 6), (64, 64, 1, 6)]
        self.blocks = nn.Sequential(*[InvertedResidual(*c) for c in cfg])
        self.head = nn.Sequential(nn.Conv2d(64, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.head(self.blocks(self.stem(x)))), 1))


def build():
    return AnimalsMobileNet()
