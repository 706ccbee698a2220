"""Benchmark one model on this device: `python ec_bench.py JOB.json`.

The device side of the runner protocol (protocol_version 1). Standard library plus the runtime
being measured (numpy only because every runtime's Python API needs it); Python >= 3.8; never
imports edgecompress, so the folder can be copied anywhere and run (siblings import as `ec_*`).

Output: progress lines on stderr, each `progress: ...`; exactly one JSON result as the last line
of stdout; exit 0. On failure the result is `{"protocol_version": 1, "error": "..."}` and exit 1.
Anything the runtime itself prints to stdout is sent to stderr so the result line stays clean.

Job keys (unknown keys are errors):
  protocol_version  1 (required)
  model             path, relative to the job file's folder or absolute (required)
  runtime           a key of ec_runtimes.RUNTIMES, e.g. "onnxruntime" (required)
  runtime_options   the runtime's options; onnxruntime: threads (intra-op; null = runtime default),
                    providers (default ["CPUExecutionProvider"]). Inter-op threads 1, sequential
                    execution and all graph optimizations are fixed. Reported as applied.
  inputs            {"random": [{"name", "shape"?, "dtype"?}], "npy": {name: file.npy}}. A model
                    input not named here is random with the model's shape and dtype, dynamic
                    dimensions set to 1. Random floats are standard normal, integers in [0, 10)
                    (valid as small indices), booleans fair coins; `seed` (default 0) fixes them.
  warmup            {"runs": N, "seconds": S}, default {"runs": 10, "seconds": 1.0}
  runs              {"count": N, "seconds": S}, default {"count": 100, "seconds": 1.0}
  max_runs          cap on warm-up runs and on timed runs, default 100000
  energy            "auto" | "none" | "ina3221" | "rapl" | "nvml"; no reader is implemented yet, so
                    `energy` is null and `energy_reason` says what was found where
  idle_seconds      idle window for the power baseline, default 1.0; unused until a power reader
                    exists (no idle wait is spent measuring nothing)
  report_outputs    true adds `outputs`: name, shape, dtype and sum of each output of the first run,
                    so the host can check that the inputs it sent were the ones used

Run rule: the first run after loading is timed alone (`first_run_ms`; it pays for lazy
initialisation). Warm-up then runs until at least warmup.runs runs AND warmup.seconds have passed;
timed runs go until at least runs.count runs AND runs.seconds have passed; both stop at max_runs
(with a warning when that cut a budget short). Each latency is perf_counter_ns around one
session.run call on the same inputs.

Result keys: protocol_version, latency_ms {p50, p90, p99, mean, std, min, max, n, method},
first_run_ms, load_ms, peak_rss_mb (ru_maxrss of this process, MiB), warmup_done {runs, seconds},
timed_window_s, energy, energy_reason, device {arch, python, platform, runtime, runtime_version,
cpu_count, governor, clocks_mhz_before/after, temperatures_c_before/after, throttled} (before and
after bracket the timed window), runtime_options, inputs [{name, shape, dtype, source}], outputs
(when asked), warnings, host; plus runtime-specific keys (e.g. build_ms).
"""
import contextlib
import json
import math
import os
import platform
import sys
import time
import traceback

import ec_energy
import ec_job
import ec_state
import ec_stats
from ec_runtimes import RUNTIMES

METHOD = "perf_counter_ns around session.run"
PROGRESS_EVERY_NS = 500 * 1000 * 1000
SHORT_WINDOW_S = 1.0
FEW_RUNS_FOR_P99 = 100


class Failure(Exception):
    """A step failed; the message already says which step and why."""


@contextlib.contextmanager
def step(what):
    """Name the step in any error, so the host's message says where it broke."""
    try:
        yield
    except (Failure, ec_job.JobError):
        raise
    except Exception as e:
        raise Failure("%s failed: %s: %s" % (what, type(e).__name__, e))


def progress(message):
    sys.stderr.write("progress: " + message + "\n")
    sys.stderr.flush()


def random_array(np, rng, shape, dtype):
    kind = np.dtype(dtype).kind
    if kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if kind in "iu":
        return rng.integers(0, 10, shape).astype(dtype)
    raise ec_job.JobError("cannot make random values of dtype %s; give this input as npy" % dtype)


