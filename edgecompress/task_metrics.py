"""Task parity metrics: how closely a candidate model (the deployed INT8 file, the FP32 student)
follows a reference model (the original) on the held-out samples, per task, plus mAP against the
user's ground truth. Pure numpy; every input is a batch with the sample axis first.

Every result is a frozen dataclass whose `to_dict()` is JSON-ready under `allow_nan=False`: plain
floats, ints and None, never NaN or inf. None means "not defined for these inputs" (no reference
boxes, fewer than 3 embeddings, ...), and each function says when. A non-finite candidate value
(NaN, inf: what a broken INT8 head gives) never raises and never scores well: it counts as the
worst outcome (a disagreeing pixel or anchor, an unmatched box, cosine -1, PSNR_FLOOR_DB,
ERROR_CAP)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

# PSNR is clamped into [PSNR_FLOOR_DB, PSNR_CAP_DB]. The cap stands for "identical" (float32
# rounding alone gives ~140 dB, so the cap is never reached by a real difference) and keeps the
# figure finite for JSON; the floor is an error as large as the reference's whole range, or a
# non-finite candidate: below it there is no parity left to measure.
PSNR_CAP_DB = 200.0
PSNR_FLOOR_DB = 0.0
# Relative errors and box / score differences are capped here, which is also what a non-finite
# candidate value gives: finite for JSON, and far beyond any tolerance.
ERROR_CAP = 1e12
# The relative error's denominator is |r| + REL_EPS_SCALE * max|r|, so that reference values near
# zero do not make any difference look infinite.
REL_EPS_SCALE = 1e-6

Detections = Tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (M,4) xyxy, scores (M,), classes (M,)
Truths = Tuple[np.ndarray, np.ndarray]  # boxes (M,4) xyxy, classes (M,)


def _dict(record) -> dict:
    return asdict(record)


def _opt(value) -> Optional[float]:
    return None if value is None else float(value)


def _same_shape(what: str, candidate: np.ndarray, reference: np.ndarray) -> None:
    if candidate.shape != reference.shape:
        raise InputError(f"{what}: the candidate's shape {candidate.shape} differs from the reference's "
                         f"{reference.shape}", hint="both models must return the same outputs for the same samples")


# --- helpers --------------------------------------------------------------------------------------

def psnr_db(candidate: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio of `candidate` against `reference`, in dB: 10 log10(peak^2 / MSE).

    peak is the reference's range (max - min); a constant reference uses max|r| instead, and an
    all-zero one 1.0. Identical arrays give PSNR_CAP_DB; a non-finite candidate value where the
    reference is finite (or a mismatch of the reference's own NaN / inf) gives PSNR_FLOOR_DB; the
    result is clamped into [PSNR_FLOOR_DB, PSNR_CAP_DB]."""
    c = np.asarray(candidate, np.float64)
    r = np.asarray(reference, np.float64)
    _same_shape("psnr", c, r)
    c, r, broken = _comparable(c, r)
    if broken:
        return PSNR_FLOOR_DB
    if r.size == 0:
        return PSNR_CAP_DB
    mse = float(np.mean((c - r) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    peak = _peak(r)
    value = 10.0 * np.log10(peak * peak / mse)
    return float(min(max(value, PSNR_FLOOR_DB), PSNR_CAP_DB))


def _comparable(c: np.ndarray, r: np.ndarray) -> Tuple[np.ndarray, np.ndarray, bool]:
    """The finite part of a pair, and whether the non-finite part disagrees: a reference NaN or inf
    is matched only by the same value in the candidate (then left out of the figure)."""
    r_bad = ~np.isfinite(r)
    c_bad = ~np.isfinite(c)
    if not (r_bad.any() or c_bad.any()):  # the usual case: no copies
        return c, r, False
    same_special = r_bad & c_bad & ((c == r) | (np.isnan(c) & np.isnan(r)))
    if np.any(c_bad & ~same_special) or np.any(r_bad & ~same_special):
        return c, r, True
    keep = ~r_bad
    return c[keep], r[keep], False


def _peak(r: np.ndarray) -> float:
    peak = float(r.max() - r.min())
    if peak == 0.0:
        peak = float(np.abs(r).max())
    return peak if peak > 0.0 else 1.0


def max_range_error(candidate: np.ndarray, reference: np.ndarray) -> float:
    """max |c - r| / (max r - min r): the largest error as a fraction of the reference's range, which
    stays meaningful where most values are near 0 (a keypoint net's heatmaps), unlike max_rel_error.
    Capped at ERROR_CAP, which a non-finite candidate gives; 0 for a constant reference matched exactly."""
    c = np.asarray(candidate, np.float64)
    r = np.asarray(reference, np.float64)
    _same_shape("range error", c, r)
    c, r, broken = _comparable(c, r)
    if broken:
        return ERROR_CAP
    if r.size == 0:
        return 0.0
    diff = float(np.abs(c - r).max())
    span = float(r.max() - r.min())
    return min(diff / span if span > 0 else (0.0 if diff == 0 else ERROR_CAP), ERROR_CAP)


def max_rel_error(candidate: np.ndarray, reference: np.ndarray) -> float:
    """max |c - r| / (|r| + eps) with eps = REL_EPS_SCALE * max|r| (1e-12 for an all-zero
    reference); a fraction (0.01 = 1 %). Capped at ERROR_CAP, which a non-finite candidate gives."""
    c = np.asarray(candidate, np.float64)
    r = np.asarray(reference, np.float64)
    _same_shape("relative error", c, r)
    c, r, broken = _comparable(c, r)
    if broken:
        return ERROR_CAP
    if r.size == 0:
        return 0.0
    eps = REL_EPS_SCALE * float(np.abs(r).max()) or 1e-12
    value = float(np.max(np.abs(c - r) / (np.abs(r) + eps)))
    return min(value, ERROR_CAP)


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in `boxes_a` (M,4) with every box in `boxes_b` (K,4), as an (M,K) array in
    [0, 1]. Boxes are xyxy in continuous coordinates (area = (x2-x1)(y2-y1), no +1); a box with
    x2 < x1 or y2 < y1 has zero area, and a non-finite box has IoU 0 with everything."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


# --- segmentation ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SegmentationParity:
    pixel_agreement: float  # share of pixels (all images) where both models pick the same class
    mean_iou: float  # candidate masks against the reference's, mean over classes present in either
    pixels: int
    mean_iou_labels: Optional[float] = None  # candidate against the data's masks (None without masks)
    pixel_accuracy_labels: Optional[float] = None
    reference_mean_iou_labels: Optional[float] = None  # the reference against the same masks
    reference_pixel_accuracy_labels: Optional[float] = None
    labelled_pixels: Optional[int] = None  # mask pixels with a label in [0, classes)

    def to_dict(self) -> dict:
        return _dict(self)


def segmentation(candidate_logits: np.ndarray, reference_logits: np.ndarray,
                 masks: Optional[np.ndarray] = None) -> SegmentationParity:
    """Per-pixel parity of two segmenters' dense logits (N,C,H,W); C == 1 is one binary logit
    (class 1 where the logit > 0).

    mean_iou: for each class, |cand == k and ref == k| / |cand == k or ref == k| summed over every
    pixel of every image (not per image), averaged over the classes present in either; identical
    masks give 1.0. A candidate pixel with any non-finite logit belongs to no class: it disagrees and
    enlarges the reference class's union. `masks` (N,H,W) integers add the same figures against
    the data's labels, for the candidate and the reference; mask values outside [0, C) (VOC's 255
    border) are ignored."""
    cand = np.asarray(candidate_logits)
    ref = np.asarray(reference_logits)
    _same_shape("segmentation logits", cand, ref)
    if cand.ndim != 4:
        raise InputError(f"segmentation logits must be N x C x H x W, got shape {cand.shape}",
                         hint="set the task to the model's kind (--task) or return dense per-class logits")
    classes = max(cand.shape[1], 2)
    c_cls, r_cls = _classes_of(cand), _classes_of(ref)
    agreement = float(np.mean((c_cls == r_cls) & (c_cls >= 0))) if c_cls.size else 1.0
    fields = dict(pixel_agreement=agreement, mean_iou=_mean_iou(c_cls, r_cls, classes), pixels=int(c_cls.size))
    if masks is not None:
        fields.update(_against_masks(c_cls, r_cls, np.asarray(masks), classes))
    return SegmentationParity(**fields)


def _classes_of(logits: np.ndarray) -> np.ndarray:
    """(N,H,W) class per pixel; -1 where a logit is not finite."""
    bad = ~np.all(np.isfinite(logits), axis=1)
    cls = (logits[:, 0] > 0).astype(np.int64) if logits.shape[1] == 1 else np.argmax(logits, axis=1)
    return np.where(bad, -1, cls)


def _mean_iou(pred: np.ndarray, truth: np.ndarray, classes: int) -> float:
    """Mean IoU over classes present in either; -1 (no class) enters unions, never intersections.
    Nothing present at all (no pixels) counts as perfect agreement, 1.0."""
    k = classes + 1  # the last bin holds -1
    p, t = np.where(pred < 0, classes, pred), np.where(truth < 0, classes, truth)
    cm = np.bincount((p * k + t).ravel(), minlength=k * k).reshape(k, k)[:classes, :classes].astype(np.float64)
    inter = np.diag(cm)
    pred_area = np.bincount(p.ravel(), minlength=k)[:classes]
    truth_area = np.bincount(t.ravel(), minlength=k)[:classes]
    union = pred_area + truth_area - inter
    present = union > 0
    return float(np.mean(inter[present] / union[present])) if present.any() else 1.0


def _against_masks(c_cls: np.ndarray, r_cls: np.ndarray, masks: np.ndarray, classes: int) -> dict:
    if masks.shape != c_cls.shape:
        raise InputError(f"segmentation masks have shape {masks.shape}, the model's masks {c_cls.shape}",
                         hint="store the masks as y, N x H x W integers at the model's output resolution")
    labelled = (masks >= 0) & (masks < classes)
    truth = masks[labelled].astype(np.int64)
    cand, ref = c_cls[labelled], r_cls[labelled]
    n = int(truth.size)
    return dict(
        mean_iou_labels=_mean_iou(cand, truth, classes) if n else None,
        pixel_accuracy_labels=float(np.mean(cand == truth)) if n else None,
        reference_mean_iou_labels=_mean_iou(ref, truth, classes) if n else None,
        reference_pixel_accuracy_labels=float(np.mean(ref == truth)) if n else None,
        labelled_pixels=n)


def majority_mean_iou(masks: np.ndarray, classes: int) -> Optional[dict]:
    """{'class', 'mean_iou'}: the masks' most common class, and the mean IoU (as _against_masks counts it) of
    calling every labelled pixel that class: what a segmenter that learned nothing scores, the floor its
    original should clear (a random-weight original read 0.0133 against 0.30 for 'all background')."""
    masks = np.asarray(masks)
    labelled = (masks >= 0) & (masks < max(classes, 2))
    truth = masks[labelled].astype(np.int64)
    if not truth.size:
        return None
    k = int(np.bincount(truth).argmax())
    return {"class": k, "mean_iou": _mean_iou(np.full_like(truth, k), truth, max(classes, 2))}


# --- detection: raw anchors -----------------------------------------------------------------------

# fewer confident anchors than this are too few to judge: with n of them one anchor moves the share by 1/n, and
# at 10 one anchor is the whole margin of the default 0.9 tolerance (a walkthrough's pass/fail, and the choice of
# 24 operations in float, rested on a single anchor)
MIN_CONFIDENT_ANCHORS = 10

@dataclass(frozen=True)
class AnchorParity:
    psnr_db: Dict[str, float]  # per raw output: "boxes", "scores"
    confident_anchors: int  # reference anchors whose best class score > threshold
    confident_agreement: Optional[float]  # share of those the candidate marks confident, same class
    mean_box_diff: Optional[float]  # mean |cand - ref| over those anchors' 4 box numbers, box units
    threshold: float
    scores_are_logits: bool
    anchors: int = 0  # all the reference's anchors (samples x anchors per sample)
    max_reference_score: Optional[float] = None  # the reference's highest confidence (a probability)

    def to_dict(self) -> dict:
        return _dict(self)


def are_logits(values) -> bool:
    """Whether a detector's score output holds logits (some finite value outside [0, 1]) or probabilities
    (a model that ends in its own sigmoid or softmax). The checks decide it on the reference's values and
    apply it to both sides: a probability head, sigmoided again, made every anchor look confident. A torch
    tensor (the distillation's teacher, every step) is judged on its own device, without a copy."""
    if hasattr(values, "detach"):
        import torch

        t = values.detach()
        return bool((torch.isfinite(t) & ((t < 0) | (t > 1))).any())
    v = np.asarray(values, np.float64)
    return bool(np.any(np.isfinite(v) & ((v < 0.0) | (v > 1.0))))


def detection_anchors(cand_boxes: np.ndarray, cand_scores: np.ndarray, ref_boxes: np.ndarray,
                      ref_scores: np.ndarray, threshold: float = 0.5,
                      scores_are_logits: Optional[bool] = None) -> AnchorParity:
    """Parity of a single-shot detector's raw heads: boxes (N,A,4) and class scores (N,A,K) (or
    (N,A), one objectness score).

    An anchor is confident where its best class score exceeds `threshold` (after a sigmoid when
    the scores are logits; None decides: logits when any reference score lies outside [0, 1]).
    confident_agreement is the share of the reference's confident anchors that the candidate also
    marks confident with the same best class; mean_box_diff the mean absolute difference of their
    boxes in box units (ERROR_CAP where a candidate box value is not finite). Both are None when the
    reference has no confident anchor; verify judges none with fewer than MIN_CONFIDENT_ANCHORS."""
    cb, rb = np.asarray(cand_boxes, np.float64), np.asarray(ref_boxes, np.float64)
    cs, rs = _scores_3d(np.asarray(cand_scores, np.float64)), _scores_3d(np.asarray(ref_scores, np.float64))
    _same_shape("detection boxes", cb, rb)
    _same_shape("detection scores", cs, rs)
    if scores_are_logits is None:
        scores_are_logits = are_logits(rs)
    psnr = {"boxes": psnr_db(cb, rb), "scores": psnr_db(cs, rs)}
    if scores_are_logits:
        cs, rs = _sigmoid(cs), _sigmoid(rs)
    r_conf = rs.max(axis=-1) > threshold  # NaN compares False: a NaN reference anchor is not confident
    # an anchor with any non-finite candidate score never agrees, whatever argmax makes of the NaN
    agree = np.all(np.isfinite(cs), axis=-1) & (cs.max(axis=-1) > threshold) \
        & (np.argmax(cs, axis=-1) == np.argmax(rs, axis=-1))
    count = int(r_conf.sum())
    agreement = float(agree[r_conf].mean()) if count else None
    best = rs.max(axis=-1)
    finite = best[np.isfinite(best)]
    return AnchorParity(psnr_db=psnr, confident_anchors=count, confident_agreement=agreement,
                        mean_box_diff=_mean_abs(cb[r_conf], rb[r_conf]) if count else None,
                        threshold=float(threshold), scores_are_logits=scores_are_logits, anchors=int(r_conf.size),
                        max_reference_score=float(finite.max()) if finite.size else None)


def _scores_3d(scores: np.ndarray) -> np.ndarray:
    return scores[..., None] if scores.ndim == 2 else scores


def _mean_abs(c: np.ndarray, r: np.ndarray) -> float:
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(r))):
        return ERROR_CAP
    return float(min(np.mean(np.abs(c - r)), ERROR_CAP))


