"""The detector and the segmenter of benchmarks/tasks.py, written as users write them: their own
classes, residual blocks, a head per output; a factory per model (`build_detector`, `build_segmenter`).
Trained weights come with `--weights` (a state_dict; benchmarks/tasks.py trains and saves them).

Both take 3 x 64 x 64 images. The detector is single-shot with raw heads on an 8 x 8 grid (one
anchor per cell, stride 8): box offsets (N, 64, 4) as (tx, ty, tw, th), decoded by
benchmarks/models/task_bench_code.py:decode as cx = (col + sigmoid(tx)) / 8, w = ANCHOR * exp(tw),
and class logits (N, 64, K) read through a sigmoid. The segmenter returns {"masks": logits (N, K, 64, 64)}."""
import torch.nn as nn
import torch.nn.functional as F

CLASSES = 3  # square, disc, triangle (the detector's classes; the segmenter adds background)


class ConvBN(nn.Module):
    def __init__(self, cin, cout, stride=1, kernel=3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.a = ConvBN(ch, ch)
        self.b = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(ch)

    def forward(self, x):
        return F.relu(x + self.bn(self.b(self.a(x))))


class Backbone(nn.Module):
    """64x64 in; features at stride 2, 4 and 8 (the segmenter reads the first two)."""

    def __init__(self, widths=(32, 64, 96)):
        super().__init__()
        w1, w2, w3 = widths
        self.stem = ConvBN(3, w1, 2)
        self.stage1 = Residual(w1)
        self.down2 = ConvBN(w1, w2, 2)
        self.stage2 = Residual(w2)
        self.down3 = ConvBN(w2, w3, 2)
        self.stage3 = Residual(w3)

    def forward(self, x):
        s2 = self.stage1(self.stem(x))
        s4 = self.stage2(self.down2(s2))
        s8 = self.stage3(self.down3(s4))
        return s2, s4, s8


class DetectionHead(nn.Module):
    """A shared 3x3 conv, then one 1x1 conv per output: box offsets and class logits per anchor."""

    def __init__(self, ch, classes):
        super().__init__()
        self.neck = ConvBN(ch, ch)
        self.box = nn.Conv2d(ch, 4, 1)
        self.score = nn.Conv2d(ch, classes, 1)

    def forward(self, f):
        f = self.neck(f)
        # (N, C, 8, 8) -> (N, 64 anchors, C), anchors in row-major grid order
        return self.box(f).flatten(2).transpose(1, 2), self.score(f).flatten(2).transpose(1, 2)


class GridDetector(nn.Module):
    def __init__(self, classes=CLASSES, widths=(32, 64, 96)):
        super().__init__()
        self.backbone = Backbone(widths)
        self.head = DetectionHead(widths[2], classes)

    def forward(self, x):
        return self.head(self.backbone(x)[2])  # (boxes (N, 64, 4), scores (N, 64, K))


class Segmenter(nn.Module):
    """A small U-Net-like net: stride-4 features upsampled and joined with the stride-2 ones."""

    def __init__(self, classes=CLASSES + 1, widths=(32, 64), sizes=None):
        super().__init__()
        w1, w2 = widths
        self.sizes = sizes  # None: upsample by scale_factor 2; else the two output sizes, as constants
        self.stem = ConvBN(3, w1, 2)
        self.stage1 = Residual(w1)
        self.down2 = ConvBN(w1, w2, 2)
        self.stage2 = Residual(w2)
        self.lateral = ConvBN(w2, w1, kernel=1)
        self.fuse = ConvBN(w1, w1)
        self.classifier = nn.Conv2d(w1, classes, 1)

    def forward(self, x):
        s2 = self.stage1(self.stem(x))
        s4 = self.stage2(self.down2(s2))
        up = self._up(self.lateral(s4), 0)
        logits = self.classifier(self.fuse(s2 + up))
        return {"masks": self._up(logits, 1)}

    def _up(self, x, which):
        if self.sizes is None:
            return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.interpolate(x, size=self.sizes[which], mode="bilinear", align_corners=False)


def build_detector():
    return GridDetector()


def build_segmenter():
    return Segmenter()


def build_segmenter_wide():
    """The segmenter at twice the widths (about 4x the MACs): how the speed-up grows with the model."""
    return Segmenter(widths=(64, 128))


def build_segmenter_sized():
    """The same segmenter (the same weights load) upsampling to constant sizes (32x32, then 64x64):
    its ONNX Resize nodes get constant sizes instead of scales."""
    return Segmenter(sizes=((32, 32), (64, 64)))
