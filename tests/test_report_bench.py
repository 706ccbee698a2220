"""report_bench.py: the texts bench, verify and devices check print, from fixed results, line by line."""
from types import SimpleNamespace

from edgecompress.report_bench import bench_table, devices_text, verify_text

HOST = {"device_name": "this host", "device": {"arch": "x86_64", "runtime": "onnxruntime", "runtime_version": "1.32.0"},
        "latency_ms": {"p50": 0.512, "p90": 0.6, "p99": 0.75, "mean": 0.5234, "n": 120}, "load_ms": 12.34,
        "stability": {"spread_pct": 3.21}, "energy": None, "energy_reason": "no power source found",
        "inputs": [{"name": "input", "shape": [1, 3, 8, 8], "dtype": "float32"}],
        "runtime_options": {"threads": 2}, "rounds": {"p50_ms": [0.5, 0.512, None], "chosen": 2, "spread_pct": 4.4},
        "warnings": ["timed window 0.20 s is short"]}
# a tool that gives no p90/p99 (trtexec, benchmark_model), and energy measured
PI = {"device_name": "pi", "device": {"arch": "arm64", "runtime": "onnxruntime", "runtime_version": "1.20.1"},
      "latency_ms": {"p50": 3.0, "p90": None, "p99": None, "mean": 3.25, "n": 5}, "load_ms": 40.0,
      "energy": {"mj_per_inference_total": 1.23456},
      "inputs": [{"name": "input", "shape": [1, 3, 8, 8], "dtype": "float32"}], "runtime_options": {"threads": 1}}
GONE = {"device_name": "gone", "error": "connection refused", "exit_code": 4}


def test_bench_table_rows_and_notes():
    assert bench_table([HOST, PI, GONE]).split("\n") == [
        "device     arch    runtime             p50 ms  p90 ms  p99 ms  mean ms  n    p50 drift  load ms  mJ/inference",
        "---------  ------  ------------------  ------  ------  ------  -------  ---  ---------  -------  ------------",
        "this host  x86_64  onnxruntime 1.32.0  0.512   0.600   0.750   0.523    120  3.2%       12.3     n/a",
        "pi         arm64   onnxruntime 1.20.1  3.000   -       -       3.250    5    -          40.0     1.235",
        "gone       -       -                   failed",
        "timed on this host: input 1x3x8x8 float32, 2 threads",
        "energy on this host: not measured: no power source found",
        "rounds on this host: p50 0.500, 0.512, - ms; the row is round 2, the median; spread 4%",
        "warning on this host: timed window 0.20 s is short",
        "timed on pi: input 1x3x8x8 float32, 1 thread",
        "p50 drift: how far the p50s of consecutive parts (>= 0.5 s each) of the timed window spread; above 10% "
        "the numbers will not repeat to better than that",
    ]


def test_bench_table_without_drift_has_no_drift_legend():
    assert bench_table([PI]).split("\n")[2:] == [
        "pi      arm64  onnxruntime 1.20.1  3.000   -       -       3.250    5  -          40.0     1.235",
        "timed on pi: input 1x3x8x8 float32, 1 thread"]


VERIFY = {"bundle": "dist/net-arm", "files_checked": 9,
          "rerun": {"samples": 32, "outputs": [{"max_abs_diff": 0.0123}], "top1_agreement": 1.0},
          "reference": {"top1_agreement": 0.96875}, "reference_is": "PyTorch", "original": {"top1_agreement": 0.9375},
          "build_check": {"samples": 400, "top1_agreement": 0.985, "min_top1_agreement": 0.9}}


def test_verify_text_of_a_pytorch_bundle():
    assert verify_text(VERIFY).split("\n") == [
        "dist/net-arm: 9 files match their checksums",
        "  re-run on 32 stored samples: max |diff| 0.012, top-1 agreement 100.00% with the build-time outputs",
        "  top-1 agreement with PyTorch: 96.88% (the FP32 student the model was made from)",
        "  top-1 agreement with the original model: 93.75%",
        "  at build time, over 400 held-out samples: 98.50% with PyTorch (tolerance 90.00%); the 32 stored samples "
        "here are a few of those, so one sample moves this figure by 3.1%",
        "OK"]


def test_verify_text_of_an_onnx_bundle_without_tolerance_or_original():
    out = dict(VERIFY, bundle="m.zip", reference_is="the original ONNX model", original=None,
               rerun={"samples": 16, "outputs": [{"max_abs_diff": 0.0}], "top1_agreement": 1.0},
               reference={"top1_agreement": 1.0},
               build_check={"samples": 200, "top1_agreement": 1.0, "min_top1_agreement": None})
    assert verify_text(out).split("\n") == [
        "m.zip: 9 files match their checksums",
        "  re-run on 16 stored samples: max |diff| 0, top-1 agreement 100.00% with the build-time outputs",
        "  top-1 agreement with the original ONNX model: 100.00%",
        "  at build time, over 200 held-out samples: 100.00% with the original ONNX model; the 16 stored samples "
        "here are a few of those, so one sample moves this figure by 6.2%",
        "OK"]
    assert verify_text(dict(out, build_check=None)).split("\n")[-2:] == [
        "  top-1 agreement with the original ONNX model: 100.00%", "OK"]


def test_devices_text_of_an_ssh_and_an_adb_device():
    info = {"hostname": "pi5", "arch": "aarch64", "python": "3.11.2",
            "runtimes": {"onnxruntime": "1.20.1", "tflite_runtime": None},
            "power_sources": [{"name": "pi5_pmic", "available": True, "reason": "vcgencmd pmic_read_adc"},
                              {"name": "rapl", "available": False}]}
    assert devices_text(SimpleNamespace(name="pi", transport="ssh"), info).split("\n") == [
        "pi: reachable (pi5, aarch64, Python 3.11.2)",
        "  runtime onnxruntime      1.20.1",
        "  runtime tflite_runtime   not installed",
        "  power   pi5_pmic         available: vcgencmd pmic_read_adc",
        "  power   rapl             no: "]
    phone = {"model": "Pixel 8", "android_version": "14", "arch": "arm64-v8a", "benchmark_model": {"configured": True}}
    assert devices_text(SimpleNamespace(name="phone", transport="adb"), phone) == \
        "phone: reachable (Pixel 8, Android 14, arm64-v8a; benchmark_model configured)"
