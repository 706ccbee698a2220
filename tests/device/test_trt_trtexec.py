"""ec_trt end to end where TensorRT's Python bindings do not import: a fake `trtexec` on PATH prints
the summary lines of ../shared/reference/devices.md and writes an engine file; ec_trt.load builds,
caches, times and exports through it, in-process and under ec_bench as the device runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ec_trt
import ec_trtexec

DEPLOY = Path(__file__).resolve().parents[2] / "edgecompress" / "deploy"

FAKE_TRTEXEC = r'''#!{python}
import os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_TRTEXEC_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
version = os.environ.get("FAKE_TRT_VERSION", "100300")
stamp = "[06/18/2025-11:25:24] [I] "
print("&&&& RUNNING TensorRT.trtexec [TensorRT v%s] # trtexec %s" % (version, " ".join(args)))
if args == ["--help"]:
    print("=== Model Options ===\n  --onnx=<file>               ONNX model")
    sys.exit(0)
if os.environ.get("FAKE_TRTEXEC_FAIL"):
    print("[06/18/2025-11:25:24] [E] [TRT] ModelImporter.cpp:771: ERROR: fake parser failure")
    print("[06/18/2025-11:25:24] [E] Failed to parse onnx file")
    print("&&&& FAILED TensorRT.trtexec [TensorRT v%s] # trtexec" % version)
    sys.exit(1)
values = dict(a[2:].split("=", 1) for a in args if "=" in a)
print(stamp + "=== Device Information ===")
print(stamp + "Selected Device: Orin")
print(stamp + "Compute Capability: 8.7")
print(stamp + "TensorRT version: 10.3.0")
if "saveEngine" in values:
    with open(values["saveEngine"], "w") as f:
        f.write("engine " + " ".join(a for a in args if not a.startswith(("--onnx", "--saveEngine"))))
if "loadEngine" in values:
    with open(values["loadEngine"]) as f:
        sparse = "--sparsity=enable" in f.read()
    gpu = os.environ.get("FAKE_SPARSE_MS" if sparse else "FAKE_DENSE_MS", "22.08")
    print(stamp + "Timing trace has 135 queries over 3.0213 s")
    print("[I] === Performance summary ===")
    print("[I] Throughput: 44.7064 qps")
    print("[I] Latency: min = 22.0549 ms, max = 22.9698 ms, mean = 22.264 ms, median = 22.2416 ms, "
          "percentile(99%) = 22.8967 ms")
    print("[I] GPU Compute Time: min = 21.9 ms, max = 22.8 ms, mean = 22.1 ms, median = %s ms, "
          "percentile(90%%) = 22.4 ms, percentile(95%%) = 22.6 ms, percentile(99%%) = 22.75 ms" % gpu)
print("&&&& PASSED TensorRT.trtexec")
'''


def tensorrt_imports():
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


pytestmark = pytest.mark.skipif(tensorrt_imports(), reason="tensorrt imports here, so ec_trt builds with its "
                                                           "Python API, not with trtexec")


@pytest.fixture
def fake_trtexec(tmp_path, monkeypatch):
    """PATH with the fake trtexec first; returns a reader of the argument lines it was called with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "trtexec"
    tool.write_text(FAKE_TRTEXEC.replace("{python}", sys.executable))
    tool.chmod(0o755)
    log = tmp_path / "trtexec.log"
    log.write_text("")
    monkeypatch.setattr(ec_trtexec, "DEFAULT_PATH", str(tmp_path / "not-installed"))
    monkeypatch.setenv("PATH", "%s%s%s" % (bin_dir, os.pathsep, os.environ["PATH"]))
    monkeypatch.setenv("FAKE_TRTEXEC_LOG", str(log))
    return lambda: [line.split() for line in log.read_text().splitlines()]


@pytest.fixture
def job(tmp_path, job_dir):
    return job_dir, {"timing": "trtexec", "cache_dir": str(tmp_path / "engines")}