# --- detection: decoded boxes ---------------------------------------------------------------------

@dataclass(frozen=True)
class BoxParity:
    reference_boxes: int
    candidate_boxes: int
    matched: int
    recall: Optional[float]  # matched / reference boxes; None without reference boxes
    precision: Optional[float]  # matched / candidate boxes; None without candidate boxes
    class_agreement: Optional[float]  # share of matched pairs with the same class; None if none matched
    mean_iou: Optional[float]  # over matched pairs
    mean_score_diff: Optional[float]  # mean |score difference| over matched pairs
    iou_threshold: float

    def to_dict(self) -> dict:
        return _dict(self)


def detection_boxes(cand: Sequence[Detections], ref: Sequence[Detections],
                    iou_threshold: float = 0.5) -> BoxParity:
    """Box-level parity of two detectors' decoded outputs, one (boxes (M,4) xyxy, scores (M,),
    classes (M,)) per image, the same images in the same order.

    Per image, the reference's boxes are taken highest score first, each matched to the unmatched
    candidate box of highest IoU if that IoU >= iou_threshold, whatever the classes (class
    agreement is reported separately). A candidate box with a non-finite coordinate or score is
    never matched but counts as a candidate box. Empty cases: no reference boxes -> recall None; no
    candidate boxes -> precision None; nothing matched -> class_agreement, mean_iou and
    mean_score_diff None (both empty everywhere: every figure None, counts 0)."""
    if len(cand) != len(ref):
        raise InputError(f"box parity: {len(cand)} candidate images, {len(ref)} reference images",
                         hint="the decode function must return one (boxes, scores, classes) per image")
    n_ref = n_cand = 0
    ious: List[float] = []
    same_class: List[bool] = []
    score_diffs: List[float] = []
    for image, (c_det, r_det) in enumerate(zip(cand, ref)):
        cb, cs, cc = _detections(c_det, f"candidate image {image}")
        rb, rs, rc = _detections(r_det, f"reference image {image}")
        n_ref, n_cand = n_ref + len(rb), n_cand + len(cb)
        for ri, ci, iou in _greedy_matches(rb, rs, cb, cs, iou_threshold):
            ious.append(iou)
            same_class.append(bool(cc[ci] == rc[ri]))
            score_diffs.append(float(abs(cs[ci] - rs[ri])))
    matched = len(ious)
    return BoxParity(
        reference_boxes=n_ref, candidate_boxes=n_cand, matched=matched,
        recall=matched / n_ref if n_ref else None, precision=matched / n_cand if n_cand else None,
        class_agreement=float(np.mean(same_class)) if matched else None,
        mean_iou=float(np.mean(ious)) if matched else None,
        mean_score_diff=float(min(np.mean(score_diffs), ERROR_CAP)) if matched else None,
        iou_threshold=float(iou_threshold))


