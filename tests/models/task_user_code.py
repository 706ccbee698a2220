"""A detector user's own code: the decode function (raw heads -> boxes) and a metric (mAP@0.5 against
the boxes stored in the data), as --postprocess and --metric take them."""
import numpy as np


def decode(outputs):
    """outputs: {"output_0": boxes (N, A, 4) as cx cy w h, "output_1": class logits (N, A, K)}."""
    boxes, logits = outputs["output_0"], outputs["output_1"]
    scores = 1 / (1 + np.exp(-logits))
    result = []
    for b, s in zip(boxes, scores):
        best, cls = s.max(-1), s.argmax(-1)
        keep = np.argsort(-best)[:5]
        keep = keep[best[keep] > 0.3]
        xyxy = np.concatenate([b[keep, :2] - b[keep, 2:] / 2, b[keep, :2] + b[keep, 2:] / 2], 1)
        result.append((xyxy, best[keep], cls[keep]))
    return result


def map50(outputs, data):
    from edgecompress.task_metrics import mean_average_precision

    truth_xyxy = np.concatenate([data["boxes"][:, :2] - data["boxes"][:, 2:] / 2,
                                 data["boxes"][:, :2] + data["boxes"][:, 2:] / 2], 1)
    truths = [(t[None], c[None]) for t, c in zip(truth_xyxy, data["classes"])]
    return {"map50": mean_average_precision(decode(outputs), truths).mean_ap}


def miou(outputs, data):
    """A segmenter user's metric: mean IoU of the predicted masks against the data's masks y."""
    pred, truth = outputs["masks"].argmax(1), data["y"]
    ious = [((pred == k) & (truth == k)).sum() / ((pred == k) | (truth == k)).sum()
            for k in range(outputs["masks"].shape[1]) if ((pred == k) | (truth == k)).any()]
    return {"miou": float(np.mean(ious))}