def test_a_build_times_with_trtexec_and_exports_the_engine(fake_trtexec, job):
    folder, options = job
    session = ec_trt.load(str(folder / "model.onnx"), dict(options, precision="fp16", workspace_mb=256))
    calls = fake_trtexec()
    assert calls[0] == ["--help"]
    build = calls[1]
    assert build[:2] == ["--onnx=%s" % (folder / "model.onnx"), build[1]] and build[1].startswith("--saveEngine=")
    assert "--fp16" in build and "--memPoolSize=workspace:256" in build
    assert session.run is None and session.measured_by == "trtexec" and len(calls) == 2  # timed only when asked
    latency = session.measure()
    assert fake_trtexec()[2][0].startswith("--loadEngine=") and fake_trtexec()[2][1:] == [
        "--warmUp=200", "--iterations=10", "--duration=3"]
    assert latency["p50"] == 22.2416 and latency["p99"] == 22.8967 and latency["n"] == 135
    assert latency["method"].startswith("trtexec --loadEngine")
    extra = session.extra
    assert extra["gpu_compute_ms"]["median"] == 22.08 and extra["trtexec"]["throughput_qps"] == 44.7064
    assert extra["engine_cached"] is False and extra["build_ms"] > 0
    engine = extra["engine"]
    assert engine["tensorrt_version"] == "10.3.0" and engine["builder"] == "trtexec" and engine["flags"] == ["FP16"]
    assert engine["trtexec_device"] == {"gpu": "Orin", "compute_capability": "8.7"}
    assert engine["build_options"] == {"precision": "fp16", "qdq": False, "sparsity": False, "workspace_mb": 256,
                                       "calibration_sha256": None}
    assert extra["artifacts"] == ["model.engine", "model.engine.json"]
    assert (folder / "model.engine").read_text().startswith("engine --fp16")
    assert json.loads((folder / "model.engine.json").read_text())["cache_key"] == engine["cache_key"]
    assert session.options["timing"] == "trtexec" and session.options["builder"] == "trtexec"


def test_a_second_load_reuses_the_cached_engine(fake_trtexec, job):
    folder, options = job
    first = ec_trt.load(str(folder / "model.onnx"), options)
    second = ec_trt.load(str(folder / "model.onnx"), options)
    builds = [c for c in fake_trtexec() if c[0].startswith("--onnx=")]
    assert len(builds) == 1
    assert second.extra["engine_cached"] is True and second.extra["build_ms"] == 0
    assert second.extra["engine"]["cached_build_ms"] == first.extra["build_ms"]
    assert second.extra["engine"]["cache_key"] == first.extra["engine"]["cache_key"]
    ec_trt.load(str(folder / "model.onnx"), dict(options, precision="fp16"))  # other options: another engine
    assert len([c for c in fake_trtexec() if c[0].startswith("--onnx=")]) == 2


@pytest.mark.parametrize("dense_ms, sparse_ms, kept", [("22.0", "15.0", "sparse"), ("22.0", "21.9", "dense"),
                                                        ("22.0", "30.0", "dense")])
def test_compare_sparse_keeps_sparse_only_when_measured_faster(fake_trtexec, job, monkeypatch, dense_ms, sparse_ms,
                                                                kept):
    monkeypatch.setenv("FAKE_DENSE_MS", dense_ms)
    monkeypatch.setenv("FAKE_SPARSE_MS", sparse_ms)
    folder, options = job
    session = ec_trt.load(str(folder / "model.onnx"), dict(options, compare_sparse=True))
    builds = [c for c in fake_trtexec() if c[0].startswith("--onnx=")]
    assert len(builds) == 2 and "--sparsity=enable" not in builds[0] and "--sparsity=enable" in builds[1]
    report = session.extra["engine"]["sparse"]
    assert (report["dense_p50_ms"], report["sparse_p50_ms"], report["kept"]) == (float(dense_ms), float(sparse_ms),
                                                                                 kept)
    assert session.options["sparsity"] is (kept == "sparse")
    assert ("--sparsity=enable" in (folder / "model.engine").read_text()) is (kept == "sparse")