def one_feed(np, rng, model_input, spec, folder):
    """(array, source) for one model input."""
    name = model_input["name"]
    if name in spec["npy"]:
        path = os.path.join(folder, spec["npy"][name])
        if not os.path.isfile(path):
            raise ec_job.JobError("npy file for input '%s' not found: %s" % (name, path))
        return np.load(path, allow_pickle=False), "npy"
    given = spec["random"].get(name, {})
    shape = given.get("shape")
    if shape is None:  # [] is a real (scalar) shape, so test for None, not falsiness
        shape = [1 if d is None else d for d in model_input["shape"]]
    dtype = given.get("dtype") or model_input["dtype"]
    if dtype is None:
        raise ec_job.JobError("input '%s' has a type numpy cannot hold; give it as npy" % name)
    return random_array(np, rng, shape, dtype), ("random" if name in spec["random"] else "random-from-model")


def make_feeds(session, spec, folder, seed):
    """{name: array} for every model input, and their description for the result."""
    import numpy as np

    names = [i["name"] for i in session.inputs]
    unknown = sorted(n for n in list(spec["random"]) + list(spec["npy"]) if n not in names)
    if unknown:
        raise ec_job.JobError("job inputs name %s, which the model does not have; its inputs: %s"
                              % (", ".join("'%s'" % n for n in unknown), ", ".join(names)))
    rng = np.random.default_rng(seed)
    feeds, described = {}, []
    for model_input in session.inputs:
        array, source = one_feed(np, rng, model_input, spec, folder)
        feeds[model_input["name"]] = array
        described.append({"name": model_input["name"], "shape": list(array.shape),
                          "dtype": str(array.dtype), "source": source})
    return feeds, described


def run_loop(run, feeds, want_runs, want_seconds, max_runs, label):
    """Latencies (ms) of repeated runs under the stopping rule, and the window's length in s."""
    perf = time.perf_counter_ns
    latencies = []
    start = last_report = now = perf()
    while ec_stats.keep_going(len(latencies), (now - start) / 1e9, want_runs, want_seconds, max_runs):
        before = perf()
        run(feeds)
        now = perf()
        latencies.append((now - before) / 1e6)
        if now - last_report >= PROGRESS_EVERY_NS:
            progress("%s %d/%d runs, %.1f/%.1f s" % (label, len(latencies), want_runs,
                                                      (now - start) / 1e9, want_seconds))
            last_report = now
    return latencies, (now - start) / 1e9


def cut_short(label, done, window_s, want_runs, want_seconds, max_runs):
    if done >= max_runs and (done < want_runs or window_s < want_seconds):
        return ("%s stopped at max_runs=%d after %.2f s, before its budget (%d runs, %.1f s)"
                % (label, max_runs, window_s, want_runs, want_seconds))
    return None


def output_summary(names, outputs):
    """name, shape, dtype and sum of each output; sum is null where it is not a number array."""
    import numpy as np

    summary = []
    for name, value in zip(names, outputs):
        array = np.asarray(value)
        total = None
        if array.dtype.kind in "biuf":
            total = float(array.astype(np.float64).sum())
            total = total if math.isfinite(total) else repr(total)  # JSON has no NaN or inf
        summary.append({"name": name, "shape": list(array.shape), "dtype": str(array.dtype), "sum": total})
    return summary


def peak_rss_mb():
    try:
        import resource
    except ImportError:  # Windows has no getrusage
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux but bytes on macOS.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def device_info(job, session, before, after, throttled):
    return {
        "arch": platform.machine(), "python": platform.python_version(), "platform": platform.platform(),
        "runtime": job["runtime"], "runtime_version": session.version, "cpu_count": os.cpu_count(),
        "governor": ec_state.governor(),
        "clocks_mhz_before": before["clocks_mhz"], "clocks_mhz_after": after["clocks_mhz"],
        "temperatures_c_before": before["temperatures_c"], "temperatures_c_after": after["temperatures_c"],
        "throttled": throttled,
    }


def collect_warnings(job, latency, window_s, warmup_cut, throttle_reason):
    timed_cut = cut_short("timed runs", latency["n"], window_s, job["runs"][0], job["runs"][1], job["max_runs"])
    warnings = [w for w in (warmup_cut, timed_cut, throttle_reason) if w]
    if window_s < SHORT_WINDOW_S:
        warnings.append("timed window %.2f s is short; runs.seconds >= %.0f gives steadier numbers"
                        % (window_s, SHORT_WINDOW_S))
    if latency["n"] < FEW_RUNS_FOR_P99:
        warnings.append("p99 from only %d runs is close to the max; use >= %d runs"
                        % (latency["n"], FEW_RUNS_FOR_P99))
    governor = ec_state.governor()
    if governor is not None and governor != "performance":
        warnings.append("CPU governor is '%s', not 'performance': clocks may vary between runs" % governor)
    if job["energy"] not in ("auto", "none"):
        warnings.append("energy source '%s' was asked for but is not implemented yet" % job["energy"])
    return warnings


