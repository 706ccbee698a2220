"""What the checks print, read as a user reads it: each figure with the output or layer it comes from."""
from __future__ import annotations

import numpy as np


def test_a_regressors_errors_name_the_output_they_come_from():
    from edgecompress import verify

    rng = np.random.default_rng(0)
    reference = [rng.random((20, 2)).astype(np.float32), rng.random((20, 1)).astype(np.float32) + 1.0]
    candidate = [reference[0] + 0.001, reference[1] * 1.5]  # 'area' is the one that moved
    row = verify.compare("x", candidate, reference, ["centre", "area"], None, task="regression").table().splitlines()[-1]
    assert "(area, the worst output)" in row and "of area's range" in row
    assert "largest relative error" in row and "|diff| / |original value|" in row


def test_the_keep_float_log_names_layers_as_the_users_model_does():
    from edgecompress.keep_float import layer_names

    text = layer_names(["/inner/hm/Conv", "/inner/Mul", "/inner/hm/Sigmoid", "wrapped.head.cls"])
    assert "/inner/" not in text and "inner." not in text
    assert text == "hm (Conv), Mul (in forward), hm (Sigmoid), head.cls"


def test_verify_says_the_difference_with_the_original_where_no_agreement_figure_exists():
    from edgecompress.report_bench import verify_text

    diff = {"outputs": [{"name": "y", "max_abs_diff": 0.25, "mean_abs_diff": 0.1}], "samples": 4}
    out = {"bundle": "b", "files_checked": 3, "rerun": diff, "reference": diff, "reference_is": "PyTorch",
           "original": diff, "build_check": None}
    line = [x for x in verify_text(out).splitlines() if "original model" in x][0]
    assert line.strip().startswith("max |diff| ") and line.strip().endswith("with the original model")


def test_a_detectors_anchor_line_says_whose_anchors_and_when_every_anchor_passes():
    from edgecompress import verify

    rng = np.random.default_rng(0)
    boxes = rng.random((4, 6, 4)).astype(np.float32)
    scores = rng.normal(0, 1, (4, 6, 2)).astype(np.float32)  # logits: about half the anchors confident at 0.5
    table = verify.compare("x", [boxes, scores], [boxes, scores], ["boxes", "scores"], None,
                           task="detection").table()
    assert "the reference's confident anchors: " in table and " of 24 (score above 0.5)" in table
    assert "PSNR boxes" in table and "every anchor" not in table
    table = verify.compare("x", [boxes, scores], [boxes, scores], ["boxes", "scores"], None, task="detection",
                           score_threshold=0.001).table()
    assert "24 of 24" in table and "every anchor, so background anchors are counted too" in table
    table = verify.compare("x", [boxes, scores - 20], [boxes, scores - 20], ["boxes", "scores"], None,
                           task="detection").table()
    assert "none of the reference's scores exceeds 0.5" in table and "its highest" in table


def test_a_regressors_failing_r2_names_the_output_that_pulls_it_down():
    from edgecompress import verify
    from edgecompress.profile import Verify

    rng = np.random.default_rng(0)
    reference = [rng.random((20, 2)).astype(np.float32), rng.random((20, 1)).astype(np.float32)]
    candidate = [reference[0] + 0.001, reference[1] + rng.normal(0, 0.2, (20, 1)).astype(np.float32)]
    report = verify.compare("x", candidate, reference, ["centre", "size"], None, task="regression")
    per_output = {o["name"]: o["r2"] for o in report.task_details["outputs"]}
    assert per_output["centre"] > 0.99 > per_output["size"]
    (problem,) = verify.problems(report, True, Verify(min_r2=0.999))
    assert "(verify.min_r2); the worst output is size (R^2 " in problem


def test_a_detector_with_too_few_confident_anchors_is_not_judged_on_them():
    """A walkthrough's pass/fail (and 24 operations kept in float) rested on one confident anchor."""
    from edgecompress import verify
    from edgecompress.profile import Verify
    from edgecompress.task_metrics import MIN_CONFIDENT_ANCHORS

    rng = np.random.default_rng(0)
    boxes = rng.random((4, 8, 4)).astype(np.float32)
    scores = np.full((4, 8, 2), -8.0, np.float32)
    scores[0, 0, 1] = 4.0  # one confident anchor in the reference; the candidate loses it
    candidate = scores.copy()
    candidate[0, 0, 1] = -8.0
    report = verify.compare("x", [boxes, candidate], [boxes, scores], ["boxes", "scores"], None, task="detection")
    assert report.task_agreement is None and verify.problems(report, True, Verify()) == []
    assert f"only 1 of 32 (score above 0.5), fewer than {MIN_CONFIDENT_ANCHORS}: too few to judge" in report.table()


def test_an_untrained_classifiers_failing_check_says_its_decisions_were_close_calls():
    """A Hugging Face classifier built from its config (random weights) failed its INT8 check at 58% top-1
    agreement with the hint 'use more calibration data', which cannot help: its 1000 logits lay closer together
    than the rounding moved them."""
    import pytest

    from edgecompress import verify
    from edgecompress.errors import ToleranceError
    from edgecompress.profile import Verify

    rng = np.random.default_rng(0)
    flat = rng.normal(0, 0.01, (40, 1000)).astype(np.float32)  # near-equal logits: an untrained head
    moved = flat + rng.normal(0, 0.03, flat.shape).astype(np.float32)  # INT8's rounding, larger than the gaps
    report = verify.compare("deployed int8 model vs the FP32 student", [moved], [flat], ["logits"], None)
    margins = report.task_details["margins"]
    assert margins["samples"] == 40 and margins["close_calls"] >= 30
    assert "close calls" in report.table()
    with pytest.raises(ToleranceError) as failed:
        verify.check(report, True, Verify())
    assert "is the model trained" in failed.value.hint and "verify.min_top1_agreement=0" in failed.value.hint

    # a trained classifier: clear winners, the same rounding flips nothing, nothing is said of margins
    sure = flat.copy()
    sure[np.arange(40), rng.integers(0, 1000, 40)] += 5.0
    report = verify.compare("x", [sure + (moved - flat)], [sure], ["logits"], None)
    assert report.task_details["margins"]["close_calls"] == 0 and report.top1_agreement == 1.0
    assert "close calls" not in report.table()
    verify.check(report, True, Verify())


def test_a_failing_check_on_a_reference_of_near_ties_asks_whether_the_model_is_trained():
    """A walkthrough's untrained 10-class classifier failed its INT8 check (forced tighter) with 4 of 60 close
    calls, under half, and got only 'use more calibration data': its softmax near ties (median gap 0.004 in
    probability, what the summary calls random weights) say the same thing and now give the same hint."""
    import pytest

    from edgecompress import verify
    from edgecompress.errors import ToleranceError
    from edgecompress.profile import Verify

    rng = np.random.default_rng(1)
    near_ties = rng.normal(0, 0.01, (60, 10)).astype(np.float32)  # probabilities about 0.1 each, 0.002 apart
    moved = near_ties.copy()
    moved[:4] = near_ties[:4][:, ::-1]  # four decisions flip; the others stay exact
    report = verify.compare("deployed int8 model vs the FP32 student", [moved], [near_ties], ["logits"], None)
    m = report.task_details["margins"]
    assert m["close_calls"] < 30 and m["probability_gap_median"] < 0.01
    with pytest.raises(ToleranceError) as failed:
        verify.check(report, True, Verify(min_top1_agreement=0.99))
    assert "the reference is unsure of its decisions" in failed.value.hint and "calibration data" in failed.value.hint
    assert "apart in probability" in failed.value.hint and "raw scores" in report.table()
