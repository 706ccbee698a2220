"""ec_trtexec: trtexec's output as ../shared/reference/devices.md gives it (and variants built from it),
and the command lines ec_trt runs."""
import pytest

import ec_trtexec

# The summary exactly as devices.md prints it (its GPU Compute Time values are elided there as "...").
DEVICES_MD_SUMMARY = """\
[I] === Performance summary ===
[I] Throughput: 44.7064 qps
[I] Latency: min = 22.0549 ms, max = 22.9698 ms, mean = 22.264 ms, median = 22.2416 ms, percentile(99%) = 22.8967 ms
[I] GPU Compute Time: min = ..., max = ..., mean = ..., median = ..., percentile(90%) = ..., percentile(95%) = ..., percentile(99%) = ...
&&&& PASSED TensorRT.trtexec
"""

NEWER = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # /usr/src/tensorrt/bin/trtexec --loadEngine=m.engine
[06/18/2025-11:25:24] [I] === Device Information ===
[06/18/2025-11:25:24] [I] Selected Device: Orin
[06/18/2025-11:25:24] [I] Compute Capability: 8.7
[06/18/2025-11:25:24] [I] TensorRT version: 10.3.0
[06/18/2025-11:25:30] [I] Timing trace has 135 queries over 3.0213 s
[06/18/2025-11:25:30] [I] === Performance summary ===
[06/18/2025-11:25:30] [I] Throughput: 44.7064 qps
[06/18/2025-11:25:30] [I] Latency: min = 22.0549 ms, max = 22.9698 ms, mean = 22.264 ms, median = 22.2416 ms, percentile(90%) = 22.5 ms, percentile(95%) = 22.7 ms, percentile(99%) = 22.8967 ms
[06/18/2025-11:25:30] [I] Enqueue Time: min = 0.5 ms, max = 1.5 ms, mean = 0.6 ms, median = 0.55 ms, percentile(90%) = 0.7 ms, percentile(95%) = 0.8 ms, percentile(99%) = 1.2 ms
[06/18/2025-11:25:30] [I] H2D Latency: min = 0.07 ms, max = 0.1 ms, mean = 0.08 ms, median = 0.08 ms, percentile(90%) = 0.09 ms, percentile(95%) = 0.09 ms, percentile(99%) = 0.1 ms
[06/18/2025-11:25:30] [I] GPU Compute Time: min = 21.9 ms, max = 22.8 ms, mean = 22.1 ms, median = 22.08 ms, percentile(90%) = 22.4 ms, percentile(95%) = 22.6 ms, percentile(99%) = 22.75 ms
[06/18/2025-11:25:30] [I] D2H Latency: min = 0.01 ms, max = 0.02 ms, mean = 0.01 ms, median = 0.01 ms, percentile(90%) = 0.02 ms, percentile(95%) = 0.02 ms, percentile(99%) = 0.02 ms
[06/18/2025-11:25:30] [I] Total Host Walltime: 3.0213 s
[06/18/2025-11:25:30] [I] Total GPU Compute Time: 2.98 s
[06/18/2025-11:25:30] [I] Explanations of the performance metrics are printed in the verbose logs.
[06/18/2025-11:25:30] [I] === Explanations of the performance metrics ===
[06/18/2025-11:25:30] [I] Throughput: the observed throughput computed by dividing the number of queries by the Total Host Walltime.
[06/18/2025-11:25:30] [I] Latency: the summation of H2D Latency, GPU Compute Time, and D2H Latency. min = 1 ms is not a stat
&&&& PASSED TensorRT.trtexec [TensorRT v100300] # /usr/src/tensorrt/bin/trtexec --loadEngine=m.engine
"""


def test_the_devices_md_summary_lines_parse():
    found = ec_trtexec.parse(DEVICES_MD_SUMMARY)
    assert found["status"] == "PASSED"
    assert found["throughput_qps"] == 44.7064
    assert found["stats"]["latency_ms"] == {"min": 22.0549, "max": 22.9698, "mean": 22.264, "median": 22.2416,
                                            "p99": 22.8967}
    assert "gpu_compute_ms" not in found["stats"]  # only "..." there: nothing is invented


def test_the_same_lines_without_the_prefix_and_with_timestamps_parse_alike():
    bare = DEVICES_MD_SUMMARY.replace("[I] ", "")
    stamped = DEVICES_MD_SUMMARY.replace("[I] ", "[06/18/2025-11:25:24] [I] ")
    expected = ec_trtexec.parse(DEVICES_MD_SUMMARY)
    assert ec_trtexec.parse(bare) == expected == ec_trtexec.parse(stamped)


def test_a_newer_summary_gives_every_percentile_stat_line_trace_and_device():
    found = ec_trtexec.parse(NEWER)
    assert found["status"] == "PASSED" and found["tensorrt_version"] == "10.3.0"
    assert (found["device"], found["compute_capability"]) == ("Orin", "8.7")
    assert (found["queries"], found["trace_s"], found["walltime_s"]) == (135, 3.0213, 3.0213)
    assert found["stats"]["latency_ms"]["p90"] == 22.5 and found["stats"]["latency_ms"]["p95"] == 22.7
    assert found["stats"]["gpu_compute_ms"] == {"min": 21.9, "max": 22.8, "mean": 22.1, "median": 22.08,
                                                "p90": 22.4, "p95": 22.6, "p99": 22.75}
    assert set(found["stats"]) == {"latency_ms", "enqueue_ms", "h2d_ms", "gpu_compute_ms", "d2h_ms"}
    # the explanations after the summary reuse the names in prose and must not overwrite the numbers
    assert found["throughput_qps"] == 44.7064 and found["stats"]["latency_ms"]["min"] == 22.0549


def test_units_other_than_ms_are_converted():
    text = DEVICES_MD_SUMMARY.replace("min = 22.0549 ms", "min = 22054.9 us").replace("max = 22.9698 ms",
                                                                                       "max = 0.0229698 s")
    latency = ec_trtexec.parse(text)["stats"]["latency_ms"]
    assert latency["min"] == pytest.approx(22.0549) and latency["max"] == pytest.approx(22.9698)


def test_a_failed_run_reports_failed_and_its_error_lines():
    text = ("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec --onnx=m.onnx\n"
            "[06/18/2025-11:25:24] [E] [TRT] ModelImporter.cpp:771: ERROR: input: in_channels mismatch\n"
            "[06/18/2025-11:25:24] [E] Failed to parse onnx file\n"
            "&&&& FAILED TensorRT.trtexec [TensorRT v8601] # trtexec --onnx=m.onnx\n")
    found = ec_trtexec.parse(text)
    assert found["status"] == "FAILED" and found["tensorrt_version"] == "8.6.1"
    assert found["errors"][-1].endswith("[E] Failed to parse onnx file") and len(found["errors"]) == 2
    assert found["throughput_qps"] is None and found["stats"] == {}


@pytest.mark.parametrize("banner, version", [
    ("v8601", "8.6.1"), ("v8205", "8.2.5"), ("v8502", "8.5.2"), ("v100300", "10.3.0"), ("v101602", "10.16.2"),
    ("v11.1.0.106", "11.1.0.106"),
])
def test_the_banner_version_is_decoded(banner, version):
    text = "&&&& RUNNING TensorRT.trtexec [TensorRT %s] [b17] # trtexec --help\n=== Model Options ===\n" % banner
    assert ec_trtexec.parse(text)["tensorrt_version"] == version
    assert ec_trtexec.major(version) == int(version.split(".")[0])


@pytest.mark.parametrize("line, version", [("TensorRT version: 8.2.1", "8.2.1"), ("TensorRT version: 8001", "8.0.1"),
                                           ("TensorRT version: 10.3.0", "10.3.0")])
def test_the_device_information_version_forms(line, version):
    assert ec_trtexec.parse("[04/14/2026-01:36:48] [I] " + line)["tensorrt_version"] == version


def test_latency_block_maps_trtexec_stats_to_the_result_shape():
    stat = ec_trtexec.parse(DEVICES_MD_SUMMARY)["stats"]["latency_ms"]
    block = ec_trtexec.latency_block(stat, None, "trtexec")
    assert block == {"p50": 22.2416, "p90": None, "p95": None, "p99": 22.8967, "mean": 22.264, "std": None,
                     "min": 22.0549, "max": 22.9698, "n": None, "method": "trtexec"}
    with pytest.raises(ec_trtexec.TrtexecError, match="no median"):
        ec_trtexec.latency_block({"min": 1.0}, 3, "trtexec")


@pytest.mark.parametrize("major, flags, workspace, expected", [
    (8, ["FP16"], 256, ["--fp16", "--workspace=256"]),
    (10, ["INT8", "SPARSE_WEIGHTS"], 1024, ["--int8", "--sparsity=enable", "--memPoolSize=workspace:1024"]),
    (11, [], None, []),
    (11, ["SPARSE_WEIGHTS"], 64, ["--sparsity=enable", "--memPoolSize=workspace:64"]),
])
def test_build_command_is_an_argument_list_per_version(major, flags, workspace, expected):
    argv = ec_trtexec.build_command("/usr/src/tensorrt/bin/trtexec", "/job/m.onnx", "/cache/k.engine", flags,
                                    workspace, major)
    assert argv == (["/usr/src/tensorrt/bin/trtexec", "--onnx=/job/m.onnx", "--saveEngine=/cache/k.engine"]
                    + expected + ["--warmUp=0", "--iterations=1", "--duration=0"])


def test_build_command_passes_a_calibration_cache_and_refuses_unknown_flags():
    argv = ec_trtexec.build_command("trtexec", "m.onnx", "k.engine", ["INT8"], calib_cache="/c/k.calib")
    assert "--calib=/c/k.calib" in argv and "--int8" in argv
    with pytest.raises(ValueError, match="BF16"):
        ec_trtexec.build_command("trtexec", "m.onnx", "k.engine", ["BF16"])


def test_timing_command_uses_the_measuring_rules_of_devices_md():
    assert ec_trtexec.timing_command("trtexec", "/c/k.engine") == [
        "trtexec", "--loadEngine=/c/k.engine", "--warmUp=200", "--iterations=10", "--duration=3"]


def test_find_prefers_the_given_path_and_names_a_bad_one(tmp_path, monkeypatch):
    tool = tmp_path / "trtexec"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert ec_trtexec.find(str(tool)) == str(tool)
    with pytest.raises(ec_trtexec.TrtexecError, match="is not an executable file"):
        ec_trtexec.find(str(tmp_path / "absent"))
    monkeypatch.setattr(ec_trtexec, "DEFAULT_PATH", str(tmp_path / "no-such-trtexec"))
    assert ec_trtexec.find(search_path=str(tmp_path)) == str(tool)
    with pytest.raises(ec_trtexec.TrtexecError, match="no trtexec at"):
        ec_trtexec.find(search_path=str(tmp_path / "empty"))


def test_float_layers_become_layer_precisions_and_output_types_with_obeyed_constraints():
    argv = ec_trtexec.build_command("trtexec", "m.onnx", "k.engine", ["OBEY_PRECISION_CONSTRAINTS", "INT8"],
                                    calib_cache="k.calib", float_layers=["/head/box/Conv", "/Concat"])
    assert "--precisionConstraints=obey" in argv and "--int8" in argv
    assert "--layerPrecisions=/head/box/Conv:fp32,/Concat:fp32" in argv
    assert "--layerOutputTypes=/head/box/Conv:fp32,/Concat:fp32" in argv
    assert not any(a.startswith("--layer") for a in ec_trtexec.build_command("trtexec", "m.onnx", "k.engine", ["INT8"]))
