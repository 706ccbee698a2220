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
  max_runs          cap on a count budget (warmup.runs, runs.count), default 100000; it never
                    shortens a seconds budget or the energy window
  energy            "auto" (default) | "none" | a source of ec_energy.SOURCES: "ina3221" (Jetson
                    JetPack 5/6 hwmon), "ina3221x" (JetPack 4 IIO), "tegrastats", "nvml", "rapl",
                    "pi5_pmic". auto takes the first available in that order; a named source that
                    is not available gives `energy` null and `energy_reason` says why
  idle_seconds      idle window for the power baseline, just before the timed window, default 1.0;
                    0 skips it (then no net energy). Lengthened to the source's minimum window
  energy_interval_ms  sampling period of the power source (and tegrastats' --interval); default:
                    the source's own update interval (at least 20 ms for power samples)
  energy_device_index  NVML GPU index, default 0
  lock_clocks       true pins a Jetson's clocks for the job with jetson_clocks (stored first, always
                    restored: on success, failure, SIGTERM/SIGINT/SIGHUP; see ec_clocks); an error
                    where there is no jetson_clocks. Default false
  sysfs_root        TEST ONLY: read sysfs (power rails, clocks, temperatures) under this folder
                    instead of "/", so tests can use fixture trees
  report_outputs    true adds `outputs`: name, shape, dtype and sum of each output of the first run,
                    so the host can check that the inputs it sent were the ones used

Run rule: the first run after loading is timed alone (`first_run_ms`; it pays for lazy
initialisation). Warm-up then runs until at least warmup.runs runs AND warmup.seconds have passed;
timed runs go until at least runs.count runs AND runs.seconds have passed. max_runs cuts a count
budget only (with a warning when it did): a cap in runs would end a seconds budget at a point that
depends on the CPU's speed (a 4 us model reaches 100000 runs in 0.4 s). With a power source, the
idle baseline is sampled between warm-up and the timed runs, and the timed runs go on until the
window holds ec_energy.MIN_UPDATES sensor updates (with a warning when that lengthened them). Each
latency is perf_counter_ns around one session.run call on the same inputs. Memory stays bounded
however many runs a window holds (ec_stats.Latencies): up to ec_stats.KEEP_LATENCIES runs are
kept whole; past that the percentiles and drift parts come from an even random sample of the
runs, and n, mean, std, min and max still from every run. A session without `run` (TensorRT
when cuda-python is missing) is timed by its runtime's own tool instead: session.measure() gives the
latency block, bracketed by the device-state snapshots, with no first run, warm-up or energy.

