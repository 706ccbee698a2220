"""A detector with an objectness output beside its class scores (YOLO-style raw heads, a walkthrough's
own model): every score output is distilled, and an anchor's confidence is sigmoid(objectness) x
sigmoid(class), in the distillation's weights and in the check's figure."""
from pathlib import Path

import numpy as np
import torch

from edgecompress import losses, models, tasks, verify

MODELS = Path(__file__).parent / "models"


def _outputs():
    model = models.load(f"{MODELS / 'task_models.py'}:objectness_detector", None).module.eval()
    with torch.no_grad():
        out = model(torch.randn(4, 3, 32, 32))
    return [out["boxes"], out["classes"], out["objectness"]]


def test_the_class_output_is_the_scores_and_objectness_rides_beside_it():
    shapes = [tuple(o.shape) for o in _outputs()]
    assert tasks._detection_heads(shapes) == (0, 1)  # K > 1: the classes, not the one-value objectness
    assert tasks.score_outputs(shapes, 0) == [1, 2]
    assert tasks._detection_heads([(4, 64, 4), (4, 64, 1), (4, 64, 3)]) == (0, 2)  # whatever the order


def test_every_score_output_gets_its_loss():
    out = _outputs()
    student = [o.clone().requires_grad_(True) for o in out]
    teacher = [o.clone() for o in out]
    teacher[2] = teacher[2] + 3.0  # the teacher is sure of objects where the student is not
    batch = losses.Batch(student, teacher, None, 4.0, [], boxes=0, scores=1)
    assert [s.shape[-1] for s, _ in losses._score_pairs(batch)] == [2, 1]
    loss = losses.score_bce(batch)
    loss.backward()
    assert student[2].grad is not None and student[2].grad.abs().sum() > 0  # objectness is taught
    kl = losses.score_kl(losses.Batch([o.detach().clone().requires_grad_(True) for o in out], teacher, None, 4.0,
                                        [], boxes=0, scores=1))
    assert torch.isfinite(kl) and kl > 0


def test_confidence_is_objectness_times_class_in_the_check():
    rng = np.random.default_rng(0)
    boxes, classes = rng.uniform(0, 1, (8, 16, 4)), rng.normal(4, 0.1, (8, 16, 2))  # every class score sure
    sure, unsure = np.full((8, 16, 1), 5.0), np.full((8, 16, 1), -5.0)
    ref = [boxes, classes, sure]
    assert verify.task_agreement("detection", [boxes, classes, sure], ref) == 1.0
    # the class scores alone would call every anchor confident; objectness says none is
    assert verify.task_agreement("detection", [boxes, classes, unsure], ref) == 0.0
    probs = tasks.confidences([boxes, classes, unsure], 0, 1)
    assert probs.shape == (8, 16, 2) and probs.max() < 0.01
