"""Distillation losses by name (distill.losses in the profile): each takes a Batch of the student's and the
teacher's flat outputs and returns a scalar tensor, or None where it does not apply (no labels of its kind)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from .registry import Registry

LOSSES = Registry("distillation loss")


@dataclass
class Batch:
    student: list  # the student's outputs, flat (outputs.flatten)
    teacher: list  # the teacher's, in the same order
    labels: object  # None when the data has no labels; class indices (N,), or masks (N, H, W) for segmentation
    temperature: float
    features: list  # [(projected student feature, teacher feature)]
    boxes: Optional[int] = None  # detection: which output holds the boxes (N, A, 4)
    scores: Optional[int] = None  # detection: which holds the class scores (N, A, K)

    @property
    def student_logits(self):
        return self.student[0]

    @property
    def teacher_logits(self):
        return self.teacher[0]

    def class_outputs(self) -> list:
        """(student, teacher) pairs of the class scores: the first output, and every other 2-D output of as
        many classes (a model with an auxiliary classifier is taught on both). Other outputs are not class
        distributions: a softmax KL ignores a shift of all their values, so a walkthrough's 2-value 'aux'
        output drifted from the original's unseen; they are regressed (var_mse) instead."""
        first = self.student[0]
        if first.dim() != 2 or first.shape[1] < 2:
            return []
        return [(s, t) for s, t in zip(self.student, self.teacher) if s.dim() == 2 and s.shape[1] == first.shape[1]]


@LOSSES.register("soft")
def soft_kd(b: Batch):
    """KL between temperature-softened distributions, scaled by T^2 to keep gradient size (Hinton)."""
    import torch.nn.functional as F

    t, pairs = b.temperature, b.class_outputs() or [(b.student_logits, b.teacher_logits)]
    kl = [F.kl_div(F.log_softmax(s / t, 1), F.log_softmax(te / t, 1), reduction="batchmean", log_target=True) * t * t
          for s, te in pairs]
    # a classifier's other outputs (a one-value score, an auxiliary map) are taught too: each regressed to the
    # teacher's, scaled by its variance (var_mse), so that every output has a loss
    taught = {id(s) for s, _ in pairs}
    rest = [_var_mse_pair(s, te) for s, te in zip(b.student, b.teacher) if id(s) not in taught]
    return sum(kl + rest) / (len(kl) + len(rest))


@LOSSES.register("ce")
def cross_entropy(b: Batch):
    import torch.nn.functional as F

    return None if b.labels is None or b.labels.dim() != 1 else F.cross_entropy(b.student_logits, b.labels)


@LOSSES.register("hard")
def hard_kd(b: Batch):
    import torch.nn.functional as F

    return F.cross_entropy(b.student_logits, b.teacher_logits.argmax(1))


@LOSSES.register("feature")
def feature_mse(b: Batch):
    import torch.nn.functional as F

    return sum(F.mse_loss(s, t) for s, t in b.features) / max(1, len(b.features))


def _maps(b: Batch) -> list:
    return [(s, t) for s, t in zip(b.student, b.teacher) if s.dim() == 4]


@LOSSES.register("pixel_kl")
def pixel_kl(b: Batch):
    """Segmentation: KL per pixel between the softened class maps (N, C, H, W), averaged over pixels, T^2."""
    import torch.nn.functional as F

    t, pairs = b.temperature, _maps(b)
    total = 0
    for s, te in pairs:
        kl = F.kl_div(F.log_softmax(s / t, 1), F.log_softmax(te / t, 1), reduction="none", log_target=True)
        total = total + kl.sum(1).mean() * t * t
    return total / max(1, len(pairs))


@LOSSES.register("pixel_ce")
def pixel_ce(b: Batch):
    """Segmentation: cross-entropy per pixel against the data's masks (N, H, W), where it has them."""
    import torch.nn.functional as F

    if b.labels is None or b.labels.dim() != 3 or not _maps(b):
        return None
    s = _maps(b)[0][0]
    masks = b.labels
    if masks.shape[-2:] != s.shape[-2:]:  # masks at the input's size, logits at the model's: nearest class
        masks = F.interpolate(masks[:, None].float(), size=s.shape[-2:], mode="nearest")[:, 0].long()
    return F.cross_entropy(s, masks)


def _prob(teacher):
    """A teacher's score output as probabilities: through a sigmoid where it holds logits, as it is where
    the model ends in its own sigmoid/softmax (task_metrics.are_logits)."""
    from .task_metrics import are_logits

    t = teacher.detach()
    return t.sigmoid() if are_logits(t) else t.clamp(0.0, 1.0)


def _as_logits(student, teacher, softmax: bool = False):
    """(student, teacher) as logits, for the losses that take logits: a probability head's values mapped
    back (logit for sigmoid scores, log for softmax ones), decided on the teacher's values."""
    import torch

    from .task_metrics import are_logits

    if are_logits(teacher):
        return student, teacher
    if softmax:
        return torch.log(student.float().clamp_min(1e-6)), torch.log(teacher.float().clamp_min(1e-6))
    return torch.logit(student.float(), eps=1e-6), torch.logit(teacher.float(), eps=1e-6)


def _confidence(scores, objectness=()):
    """The teacher's confidence per anchor (N, A): its largest class probability, times its objectness
    probability where the detector has such outputs (N, A, 1); logits or probabilities alike."""
    conf = _prob(scores).amax(-1)
    for o in objectness:
        conf = conf * _prob(o)[..., 0]
    return conf


