"""benchmark_model's output (the formats in ../shared/reference/devices.md) parsed into the result
contract, and its command line built from a job."""
from __future__ import annotations

import shlex

import pytest

from edgecompress.runners import benchmark_model as bm

# The lines of devices.md, the second stat line's elided fields filled in.
DOC = """\
The input model file size (MB): 4.27635
Initialized session in 92.318ms.
count=50 first=33228 curr=33130 min=32687 max=33239 avg=33071.8 std=129
count=50 first=141002 curr=140870 min=139800 max=190120 avg=145528 std=13583 p5=140545 median=141253 p95=187533
Inference timings in us: Init: 5388, First inference: 101726, Warmup (avg): 92755.2, Inference (avg): 90865.9
Memory footprint delta from the start of the tool (MB): init=54.2852 overall=73.4102
Overall peak memory footprint (MB) via periodic monitoring: 93.2383
"""

# A newer build: INFO prefixes, a warm-up line then the timed line, whose avg the timings line repeats.
INFO = """\
INFO: STARTING!
INFO: Graph: [/data/local/tmp/edgecompress/job-abc/model.tflite]
INFO: The input model file size (MB): 4.27635
INFO: Initialized session in 92.318ms.
INFO: count=20 first=101726 curr=92010 min=91002 max=101726 avg=92755.2 std=2400
INFO: count=50 first=90911 curr=90870 min=90010 max=95512 avg=90865.9 std=812 p5=90100 median=90811 p95=92400
INFO: Inference timings in us: Init: 5388, First inference: 101726, Warmup (avg): 92755.2, Inference (avg): 90865.9
INFO: Memory footprint delta from the start of the tool (MB): init=54.2852 overall=73.4102
INFO: Overall peak memory footprint (MB) via periodic monitoring: 93.2383
"""

OLD = """\
Initialized session in 92.318ms.
count=12 first=35000 curr=33100 min=33000 max=35000 avg=33300 std=500
count=50 first=33228 curr=33130 min=32687 max=33239 avg=33071.8 std=129
Inference timings in us: Init: 5388, First inference: 35000, Warmup (avg): 33300, Inference (avg): 33071.8
"""

ALL_SAME = """\
INFO: Initialized session in 1.5ms.
INFO: count=3 curr=250(all same)
INFO: count=7 curr=200(all same)
INFO: Inference timings in us: Init: 1500, First inference: 400, Warmup (avg): 250, Inference (avg): 200
"""


def test_doc_format_timed_line_matched_by_the_timings_line():
    """In devices.md's example the timings' Inference (avg) matches neither stat line: the last
    stat line is the timed one; times come from the timings line, memory from its lines."""
    out = bm.summarize(DOC)
    lat = out["latency_ms"]
    assert lat["p50"] == pytest.approx(141.253) and lat["mean"] == pytest.approx(145.528)
    assert lat["p5"] == pytest.approx(140.545) and lat["p95"] == pytest.approx(187.533)
    assert lat["p90"] is None and lat["p99"] is None
    assert (lat["min"], lat["max"], lat["std"], lat["n"]) == (pytest.approx(139.8), pytest.approx(190.12),
                                                               pytest.approx(13.583), 50)
    assert lat["method"] == "benchmark_model (us)"
    assert out["load_ms"] == pytest.approx(5.388) and out["first_run_ms"] == pytest.approx(101.726)
    assert out["warmup_done"] == {"runs": 50, "avg_ms": pytest.approx(92.7552)}
    assert out["peak_rss_mb"] == pytest.approx(93.2383)
    assert out["benchmark_model"]["memory_mb"] == {"init_delta_mb": pytest.approx(54.2852),
                                                   "overall_delta_mb": pytest.approx(73.4102),
                                                   "peak_mb": pytest.approx(93.2383)}
    assert out["benchmark_model"]["model_size_mb"] == pytest.approx(4.27635)
    assert out["benchmark_model"]["session_init_ms"] == pytest.approx(92.318)
    assert out["warnings"] == []