Result keys: protocol_version, latency_ms {p50, p90, p99, mean, std, min, max, n, method, sampled
(how many runs the percentiles come from: n unless the window held more than KEEP_LATENCIES)},
first_run_ms, load_ms, peak_rss_mb (this process's peak resident memory, MiB; null when a tool such
as trtexec ran the model in its own process), warmup_done {runs, seconds},
timed_window_s, stability {parts, part_p50_min, part_p50_max, spread_pct} (the p50s of consecutive
parts of the timed runs, each at least 0.5 s of the timed window; see ec_stats.stability) or null,
energy (ec_energy.Meter.result) or null, energy_reason (null when measured),
device {arch, python, platform, runtime, runtime_version, cpu_count, governor,
clocks_mhz_before/after, gpu_clocks_hz_before/after (Jetson devfreq), temperatures_c_before/after,
throttled, throttle_reason; with NVML also gpu_name, gpu_clocks_event_mask, gpu_throttle_reasons}
(before and after bracket the timed window), runtime_options, inputs [{name, shape, dtype, source}],
outputs (when asked), warnings (among them: a p50 drift above NOISY_SPREAD_PCT; a mean above
HEAVY_TAIL_MEAN_OVER_P50 x the p50, with the share of runs over twice the p50), host; plus
runtime-specific keys (e.g. build_ms, engine, and `artifacts`: files the runtime left in the job
folder for the host to fetch); a runtime's own `warnings` are added to the list. With lock_clocks,
device also holds clocks_locked, clocks_restored, nvpmodel {mode_name, mode_id},
jetson_clocks_show_before/_locked. Exit 128 + N after signal N.
"""
import contextlib
import json
import math
import os
import platform
import sys
import time
import traceback

import ec_clocks
import ec_energy
import ec_job
import ec_state
import ec_stats
from ec_runtimes import RUNTIMES

METHOD = "perf_counter_ns around session.run"
PROGRESS_EVERY_NS = 500 * 1000 * 1000
SHORT_WINDOW_S = 1.0
FEW_RUNS_FOR_P99 = 100
NOISY_SPREAD_PCT = 10.0
# A mean this far above the p50 is a few huge runs, not the model's speed: the drift parts' p50s
# cannot show it (each part's median ignores them), so it gets its own warning.
HEAVY_TAIL_MEAN_OVER_P50 = 1.5


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


# best effort, as ec_clocks writes it: a dropped link must not end the job before it restores
progress = ec_clocks.progress


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


def run_loop(run, feeds, want_runs, want_seconds, max_runs, label, min_seconds=0.0, record=None):
    """Repeated runs under the stopping rule: (runs done, the window's length in s, when (s) the
    budget alone would have stopped); runs go on to `min_seconds` (the energy window). Each run's
    latency (ms) goes to `record` when given (the warm-up keeps none)."""
    perf = time.perf_counter_ns
    done = 0
    goal_s = max(want_seconds, min_seconds)
    start = last_report = now = perf()
    budget_end_s = None
    while ec_stats.keep_going(done, (now - start) / 1e9, want_runs, goal_s, max_runs):
        if budget_end_s is None and not ec_stats.keep_going(done, (now - start) / 1e9, want_runs,
                                                            want_seconds, max_runs):
            budget_end_s = (now - start) / 1e9
        before = perf()
        run(feeds)
        now = perf()
        done += 1
        if record is not None:
            record((now - before) / 1e6)
        if now - last_report >= PROGRESS_EVERY_NS:
            progress("%s %d/%d runs, %.1f/%.1f s" % (label, done, want_runs, (now - start) / 1e9, goal_s))
            last_report = now
    window_s = (now - start) / 1e9
    return done, window_s, window_s if budget_end_s is None else budget_end_s


def cut_short(label, done, want_runs, max_runs):
    """The cap only ever shortens a count budget (ec_stats.keep_going): say so when it did."""
    if done < want_runs and done >= max_runs:
        return ("%s stopped at max_runs=%d of the %d runs asked for (their seconds budget was kept)"
                % (label, max_runs, want_runs))
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
    """This process's peak resident memory. /proc's VmHWM first: getrusage's ru_maxrss keeps the
    parent's peak across fork and exec, so a device side started by a large process (deploy, with
    torch and the data loaded) would report the parent's memory, not the model's."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows has no getrusage
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux but bytes on macOS.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def device_info(job, session, m, source_state):
    before, after = m["before"], m["after"]
    throttled, reason = ec_state.throttled(before, after, source_state.get("gpu_clocks_event_mask"))
    info = {
        "arch": platform.machine(), "python": platform.python_version(), "platform": platform.platform(),
        "runtime": job["runtime"], "runtime_version": session.version, "cpu_count": os.cpu_count(),
        "governor": ec_state.governor(job["sysfs_root"]), "cpu": ec_state.cpu(job["sysfs_root"]),
        "clocks_mhz_before": before["clocks_mhz"], "clocks_mhz_after": after["clocks_mhz"],
        "gpu_clocks_hz_before": before["gpu_devfreq"], "gpu_clocks_hz_after": after["gpu_devfreq"],
        "temperatures_c_before": before["temperatures_c"], "temperatures_c_after": after["temperatures_c"],
        "throttled": throttled, "throttle_reason": reason,
    }
    info.update(source_state)
    return info


def energy_warnings(m, energy):
    warnings = list(m["energy_warnings"])
    if energy and energy["mj_per_inference_net"] is not None and energy["mj_per_inference_net"] < 0:
        warnings.append("net energy per inference is negative: idle power %.0f mW exceeds the run's %.0f mW "
                        "(noise, or a load too light for %s to see)"
                        % (energy["idle_power_mw"], energy["avg_power_mw"], energy["source"]))
    return warnings


def noise_warning(stability):
    if stability is None or stability["spread_pct"] <= NOISY_SPREAD_PCT:
        return None
    return ("the p50 moved by %.0f%% between parts of the timed window (%.3f to %.3f ms): the device was busy "
            "or throttling, or the latency has two modes; the p50 will not repeat to better than that"
            % (stability["spread_pct"], stability["part_p50_min"], stability["part_p50_max"]))


def outlier_warning(latency, sample_ms):
    """When the mean is far above the p50, how many runs made it so. Runs over twice the p50 are
    the ones named: above a 1.5x mean some always are (were all runs <= 2x p50, half of them <= p50,
    the mean could not pass 1.5x)."""
    p50, mean = latency["p50"], latency["mean"]
    if p50 <= 0 or mean <= HEAVY_TAIL_MEAN_OVER_P50 * p50:
        return None
    runs_share, time_share = ec_stats.slow_share(sample_ms, 2 * p50)
    return ("the mean %.3f ms is %.1fx the p50 %.3f ms: %.2f%% of the runs took over twice the p50 (the slowest "
            "%.3f ms) and hold %.0f%% of the run time; something stalled the model now and then (a busy or "
            "preempting host, power saving), so the p50 is the typical run and the mean is not"
            % (mean, mean / p50, p50, 100.0 * runs_share, latency["max"], 100.0 * time_share))


