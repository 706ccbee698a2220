"""Models whose structure Torch-Pruning's dependency graph does not fully see, written as users write
them: an EfficientNet-like net whose squeeze-excite reshapes its gate to a fixed channel count, a
MobileViT-like block whose attention splits channels into a fixed number of heads, a detector with
two raw heads returning a tuple, and a segmenter returning a dict (with a None value)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class SqueezeExcite(nn.Module):
    """Pooled branch -> per-sample gate, reshaped to the channel count the block was built with."""
    def __init__(self, c, r=4):
        super().__init__()
        self.channels = c
        self.fc1 = nn.Linear(c, c // r)
        self.fc2 = nn.Linear(c // r, c)

    def forward(self, x):
        b = x.shape[0]
        s = torch.sigmoid(self.fc2(F.silu(self.fc1(x.mean((2, 3))))))
        return x * s.view(b, self.channels, 1, 1)


class MBConv(nn.Module):
    def __init__(self, c_in, c_out, expand=4, stride=1):
        super().__init__()
        mid = c_in * expand
        self.expand = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
        self.se = SqueezeExcite(mid)
        self.project = nn.Sequential(nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class TinyEfficientNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(MBConv(16, 24, stride=2), MBConv(24, 24), MBConv(24, 40, stride=2))
        self.top = nn.Sequential(nn.Conv2d(40, 128, 1, bias=False), nn.BatchNorm2d(128), nn.SiLU())
        self.classifier = nn.Linear(128, classes)

    def forward(self, x):
        return self.classifier(self.top(self.blocks(self.stem(x))).mean((2, 3)))


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map; the head count is fixed, so the
    channel count must stay a multiple of it."""
    def __init__(self, c, heads=3):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.q(x).view(b, self.heads, c // self.heads, h * w)
        k = self.k(x).view(b, self.heads, c // self.heads, h * w)
        v = self.v(x).view(b, self.heads, c // self.heads, h * w)
        att = torch.softmax(q.transpose(2, 3) @ k / (c // self.heads) ** 0.5, dim=-1)
        y = (v @ att.transpose(2, 3)).reshape(b, c, h, w)
        return self.out(y)


class MobileViTBlock(nn.Module):
    def __init__(self, c, d=48):
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU())
        self.to_d = nn.Conv2d(c, d, 1, bias=False)
        self.attention = Attention(d)
        self.from_d = nn.Conv2d(d, c, 1, bias=False)
        self.fuse = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU())

    def forward(self, x):
        y = self.to_d(self.local(x))
        y = y + self.attention(y)
        return self.fuse(torch.cat([x, self.from_d(y)], 1))


class TinyMobileViT(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU(),
                                  nn.Conv2d(32, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU())
        self.vit = MobileViTBlock(32)
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.vit(self.stem(x)).mean((2, 3)))


def conv_bn(c_in, c_out, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a, self.b = conv_bn(c, c), conv_bn(c, c)

    def forward(self, x):
        return x + self.b(self.a(x))


class TinyDetector(nn.Module):
    """Single-shot: per cell `anchors` boxes (4 numbers) and class scores, as raw heads."""
    def __init__(self, classes=3, anchors=2):
        super().__init__()
        self.classes = classes
        self.backbone = nn.Sequential(conv_bn(3, 16, 2), conv_bn(16, 32, 2), Residual(32), conv_bn(32, 48, 2))
        self.box_head = nn.Conv2d(48, anchors * 4, 1)
        self.score_head = nn.Conv2d(48, anchors * classes, 1)

    def forward(self, x):
        f = self.backbone(x)
        n = x.shape[0]
        boxes = self.box_head(f).permute(0, 2, 3, 1).reshape(n, -1, 4)
        scores = self.score_head(f).permute(0, 2, 3, 1).reshape(n, -1, self.classes)
        return boxes, scores


class TinySegmenter(nn.Module):
    """Encoder-decoder with a skip; returns {"out": full-size logits, "aux": coarse logits or None}."""
    def __init__(self, classes=4, aux=False):
        super().__init__()
        self.enc1, self.enc2 = conv_bn(3, 16, 2), conv_bn(16, 32, 2)
        self.dec = conv_bn(32 + 16, 24)
        self.classifier = nn.Conv2d(24, classes, 1)
        self.aux = nn.Conv2d(32, classes, 1) if aux else None

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        up = F.interpolate(e2, size=e1.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.dec(torch.cat([up, e1], 1)))
        out = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": out, "aux": self.aux(e2) if self.aux is not None else None}


class PixelShuffleSegmenter(nn.Module):
    """A sub-pixel decoder (ESPCN / many real-time segmenters): a conv makes 4x the channels and
    PixelShuffle folds them into 2x the resolution. Torch-Pruning's graph does not model the fold."""
    def __init__(self, classes=3):
        super().__init__()
        self.enc1, self.enc2 = conv_bn(3, 16, 2), conv_bn(16, 32, 2)
        self.up = nn.Sequential(nn.Conv2d(32, 64, 1), nn.PixelShuffle(2))  # 16 channels at 2x
        self.dec = conv_bn(16 + 16, 16)
        self.up2 = nn.Sequential(nn.Conv2d(16, 64, 1), nn.PixelShuffle(2))
        self.classifier = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        d = self.dec(torch.cat([self.up(self.enc2(e1)), e1], 1))
        return self.classifier(self.up2(d))


class GroupNormNet(nn.Module):
    """A classifier normalised by GroupNorm(8, C) (detection heads and small-batch nets use it): its channels
    are tied in 8 groups, which Torch-Pruning prunes evenly."""
    def __init__(self, classes=3, norm=None):
        super().__init__()
        norm = norm or (lambda c: nn.GroupNorm(8, c))
        self.convs = nn.ModuleList([nn.Conv2d(3, 32, 3, 2, 1), nn.Conv2d(32, 64, 3, 2, 1), nn.Conv2d(64, 64, 3, 2, 1)])
        self.norms = nn.ModuleList([norm(32), norm(64), norm(64)])
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = F.silu(norm(conv(x)))
        return self.fc(x.mean((2, 3)))


def efficientnet():
    return TinyEfficientNet()


def mobilevit():
    return TinyMobileViT()


def detector():
    return TinyDetector()


def segmenter():
    return TinySegmenter()


def segmenter_aux():
    return TinySegmenter(aux=True)


def groupnorm_net():
    return GroupNormNet()


def batchnorm_net():
    return GroupNormNet(norm=nn.BatchNorm2d)


def pixel_shuffle_segmenter():
    return PixelShuffleSegmenter()


def build():
    return detector()
