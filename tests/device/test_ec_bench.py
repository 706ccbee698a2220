"""ec_bench.py run as the device runs it: a separate process in a job folder, stdout and stderr
checked line by line."""
import ast
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ec_bench

DEPLOY = Path(__file__).resolve().parents[2] / "edgecompress" / "deploy"

DEVICE_FILES = sorted(DEPLOY.glob("*.py"))
SIBLINGS = {p.stem for p in DEVICE_FILES}
LAZY = {"numpy", "onnxruntime", "pynvml", "tensorrt", "cuda", "ai_edge_litert", "tflite_runtime"}  # runtimes' own
# needs, imported inside functions only, each in its one home
LAZY_HOME = {"pynvml": "ec_power.py", "tensorrt": "ec_trt.py", "cuda": "ec_trt_cuda.py", "ai_edge_litert": "ec_litert.py",
             "tflite_runtime": "ec_litert.py"}


def imports(tree):
    """(top-level module name, relative level, whether at module level) of every import."""
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], 0, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            yield (node.module or "").split(".")[0], node.level, id(node) in top


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.name)
def test_device_side_is_python38_stdlib_and_never_imports_edgecompress(path):
    tree = ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))
    for module, level, at_top in imports(tree):
        assert level == 0, f"{path.name}: a relative import breaks when the folder is copied"
        assert module != "edgecompress"
        assert module in sys.stdlib_module_names or module in SIBLINGS or module in LAZY, module
        assert not (module in LAZY and at_top), f"{path.name} imports {module} at module level"
        assert LAZY_HOME.get(module, path.name) == path.name, f"{path.name} imports {module}"


def test_a_run_prints_progress_on_stderr_and_one_json_result_on_stdout(job_dir, run_bench, small_job):
    code, result, out, err = run_bench(job_dir, small_job())
    assert code == 0, result
    assert len(out) == 1 and "error" not in result
    progress = [line for line in err if line.startswith("progress: ")]
    assert progress[0] == "progress: loading model.onnx with onnxruntime"
    assert "progress: warmup 2 runs / 0.0 s" in progress
    assert progress[-1].startswith("progress: timed 5 runs in ")
    assert result["protocol_version"] == 1
    assert result["latency_ms"]["n"] == 5
    assert result["warmup_done"]["runs"] == 2
    assert result["runtime_options"]["threads"] == 1
    assert result["runtime_options"]["execution_mode"] == "sequential"
    assert result["inputs"] == [{"name": "x", "shape": [1, 4], "dtype": "float32", "source": "random-from-model"}]
    assert result["energy"] is None and result["energy_reason"]
    assert any("p99 from only 5 runs" in w for w in result["warnings"])


# A fast CPU reaches any run cap before a seconds budget; a slow one reaches the seconds first. A cap of
# 5 runs makes every CPU the fast one (a Zen 5 hit the default 100,000 in 0.4 s); the stand-in's
# 50 ms runs make every CPU the slow one.
CPU_SPEEDS = {"fast": dict(max_runs=5), "slow": dict(pattern_s=(0.05,))}


def bench_at(speed, job_dir, run_bench, run_standin, job):
    """run_bench's answer for `job` as a fast or a slow CPU would give it."""
    changes = dict(CPU_SPEEDS[speed])
    pattern_s = changes.pop("pattern_s", None)
    job = dict(job, **changes)
    return run_bench(job_dir, job) if pattern_s is None else run_standin(job_dir, job, pattern_s)


@pytest.mark.parametrize("speed", sorted(CPU_SPEEDS))
def test_seconds_budgets_hold_even_when_the_counts_are_met(job_dir, run_bench, run_standin, small_job, speed):
    started = time.monotonic()
    code, result, _, _ = bench_at(speed, job_dir, run_bench, run_standin,
                                  small_job(warmup={"runs": 1, "seconds": 0.3}, runs={"count": 1, "seconds": 0.5}))
    assert code == 0, result
    assert result["warmup_done"]["seconds"] >= 0.3 and result["warmup_done"]["runs"] > 1
    assert result["timed_window_s"] >= 0.5 and result["latency_ms"]["n"] > 1
    assert time.monotonic() - started >= 0.8
    assert any("timed window 0.5" in w and "short" in w for w in result["warnings"])
    assert not any("max_runs" in w for w in result["warnings"])  # the counts were met: nothing was cut


