"""The summary's figures from the records: the agreement with the original told apart from the
agreement with the student, and the warnings under the table, with the knob that helps."""
from __future__ import annotations

import numpy as np

from edgecompress import verify
from edgecompress.records import Accuracy, Compressed, Distillation, Pruning
from edgecompress.summary import accuracy, accuracy_warning, median_margin


def _accuracy(original, student, deployed) -> Accuracy:
    """summary.accuracy without labels, for a deployed model whose outputs are `deployed`."""
    compressed = Compressed(student=None, original=None, example=None, reference=[student],
                            reference_original=[original], output_names=["output"], pruning=Pruning("none", 0.0),
                            distillation=Distillation(steps=0, seconds=0.0))
    return accuracy(compressed, _parity(original, student, deployed), held_y=None)


def _parity(original, student, deployed):
    return verify.compare("deployed vs student", [deployed], [student], ["logits"], None, [original])


def test_agreement_with_the_original_and_with_the_student_are_told_apart():
    rng = np.random.default_rng(0)
    original = rng.normal(size=(50, 10)).astype(np.float32) * 5
    student = np.roll(original, 1, axis=1)  # a student that learned other classes
    acc = _accuracy(original, student, student.copy())
    assert acc.metric == "agreement" and acc.teacher == 1.0 and acc.samples == 50
    assert acc.student == acc.student_fp32 == 0.0  # the deployed model matches the student, not the original
    parity = _parity(original, student, student.copy())
    assert parity.top1_agreement == 1.0 and parity.original_agreement == 0.0
    assert "agreement with the original model 0.00%" in parity.table()


def test_a_near_tie_original_is_named_as_the_cause():
    rng = np.random.default_rng(1)
    flat = rng.normal(size=(40, 1000)).astype(np.float32) * 0.01  # random weights: near-tied logits
    acc = _accuracy(flat, np.roll(flat, 3, axis=1), np.roll(flat, 3, axis=1))
    warning = accuracy_warning(acc, quantized=True)
    assert "near tie" in warning and "--weights" in warning
    confident = flat * 1000
    acc = _accuracy(confident, np.roll(confident, 3, axis=1), np.roll(confident, 3, axis=1))
    assert "near tie" not in accuracy_warning(acc, quantized=True)


def test_a_large_accuracy_cost_is_said_with_the_knob_that_helps():
    from dataclasses import replace

    acc = Accuracy("accuracy", teacher=1.0, student=0.4125, student_fp32=0.42, samples=80)
    said = accuracy_warning(acc, quantized=True)
    assert said.startswith("warning: accuracy fell 58.75 points (100.00% -> 41.25%) on 80 held-out samples")
    assert "distill.steps" in said and "prune.ratio" in said and "quantiz" not in said
    undistilled = accuracy_warning(acc, quantized=True, distilled=False)  # distill.steps=0: not "distill longer"
    assert "no distillation ran" in undistilled and "learned too little" not in undistilled
    said = accuracy_warning(replace(acc, student_fp32=0.99), quantized=True)  # the FP32 student kept it
    assert "quantization lost it" in said and "calibration_samples" in said
    assert "quantiz" not in accuracy_warning(replace(acc, student_fp32=0.99), quantized=False)
    assert accuracy_warning(replace(acc, student=0.985), quantized=True) is None  # 1.5 points: within what it costs
    agree = Accuracy("agreement", teacher=1.0, student=0.9, student_fp32=None, samples=10)
    assert "agreement with the original fell 10.00 points" in accuracy_warning(agree, quantized=True)


def test_the_median_margin_tells_a_near_tie_from_a_confident_original():
    tied = np.zeros((4, 3), np.float32)
    assert median_margin(tied) == 0.0
    confident = np.array([[10.0, 0.0, 0.0]] * 4, np.float32)
    e = np.exp(-10.0)
    assert abs(median_margin(confident) - (1 - e) / (1 + 2 * e)) < 1e-9  # softmax top-1 minus top-2
    assert median_margin(np.zeros((4,), np.float32)) is None  # not one score per class


def test_labels_give_accuracy_and_the_teachers_from_the_original_outputs():
    original = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]] * 5
    y = np.array([0, 1, 2, 3, 1])
    compressed = Compressed(student=None, original=None, example=None, reference=[original],
                            reference_original=[original], output_names=["output"], pruning=Pruning("none", 0.0),
                            distillation=Distillation(steps=0, seconds=0.0))
    parity = verify.compare("deployed vs student", [original], [original], ["output"], y, [original])
    acc = accuracy(compressed, parity, held_y=y)
    assert (acc.metric, acc.teacher, acc.student, acc.student_fp32, acc.samples) == ("accuracy", 0.8, 0.8, 0.8, 5)
    assert "original_margin" not in acc.to_dict()