def size_warnings(model_inputs, fed):
    """An input whose dimensions besides the batch are dynamic was timed at size 1 in them (a 1x1
    image is not the model's speed): say so, and how to give the size."""
    out = []
    for spec, given in zip(model_inputs, fed):
        if given["source"] == "random-from-model" and any(d is None for d in spec["shape"][1:]):
            out.append("input '%s' has dynamic dimensions %s besides the batch and was timed at %s; give its real "
                       "shape in job inputs.random (edgecompress bench --input-shape)"
                       % (spec["name"], ["?" if d is None else d for d in spec["shape"]], given["shape"]))
    return out


def collect_warnings(job, latency, m, device, energy, stability=None):
    window_s = m["window_s"]
    timed_cut = cut_short("timed runs", latency["n"], job["runs"][0], job["max_runs"])
    warnings = [w for w in (m["warmup_cut"], timed_cut, device["throttle_reason"], noise_warning(stability),
                            outlier_warning(latency, m["latencies"].sample)) if w]
    if window_s < SHORT_WINDOW_S:
        warnings.append("timed window %.2f s is short; a window of >= %.0f s gives steadier numbers (bench.seconds, "
                        "edgecompress bench --seconds, is shared between the bench.rounds)"
                        % (window_s, SHORT_WINDOW_S))
    if latency["n"] < FEW_RUNS_FOR_P99:
        warnings.append("p99 from only %d runs is close to the max; use >= %d runs"
                        % (latency["n"], FEW_RUNS_FOR_P99))
    governor = device["governor"]
    if governor is not None and governor != "performance":
        warnings.append("CPU governor is '%s', not 'performance': clocks may vary between runs" % governor)
    return warnings + energy_warnings(m, energy)


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


def idle_baseline(job, meter):
    """Sample the source with nothing running, just before the timed window; warnings."""
    if meter is None or job["idle_seconds"] <= 0:
        return []
    seconds = max(job["idle_seconds"], meter.min_window_s)
    progress("idle %.1f s for the power baseline" % seconds)
    meter.measure_idle(seconds)
    if seconds > job["idle_seconds"]:
        return ["idle window lengthened from %.2f s to %.2f s to hold %d updates of %s"
                % (job["idle_seconds"], seconds, ec_energy.MIN_UPDATES, meter.source.name)]
    return []


def timed_window(job, session, feeds, meter):
    """The timed runs, sampled by the meter when there is one; (ec_stats.Latencies, window_s, warnings)."""
    count, seconds = job["runs"]
    min_s = meter.min_window_s if meter else 0.0
    latencies = ec_stats.Latencies()
    progress("timed %d runs / %.1f s" % (count, max(seconds, min_s)))
    if meter:
        meter.start()
    try:
        with step("timed runs"):
            done, window_s, budget_s = run_loop(session.run, feeds, count, seconds, job["max_runs"], "timed",
                                                min_seconds=min_s, record=latencies.add)
    finally:
        if meter:
            meter.stop()
    latencies.fold()  # n and the sample now hold every run; outside the energy window, which it would idle
    warnings = []
    if meter and budget_s < min_s and window_s > budget_s:
        warnings.append("timed window lengthened from %.3f s to %.3f s (%d runs) so the %s energy window "
                        "holds %d sensor updates (every %.3f s)" % (budget_s, window_s, done,
                                                                    meter.source.name, ec_energy.MIN_UPDATES,
                                                                    meter.slowest_s()))
    return latencies, window_s, warnings


def measure(job, session, feeds, meter):
    """First run, warm-up, idle baseline, then the timed window bracketed by device-state snapshots."""
    with step("first run"):
        start = time.perf_counter_ns()
        first_outputs = session.run(feeds)
        first_run_ms = (time.perf_counter_ns() - start) / 1e6
    runs, seconds = job["warmup"]
    progress("warmup %d runs / %.1f s" % (runs, seconds))
    with step("warm-up"):
        warm, warm_s, _ = run_loop(session.run, feeds, runs, seconds, job["max_runs"], "warmup")
    warmup_cut = cut_short("warm-up", warm, runs, job["max_runs"])
    with step("idle baseline"):
        energy_warnings = idle_baseline(job, meter)
    before = ec_state.snapshot(job["sysfs_root"])
    latencies, window_s, timed_warnings = timed_window(job, session, feeds, meter)
    after = ec_state.snapshot(job["sysfs_root"])
    progress("timed %d runs in %.2f s" % (latencies.n, window_s))
    return {"first_outputs": first_outputs, "first_run_ms": first_run_ms, "warmup_done":
            {"runs": warm, "seconds": warm_s}, "warmup_cut": warmup_cut, "latencies": latencies,
            "window_s": window_s, "before": before, "after": after,
            "energy_warnings": energy_warnings + timed_warnings}


