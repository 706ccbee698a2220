"""Squeeze-excite and depthwise residual blocks that call torch's functions through the module's own
`torch` global (torch.relu, torch.sigmoid), as people write them: torch.export's tracer for the
LiteRT INT8 path looks those globals up by the module's name, which failed for a file loaded by path."""
import torch
import torch.nn as nn


class SE(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        w = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(w))))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.se = SE(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.dw(x)))
        return torch.relu(x + self.se(self.bn2(self.pw(y))))


class SENet(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = Block(16)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


def build():
    return SENet()