def test_max_runs_caps_a_count_budget_and_says_so(job_dir, run_bench, small_job):
    code, result, _, _ = run_bench(job_dir, small_job(runs={"count": 200}, max_runs=50))
    assert code == 0, result
    assert result["latency_ms"]["n"] == 50
    assert any("timed runs stopped at max_runs=50 of the 200 runs asked for" in w for w in result["warnings"])


def test_a_long_window_of_a_fast_model_keeps_every_run_in_its_totals_and_a_sample_of_them(job_dir, run_standin,
                                                                                        small_job):
    code, result, _, _ = run_standin(job_dir, small_job(runs={"count": 1, "seconds": 0.5}), keep=1000)
    assert code == 0, result
    lat = result["latency_ms"]
    assert 500 <= lat["sampled"] <= 1000 < lat["n"]  # memory holds 1000 latencies however many runs
    assert lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"] and lat["min"] <= lat["mean"] <= lat["max"]
    assert lat["mean"] * lat["n"] / 1000 <= result["timed_window_s"]  # the totals are of every run


def test_npy_inputs_are_the_values_fed(job_dir, run_bench, small_job):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(job_dir / "x.npy", x)
    code, result, _, _ = run_bench(job_dir, small_job(inputs={"npy": {"x": "x.npy"}}, report_outputs=True))
    assert code == 0, result
    assert result["inputs"] == [{"name": "x", "shape": [3, 4], "dtype": "float32", "source": "npy"}]
    assert result["outputs"] == [{"name": "y", "shape": [3, 4], "dtype": "float32", "sum": 2 * 66.0}]


def test_random_inputs_take_the_shape_asked_for_and_the_seed(job_dir, run_bench, small_job):
    spec = {"random": [{"name": "x", "shape": [5, 4], "dtype": "float32"}]}
    sums = []
    for seed in (0, 0, 1):
        code, result, _, _ = run_bench(job_dir, small_job(inputs=spec, seed=seed, report_outputs=True))
        assert code == 0, result
        assert result["inputs"][0]["source"] == "random" and result["outputs"][0]["shape"] == [5, 4]
        sums.append(result["outputs"][0]["sum"])
    assert sums[0] == sums[1] != sums[2]


@pytest.mark.parametrize("changes, message", [
    ({"warmpu": {"runs": 1}}, "unknown key(s) in job: warmpu"),
    ({"protocol_version": 2}, "job.protocol_version must be 1, got 2"),
    ({"runtime": "tensorflow"}, "job.runtime 'tensorflow' is not known here; known: litert, onnxruntime, tensorrt"),
    ({"runs": {"count": 0}}, "runs.count must be an integer >= 1, got 0"),
    ({"runs": {"count": 5, "secs": 1}}, "unknown key(s) in runs: secs"),
    ({"energy": "battery"}, "job.energy 'battery' is not known"),
    ({"runtime_options": {"thread": 2}}, "unknown runtime_options for onnxruntime: thread"),
    ({"inputs": {"random": [{"name": "input", "shape": [1, 4], "dtype": "float32"}]}},
     "job inputs name 'input', which the model does not have; its inputs: x"),
    ({"inputs": {"npy": {"x": "missing.npy"}}}, "npy file for input 'x' not found"),
    ({"model": "absent.onnx"}, "model file not found: "),
])
def test_a_bad_job_fails_with_exit_1_and_an_error_naming_the_key(job_dir, run_bench, small_job, changes, message):
    code, result, out, _ = run_bench(job_dir, small_job(**changes))
    assert code == 1 and len(out) == 1
    assert result["protocol_version"] == 1
    assert message in result["error"]


def test_a_corrupt_model_fails_at_the_loading_step(job_dir, run_bench, small_job):
    (job_dir / "bad.onnx").write_bytes(b"this is not a protobuf")
    code, result, _, err = run_bench(job_dir, small_job(model="bad.onnx"))
    assert code == 1
    assert result["error"].startswith("loading bad.onnx with onnxruntime failed: ")
    assert "progress: loading bad.onnx with onnxruntime" in err