def open_source(job):
    """(ec_energy.Meter or None, reason when None)."""
    with step("finding the power source"):
        source, reason = ec_energy.select(job["energy"], root=job["sysfs_root"],
                                          device_index=job["energy_device_index"],
                                          interval_ms=job["energy_interval_ms"])
    if source is None:
        return None, reason
    progress("energy from %s (rails %s)" % (source.name, ", ".join(source.rails())))
    return ec_energy.Meter(source, job["energy_interval_ms"]), None


def tool_timed(job, session):
    """The result of a session that its runtime's own tool timed (no run call here to loop over)."""
    if job["inputs"]["random"] or job["inputs"]["npy"]:
        raise ec_job.JobError("job.inputs cannot be fed: %s times this model with its own random inputs"
                              % session.measured_by)
    before = ec_state.snapshot(job["sysfs_root"])
    with step("timing with %s" % session.measured_by):
        latency = session.measure()
    m = {"before": before, "after": ec_state.snapshot(job["sysfs_root"])}
    device = device_info(job, session, m, {})
    warnings = [w for w in (device["throttle_reason"],) if w]
    if job["report_outputs"]:
        warnings.append("report_outputs: no outputs, %s ran the model" % session.measured_by)
    return {
        "protocol_version": ec_job.PROTOCOL_VERSION, "latency_ms": latency, "first_run_ms": None,
        # the model ran in the tool's own process, whose memory this one's peak does not show
        "load_ms": session.load_ms, "peak_rss_mb": None, "warmup_done": None, "timed_window_s": None,
        "stability": None,
        "energy": None, "energy_reason": "timed by %s, outside this process's loop" % session.measured_by,
        "device": device, "runtime_options": session.options, "inputs": [], "warnings": warnings,
        "host": platform.node(),
    }


def with_extra(result, extra):
    """The runtime's own result keys added; its warnings join the list."""
    extra = dict(extra)
    result["warnings"] = result["warnings"] + list(extra.pop("warnings", []))
    result.update(extra)
    return result


def benchmark(job):
    if not job["lock_clocks"]:
        return measure_job(job)
    with ec_clocks.locked(job["folder"]) as clocks:
        result = measure_job(job)
    result["device"].update(clocks)  # after the restore, so clocks_restored is known
    return result


def measure_job(job):
    session = load(job)
    if session.run is None:
        return with_extra(tool_timed(job, session), session.extra)
    with step("preparing inputs"):
        feeds, inputs = make_feeds(session, job["inputs"], job["folder"], job["seed"])
    meter, energy_reason = open_source(job)
    try:
        m = measure(job, session, feeds, meter)
        source_state = meter.source.device_state() if meter else {}
    finally:
        if meter:
            meter.source.close()
    latency = m["latencies"].summary(METHOD)
    stability = ec_stats.stability(m["latencies"].sample, window_s=m["window_s"])
    energy = None
    if meter:
        energy, energy_reason = meter.result(m["window_s"], latency["n"])
    device = device_info(job, session, m, source_state)
    result = {
        "protocol_version": ec_job.PROTOCOL_VERSION, "latency_ms": latency,
        "first_run_ms": m["first_run_ms"], "load_ms": session.load_ms, "peak_rss_mb": peak_rss_mb(),
        "warmup_done": m["warmup_done"], "timed_window_s": m["window_s"], "stability": stability,
        "energy": energy, "energy_reason": energy_reason, "device": device,
        "runtime_options": session.options, "inputs": inputs,
        "warnings": collect_warnings(job, latency, m, device, energy, stability) + size_warnings(session.inputs, inputs),
        "host": platform.node(),
    }
    if job["report_outputs"]:
        result["outputs"] = output_summary(session.outputs, m["first_outputs"])
    return with_extra(result, session.extra)


def read_job(path):
    return ec_job.read_job(path, RUNTIMES, ec_energy.CHOICES)


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
        job = read_job(argv[1])
        result, code = benchmark(job), 0
    except ec_clocks.Interrupted as e:  # a termination signal while clocks were locked; they are restored
        result, code = {"protocol_version": ec_job.PROTOCOL_VERSION, "error": str(e)}, 128 + e.signum
    except Exception as e:
        known = (Failure, ec_job.JobError, ec_clocks.ClockError)
        if not isinstance(e, known):
            traceback.print_exc()  # an unexpected bug: the host keeps the stderr tail
        message = str(e) if isinstance(e, known) else "%s: %s" % (type(e).__name__, e)
        result, code = {"protocol_version": ec_job.PROTOCOL_VERSION, "error": message}, 1
    result_stream.write(json.dumps(result, allow_nan=False) + "\n")
    result_stream.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