def test_a_failed_build_carries_trtexecs_errors(fake_trtexec, job, monkeypatch):
    monkeypatch.setenv("FAKE_TRTEXEC_FAIL", "1")
    folder, options = job
    with pytest.raises(ec_trtexec.TrtexecError) as e:
        ec_trt.load(str(folder / "model.onnx"), options)
    message = str(e.value)
    assert message.startswith("building the engine with trtexec failed (trtexec exit 1)")
    assert "fake parser failure" in message and "&&&& FAILED" in message
    assert not [p for p in Path(options["cache_dir"]).iterdir()]  # no partial engine left in the cache


@pytest.mark.parametrize("version, options, message", [
    ("110000", {"precision": "int8"}, "TensorRT 11 takes INT8 only from Q/DQ nodes"),
    ("100300", {"precision": "int8"}, "needs runtime_options.calibration"),
])
def test_precision_errors_follow_the_version_trtexec_reports(fake_trtexec, job, monkeypatch, version, options,
                                                             message):
    monkeypatch.setenv("FAKE_TRT_VERSION", version)
    folder, base = job
    with pytest.raises(ValueError, match=message):
        ec_trt.load(str(folder / "model.onnx"), dict(base, **options))


def test_tensorrt_11_fp16_builds_without_the_flag_and_says_so(fake_trtexec, job, monkeypatch):
    monkeypatch.setenv("FAKE_TRT_VERSION", "110000")
    folder, options = job
    session = ec_trt.load(str(folder / "model.onnx"), dict(options, precision="fp16"))
    build = [c for c in fake_trtexec() if c[0].startswith("--onnx=")][0]
    assert "--fp16" not in build and session.extra["engine"]["flags"] == []
    assert any("no FP16 builder flag" in w for w in session.extra["warnings"])


def test_calibration_from_samples_needs_the_python_api(fake_trtexec, job):
    import numpy as np

    folder, options = job
    np.save(folder / "calib.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(ec_trt.TrtError, match="INT8 calibration from samples needs TensorRT's Python bindings"):
        ec_trt.load(str(folder / "model.onnx"), dict(options, precision="int8", calibration="calib.npy"))


def test_no_bindings_and_no_trtexec_is_a_clear_error(job, monkeypatch, tmp_path):
    monkeypatch.setattr(ec_trtexec, "DEFAULT_PATH", str(tmp_path / "not-installed"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    folder, options = job
    with pytest.raises(ec_trt.TrtError, match=r"TensorRT's Python bindings do not import here \(.*\), and no trtexec"):
        ec_trt.load(str(folder / "model.onnx"), dict(options, timing=None))


def run_bench(folder, job, env):
    (folder / "job.json").write_text(json.dumps(job))
    done = subprocess.run([sys.executable, str(DEPLOY / "ec_bench.py"), "job.json"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_ec_bench_reports_trtexecs_timing_and_the_artifacts(fake_trtexec, job, small_job):
    folder, options = job
    bench_job = small_job(runtime="tensorrt", runtime_options=options)
    code, result, err = run_bench(folder, bench_job, dict(os.environ, FAKE_TRTEXEC_LOG=os.environ["FAKE_TRTEXEC_LOG"]))
    assert code == 0, result
    assert result["latency_ms"]["p50"] == 22.2416 and result["latency_ms"]["method"].startswith("trtexec")
    assert result["first_run_ms"] is None and result["warmup_done"] is None and result["inputs"] == []
    assert result["energy"] is None and "trtexec" in result["energy_reason"]
    assert result["device"]["runtime"] == "tensorrt" and result["device"]["runtime_version"] == "10.3.0"
    assert result["build_ms"] > 0 and result["engine_cached"] is False
    assert result["artifacts"] == ["model.engine", "model.engine.json"]
    assert result["gpu_compute_ms"]["median"] == 22.08
    assert "progress: building the TensorRT 10.3.0 engine (fp32) with trtexec" in err
    assert all((folder / name).is_file() for name in result["artifacts"])


def test_ec_bench_refuses_job_inputs_that_trtexec_would_not_feed(fake_trtexec, job, small_job):
    folder, options = job
    bench_job = small_job(runtime="tensorrt", runtime_options=options,
                          inputs={"random": [{"name": "x", "shape": [2, 4]}]})
    code, result, _ = run_bench(folder, bench_job, dict(os.environ))
    assert code == 1 and "job.inputs cannot be fed: trtexec times this model" in result["error"]
