"""report.html's loss curve (the walkthrough: a linear axis squashed everything after the first points
into a flat line, so the page could not show whether the loss was still falling)."""
import re

from edgecompress.report_html import loss_svg


def _ys(svg: str) -> list:
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    return [float(p.split(",")[1]) for p in points]


def test_a_loss_falling_a_hundredfold_is_drawn_on_a_log_scale_so_the_tail_is_visible():
    curve = [[1, 10 * i, 100.0 / (i + 1) ** 2] for i in range(10)]  # 100 -> 1
    svg = loss_svg(curve)
    ys = _ys(svg)
    assert "log scale" in svg
    # the last three points (losses 2.0, 1.6, 1.2, 1.0 ...) still fall visibly: more than 10 px apart in all
    assert ys[-1] - ys[-4] > 10, ys
    assert len(re.findall(r"<text x=\"0\"", svg)) == 4  # four labelled ticks, not only min and max


def test_a_flat_or_non_positive_loss_keeps_a_linear_axis():
    svg = loss_svg([[1, s, v] for s, v in [(1, 0.5), (2, 0.4), (3, 0.45), (4, 0.3)]])
    assert "log scale" not in svg and "last 0.3" in svg
    svg = loss_svg([[1, 1, -1.0], [1, 2, 3.0]])  # a loss that can go negative (a feature loss, say)
    assert "log scale" not in svg


def test_report_page_escapes_names_and_skips_what_was_not_measured():
    from edgecompress import report_html

    lat = {"p50": 1.0, "p90": 1.2, "p99": 2.0, "mean": 1.1, "std": 0.1, "min": 0.9, "max": 9.0, "n": 10}
    m = {"name": "<b>net</b>", "target": "host-cpu", "runtime": {"name": "onnxruntime", "version": "1"},
         "model": {"file": "model.onnx"}, "provenance": {"edgecompress_version": "0", "torch_version": "2", "data": "d"},
         "compression": {"pruning": {"structure": "none"}, "distillation": {"steps": 0, "loss_curve": []},
                         "quantization": {"precision": "fp32"}},
         "metrics": {"measured_on": {"note": "here"}, "latency_ms": {"original": lat, "compressed": lat},
                     "accuracy": {"metric": "agreement", "teacher": 1.0, "student": 0.9, "samples": 5},
                     "energy": {"original": None, "compressed": None}, "energy_reason": "no sensor"}}
    s = {"before": {"bytes": 10, "params": None, "macs": None, "accuracy": 1.0, "p50_ms": 1.0},
         "after": {"bytes": 5, "params": None, "macs": None, "accuracy": 0.9, "p50_ms": 1.0},
         "accuracy_metric": "agreement", "measured_on_text": "here.\nwarning: busy"}
    page = report_html.page(m, s)
    assert "<b>net</b>" not in page and "&lt;b&gt;net&lt;/b&gt;" in page
    assert page.count("<svg") == 2, "latency and trade-off; no loss curve without distillation"
    assert "<h2>Rounds</h2>" not in page and "class=warn>warning: busy" in page
    # figures a tool or a diverged run can give: 0 ms, a NaN loss; the page is still drawn, without them
    zero = dict(lat, p50=0.0, min=0.0, p90=0.0, p99=0.0)
    m["metrics"]["latency_ms"] = {"original": lat, "compressed": zero}
    m["compression"]["distillation"]["loss_curve"] = [[1, 1, 2.0], [1, 2, float("nan")], [1, 3, 1.0]]
    page = report_html.page(m, s)
    assert "nan" not in page.lower() and page.count("<svg") == 2  # no trade-off with one placeable point


