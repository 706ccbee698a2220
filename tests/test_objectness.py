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


def _probability_heads(n=6, anchors=40, seed=0):
    """A detector that ends in its own sigmoid: boxes (N, A, 4), class probabilities (N, A, 2) and objectness
    probabilities (N, A, 1); a few anchors per image are confident (class 0.95, objectness 0.9), the rest low."""
    rng = np.random.default_rng(seed)
    boxes = rng.random((n, anchors, 4)).astype(np.float32)
    cls = rng.uniform(0.0, 0.05, (n, anchors, 2)).astype(np.float32)
    obj = rng.uniform(0.0, 0.05, (n, anchors, 1)).astype(np.float32)
    for i in range(n):
        for a in rng.choice(anchors, 3, replace=False):
            cls[i, a, a % 2], obj[i, a, 0] = 0.95, 0.9
    return [boxes, cls, obj]


def test_scores_that_are_already_probabilities_are_not_sigmoided_again():
    """A walkthrough's detector returned sigmoided scores: the check sigmoided them again and every anchor
    (sigmoid(0.01) = 0.5025) counted as confident; now only the 18 truly confident ones do."""
    ref = _probability_heads()
    for heads in (ref[:2], ref):  # class probabilities alone, and with objectness beside them
        details = verify.task_details("detection", [o.copy() for o in heads], heads)
        assert details["confident_anchors"] == 18 and details["confident_agreement"] == 1.0
    lost = [o.copy() for o in ref]
    first = np.argwhere(ref[2][0, :, 0] > 0.5)[0, 0]
    lost[2][0, first, 0] = 0.1  # the deployed model drops one object's objectness
    assert verify.task_agreement("detection", lost, ref) == 17 / 18
    lost = [o.copy() for o in ref[:2]]
    lost[1][0, first] = 0.2  # or its class score
    assert verify.task_agreement("detection", lost, ref[:2]) == 17 / 18
    # logits are still sigmoided: the same heads as logits give the same count
    as_logits = [ref[0]] + [np.log(o / (1 - o)) for o in ref[1:]]
    assert verify.task_details("detection", as_logits, as_logits)["confident_anchors"] == 18


def test_distillation_weights_read_probability_scores_as_probabilities():
    _, cls, obj = (torch.from_numpy(o) for o in _probability_heads())
    conf = losses._confidence(cls, [obj])
    assert torch.allclose(conf, cls.amax(-1) * obj[..., 0]) and int((conf > 0.5).sum()) == 18
    s, t = losses._as_logits(cls.clone(), cls)
    assert torch.allclose(torch.sigmoid(t), cls, atol=1e-5) and torch.allclose(s, t)
    logits = torch.randn(2, 5, 3) * 4
    assert losses._as_logits(logits, logits)[1] is logits  # logits pass as they are
    batch = losses.Batch([torch.from_numpy(_probability_heads()[0])] + [cls.clone().requires_grad_(True),
                                                                          obj.clone().requires_grad_(True)],
                         [torch.from_numpy(_probability_heads()[0]), cls, obj], None, 4.0, [], boxes=0, scores=1)
    loss = losses.score_bce(batch)
    loss.backward()
    assert torch.isfinite(loss) and batch.student[1].grad.abs().max() < 1e-3, "the student's equal scores are the optimum"


def test_the_example_programs_and_kotlin_take_the_class_scores_before_a_listed_first_objectness():
    from types import SimpleNamespace

    from edgecompress.backends import kotlin

    outs = [SimpleNamespace(shape=s) for s in ([1, 64, 4], [1, 64, 1], [1, 64, 3])]
    assert kotlin.detection_heads(outs) == (0, 2)  # as tasks._detection_heads decides
    assert kotlin.detection_heads(outs[:2]) == (0, 1)  # objectness alone: it is the score