def test_info_prefix_with_percentiles():
    out = bm.summarize(INFO)
    lat = out["latency_ms"]
    assert lat["p50"] == pytest.approx(90.811) and lat["mean"] == pytest.approx(90.8659) and lat["n"] == 50
    assert out["warmup_done"]["runs"] == 20
    assert out["timed_window_s"] == pytest.approx(50 * 90865.9 / 1e6)
    assert out["peak_rss_mb"] == pytest.approx(93.2383) and out["warnings"] == []


def test_no_percentiles_uses_the_mean_and_says_so():
    out = bm.summarize(OLD)
    lat = out["latency_ms"]
    assert lat["p50"] == pytest.approx(33.0718) and lat["n"] == 50 and "p5" not in lat
    assert out["warmup_done"]["runs"] == 12 and out["peak_rss_mb"] is None
    assert any("no median" in w and "p50 is the mean" in w for w in out["warnings"])


def test_all_same_lines():
    out = bm.summarize(ALL_SAME)
    lat = out["latency_ms"]
    assert (lat["p50"], lat["mean"], lat["min"], lat["max"], lat["std"], lat["n"]) == (0.2, 0.2, 0.2, 0.2, 0.0, 7)
    assert out["warmup_done"] == {"runs": 3, "avg_ms": 0.25}
    assert out["first_run_ms"] == pytest.approx(0.4) and out["warnings"] == []


def test_stat_line_alone_and_the_warmup_line_recognised_by_its_average():
    only = bm.summarize("count=5 first=10 curr=11 min=9 max=12 avg=10.5 std=1\n")
    assert only["latency_ms"]["n"] == 5 and only["warmup_done"]["runs"] is None and only["load_ms"] is None
    # timings line names the first stat line as the timed one (order reversed)
    text = ("count=9 first=1 curr=1 min=1 max=1 avg=100 std=0\ncount=4 first=1 curr=1 min=1 max=1 avg=300 std=0\n"
            "Inference timings in us: Init: 1, First inference: 1, Warmup (avg): 300, Inference (avg): 100\n")
    assert bm.summarize(text)["latency_ms"]["n"] == 9


def test_no_stat_line_is_an_error_quoting_the_output():
    text = "INFO: Loaded model x\nERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'\n"
    with pytest.raises(bm.OutputError, match="CONV_2D"):
        bm.summarize(text)
    assert bm.parse(text)["errors"] == ["Didn't find op for builtin opcode 'CONV_2D' version '6'"]


def test_arguments_and_quoted_command():
    opts = bm.options({"threads": 4, "delegate": "gpu", "cpu_mask": "0xC0"})
    args = bm.arguments("/data/local/tmp/edgecompress/job-1/model.tflite", opts,
                        {"runs": 5, "seconds": 0.5}, {"count": 50, "seconds": 100})
    assert args == ["--graph=/data/local/tmp/edgecompress/job-1/model.tflite", "--num_threads=4", "--warmup_runs=5",
                    "--warmup_min_secs=0.5", "--num_runs=50", "--min_secs=100", "--max_secs=200", "--use_gpu=true",
                    "--report_peak_memory_footprint=true"]
    line = bm.command("/data/local/tmp/x y/benchmark_model", args, opts["cpu_mask"])
    assert shlex.split(line)[:3] == ["taskset", "c0", "/data/local/tmp/x y/benchmark_model"]
    cpu = bm.arguments("m.tflite", bm.options({"delegate": "none"}), {}, {})
    assert "--use_xnnpack=false" in cpu and not any(a.startswith("--num_threads") for a in cpu)
    assert bm.options({})["cpu_mask"] == "f0" and bm.options({})["delegate"] == "xnnpack"


@pytest.mark.parametrize("bad", [{"threads": 0}, {"delegate": "nnapi"}, {"cpu_mask": "zz"}, {"cpu_mask": "0"},
                                 {"providers": ["CPU"]}])
def test_bad_options_name_the_key(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        bm.options(bad)
