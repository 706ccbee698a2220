"""The benchmark user's own code, as --postprocess and --metric take it (numpy only: it travels in the
bundle as postprocess.py and example.py runs it on the device).

decode: the detector's raw heads -> boxes. map50: mAP@0.5 with recall and precision against the
boxes in the data. miou: the segmenter's mean IoU against the data's masks."""
import numpy as np

GRID = 8  # the detector's 8 x 8 anchor grid (stride 8 on 64 x 64 inputs)
ANCHOR = 0.25  # the anchor's side as a share of the image: w = ANCHOR * exp(tw)
SCORE_THRESHOLD = 0.25
NMS_IOU = 0.5
MAX_BOXES = 10


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.clip(x, -50, 50)))


def _grid():
    rows, cols = np.divmod(np.arange(GRID * GRID), GRID)  # anchors in row-major order
    return cols.astype(np.float64), rows.astype(np.float64)


def _boxes_xyxy(offsets, anchors):
    """(M, 4) raw (tx, ty, tw, th) of the anchors numbered `anchors` -> (M, 4) x1 y1 x2 y2 in [0, 1]."""
    cols, rows = (g[anchors] for g in _grid())
    cx = (cols + _sigmoid(offsets[:, 0])) / GRID
    cy = (rows + _sigmoid(offsets[:, 1])) / GRID
    w = ANCHOR * np.exp(np.clip(offsets[:, 2], -4, 4))
    h = ANCHOR * np.exp(np.clip(offsets[:, 3], -4, 4))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def _iou_one(box, others):
    x1, y1 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x2, y2 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(others) - inter, 1e-9)


def _nms(boxes, scores):
    order, keep = list(np.argsort(-scores)), []
    while order and len(keep) < MAX_BOXES:
        best = order.pop(0)
        keep.append(best)
        if order:
            iou = _iou_one(boxes[best], boxes[order])
            order = [o for o, v in zip(order, iou) if v < NMS_IOU]
    return np.asarray(keep, np.int64)


def decode(outputs):
    """outputs: {"output_0": box offsets (N, 64, 4), "output_1": class logits (N, 64, K)} ->
    per image (boxes (M, 4) x1 y1 x2 y2, scores (M,), classes (M,)) after a score threshold and NMS."""
    result = []
    for offsets, logits in zip(outputs["output_0"], outputs["output_1"]):
        scores = _sigmoid(logits.astype(np.float64))
        best, cls = scores.max(-1), scores.argmax(-1)
        candidates = np.flatnonzero(best > SCORE_THRESHOLD)
        boxes = _boxes_xyxy(offsets[candidates].astype(np.float64), candidates)
        keep = _nms(boxes, best[candidates])
        result.append((boxes[keep].reshape(-1, 4), best[candidates][keep], cls[candidates][keep]))
    return result


def truths(data):
    """The data's boxes: gt_boxes (N, M, 4) as cx cy w h, gt_classes (N, M) with -1 where there is no box."""
    out = []
    for boxes, classes in zip(data["gt_boxes"], data["gt_classes"]):
        real = classes >= 0
        b = boxes[real].astype(np.float64)
        out.append((np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1), classes[real]))
    return out


def _recall_precision(preds, gts):
    """Box-level recall and precision against the labels: a box counts when it has the label's class
    and IoU >= 0.5 with a label not yet taken (best score first)."""
    found = predicted = labelled = 0
    for (boxes, scores, classes), (t_boxes, t_classes) in zip(preds, gts):
        taken = np.zeros(len(t_boxes), bool)
        for j in np.argsort(-scores):
            if len(t_boxes):
                iou = np.where((t_classes == classes[j]) & ~taken, _iou_one(boxes[j], t_boxes), 0)
                if iou.max() >= 0.5:
                    taken[int(iou.argmax())] = True
        found, predicted, labelled = found + taken.sum(), predicted + len(boxes), labelled + len(t_boxes)
    return float(found / max(labelled, 1)), float(found / max(predicted, 1))


def map50(outputs, data):
    from edgecompress.task_metrics import mean_average_precision

    preds, gts = decode(outputs), truths(data)
    recall, precision = _recall_precision(preds, gts)
    return {"map50": mean_average_precision(preds, gts).mean_ap, "recall50": recall, "precision50": precision}


def miou(outputs, data):
    """Mean IoU of the predicted masks against the data's masks y: over every class (background
    included, as Pascal VOC counts it) and over the object classes only."""
    pred, truth = outputs["masks"].argmax(1), data["y"]
    ious = []
    for k in range(outputs["masks"].shape[1]):
        union = np.logical_or(pred == k, truth == k).sum()
        if union:
            ious.append(np.logical_and(pred == k, truth == k).sum() / union)
    return {"miou": float(np.mean(ious)), "miou_objects": float(np.mean(ious[1:]))}
