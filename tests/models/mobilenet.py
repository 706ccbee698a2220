"""A MobileNetV2-style model as users write one: InvertedResidual blocks with `out + x`, depthwise
convolutions, a classifier with dropout, all in classes of this file."""
import torch.nn as nn


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, kernel=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(ConvBNReLU(cin, hidden, 1), ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
                                  nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.conv(x)
        return out + x if self.use_res else out


class MobileNet(nn.Module):
    def __init__(self, num_classes=4, in_channels=3):
        super().__init__()
        blocks = [ConvBNReLU(in_channels, 16, stride=1)]
        cin = 16
        for cout, stride in ((16, 1), (24, 2), (24, 1), (32, 2), (32, 1)):
            blocks.append(InvertedResidual(cin, cout, stride, expand=4))
            cin = cout
        blocks.append(ConvBNReLU(cin, 128, 1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def build():
    return MobileNet()