def test_the_trade_off_places_each_model_by_its_latency_and_figure_and_names_the_unplaced():
    from edgecompress import report_html

    def lat(p50):
        return {"p50": p50, "n": 10}
    m = {"metrics": {"accuracy": {"metric": "accuracy", "teacher": 0.99, "student_fp32": 0.985, "student": 0.98},
                     "latency_ms": {"original": lat(4.0), "student_fp32": lat(2.0), "compressed": lat(1.0)}}}
    html = report_html._trade_off(m)
    circles = [tuple(map(float, c)) for c in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', html)]
    # figures as the table prints them: accuracy in %, R^2 as a number
    assert len(circles) == 3 and "original 99.00 %" in html and "deployed 98.00 %" in html
    assert "0.98<" not in html and ">99.0 %<" in html and ">98.0 %<" in html  # the y axis' ends too
    (ox, oy), (sx, sy), (dx, dy) = circles
    assert ox > sx > dx  # slower to the right, on a log scale: 4 ms, 2 ms, 1 ms equally spaced
    assert abs((ox - sx) - (sx - dx)) < 0.5
    assert oy < sy < dy  # higher accuracy higher up
    seg = dict(m, metrics=dict(m["metrics"], accuracy=dict(m["metrics"]["accuracy"], metric="pixel_agreement")))
    assert "pixel_agreement" not in report_html._trade_off(seg) and "pixel agreement" in report_html._trade_off(seg)
    r2 = dict(m, metrics=dict(m["metrics"], accuracy={"metric": "r2", "teacher": 0.999, "student_fp32": 0.998,
                                                       "student": 0.9987}))
    assert "deployed 0.9987<" in report_html._trade_off(r2) and "%" not in report_html.trade_off_svg(
        [("original", "original", 0.999, 4.0), ("deployed", "compressed", 0.9987, 1.0)], "r2")
    del m["metrics"]["latency_ms"]["student_fp32"]  # a runtime that times only two models
    html = report_html._trade_off(m)
    assert html.count("<circle") == 2 and "not placed (no figure or no timing here): FP32 student" in html


def test_the_users_metric_and_box_parity_have_a_row_per_figure_for_all_three_models():
    from edgecompress import report_html

    user = {"metric": {"original": {"map50": 0.81}, "student_fp32": {"map50": 0.8}, "deployed": {"map50": 0.797}},
            "boxes": {"student_fp32": {"recall": 0.99, "precision": 0.98, "class_agreement": 1.0, "mean_iou": 0.9},
                      "deployed": {"recall": 0.97, "precision": 0.96, "class_agreement": 1.0, "mean_iou": 0.88}}}
    html = report_html._user_figures({"metrics": {"user_figures": user}})
    assert "<td>map50 (--metric)</td><td>0.81</td><td>0.8</td><td>0.797</td>" in html
    assert "<td>boxes vs original: recall</td><td>1</td><td>0.99</td><td>0.97</td>" in html
    assert report_html._user_figures({"metrics": {"user_figures": None}}) == ""


def test_an_r2_figure_is_a_number_and_the_qat_record_is_rows_in_words():
    """A walkthrough's page read 'R^2 ... original 100.00 %, deployed 60.68 %' beside a table saying 0.6068, and
    dumped quantize.method's record as a Python dict."""
    from edgecompress import report_html

    lat = {"p50": 1.0, "p90": 1.2, "p99": 2.0, "mean": 1.1, "std": 0.1, "min": 0.9, "max": 9.0, "n": 10}
    qat = {"setting": "auto", "method": "qat", "reason": "PTQ missed the tolerance", "steps": 30, "seconds": 2.5,
           "lr": 1e-4, "metric": "top1_agreement", "ptq_figure": 0.93, "qat_simulated": 0.99, "scheme": "", "carried": "",
           "ranges": 7}
    m = {"name": "net", "target": "host-cpu", "runtime": {"name": "onnxruntime", "version": "1"},
         "model": {"file": "model.onnx"}, "provenance": {"edgecompress_version": "0", "torch_version": "2", "data": "d"},
         "compression": {"pruning": {"structure": "none"}, "distillation": {"steps": 0, "loss_curve": []},
                         "quantization": {"precision": "int8", "method": "qat", "qat": qat}},
         "metrics": {"measured_on": {"note": "here"}, "latency_ms": {"original": lat, "compressed": lat},
                     "accuracy": {"metric": "r2", "teacher": 1.0, "student_fp32": 0.6077, "student": 0.6068,
                                  "samples": 5},
                     "energy": {"original": None, "compressed": None}, "energy_reason": "no sensor"}}
    s = {"before": {"bytes": 10, "params": None, "macs": None, "accuracy": 1.0, "p50_ms": 1.0},
         "after": {"bytes": 5, "params": None, "macs": None, "accuracy": 0.6068, "p50_ms": 1.0},
         "accuracy_metric": "r2", "measured_on_text": "here"}
    page = report_html.page(m, s)
    assert "deployed 0.6068" in page and "60.68" not in page
    assert "{'setting'" not in page and "<td>QAT steps</td><td>30</td>" in page and "99.00 %" in page


def test_the_checks_table_shows_each_checks_own_figure_and_an_accuracy_column_only_where_there_are_labels():
    """A segmenter's checks read '-' under 'top-1 agreement' and 'accuracy': the figure it was judged by
    (pixel agreement) was nowhere in the table."""
    from edgecompress import report_html

    out = [{"name": "masks", "max_abs_diff": 0.25, "mean_abs_diff": 0.01}]
    seg = {"metrics": {"accuracy": {"metric": "pixel_agreement", "teacher": 1.0, "student": 0.97, "samples": 8},
                       "parity": [{"what": "INT8 vs FP32 student", "samples": 8, "outputs": out,
                                   "task_metric": "pixel_agreement", "task_agreement": 0.9712,
                                   "tolerance": {"min_pixel_agreement": 0.9}},
                                  {"what": "ONNX vs PyTorch", "samples": 8, "outputs": out,
                                   "tolerance": {"max_abs_diff": 0.001}}]}}
    html = report_html._checks(seg)
    assert "pixel agreement 97.12 %" in html and "top-1" not in html
    assert "<th>accuracy</th>" not in html  # no labels: no column of dashes
    cls = {"metrics": {"accuracy": {"metric": "accuracy", "teacher": 0.9, "student": 0.88, "samples": 8},
                       "parity": [{"what": "INT8 vs FP32 student", "samples": 8, "outputs": out,
                                   "top1_agreement": 0.975, "accuracy": 0.875}]}}
    html = report_html._checks(cls)
    assert "top-1 agreement 97.50 %" in html and "<th>accuracy</th>" in html and "87.50 %" in html
