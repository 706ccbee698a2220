"""Task parity metrics on hand-built cases whose answers are known: identical inputs score perfectly,
known IoUs, recalls and flipped classes give the figures worked out by hand, and a non-finite
candidate scores worst without raising. Every result must survive json.dumps(allow_nan=False)."""
import json

import numpy as np
import pytest

from edgecompress import task_metrics as tm
from edgecompress.errors import InputError

rng = np.random.default_rng(0)


def json_ok(result) -> dict:
    d = result.to_dict()
    json.dumps(d, allow_nan=False)  # raises on NaN / inf
    return d


# --- helpers ------------------------------------------------------------------------------------

def test_psnr_known_identical_and_broken():
    r = np.array([0.0, 1.0])
    assert tm.psnr_db(np.array([0.1, 1.0]), r) == pytest.approx(10 * np.log10(1 / 0.005))
    assert tm.psnr_db(r.copy(), r) == tm.PSNR_CAP_DB
    assert tm.psnr_db(np.array([np.nan, 1.0]), r) == tm.PSNR_FLOOR_DB
    assert tm.psnr_db(np.array([np.inf, 1.0]), r) == tm.PSNR_FLOOR_DB
    assert tm.psnr_db(np.array([5.0, -5.0]), r) == tm.PSNR_FLOOR_DB  # worse than the range: clamped
    # the reference's own NaN, matched by the candidate, is left out; unmatched, it is a failure
    assert tm.psnr_db(np.array([np.nan, 1.0, 0.1]), np.array([np.nan, 1.0, 0.0])) == pytest.approx(
        10 * np.log10(1 / 0.005))
    assert tm.psnr_db(np.array([0.0, 1.0]), np.array([np.nan, 1.0])) == tm.PSNR_FLOOR_DB
    with pytest.raises(InputError):
        tm.psnr_db(np.zeros(3), np.zeros(4))