def _objectness(b: Batch, outputs) -> list:
    """The (N, A, 1) score outputs beside the box output, other than the class scores."""
    from .tasks import score_outputs

    shapes = [tuple(o.shape) for o in outputs]
    return [outputs[i] for i in score_outputs(shapes, b.boxes) if i != b.scores and shapes[i][2] == 1]


@LOSSES.register("box_l1")
def box_l1(b: Batch):
    """Detection: the student's boxes regressed to the teacher's (smooth L1), each anchor weighted by the
    teacher's confidence there, so the many background anchors do not drown the few objects."""
    import torch.nn.functional as F

    if b.boxes is None:
        return None
    weight = _confidence(b.teacher[b.scores], _objectness(b, b.teacher)) if b.scores is not None else None
    per_anchor = F.smooth_l1_loss(b.student[b.boxes], b.teacher[b.boxes], reduction="none").mean(-1)
    if weight is None:
        return per_anchor.mean()
    return (per_anchor * weight).sum() / weight.sum().clamp_min(1e-6)


def _score_pairs(b: Batch):
    """(student, teacher) for every score output beside the boxes: the class scores and any
    objectness output, each with its own loss (a walkthrough's objectness head was never distilled)."""
    if b.scores is None or b.boxes is None:
        return [(b.student[b.scores], b.teacher[b.scores])] if b.scores is not None else []
    from .tasks import score_outputs

    shapes = [tuple(t.shape) for t in b.teacher]
    return [(b.student[i], b.teacher[i]) for i in score_outputs(shapes, b.boxes)]


@LOSSES.register("score_bce")
def score_bce(b: Batch):
    """Detection: class and objectness scores (logits, or a probability head's values mapped back to them)
    matched to the teacher's probabilities with BCE,
    weighted by the teacher's confidence (plus a floor, so confident-background is learned too)."""
    import torch.nn.functional as F

    total = 0
    conf = _confidence(b.teacher[b.scores], _objectness(b, b.teacher)) if b.boxes is not None else None
    for s, te in _score_pairs(b):
        weight = 0.1 + (conf if conf is not None else _confidence(te))
        s, te = _as_logits(s, te)
        bce = F.binary_cross_entropy_with_logits(s, te.detach().sigmoid(), reduction="none").mean(-1)
        total = total + (bce * weight).sum() / weight.sum()
    return total if _score_pairs(b) else None


@LOSSES.register("score_kl")
def score_kl(b: Batch):
    """Detection with softmax class scores: KL per anchor at the temperature, weighted by the teacher's confidence."""
    import torch.nn.functional as F

    t, total = b.temperature, 0
    for s, te in _score_pairs(b):
        if s.shape[-1] == 1:  # objectness: one sigmoid, nothing to softmax over
            s, te = _as_logits(s, te)
            total = total + F.binary_cross_entropy_with_logits(s, te.detach().sigmoid())
            continue
        s, te = _as_logits(s, te, softmax=True)
        kl = F.kl_div(F.log_softmax(s / t, -1), F.log_softmax(te / t, -1), reduction="none", log_target=True).sum(-1)
        weight = te.detach().softmax(-1).amax(-1)
        total = total + (kl * weight).sum() / weight.sum() * t * t
    return total if _score_pairs(b) else None


@LOSSES.register("cosine")
def cosine(b: Batch):
    """Embedding: 1 - cosine similarity with the teacher's vector, per output."""
    import torch.nn.functional as F

    pairs = list(zip(b.student, b.teacher))
    return sum((1 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1)).mean() for s, t in pairs) / len(pairs)


@LOSSES.register("mse")
def mse(b: Batch):
    """Embedding and any output: mean squared difference from the teacher's outputs."""
    import torch.nn.functional as F

    return sum(F.mse_loss(s, t) for s, t in zip(b.student, b.teacher)) / len(b.student)


@LOSSES.register("var_mse")
def var_mse(b: Batch):
    """Regression: MSE per output value scaled by the teacher's variance of it over the batch, so an
    output in metres and one in millimetres weigh alike."""
    return sum(_var_mse_pair(s, t) for s, t in zip(b.student, b.teacher)) / len(b.student)


def _var_mse_pair(s, t):
    flat_t = t.detach().flatten(1)  # a floor: an output that barely varies in the batch must not weigh 1e8 times
    var = flat_t.var(0, unbiased=False) + 1e-2 * flat_t.pow(2).mean(0) + 1e-8
    return ((s.flatten(1) - t.flatten(1)) ** 2 / var).mean()


TEMPERATURE_LOSSES = {"soft", "pixel_kl", "score_kl"}  # the losses distill.temperature softens
LABEL_LOSSES = ("ce", "hard", "pixel_ce")  # against labels (or the teacher's top-1): weighted by 1 - alpha


def combine(terms: Dict[str, object], alpha: float, feature_weight: float):
    """alpha weights the teacher's soft labels against the label losses (ce, hard); a group that
    is absent (no labels: label-free) leaves the other with weight 1."""
    taught = [v for k, v in terms.items() if k not in LABEL_LOSSES and k != "feature" and v is not None]
    soft = sum(taught) / len(taught) if taught else None
    label = [v for k, v in terms.items() if k in LABEL_LOSSES and v is not None]
    label_loss = sum(label) / len(label) if label else None
    if soft is not None and label_loss is not None:
        total = alpha * soft + (1 - alpha) * label_loss
    else:
        total = soft if soft is not None else label_loss
    if terms.get("feature") is not None:
        total = terms["feature"] * feature_weight + (0 if total is None else total)
    return total
