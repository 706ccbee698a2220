"""report.py: the before/after table cell for cell, and the bundle README's header lines (the
walkthrough read '(tensorrt None)' and 'model.onnx (fp16)' for the FP32 ONNX a Jetson builds its FP16
engine from)."""
from edgecompress.backends import BACKENDS
from edgecompress.report import _runtime_text


def _model_precision(m: dict) -> str:
    return BACKENDS.get(m["runtime"]["name"]).precision_text(m)


def test_a_tensorrt_bundle_says_its_onnx_is_fp32_and_what_the_device_builds():
    m = {"runtime": {"name": "tensorrt", "version": None}, "model": {"file": "model.onnx"},
         "compression": {"quantization": {"precision": "fp16"}},
         "engine": {"build_settings": {"onnx": "model.onnx"}}}
    assert _model_precision(m) == "FP32 ONNX; the device builds an FP16 TensorRT engine from `model.onnx`"
    m["compression"]["quantization"]["precision"] = "int8"
    m["engine"]["build_settings"]["onnx"] = "model_qdq.onnx"
    assert _model_precision(m) == "FP32 ONNX; the device builds an INT8 TensorRT engine from `model_qdq.onnx`"
    assert _runtime_text(m["runtime"]) == "tensorrt, version not known until it runs on the device"
    assert "None" not in _runtime_text(m["runtime"])


def test_other_runtimes_keep_their_file_precision_and_version():
    m = {"runtime": {"name": "onnxruntime", "version": "1.32.0"}, "model": {"file": "model.onnx"},
         "compression": {"quantization": {"precision": "int8"}}}
    assert _model_precision(m) == "int8" and _runtime_text(m["runtime"]) == "onnxruntime 1.32.0"


def _summary(**after) -> dict:
    before = {"bytes": 2_000_000, "deflated_bytes": 1_500_000, "params": 500_000, "macs": 40_000_000,
              "accuracy": 0.9, "p50_ms": 4.0}
    return {"before": before, "after": dict({"bytes": 50_000, "deflated_bytes": 300_000, "params": 25_000,
                                             "macs": 10_000_000, "accuracy": 0.885, "p50_ms": 1.6}, **after),
            "accuracy_metric": "accuracy", "measured_on_text": "Measured on the build host.", "accuracy_note": None}


def test_the_table_rows_give_each_figure_and_its_change_in_words():
    from edgecompress.report import table, table_rows

    assert table_rows(_summary()) == [
        ("", "original", "compressed", "change"),
        ("model file", "2.00 MB", "50.0 kB", "40.00x smaller"),  # kB below 100 kB
        ("model zipped", "1.50 MB", "0.30 MB", "5.00x smaller"),
        ("params", "0.50 M", "25.0 k", "20.00x fewer"),
        ("MACs", "40.00 M", "10.00 M", "4.00x fewer"),
        ("accuracy", "90.00 %", "88.50 %", "-1.50 points"),
        ("p50 latency", "4.000 ms", "1.600 ms", "2.50x faster")]
    text = table(_summary()).splitlines()
    assert text[0].split() == ["original", "compressed", "change"] and set(text[1]) == {"-", " "}
    assert text[-1] == "latency: Measured on the build host."


def test_a_change_the_wrong_way_is_said_as_such_and_a_missing_figure_is_a_dash():
    from edgecompress.report import table, table_rows

    rows = {r[0]: r for r in table_rows(_summary(p50_ms=8.0, bytes=3_000_000, params=None, accuracy=None))}
    assert rows["p50 latency"][3] == "2.00x slower" and rows["model file"][3] == "1.50x larger"
    assert rows["params"][2:] == ("-", "-") and rows["accuracy"][2:] == ("-", "-")
    agree = dict(_summary(), accuracy_metric="agreement", accuracy_note="warning: agreement fell")
    assert table_rows(agree)[5][0] == "agreement w/ original"
    assert table(agree).splitlines()[-1] == "warning: agreement fell"


def test_r2_and_cosine_are_numbers_in_the_table_not_percentages():
    """A walkthrough's keypoint model read 'R^2  100.00 %  -9.01 %  -109.01 points'."""
    from edgecompress.report import table_rows

    side = {"bytes": 10, "params": None, "macs": None, "p50_ms": 1.0}
    s = {"before": dict(side, accuracy=1.0), "after": dict(side, accuracy=-0.0901), "accuracy_metric": "r2"}
    row = next(r for r in table_rows(s) if r[0] == "R^2 w/ original")  # a task's figure is against the original
    assert row[1:] == ("1.0000", "-0.0901", "-1.0901")
    s["accuracy_metric"] = "pixel_agreement"
    row = next(r for r in table_rows(s) if r[0] == "pixel agreement w/ original")
    assert row[1:] == ("100.00 %", "-9.01 %", "-109.01 points")


def test_a_segmenter_with_masks_shows_its_mean_iou_on_them_beside_the_agreement():
    """The pixel-agreement row compares with the original (which reads 100%); a walkthrough's student that lost
    a class kept 93.58% there while its IoU on the masks fell 0.988 -> 0.612: the table shows both."""
    from edgecompress import summary, verify
    from edgecompress.report import table_rows

    import numpy as np

    original = np.zeros((4, 3, 8, 8), np.float32)
    original[:, 0] = 1.0
    original[:, 1, 2:4, 2:4] = 2.0
    masks = original.argmax(1)
    lost = original.copy()
    lost[:, 1] = 0.0
    parity = verify.compare("deployed", [lost], [lost.copy()], ["masks"], masks, original=[original],
                            task="segmentation")
    iou = summary._mask_iou(parity)
    assert iou["original"] == 1.0 and iou["deployed"] < 0.6  # class 1 gone: its IoU 0, background's below 1
    rows = {r[0]: r for r in table_rows(dict(_summary(), accuracy_metric="pixel_agreement", mask_iou=iou))}
    assert rows["mean IoU on the masks"][1:] == ("1.0000", f"{iou['deployed']:.4f}", f"{iou['deployed'] - 1:+.4f}")
    assert list(rows).index("mean IoU on the masks") == len(rows) - 2  # just above the latency
    assert summary._mask_iou(verify.compare("d", [lost], [lost], ["masks"], None, original=[original],
                                            task="segmentation")) is None  # no masks: no row
