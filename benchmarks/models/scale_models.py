"""Models for benchmarks/distill_scale.py, written as users write them: a residual CNN classifier."""
import torch.nn as nn


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, stride=1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Residual(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.a, self.b = ConvBN(ch, ch), nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x):
        return (x + self.b(self.a(x))).relu()


class SmallNet(nn.Module):
    def __init__(self, classes=4, widths=(32, 64)):
        super().__init__()
        self.stem = ConvBN(3, widths[0], 2)
        self.stage1 = Residual(widths[0])
        self.down = ConvBN(widths[0], widths[1], 2)
        self.stage2 = Residual(widths[1])
        self.head = nn.Linear(widths[1], classes)

    def forward(self, x):
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))).mean((2, 3)))


def small():
    return SmallNet()