def test_a_detector_whose_decoded_boxes_kept_gets_a_note_not_a_warning():
    """benchmarks/tasks.py: confident-anchor agreement fell 2.49 points while the decoded boxes matched
    the original's at 99.3% recall; the warning said the model learned too little."""
    acc = Accuracy("confident_agreement", teacher=1.0, student=0.9751, student_fp32=0.98, samples=400)
    kept = {"boxes": {"deployed": {"recall": 0.993, "precision": 0.995}}}
    note = accuracy_warning(acc, quantized=True, user_figures=kept)
    assert note.startswith("note: confident-anchor agreement fell 2.49 points") and "99.3% recall" in note
    lost = {"boxes": {"deployed": {"recall": 0.111, "precision": 0.078}}}  # the 7.6k detector: boxes lost
    assert accuracy_warning(acc, quantized=True, user_figures=lost).startswith("warning:")
    assert accuracy_warning(acc, quantized=True).startswith("warning:")  # without a decode function: as before


def test_an_int8_file_slower_than_its_fp32_student_is_said():
    from edgecompress.summary import _int8_note

    note = _int8_note({"original": {"p50": 0.017}, "compressed": {"p50": 0.026}, "student_fp32": {"p50": 0.014}})
    assert "FP32 student ran faster here than the INT8 file (0.014 against 0.026 ms)" in note
    assert "quantize.precision=fp32" in note
    assert _int8_note({"compressed": {"p50": 0.026}, "student_fp32": {"p50": 0.025}}) == ""  # within noise
    assert _int8_note({"compressed": {"p50": 0.026}}) == ""  # a runtime that times two models


def test_an_embeddings_moved_neighbours_are_said_though_its_mean_cosine_is_high():
    """A walkthrough's embedding net: mean cosine 0.9996 with the original, 84% of nearest neighbours kept,
    and nothing said. Near-duplicate pairs whose order a small change flips show it."""
    import numpy as np

    from edgecompress import summary, verify

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16))  # 10 groups of 4 near-duplicates: who is whose nearest is a near tie
    original = np.repeat(centres, 4, axis=0) + rng.normal(scale=1e-3, size=(40, 16))
    original /= np.linalg.norm(original, axis=1, keepdims=True)
    moved = original + rng.normal(scale=1e-3, size=original.shape)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    parity = verify.compare("deployed", [moved], [moved.copy()], ["embedding"], None, original=[original],
                            task="embedding")
    d = parity.task_details
    assert d["nn_agreement"] == 1.0 and d["original_nn_agreement"] < 0.9 and parity.original_task_agreement > 0.999
    said = summary.neighbour_warning(parity)
    assert said.startswith("warning: the nearest neighbour of") and f"{d['original_nn_agreement']:.2%}" in said
    assert "with the original: worst cosine" in parity.table()
    same = verify.compare("deployed", [original], [original], ["embedding"], None, original=[original], task="embedding")
    assert summary.neighbour_warning(same) is None


def test_a_segmenter_that_answers_one_class_everywhere_is_said_so():
    """A walkthrough's label-free student marked every pixel background: pixel agreement 88.89% with the
    original, the share of background, read as a kept answer."""
    import numpy as np

    from edgecompress import summary, verify

    original = np.zeros((4, 3, 8, 8), np.float32)
    original[:, 0] = 1.0
    original[:, 1, 2:4, 2:4] = 2.0  # a small object of class 1 in each sample
    collapsed = np.zeros_like(original)
    collapsed[:, 0] = 1.0
    parity = verify.compare("deployed", [collapsed], [collapsed.copy()], ["masks"], None, original=[original],
                            task="segmentation")
    assert parity.task_details["classes_predicted"] == 1 and parity.task_details["original_classes_predicted"] == 2
    said = summary.collapse_warning(parity)
    assert said.startswith("warning: the deployed model gives every pixel of the 4 held-out samples one class")
    assert "93.75%" in said  # 60 of 64 pixels are background
    kept = verify.compare("deployed", [original], [original], ["masks"], None, original=[original], task="segmentation")
    assert summary.collapse_warning(kept) is None