def _detections(det, what: str) -> Detections:
    if len(det) != 3:
        raise InputError(f"box parity: {what} has {len(det)} arrays, expected (boxes, scores, classes)",
                         hint="the decode function returns, per image, boxes (M,4) xyxy, scores (M,), classes (M,)")
    boxes = np.asarray(det[0], np.float64).reshape(-1, 4)
    scores = np.asarray(det[1], np.float64).reshape(-1)
    classes = np.asarray(det[2]).reshape(-1)
    if not len(boxes) == len(scores) == len(classes):
        raise InputError(f"box parity: {what} has {len(boxes)} boxes, {len(scores)} scores and "
                         f"{len(classes)} classes", hint="the decode function must return one score and class per box")
    return boxes, scores, classes


def _greedy_matches(rb, rs, cb, cs, iou_threshold: float) -> List[Tuple[int, int, float]]:
    """(reference index, candidate index, IoU) pairs; the reference's boxes highest score first
    (a NaN reference score last), each to the best still-free candidate box."""
    if not len(rb) or not len(cb):
        return []
    iou = iou_matrix(rb, cb)
    usable = np.all(np.isfinite(cb), axis=1) & np.isfinite(cs)
    iou[:, ~usable] = -1.0
    pairs = []
    for ri in np.argsort(-np.nan_to_num(rs, nan=-np.inf), kind="stable"):
        ci = int(np.argmax(iou[ri]))
        if iou[ri, ci] >= iou_threshold and iou[ri, ci] >= 0.0:
            pairs.append((int(ri), ci, float(iou[ri, ci])))
            iou[:, ci] = -1.0
    return pairs