def test_max_rel_error():
    r = np.array([1.0, 2.0])
    assert tm.max_rel_error(np.array([1.1, 2.0]), r) == pytest.approx(0.1 / (1 + 2e-6))
    assert tm.max_rel_error(r.copy(), r) == 0.0
    assert tm.max_rel_error(np.array([np.nan, 2.0]), r) == tm.ERROR_CAP
    # near-zero reference values are measured against eps = 1e-6 * max|r|, not blown up to inf
    assert tm.max_rel_error(np.array([1e-6, 1.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


def test_iou_matrix_known_values():
    a = np.array([[0, 0, 2, 2], [10, 10, 11, 11]], float)
    b = np.array([[1, 0, 3, 2], [0, 0, 2, 2], [np.nan, 0, 1, 1]], float)
    iou = tm.iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(2 / 6)
    assert iou[0, 1] == 1.0
    assert iou[1, 0] == 0.0 and iou[1, 1] == 0.0
    assert np.all(iou[:, 2] == 0.0)  # a non-finite box overlaps nothing
    assert tm.iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


# --- segmentation -------------------------------------------------------------------------------

def one_hot_logits(classes: np.ndarray, c: int) -> np.ndarray:
    return np.moveaxis(np.eye(c)[classes], -1, 1) * 4.0 - 2.0  # (N,C,H,W)


def test_segmentation_identical_is_perfect():
    logits = rng.normal(size=(3, 4, 8, 8))
    d = json_ok(tm.segmentation(logits.copy(), logits))
    assert d["pixel_agreement"] == 1.0 and d["mean_iou"] == 1.0 and d["pixels"] == 3 * 64
    assert d["mean_iou_labels"] is None


def test_segmentation_hand_built_iou():
    ref = one_hot_logits(np.array([[[0, 0], [1, 1]]]), 2)
    cand = one_hot_logits(np.array([[[0, 1], [1, 1]]]), 2)
    res = tm.segmentation(cand, ref)
    assert res.pixel_agreement == pytest.approx(3 / 4)
    assert res.mean_iou == pytest.approx((1 / 2 + 2 / 3) / 2)  # class 0: 1/2, class 1: 2/3


def test_segmentation_against_masks_ignores_255():
    ref = one_hot_logits(np.array([[[0, 0], [1, 1]]]), 2)
    cand = one_hot_logits(np.array([[[0, 1], [1, 1]]]), 2)
    masks = np.array([[[0, 0], [1, 255]]])
    d = json_ok(tm.segmentation(cand, ref, masks))
    assert d["labelled_pixels"] == 3
    assert d["pixel_accuracy_labels"] == pytest.approx(2 / 3)
    assert d["mean_iou_labels"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert d["reference_pixel_accuracy_labels"] == 1.0 and d["reference_mean_iou_labels"] == 1.0
    with pytest.raises(InputError):
        tm.segmentation(cand, ref, masks[:, :1])


def test_segmentation_binary_logit():
    ref = np.array([[[[1.0, -1.0], [2.0, -3.0]]]])  # (1,1,2,2): classes [[1,0],[1,0]]
    cand = np.array([[[[0.5, 0.2], [2.0, -3.0]]]])  # [[1,1],[1,0]]
    res = tm.segmentation(cand, ref)
    assert res.pixel_agreement == pytest.approx(3 / 4)
    assert res.mean_iou == pytest.approx((1 / 2 + 2 / 3) / 2)  # class 0: 1/2, class 1: 2/3


def test_segmentation_non_finite_candidate_disagrees():
    ref = one_hot_logits(np.zeros((1, 2, 2), int), 2)
    cand = ref.copy()
    cand[0, :, 0, 0] = np.nan  # argmax would pick the NaN's class 0 and agree by luck
    res = tm.segmentation(cand, ref)
    assert res.pixel_agreement == pytest.approx(3 / 4)
    assert res.mean_iou == pytest.approx(3 / 4)  # class 0: 3 of its 4 pixels
    all_nan = tm.segmentation(np.full_like(ref, np.nan), ref)
    assert all_nan.pixel_agreement == 0.0 and all_nan.mean_iou == 0.0


# --- detection: raw anchors ---------------------------------------------------------------------

def anchors():
    boxes = rng.uniform(0, 100, size=(2, 6, 4))
    scores = np.full((2, 6, 3), 0.05)
    scores[0, 0, 1] = 0.9  # confident anchors: (0,0) class 1, (1,3) class 2
    scores[1, 3, 2] = 0.8
    return boxes, scores


def test_anchors_identical_is_perfect():
    boxes, scores = anchors()
    d = json_ok(tm.detection_anchors(boxes.copy(), scores.copy(), boxes, scores))
    assert d["confident_anchors"] == 2 and d["confident_agreement"] == 1.0 and d["mean_box_diff"] == 0.0
    assert d["psnr_db"] == {"boxes": tm.PSNR_CAP_DB, "scores": tm.PSNR_CAP_DB}
    assert d["scores_are_logits"] is False


def test_anchors_flipped_class_and_box_shift():
    boxes, scores = anchors()
    c_scores = scores.copy()
    c_scores[1, 3] = [0.05, 0.85, 0.1]  # still confident, but class 1 instead of 2
    c_boxes = boxes + 100.0  # far off everywhere ...
    c_boxes[0, 0], c_boxes[1, 3] = boxes[0, 0] + 2.0, boxes[1, 3] - 2.0  # ... except at confident anchors
    res = tm.detection_anchors(c_boxes, c_scores, boxes, scores)
    assert res.confident_agreement == pytest.approx(1 / 2)
    assert res.mean_box_diff == pytest.approx(2.0)
    assert res.psnr_db["boxes"] < 20.0


def test_anchors_logits_decided_and_non_finite():
    boxes, scores = anchors()
    logits = np.log(scores / (1 - scores))  # negative values: read as logits, sigmoid restores scores
    c_logits = logits.copy()
    c_logits[0, 0, :] = np.nan
    res = tm.detection_anchors(boxes, c_logits, boxes, logits)
    assert res.scores_are_logits is True and res.confident_anchors == 2
    assert res.confident_agreement == pytest.approx(1 / 2)
    assert res.psnr_db["scores"] == tm.PSNR_FLOOR_DB
    bad_boxes = boxes.copy()
    bad_boxes[1, 3, 0] = np.inf
    assert json_ok(tm.detection_anchors(bad_boxes, scores, boxes, scores))["mean_box_diff"] == tm.ERROR_CAP
    # objectness only, (N,A), none confident: agreement undefined
    none = tm.detection_anchors(boxes, np.zeros((2, 6)), boxes, np.zeros((2, 6)))
    assert none.confident_anchors == 0 and none.confident_agreement is None and none.mean_box_diff is None


# --- detection: decoded boxes -------------------------------------------------------------------

def dets(boxes, scores, classes):
    return np.array(boxes, float).reshape(-1, 4), np.array(scores, float), np.array(classes, int)


def test_boxes_identical_is_perfect():
    ref = [dets([[0, 0, 2, 2], [5, 5, 9, 9]], [0.9, 0.6], [1, 2]), dets([], [], [])]
    d = json_ok(tm.detection_boxes(ref, ref))
    assert d["recall"] == 1.0 and d["precision"] == 1.0 and d["class_agreement"] == 1.0
    assert d["mean_iou"] == 1.0 and d["mean_score_diff"] == 0.0 and d["matched"] == 2


def test_boxes_half_recall_flipped_class():
    ref = [dets([[0, 0, 2, 3], [20, 20, 30, 30]], [0.9, 0.8], [1, 1])]
    cand = [dets([[0, 0, 2, 2]], [0.7], [3])]  # IoU 4/6 with the first, class flipped
    res = tm.detection_boxes(cand, ref)
    assert (res.reference_boxes, res.candidate_boxes, res.matched) == (2, 1, 1)
    assert res.recall == pytest.approx(1 / 2) and res.precision == 1.0
    assert res.class_agreement == 0.0
    assert res.mean_iou == pytest.approx(2 / 3)
    assert res.mean_score_diff == pytest.approx(0.2)
    assert tm.detection_boxes(cand, ref, iou_threshold=0.7).matched == 0


def test_boxes_greedy_takes_the_highest_score_first():
    # both reference boxes overlap the one candidate; the higher-scored (second) gets it
    ref = [dets([[0, 0, 10, 10], [0, 0, 10, 9]], [0.3, 0.9], [0, 1])]
    cand = [dets([[0, 0, 10, 10]], [0.8], [1])]
    res = tm.detection_boxes(cand, ref)
    assert res.matched == 1 and res.class_agreement == 1.0 and res.mean_iou == pytest.approx(0.9)


def test_boxes_empty_cases_and_non_finite():
    empty = [dets([], [], [])]
    one = [dets([[0, 0, 1, 1]], [0.9], [0])]
    d = json_ok(tm.detection_boxes(empty, empty))
    assert d["recall"] is None and d["precision"] is None and d["mean_iou"] is None
    miss = tm.detection_boxes(empty, one)
    assert miss.recall == 0.0 and miss.precision is None and miss.class_agreement is None
    extra = tm.detection_boxes(one, empty)
    assert extra.recall is None and extra.precision == 0.0
    broken = tm.detection_boxes([dets([[0, 0, 1, 1]], [np.nan], [0])], one)
    assert broken.matched == 0 and broken.recall == 0.0 and broken.precision == 0.0
    with pytest.raises(InputError):
        tm.detection_boxes(one + one, one)


# --- mAP ----------------------------------------------------------------------------------------

def test_map_perfect_and_hand_worked():
    truths = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([0, 0]))]
    perfect = [dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 0])]
    assert tm.mean_average_precision(perfect, truths).mean_ap == 1.0
    # TP (0.9), duplicate = FP (0.8), TP (0.7): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    preds = [dets([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    res = tm.mean_average_precision(preds, truths)
    assert res.mean_ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert json_ok(res)["per_class_ap"] == {"0": pytest.approx(5 / 6)}
    # FP (0.9) before both TPs: precision 0, 1/2, 2/3; interpolated, recall 1/2 takes the 2/3 to its right
    late = [dets([[50, 50, 60, 60], [0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    assert tm.mean_average_precision(late, truths).mean_ap == pytest.approx(2 / 3)


def test_map_classes_and_empty():
    truths = [(np.array([[0, 0, 10, 10]], float), np.array([0])),
              (np.array([[0, 0, 10, 10]], float), np.array([1]))]
    # class 0 found; class 1 predicted with the wrong class; class 7 only predicted (left out)
    preds = [dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.95], [0, 7]),
             dets([[0, 0, 10, 10]], [0.9], [0])]
    res = tm.mean_average_precision(preds, truths)
    assert res.per_class_ap == {0: 1.0, 1: 0.0}
    assert res.mean_ap == pytest.approx(0.5)
    none = tm.mean_average_precision([dets([], [], [])], [(np.zeros((0, 4)), np.zeros(0, int))])
    assert none.mean_ap is None
    nan_pred = [dets([[0, 0, 10, 10]], [np.nan], [0]), dets([], [], [])]
    assert tm.mean_average_precision(nan_pred, truths).mean_ap == 0.0


# --- embedding ----------------------------------------------------------------------------------

def test_embedding_identical_and_negated():
    x = rng.normal(size=(6, 16))
    d = json_ok(tm.embedding(x.copy(), x))
    assert d["cosine_mean"] == pytest.approx(1.0) and d["cosine_min"] == pytest.approx(1.0)
    assert d["nn_agreement"] == 1.0 and d["samples"] == 6
    neg = tm.embedding(-x, x)
    assert neg.cosine_mean == pytest.approx(-1.0)
    assert tm.embedding(x[:2], x[:2]).nn_agreement is None


def test_embedding_neighbour_swap():
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    cand = ref.copy()
    cand[3] = [0.95, 0.05]  # sample 3 moves next to 0 and 1: its own neighbour and 2's change
    res = tm.embedding(cand, ref)
    # neighbours, reference: 0->1, 1->0, 2->3, 3->2; candidate: 0->3, 1->3, 2->1, 3->0
    assert res.nn_agreement == 0.0
    cand2 = ref * np.array([[2.0], [0.5], [3.0], [1.0]])  # rescaled vectors: cosine unchanged
    assert tm.embedding(cand2, ref).nn_agreement == 1.0


def test_embedding_non_finite_and_zero():
    x = rng.normal(size=(5, 8))
    c = x.copy()
    c[2, 0] = np.nan
    d = json_ok(tm.embedding(c, x))
    assert d["cosine_min"] == -1.0
    assert d["nn_agreement"] <= 4 / 5
    # three vectors at 0, 100 and 225 degrees (every pair at a negative cosine; 0 and 1 nearest each
    # other): the broken sample 2 disagrees and must not become the others' neighbour, as a zero
    # vector (cosine 0) would
    tri = np.stack([np.cos(np.radians([0, 100, 225])), np.sin(np.radians([0, 100, 225]))], axis=1)
    broken = tri.copy()
    broken[2] = np.nan
    assert tm.embedding(broken, tri).nn_agreement == pytest.approx(2 / 3)
    z = tm.embedding(np.zeros((3, 4)), np.zeros((3, 4)))
    assert z.cosine_mean == 1.0
    assert tm.embedding(np.zeros((3, 4)), np.ones((3, 4))).cosine_mean == 0.0


# --- regression ---------------------------------------------------------------------------------

def test_regression_per_output_and_overall():
    r = [np.array([[0.0, 1.0]]), np.array([[1.0], [2.0]])]
    c = [np.array([[0.1, 1.0]]), r[1].copy()]
    res = tm.regression(c, r, names=["depth", "pose"])
    depth, pose = res.outputs
    assert depth.name == "depth" and depth.psnr_db == pytest.approx(10 * np.log10(1 / 0.005))
    assert pose.psnr_db == tm.PSNR_CAP_DB and pose.max_rel_error == 0.0
    assert res.min_psnr_db == depth.psnr_db
    assert res.max_rel_error == pytest.approx(0.1 / 1e-6)  # 0.1 against r = 0: eps = 1e-6 * 1
    same = tm.regression(r, r)
    assert same.outputs[0].name == "output_0" and same.min_psnr_db == tm.PSNR_CAP_DB


def test_regression_non_finite_is_worst():
    r = [rng.normal(size=(4, 3))]
    c = [r[0].copy()]
    c[0][1, 1] = np.inf
    d = json_ok(tm.regression(c, r))
    assert d["min_psnr_db"] == tm.PSNR_FLOOR_DB and d["max_rel_error"] == tm.ERROR_CAP
    assert d["outputs"][0]["nonfinite"] == 1
    with pytest.raises(InputError):
        tm.regression(c, r + r)


def test_the_range_error_stays_meaningful_where_values_are_near_zero():
    """A keypoint net's heatmap: zeros but for a peak of 1. The relative error of a 0.01 error on a zero is
    enormous (a walkthrough saw 6.83e+03); as a share of the map's range it is 1%."""
    r = np.zeros((1, 5, 8, 8))
    r[0, :, 3, 3] = 1.0
    c = r + 0.01
    assert tm.max_rel_error(c, r) > 1000
    assert tm.max_range_error(c, r) == pytest.approx(0.01)
    assert tm.max_range_error(r.copy(), r) == 0.0 and tm.max_range_error(np.full(3, np.nan), np.zeros(3)) == tm.ERROR_CAP
    parity = tm.regression([c], [r], ["heatmaps"])
    assert parity.outputs[0].name == "heatmaps" and parity.max_range_error == pytest.approx(0.01)
