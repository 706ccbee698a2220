"""Models that are not classifiers, written as users write them: their own classes, residual blocks,
several outputs, a dict. Each factory builds it; tests/taskdata.py makes data they learn in seconds."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBN(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.a, self.b = ConvBN(ch, ch), nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x):
        return F.relu(x + self.b(self.a(x)))


class Backbone(nn.Module):
    """32x32 in, a 16-channel map at 8x8 out."""

    def __init__(self, width=16):
        super().__init__()
        self.stem = ConvBN(3, width, 2)
        self.block = Residual(width)
        self.down = ConvBN(width, width, 2)

    def forward(self, x):
        return self.down(self.block(self.stem(x)))


class TinySSD(nn.Module):
    """A single-shot detector: raw heads, one anchor per cell of the 8x8 map: boxes (N, 64, 4) as
    (cx, cy, w, h) in [0, 1] and class scores (N, 64, K) as logits (sigmoid), returned as a tuple."""

    def __init__(self, classes=2):
        super().__init__()
        self.backbone = Backbone()
        self.box_head = nn.Conv2d(16, 4, 1)
        self.cls_head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        f = self.backbone(x)
        boxes = torch.sigmoid(self.box_head(f)).flatten(2).transpose(1, 2)
        scores = self.cls_head(f).flatten(2).transpose(1, 2)
        return boxes, scores


class TinySeg(nn.Module):
    """Dense class logits at the input's size (N, K, 32, 32), as a dict with an auxiliary output."""

    def __init__(self, classes=3):
        super().__init__()
        self.backbone = Backbone()
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        logits = F.interpolate(self.head(self.backbone(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"masks": logits}


class Embedder(nn.Module):
    """A re-identification embedding: 32 L2-normalised numbers per image."""

    def __init__(self, dim=32):
        super().__init__()
        self.backbone = Backbone()
        self.fc = nn.Linear(16, dim)

    def forward(self, x):
        return F.normalize(self.fc(self.backbone(x).mean((2, 3))), dim=1)


class ReID(nn.Module):
    """A re-identification net as it is trained: its embedding and an ID head's logits, in a dict that lists
    the logits first."""

    def __init__(self, dim=32, ids=2):
        super().__init__()
        self.backbone = Backbone()
        self.fc = nn.Linear(16, dim)
        self.ids = nn.Linear(dim, ids)

    def forward(self, x):
        e = F.normalize(self.fc(self.backbone(x).mean((2, 3))), dim=1)
        return {"logits": self.ids(e) * 10.0, "embedding": e}


class TwoRegressor(nn.Module):
    """Two regression outputs: an object's centre (2 numbers) and its area (1)."""

    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.centre = nn.Linear(16, 2)
        self.area = nn.Linear(16, 1)

    def forward(self, x):
        f = self.backbone(x).mean((2, 3))
        return self.centre(f), self.area(f)


def detector():
    return TinySSD()


def segmenter():
    return TinySeg()


def embedder():
    return Embedder()


def regressor():
    return TwoRegressor()


def reid():
    return ReID()


class ObjectnessSSD(nn.Module):
    """A YOLO-style head split in three: boxes (N, 64, 4), class logits (N, 64, K) and objectness
    logits (N, 64, 1); an anchor's confidence is sigmoid(objectness) * sigmoid(class)."""

    def __init__(self, classes=2):
        super().__init__()
        self.backbone = Backbone()
        self.box_head = nn.Conv2d(16, 4, 1)
        self.cls_head = nn.Conv2d(16, classes, 1)
        self.obj_head = nn.Conv2d(16, 1, 1)

    def forward(self, x):
        f = self.backbone(x)
        flat = [h(f).flatten(2).transpose(1, 2) for h in (self.box_head, self.cls_head, self.obj_head)]
        return {"boxes": torch.sigmoid(flat[0]), "classes": flat[1], "objectness": flat[2]}


def objectness_detector():
    return ObjectnessSSD()


class SharedHeadFPN(nn.Module):
    """RetinaNet/FCOS-style: two feature levels (8x8 and 4x4, an FPN-like top-down sum) and ONE set of
    head convs applied to both, so every head weight is read by two layers of the exported graph.
    Returns {"boxes": (N, 80, 4), "logits": (N, 80, K)}."""

    def __init__(self, classes=2):
        super().__init__()
        self.backbone = Backbone()
        self.down = ConvBN(16, 16, 2)
        self.lateral = nn.Conv2d(16, 16, 1)
        self.tower = ConvBN(16, 16)
        self.box_head = nn.Conv2d(16, 4, 1)
        self.cls_head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        p3 = self.backbone(x)
        p4 = self.down(p3)
        p3 = p3 + F.interpolate(self.lateral(p4), scale_factor=2.0, mode="nearest")
        boxes, logits = [], []
        for level in (p3, p4):
            f = self.tower(level)
            boxes.append(torch.sigmoid(self.box_head(f)).flatten(2).transpose(1, 2))
            logits.append(self.cls_head(f).flatten(2).transpose(1, 2))
        return {"boxes": torch.cat(boxes, 1), "logits": torch.cat(logits, 1)}


def shared_head_detector():
    return SharedHeadFPN()


class ProbabilitySSD(TinySSD):
    """TinySSD ending in its own sigmoid: its scores are probabilities, not logits."""

    def forward(self, x):
        boxes, scores = super().forward(x)
        return boxes, torch.sigmoid(scores)


def probability_detector():
    return ProbabilitySSD()