# --- detection: mAP against ground truth ----------------------------------------------------------

@dataclass(frozen=True)
class MeanAP:
    mean_ap: Optional[float]  # mean over classes with ground truth; None without any ground truth
    per_class_ap: Dict[int, float]
    iou_threshold: float

    def to_dict(self) -> dict:
        # JSON object keys are strings
        return {"mean_ap": self.mean_ap, "per_class_ap": {str(k): v for k, v in self.per_class_ap.items()},
                "iou_threshold": self.iou_threshold}


def mean_average_precision(preds: Sequence[Detections], truths: Sequence[Truths],
                           iou_threshold: float = 0.5) -> MeanAP:
    """mAP at one IoU threshold (mAP@0.5 by default), Pascal VOC style: per class, predictions of
    all images highest score first; each is a true positive when its best-IoU ground-truth box of the
    same class in its image has IoU >= iou_threshold and is not yet taken, else a false positive; AP
    is the area under the all-point interpolated precision-recall curve (VOC 2010+). The mean is
    over the classes with ground truth (a class only predicted is left out: its false positives
    show in no AP). A prediction with a non-finite box or score is never a true positive."""
    if len(preds) != len(truths):
        raise InputError(f"mAP: {len(preds)} predicted images, {len(truths)} ground-truth images",
                         hint="give one (boxes, scores, classes) and one (boxes, classes) per image, same order")
    pred = [_detections(p, f"predictions of image {i}") for i, p in enumerate(preds)]
    gt = [_truths(t, i) for i, t in enumerate(truths)]
    classes = sorted({int(c) for _, tc in gt for c in tc})
    per_class = {k: _class_ap(k, pred, gt, iou_threshold) for k in classes}
    mean = float(np.mean(list(per_class.values()))) if per_class else None
    return MeanAP(mean_ap=mean, per_class_ap=per_class, iou_threshold=float(iou_threshold))