def test_a_deployed_model_slower_than_the_original_is_said_with_where_it_was_timed():
    from edgecompress import backends
    from edgecompress.summary import _slower_note

    kernels = backends.get("onnxruntime").host_kernels
    lat = {"original": {"p50": 0.017}, "compressed": {"p50": 0.047}}
    note = _slower_note(lat, {"where": "host"}, kernels)
    assert "ran slower than the original (0.047 against 0.017 ms)" in note and "--device" in note
    assert "does not pay in speed" in _slower_note(lat, {"where": "device"}, kernels)
    assert _slower_note({"original": {"p50": 0.047}, "compressed": {"p50": 0.017}}, {"where": "host"}, kernels) == ""


def test_a_device_whose_cpu_is_not_the_profiles_is_said_in_the_measurement_note():
    """A walkthrough measured a raspberry-pi-5 bundle on an x86_64 machine over ssh without a word."""
    from edgecompress import profile
    from edgecompress.inventory import Device
    from edgecompress.summary import measured_on

    prof = profile.load("raspberry-pi-5")[0]
    results = {"compressed": {"device": {"arch": "x86_64", "runtime_version": "1.2"}, "host": "box",
                              "latency_ms": {"n": 10}}}
    note = measured_on(results, prof, Device(name="lab-pi", target="raspberry-pi-5"))["note"]
    assert "Its CPU is x86_64, not the arm64 a raspberry-pi-5 has" in note
    results["compressed"]["device"]["arch"] = "aarch64"
    assert "Its CPU" not in measured_on(results, prof, Device(name="lab-pi", target="raspberry-pi-5"))["note"]


def test_the_slower_note_names_the_runtime_and_offers_fp32_only_where_it_was_faster():
    from edgecompress import backends
    from edgecompress.summary import _slower_note

    lat = {"original": {"p50": 0.0182}, "compressed": {"p50": 0.0258}, "student_fp32": {"p50": 0.0333}}
    note = _slower_note(lat, {"where": "host"}, backends.get("onnxruntime").host_kernels)
    assert "LiteRT" not in note and "quantize.precision=fp32" not in note and "slower still" in note
    lat["student_fp32"]["p50"] = 0.012
    note = _slower_note(lat, {"where": "host"}, backends.get("litert").host_kernels)
    assert "LiteRT" in note and "quantize.precision=fp32" in note and "slower still" not in note


def test_round_speedups_that_disagree_with_the_headline_are_warned():
    from edgecompress.summary import _paired_note

    note = _paired_note(1.16, [0.76, 0.73, 1.16])
    assert "0.73x to 1.16x (median 0.76x)" in note and "2 of 3 rounds" in note
    assert _paired_note(3.45, [3.81, 2.45, 3.45]) == ""
    assert _paired_note(1.2, None) == "" and _paired_note(1.2, [1.2]) == ""


def test_an_original_right_only_by_chance_gets_a_warning_not_a_gain():
    from types import SimpleNamespace

    import numpy as np

    from edgecompress.records import Accuracy
    from edgecompress.summary import chance_warning

    compressed = SimpleNamespace(reference_original=[np.zeros((40, 4), np.float32)])
    parity = SimpleNamespace(original_agreement=0.0625)
    note = chance_warning(Accuracy("accuracy", teacher=0.10, student=0.15, student_fp32=0.12, samples=40), compressed,
                          parity)
    assert note and "10.00% of the 40 held-out samples, about chance for 4 classes" in note and "6.25%" in note
    assert chance_warning(Accuracy("accuracy", teacher=0.90, student=0.88, student_fp32=0.89, samples=40),
                          compressed, parity) is None


def test_an_embedder_mapping_every_sample_to_one_vector_is_warned_and_every_warning_is_kept():
    import numpy as np

    from edgecompress import verify
    from edgecompress.summary import neighbour_warning, same_vector_warning

    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 16))
    same = base + rng.normal(0, 0.01, (40, 16))  # an untrained net: one vector, a little noise
    report = verify.compare("x", [same], [same], ["emb"], None, original=[same[::-1].copy()], task="embedding")
    assert report.task_details["original_pairwise_cosine"] > 0.99
    assert "nearly the same vector for every held-out sample" in same_vector_warning(report)
    assert neighbour_warning(report)  # its neighbours moved too: both are said, not only the first
    spread = rng.normal(size=(40, 16))
    trained = verify.compare("x", [spread], [spread], ["emb"], None, original=[spread], task="embedding")
    assert same_vector_warning(trained) is None