def load(job):
    name = os.path.basename(job["model"])
    progress("loading %s with %s" % (name, job["runtime"]))
    try:
        with step("loading %s with %s" % (name, job["runtime"])):
            session = RUNTIMES[job["runtime"]](job["model"], job["runtime_options"])
    except Failure as e:
        if isinstance(e.__context__, ImportError):  # say which interpreter lacks the runtime
            raise Failure("runtime '%s' is not importable with python %s (%s): %s"
                          % (job["runtime"], platform.python_version(), sys.executable, e.__context__))
        raise
    progress("loaded in %.1f ms" % session.load_ms)
    return session


def measure(job, session, feeds):
    """First run, warm-up, then the timed window bracketed by device-state snapshots."""
    with step("first run"):
        start = time.perf_counter_ns()
        first_outputs = session.run(feeds)
        first_run_ms = (time.perf_counter_ns() - start) / 1e6
    runs, seconds = job["warmup"]
    progress("warmup %d runs / %.1f s" % (runs, seconds))
    with step("warm-up"):
        warm, warm_s = run_loop(session.run, feeds, runs, seconds, job["max_runs"], "warmup")
    warmup_cut = cut_short("warm-up", len(warm), warm_s, runs, seconds, job["max_runs"])
    count, seconds = job["runs"]
    progress("timed %d runs / %.1f s" % (count, seconds))
    before = ec_state.snapshot()
    with step("timed runs"):
        latencies, window_s = run_loop(session.run, feeds, count, seconds, job["max_runs"], "timed")
    after = ec_state.snapshot()
    progress("timed %d runs in %.2f s" % (len(latencies), window_s))
    return {"first_outputs": first_outputs, "first_run_ms": first_run_ms, "warmup_done":
            {"runs": len(warm), "seconds": warm_s}, "warmup_cut": warmup_cut, "latencies": latencies,
            "window_s": window_s, "before": before, "after": after}


def benchmark(job):
    session = load(job)
    with step("preparing inputs"):
        feeds, inputs = make_feeds(session, job["inputs"], job["folder"], job["seed"])
    m = measure(job, session, feeds)
    latency = ec_stats.summarize(m["latencies"], METHOD)
    energy, energy_reason = ec_energy.probe(job["energy"])
    throttled, throttle_reason = ec_state.throttled(m["before"], m["after"])
    result = {
        "protocol_version": ec_job.PROTOCOL_VERSION, "latency_ms": latency,
        "first_run_ms": m["first_run_ms"], "load_ms": session.load_ms, "peak_rss_mb": peak_rss_mb(),
        "warmup_done": m["warmup_done"], "timed_window_s": m["window_s"],
        "energy": energy, "energy_reason": energy_reason,
        "device": device_info(job, session, m["before"], m["after"], throttled),
        "runtime_options": session.options, "inputs": inputs,
        "warnings": collect_warnings(job, latency, m["window_s"], m["warmup_cut"], throttle_reason),
        "host": platform.node(),
    }
    if job["report_outputs"]:
        result["outputs"] = output_summary(session.outputs, m["first_outputs"])
    result.update(session.extra)
    return result


def claim_stdout():
    """A private stream for the result; fd 1 then points at stderr, so a runtime's own prints
    (C code included) cannot land between or after the result line."""
    sys.stdout.flush()
    result_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return result_stream


def main(argv):
    result_stream = claim_stdout()
    try:
        if len(argv) != 2:
            raise ec_job.JobError("usage: python ec_bench.py JOB.json")
        job = ec_job.read_job(argv[1], RUNTIMES, ec_energy.SOURCES)
        result, code = benchmark(job), 0
    except Exception as e:
        if not isinstance(e, (Failure, ec_job.JobError)):
            traceback.print_exc()  # an unexpected bug: the host keeps the stderr tail
        message = str(e) if isinstance(e, (Failure, ec_job.JobError)) else "%s: %s" % (type(e).__name__, e)
        result, code = {"protocol_version": ec_job.PROTOCOL_VERSION, "error": message}, 1
    result_stream.write(json.dumps(result, allow_nan=False) + "\n")
    result_stream.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