def _truths(t, image: int) -> Truths:
    if len(t) != 2:
        raise InputError(f"mAP: ground truth of image {image} has {len(t)} arrays, expected (boxes, classes)",
                         hint="give ground truth per image as boxes (M,4) xyxy and classes (M,)")
    boxes = np.asarray(t[0], np.float64).reshape(-1, 4)
    classes = np.asarray(t[1]).reshape(-1).astype(np.int64)
    if len(boxes) != len(classes):
        raise InputError(f"mAP: image {image} has {len(boxes)} ground-truth boxes and {len(classes)} classes",
                         hint="one class per ground-truth box")
    return boxes, classes


def _class_ap(k: int, pred: List[Detections], gt: List[Truths], iou_threshold: float) -> float:
    entries = []  # (score, image, box index)
    for image, (boxes, scores, classes) in enumerate(pred):
        for j in np.flatnonzero(classes.astype(np.int64) == k):
            if np.isfinite(scores[j]) and np.all(np.isfinite(boxes[j])):
                entries.append((float(scores[j]), image, int(j)))
    entries.sort(key=lambda e: -e[0])
    gt_k = [boxes[classes == k] for boxes, classes in gt]
    taken = [np.zeros(len(b), bool) for b in gt_k]
    n_gt = sum(len(b) for b in gt_k)
    tp = np.zeros(len(entries))
    for rank, (_, image, j) in enumerate(entries):
        if not len(gt_k[image]):
            continue
        iou = iou_matrix(pred[image][0][j], gt_k[image])[0]
        best = int(np.argmax(iou))
        if iou[best] >= iou_threshold and not taken[image][best]:
            tp[rank], taken[image][best] = 1.0, True
    return _ap_all_points(tp, n_gt)