def test_a_segmenter_that_lost_one_class_of_several_is_said_so_by_name():
    """A walkthrough's student never predicted 'rectangle' (one class of three) and read 93.58% pixel agreement,
    with only the generic 'learned too little' beside it."""
    import numpy as np

    from edgecompress import summary, verify

    original = np.zeros((4, 3, 8, 8), np.float32)
    original[:, 0] = 1.0
    original[:, 1, 2:4, 2:4] = 2.0  # class 1: 4 of 64 pixels per sample
    original[:, 2, 5:8, 5:8] = 2.0  # class 2: 9 of 64
    lost = original.copy()
    lost[:, 1] = 0.0  # the student gives class 1 to no pixel; background takes its place
    parity = verify.compare("deployed", [lost], [lost.copy()], ["masks"], None, original=[original],
                            task="segmentation")
    assert parity.task_details["classes_lost"] == [{"class": 1, "original_pixel_share": 4 / 64}]
    said = summary.collapse_warning(parity, ["background", "rectangle", "disc"])
    assert said.startswith("warning: the deployed model never gives class 1 'rectangle' (6.2% of the original's")
    assert "93.75%" in said and "distill longer" in said
    assert "class 1 (6.2%" in summary.collapse_warning(parity)  # no names: the index
    assert "with masks in the data (y) if you have them" in said  # none were given: the advice stands
    assert "with masks in the data" not in summary.collapse_warning(parity, masks=True)  # given: left out
    kept = verify.compare("deployed", [original], [original], ["masks"], None, original=[original], task="segmentation")
    assert kept.task_details["classes_lost"] == [] and summary.collapse_warning(kept) is None


def test_a_segmenter_whose_original_scores_no_better_than_one_class_on_the_masks_is_warned_of():
    """The README's random-weight segmenter scored mean IoU 0.0133 on the masks, and nothing said its original
    had learned nothing (all background would score 0.30 there)."""
    import numpy as np

    from edgecompress import summary, verify

    rng = np.random.default_rng(0)
    masks = np.zeros((6, 8, 8), np.int64)
    masks[:, 2:4, 2:4] = 1
    masks[:, 5:7, 5:7] = 2
    random_original = rng.normal(0, 1, (6, 3, 8, 8)).astype(np.float32)  # no segmenter
    parity = verify.compare("deployed", [random_original], [random_original], ["masks"], masks,
                            original=[random_original], task="segmentation")
    floor = parity.task_details["majority_class_labels"]
    assert floor["class"] == 0 and abs(floor["mean_iou"] - (56 / 64) / 3) < 1e-9  # background's IoU, the others 0
    said = summary.untrained_segmenter_warning(parity, ["background", "square", "disc"])
    assert said.startswith("warning: the original scores mean IoU ") and "class 0 'background'" in said
    assert "--weights" in said
    trained = np.zeros((6, 3, 8, 8), np.float32)
    for k in range(3):
        trained[:, k][masks == k] = 5.0  # the masks exactly
    kept = verify.compare("deployed", [trained], [trained], ["masks"], masks, original=[trained], task="segmentation")
    assert kept.task_details["original_mean_iou_labels"] == 1.0 and summary.untrained_segmenter_warning(kept) is None


def test_the_latency_note_names_the_cpu_and_its_int8_features(tmp_path):
    """A walkthrough: latencies said 'vm, x86_64' only, while the INT8 speed-up turns on the CPU (VNNI or not)."""
    from edgecompress.deploy import ec_state
    from edgecompress.summary import cpu_words

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n"
                                               "flags\t\t: fpu sse2 avx2 avx512bw\n\nprocessor\t: 1\n"
                                               "model name\t: other\nflags\t\t: avx512_vnni\n")
    cpu = ec_state.cpu(str(tmp_path))
    assert cpu == {"model": "Intel(R) Xeon(R) CPU @ 2.20GHz", "int8_features": ["avx2", "avx512bw"]}  # core 0's
    assert cpu_words(cpu) == ", Intel(R) Xeon(R) CPU @ 2.20GHz with avx2, avx512bw (no VNNI)"
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\n"
                                               "CPU part\t: 0xd0b\n\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n")
    assert cpu_words(ec_state.cpu(str(tmp_path))) == ", Raspberry Pi 5 Model B Rev 1.0 with asimddp"
    assert ec_state.cpu(str(tmp_path / "none")) is None and cpu_words(None) == ""