def test_no_job_argument_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, str(DEPLOY / "ec_bench.py")], capture_output=True, text=True)
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"] == "usage: python ec_bench.py JOB.json"


PLUGGED_RUNTIME = """
import os, sys
sys.path.insert(0, sys.argv[1])
import ec_bench, ec_runtimes

def load_noisy(model_path, options):
    # A runtime that writes to stdout from Python and from the C level (fd 1), as some do.
    session = ec_runtimes.load_onnxruntime(model_path, options)
    def run(feeds):
        print("python-level noise")
        os.write(1, b"fd-level noise\\n")
        return session.run(feeds)
    return ec_runtimes.Session(run, session.inputs, session.outputs, "noisy-1.0", session.options,
                               session.load_ms, extra={"build_ms": 12.5})

ec_bench.RUNTIMES["noisy"] = load_noisy
sys.exit(ec_bench.main(["ec_bench.py", "job.json"]))
"""


def test_a_plugged_in_runtime_is_used_and_its_stdout_noise_stays_off_the_result(job_dir, small_job):
    (job_dir / "job.json").write_text(json.dumps(small_job(runtime="noisy")))
    done = subprocess.run([sys.executable, "-c", PLUGGED_RUNTIME, str(DEPLOY)], cwd=job_dir,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # the whole of stdout is the one result line
    assert result["device"]["runtime"] == "noisy" and result["device"]["runtime_version"] == "noisy-1.0"
    assert result["build_ms"] == 12.5
    assert done.stderr.count("fd-level noise") == 1 + 2 + 5  # first run, warm-up, timed runs


def python38():
    """A Python 3.8 interpreter, from EC_PYTHON38 or pyenv, or None."""
    candidates = [os.environ.get("EC_PYTHON38", "")] + sorted(
        glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                              capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == "(3, 8)":
            return candidate
    return None


@pytest.mark.skipif(python38() is None, reason="no Python 3.8 interpreter (set EC_PYTHON38)")
def test_the_device_side_runs_on_python38(job_dir, run_bench, small_job):
    code, result, out, _ = run_bench(job_dir, small_job(), python=python38())
    assert len(out) == 1
    if code == 0:  # this 3.8 has onnxruntime: the whole measurement ran on 3.8
        assert result["device"]["python"].startswith("3.8.") and result["latency_ms"]["n"] == 5
    else:  # all device modules imported and ran on 3.8 up to the runtime import
        assert result["error"].startswith("runtime 'onnxruntime' is not importable with python 3.8.")


SLOWING_RUNTIME = """
import sys, time
sys.path.insert(0, sys.argv[1])
import ec_bench, ec_runtimes

def load_slowing(model_path, options):
    # A device that gets busy halfway through the timed window: 2 ms runs, then 4 ms runs.
    session = ec_runtimes.load_onnxruntime(model_path, options)
    calls = []
    def run(feeds):
        calls.append(time.perf_counter())
        busy = len(calls) > 3 and calls[-1] - calls[3] > 1.0  # first run + 2 warm-ups, then 1 s
        time.sleep(0.004 if busy else 0.002)
        return session.run(feeds)
    return ec_runtimes.Session(run, session.inputs, session.outputs, "slowing-1.0", session.options,
                               session.load_ms)

ec_bench.RUNTIMES["slowing"] = load_slowing
sys.exit(ec_bench.main(["ec_bench.py", "job.json"]))
"""


def test_a_latency_drift_inside_the_timed_window_is_measured_and_warned(job_dir, small_job):
    (job_dir / "job.json").write_text(json.dumps(small_job(runtime="slowing", runs={"count": 1, "seconds": 2.0})))
    done = subprocess.run([sys.executable, "-c", SLOWING_RUNTIME, str(DEPLOY)], cwd=job_dir,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    s = result["stability"]
    assert s["parts"] >= 3
    assert s["part_p50_min"] < 3.0 < s["part_p50_max"]  # one part all fast, one all slow
    assert s["spread_pct"] > 40
    assert any("the p50 moved by" in w and "will not repeat" in w for w in result["warnings"])


@pytest.mark.parametrize("speed", sorted(CPU_SPEEDS))
def test_every_run_reports_its_stability_and_warns_only_above_the_threshold(job_dir, run_bench, run_standin,
                                                                            small_job, speed):
    code, result, _, _ = bench_at(speed, job_dir, run_bench, run_standin, small_job(runs={"count": 1, "seconds": 1.2}))
    assert code == 0, result
    s = result["stability"]
    assert s["parts"] >= 2  # 1.2 s of window: two parts of at least 0.5 s, however fast each run is
    assert s["part_p50_min"] <= result["latency_ms"]["p50"] <= s["part_p50_max"]
    warned = any("the p50 moved by" in w for w in result["warnings"])
    assert warned == (s["spread_pct"] > ec_bench.NOISY_SPREAD_PCT)  # this host may be busy: either way, consistent


def test_a_few_stalled_runs_that_double_the_mean_are_warned_with_their_share(job_dir, run_standin, small_job):
    """The walkthrough's host: p50 0.014 ms, mean 0.029 ms, and only "spread 2%" said."""
    # 1 run in 25 stalls for 200 ms: the mean is ~2.6x the p50. 5 ms runs, so that a busy host's own
    # millisecond of sleep overshoot does not pass twice the p50.
    stalls = (0.005,) * 24 + (0.2,)
    code, result, _, _ = run_standin(job_dir, small_job(runs={"count": 100}), pattern_s=stalls)
    assert code == 0, result
    said = [w for w in result["warnings"] if "x the p50" in w]
    assert len(said) == 1 and "of the runs took over twice the p50" in said[0], result["warnings"]
    share = float(said[0].split(": ")[1].split("%")[0])
    assert share == pytest.approx(4.0, abs=2.0)  # 4 of 100, give or take a run the host stalled itself
    code, result, _, _ = run_standin(job_dir, small_job(runs={"count": 100}), pattern_s=(0.005,))
    assert code == 0 and not [w for w in result["warnings"] if "x the p50" in w], result["warnings"]


def test_the_stall_warning_names_the_mean_the_p50_and_the_share():
    latency = {"p50": 0.014, "mean": 0.029, "max": 12.0}
    sample = [0.014] * 995 + [3.0] * 5
    said = ec_bench.outlier_warning(latency, sample)
    assert said.startswith("the mean 0.029 ms is 2.1x the p50 0.014 ms: 0.50% of the runs took over twice the p50 "
                           "(the slowest 12.000 ms) and hold 52% of the run time")
    assert ec_bench.outlier_warning(dict(latency, mean=0.021), sample) is None  # 1.5x: not yet


def test_host_and_device_side_share_the_drift_threshold():
    from edgecompress import bench

    assert bench.NOISY_SPREAD_PCT == ec_bench.NOISY_SPREAD_PCT


def test_a_dynamic_size_timed_at_one_is_said_and_a_given_shape_is_used(tmp_path, run_bench, small_job):
    """A model of any length: without a shape it is timed at length 1, which the result must say."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "length"])
    model = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "model.onnx"))
    code, result, _, _ = run_bench(tmp_path, small_job())
    assert code == 0, result
    said = [w for w in result["warnings"] if "dynamic dimensions" in w]
    assert len(said) == 1 and "'x'" in said[0] and "timed at [1, 1]" in said[0] and "--input-shape" in said[0]
    code, result, _, _ = run_bench(tmp_path, small_job(inputs={"random": [{"name": "x", "shape": [1, 300]}]}))
    assert code == 0 and result["inputs"][0]["shape"] == [1, 300]
    assert not [w for w in result["warnings"] if "dynamic dimensions" in w]


def test_peak_memory_is_the_device_sides_own_not_its_parents(job_dir, run_bench, small_job):
    """Linux carries a parent's peak RSS (ru_maxrss) into a child it starts; deploy is that parent."""
    ballast = np.ones(100_000_000)  # 800 MB, touched, in this (the parent) process
    code, result, _, _ = run_bench(job_dir, small_job())
    assert code == 0, result
    assert 5 < result["peak_rss_mb"] < 400, result["peak_rss_mb"]
    del ballast