def _ap_all_points(tp: np.ndarray, n_gt: int) -> float:
    """Area under the precision-recall curve with precision made monotone from the right."""
    tp_cum = np.cumsum(tp)
    recall = np.concatenate([[0.0], tp_cum / n_gt, [1.0]])
    precision = np.concatenate([[0.0], tp_cum / np.arange(1, len(tp) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


# --- classification -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecisionMargins:
    """How sure the reference was of its top-1 decisions, against how far the candidate moved the scores."""
    top2_gap_median: float  # per sample: the reference's best score minus its second, median over samples
    largest_move_median: float  # per sample: the most any score moved (|candidate - reference|), median
    close_calls: int  # samples whose gap is under twice that move: a rounding can swap their top two
    samples: int
    probability_gap_median: float = 0.0  # the same gap between the reference's softmax probabilities, median

    def to_dict(self) -> dict:
        return _dict(self)


def decision_margins(candidate: np.ndarray, reference: np.ndarray) -> DecisionMargins:
    """A classifier's close calls. An untrained model's 1000 near-equal logits (a Hugging Face classifier
    built from its config) lie closer together than INT8 rounding moves them, so its top-1 flips for reasons
    that say nothing of the compression; a trained classifier has few such samples."""
    c = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    _same_shape("class scores", c, r)
    if r.shape[0] == 0 or r.shape[1] < 2:
        return DecisionMargins(top2_gap_median=0.0, largest_move_median=0.0, close_calls=0, samples=r.shape[0])
    top2 = np.sort(r, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    moved = np.nan_to_num(np.abs(c - r), nan=np.inf).max(axis=1)
    p = np.exp(r - r.max(axis=1, keepdims=True))
    p_top2 = np.sort(p / p.sum(axis=1, keepdims=True), axis=1)[:, -2:]
    return DecisionMargins(top2_gap_median=float(np.median(gap)), largest_move_median=float(np.median(moved)),
                           close_calls=int((gap < 2 * moved).sum()), samples=int(r.shape[0]),
                           probability_gap_median=float(np.median(p_top2[:, 1] - p_top2[:, 0])))


# --- embedding ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EmbeddingParity:
    cosine_mean: float  # cosine similarity of each candidate vector with its reference, mean
    cosine_min: float  # and worst sample
    nn_agreement: Optional[float]  # share of samples with the same nearest neighbour; None if N < 3
    samples: int

    def to_dict(self) -> dict:
        return _dict(self)


def embedding(candidate: np.ndarray, reference: np.ndarray) -> EmbeddingParity:
    """Parity of two embedding nets' vectors (N,D) (further axes are flattened into D).

    cosine: per sample, cos(candidate_i, reference_i) in [-1, 1]; two zero vectors count as 1.0, a
    zero vector against a non-zero one as 0.0, a non-finite candidate vector as -1.0 (the worst).
    nn_agreement: for each sample, its nearest other sample by cosine among the candidate's vectors
    and among the reference's; the share where they are the same sample (ties go to the lower
    index). A non-finite candidate vector is nobody's neighbour and agrees for no sample. Needs
    N >= 3 (with 2 the neighbour is forced), else None."""
    c = np.asarray(candidate, np.float64)
    r = np.asarray(reference, np.float64)
    _same_shape("embeddings", c, r)
    n = c.shape[0] if c.ndim else 0
    c, r = c.reshape(n, -1), r.reshape(n, -1)
    if n == 0:
        return EmbeddingParity(cosine_mean=1.0, cosine_min=1.0, nn_agreement=None, samples=0)
    c_ok = np.all(np.isfinite(c), axis=1)
    cu, ru = _unit(np.where(c_ok[:, None], c, 0.0)), _unit(np.nan_to_num(r))
    cos = np.clip(np.sum(cu * ru, axis=1), -1.0, 1.0)
    both_zero = ~np.any(cu, axis=1) & ~np.any(ru, axis=1)
    cos = np.where(c_ok, np.where(both_zero, 1.0, cos), -1.0)
    return EmbeddingParity(cosine_mean=float(cos.mean()), cosine_min=float(cos.min()),
                           nn_agreement=_nn_agreement(cu, ru, c_ok) if n >= 3 else None, samples=n)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _nn_agreement(cu: np.ndarray, ru: np.ndarray, c_ok: np.ndarray) -> float:
    def neighbours(u: np.ndarray, usable: np.ndarray) -> np.ndarray:
        sim = u @ u.T
        sim[:, ~usable] = -np.inf
        np.fill_diagonal(sim, -np.inf)
        return np.argmax(sim, axis=1)

    same = neighbours(cu, c_ok) == neighbours(ru, np.ones(len(ru), bool))
    return float(np.mean(same & c_ok))


# --- regression -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutputError:
    name: str
    psnr_db: float  # see psnr_db(): peak = the reference's range, clamped to [PSNR_FLOOR_DB, PSNR_CAP_DB]
    max_rel_error: float  # see max_rel_error(): a fraction, capped at ERROR_CAP
    nonfinite: int  # candidate values that are NaN or inf
    max_range_error: float = 0.0  # see max_range_error(): a fraction of the reference's range
    r2: Optional[float] = None  # this output's R^2 against the reference's (verify.min_r2 judges all pooled)


@dataclass(frozen=True)
class RegressionParity:
    outputs: Tuple[OutputError, ...]
    min_psnr_db: float  # the worst output's; PSNR_CAP_DB with no outputs
    max_rel_error: float  # the worst output's; 0.0 with no outputs
    max_range_error: float = 0.0  # the worst output's

    def to_dict(self) -> dict:
        return {"outputs": [asdict(o) for o in self.outputs], "min_psnr_db": self.min_psnr_db,
                "max_rel_error": self.max_rel_error, "max_range_error": self.max_range_error}


def pairwise_cosine(vectors, most: int = 256) -> Optional[float]:
    """The mean cosine similarity between the vectors of different samples (the first `most`): near 1 where a
    model maps every input to about one vector (an untrained embedder), whatever its figures against itself."""
    v = np.asarray(vectors, np.float64).reshape(len(vectors), -1)[:most]
    if len(v) < 2:
        return None
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    n = len(v)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def r_squared(candidate, reference) -> float:
    """1 - SSE / SST of the candidate's values against the reference's (1: a perfect match; a constant reference
    gives 1 where matched, else 0); -inf where a candidate value is not finite."""
    c = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    sst = ((r - r.mean(0)) ** 2).sum()
    r2 = 1 - ((c - r) ** 2).sum() / sst if sst > 0 else float(np.allclose(c, r))
    return float(np.nan_to_num(r2, nan=-np.inf))


def regression(candidate: Sequence[np.ndarray], reference: Sequence[np.ndarray],
               names: Optional[Sequence[str]] = None) -> RegressionParity:
    """PSNR and largest relative error of each output (the lists in the model's output order;
    names default to output_0, output_1, ...), and the worst of each over all outputs."""
    if len(candidate) != len(reference):
        raise InputError(f"regression parity: {len(candidate)} candidate outputs, {len(reference)} reference outputs",
                         hint="both models must return the same outputs")
    names = list(names) if names is not None else [f"output_{i}" for i in range(len(reference))]
    outputs = tuple(
        OutputError(name=name, psnr_db=psnr_db(c, r), max_rel_error=max_rel_error(c, r),
                    nonfinite=int(np.size(c) - np.count_nonzero(np.isfinite(c))), max_range_error=max_range_error(c, r),
                    r2=r_squared(c, r))
        for name, c, r in zip(names, candidate, reference))
    return RegressionParity(
        outputs=outputs,
        min_psnr_db=min((o.psnr_db for o in outputs), default=PSNR_CAP_DB),
        max_rel_error=max((o.max_rel_error for o in outputs), default=0.0),
        max_range_error=max((o.max_range_error for o in outputs), default=0.0))
