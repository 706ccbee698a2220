"""trtexec, TensorRT's command-line tool: its command lines and its output. Standard library only,
Python >= 3.8; never imports TensorRT.

ec_trt uses it to build engines when TensorRT's Python bindings do not import, and to time engines
(`timing: trtexec`, or whenever cuda-python is missing). Command lines are argument lists, never
shell strings. Flags and the performance summary follow ../shared/reference/devices.md. Two further
formats come from public trtexec logs, not from that page: the banner
`&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # ...` (the version as M*1000+m*100+p before
TensorRT 10 and M*10000+m*100+p from 10 on: v8601 = 8.6.1, v100300 = 10.3.0), and the
`=== Device Information ===` lines `Selected Device: Orin` / `Compute Capability: 8.7` /
`TensorRT version: 8.5.2`. `--workspace=N` (MiB, TensorRT 8) and `--calib=FILE` (an INT8
calibration cache) are trtexec flags not listed there either.
"""
import os
import re
import shutil
import subprocess

DEFAULT_PATH = "/usr/src/tensorrt/bin/trtexec"  # where JetPack puts it
# devices.md, "Measuring well": 200 ms warm-up, >= 10 iterations and 3 s.
TIMING_ARGS = ("--warmUp=200", "--iterations=10", "--duration=3")
# A build run times one inference only; its numbers are not used.
BUILD_ONLY_ARGS = ("--warmUp=0", "--iterations=1", "--duration=0")
TIMING_TIMEOUT_S = 600
TAIL_LINES = 25
FLAG_ARGS = {"FP16": "--fp16", "INT8": "--int8", "SPARSE_WEIGHTS": "--sparsity=enable",
             "OBEY_PRECISION_CONSTRAINTS": "--precisionConstraints=obey"}

PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)+")  # "[07/14/2023-11:52:09] [I] " or "[I] "
BANNER = re.compile(r"&&&& (RUNNING|PASSED|FAILED|WAIVED) TensorRT\.trtexec(?: \[TensorRT v([0-9.]+)\])?")
NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
THROUGHPUT = re.compile(r"^Throughput: " + NUMBER + r" qps")
TRACE = re.compile(r"^Timing trace has (\d+) queries over " + NUMBER + " s")
STAT_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9 ]*?): ((?:min|max|mean|median|percentile)\b.*)$")
STAT_ITEM = re.compile(r"^(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\)) = " + NUMBER + r"\s*(ms|us|s)?$")
WALLTIME = re.compile(r"^Total Host Walltime: " + NUMBER + " s")
UNIT_TO_MS = {"ms": 1.0, "us": 1e-3, "s": 1e3, None: 1.0}
STAT_NAMES = {"Latency": "latency_ms", "GPU Compute Time": "gpu_compute_ms", "Enqueue Time": "enqueue_ms",
              "H2D Latency": "h2d_ms", "D2H Latency": "d2h_ms"}


class TrtexecError(RuntimeError):
    """trtexec is missing, failed, or printed no result; the message holds its output's tail."""


def find(given=None, search_path=None):
    """The trtexec to run: `given` (the job's `trtexec` option), else JetPack's path, else PATH."""
    if given:
        if os.path.isfile(given) and os.access(given, os.X_OK):
            return given
        raise TrtexecError("runtime_options.trtexec %s is not an executable file" % given)
    if os.path.isfile(DEFAULT_PATH) and os.access(DEFAULT_PATH, os.X_OK):
        return DEFAULT_PATH
    found = shutil.which("trtexec", path=search_path)
    if found:
        return found
    raise TrtexecError("no trtexec at %s or on PATH; on a Jetson it comes with JetPack (package tensorrt), or "
                       "give its path as runtime_options.trtexec" % DEFAULT_PATH)


def decode_version(text):
    """"8601" -> "8.6.1", "100300" -> "10.3.0", "8.2.1"/"10.3.0.30" as they are; None if unreadable."""
    if not text:
        return None
    if "." in text:
        return text
    if not text.isdigit():
        return None
    n = int(text)
    if len(text) >= 6:  # TensorRT >= 10: M*10000 + m*100 + p
        return "%d.%d.%d" % (n // 10000, n // 100 % 100, n % 100)
    return "%d.%d.%d" % (n // 1000, n // 100 % 10, n % 100)


def major(version):
    return int(str(version).split(".")[0])


def strip(line):
    return PREFIX.sub("", line.strip())


def _stat(body):
    """{"min", "max", "mean", "median", "p90", ...} in ms from `min = 1 ms, max = ...`; values that are
    not numbers (devices.md abbreviates some as `...`) are left out."""
    stat = {}
    for item in body.split(","):
        match = STAT_ITEM.match(item.strip())
        if not match:
            continue
        name, pct, value, unit = match.groups()
        key = name if pct is None else "p" + pct
        stat[key] = float(value) * UNIT_TO_MS[unit]
    return stat


def _stat_key(name):
    return STAT_NAMES.get(name, re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") + "_ms")


def _summary(lines):
    """Throughput, stats and trace from the lines after `=== Performance summary ===`, up to the next
    `===` header (the explanations after it reuse the names in prose)."""
    found = {"throughput_qps": None, "stats": {}, "walltime_s": None}
    for line in lines:
        if line.startswith("==="):
            break
        throughput, walltime, stat = THROUGHPUT.match(line), WALLTIME.match(line), STAT_LINE.match(line)
        if throughput:
            found["throughput_qps"] = float(throughput.group(1))
        elif walltime:
            found["walltime_s"] = float(walltime.group(1))
        elif stat:
            values = _stat(stat.group(2))
            if values:
                found["stats"][_stat_key(stat.group(1))] = values
    return found


def _device_info(line, found):
    for label, key in (("Selected Device: ", "device"), ("Compute Capability: ", "compute_capability"),
                       ("TensorRT version: ", "tensorrt_version")):
        if line.startswith(label) and found[key] is None:
            value = line[len(label):].strip()
            found[key] = decode_version(value) if key == "tensorrt_version" else value


def parse(text):
    """What a trtexec run printed: {"status" (RUNNING/PASSED/FAILED or None), "tensorrt_version",
    "device", "compute_capability", "throughput_qps", "queries", "trace_s", "walltime_s",
    "stats" {"latency_ms", "gpu_compute_ms", "enqueue_ms", "h2d_ms", "d2h_ms", ...: {min, max, mean,
    median, p90, p95, p99, ...}}, "errors" ([E] lines)}. Lines may carry `[date] [I] ` prefixes or none."""
    raw = text.splitlines()
    lines = [strip(line) for line in raw]
    found = {"status": None, "tensorrt_version": None, "device": None, "compute_capability": None,
             "queries": None, "trace_s": None, "errors": [l.strip() for l in raw if "[E]" in l]}
    summary = {"throughput_qps": None, "stats": {}, "walltime_s": None}
    for i, line in enumerate(lines):
        banner = BANNER.search(line)
        if banner:
            if banner.group(1) != "RUNNING" or found["status"] is None:
                found["status"] = banner.group(1)
            if banner.group(2) and found["tensorrt_version"] is None:
                found["tensorrt_version"] = decode_version(banner.group(2))
            continue
        trace = TRACE.match(line)
        if trace:
            found["queries"], found["trace_s"] = int(trace.group(1)), float(trace.group(2))
        elif line.startswith("=== Performance summary ==="):
            summary = _summary(lines[i + 1:])
        else:
            _device_info(line, found)
    found.update(summary)
    return found


def latency_block(stat, n, method):
    """A trtexec stat as the result's `latency_ms` block (as ec_stats.summarize writes it, plus p95):
    trtexec gives no std, and p90/p95 only in versions that print them."""
    if "median" not in stat:
        raise TrtexecError("trtexec printed no median latency")
    block = {"p50": stat["median"], "p90": stat.get("p90"), "p95": stat.get("p95"), "p99": stat.get("p99"),
             "mean": stat.get("mean"), "std": None, "min": stat.get("min"), "max": stat.get("max"), "n": n,
             "method": method}
    return block


def build_command(trtexec, onnx, engine, flags, workspace_mb=None, major_version=10, calib_cache=None,
                  float_layers=()):
    """trtexec arguments that build `onnx` into `engine` with the builder `flags` (names of
    trt.BuilderFlag: FP16, INT8, SPARSE_WEIGHTS, OBEY_PRECISION_CONSTRAINTS; ec_trt.plan_build chose
    them for the version); float_layers: layer names computed and output in FP32."""
    args = [trtexec, "--onnx=" + onnx, "--saveEngine=" + engine]
    unknown = [f for f in flags if f not in FLAG_ARGS]
    if unknown:
        raise ValueError("no trtexec flag for builder flag(s) %s" % ", ".join(unknown))
    args += [FLAG_ARGS[f] for f in flags]
    if calib_cache:
        args.append("--calib=" + calib_cache)
    if float_layers:
        spec = ",".join("%s:fp32" % name for name in float_layers)
        args += ["--layerPrecisions=" + spec, "--layerOutputTypes=" + spec]
    if workspace_mb:
        args.append(("--memPoolSize=workspace:%d" if major_version >= 10 else "--workspace=%d") % workspace_mb)
    return args + list(BUILD_ONLY_ARGS)


def timing_command(trtexec, engine):
    return [trtexec, "--loadEngine=" + engine] + list(TIMING_ARGS)


def run(argv, timeout_s=None):
    """(exit code, stdout and stderr together) of one trtexec run."""
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              errors="replace", timeout=timeout_s)
    except OSError as e:
        raise TrtexecError("cannot run %s: %s" % (argv[0], e))
    except subprocess.TimeoutExpired:
        raise TrtexecError("%s did not finish within %d s" % (" ".join(argv), timeout_s))
    return done.returncode, done.stdout


def tail(text, lines=TAIL_LINES):
    return "\n".join(text.strip().splitlines()[-lines:])


def checked(argv, what, timeout_s=None):
    """parse() of a run that must pass: TrtexecError with its [E] lines and output tail otherwise."""
    code, out = run(argv, timeout_s)
    parsed = parse(out)
    if code != 0 or parsed["status"] == "FAILED":
        errors = "\n".join(parsed["errors"][-10:])
        raise TrtexecError("%s failed (trtexec exit %d): %s\n--- trtexec output (tail) ---\n%s"
                           % (what, code, errors or "no [E] lines", tail(out)))
    return parsed, out


def version(trtexec):
    """TensorRT version of this trtexec from the banner of `trtexec --help`."""
    _, out = run([trtexec, "--help"], timeout_s=60)
    found = parse(out)["tensorrt_version"]
    if found is None:
        raise TrtexecError("cannot tell the TensorRT version from `%s --help`:\n%s" % (trtexec, tail(out, 5)))
    return found


def build(trtexec, onnx, engine, flags, workspace_mb=None, major_version=10, calib_cache=None, float_layers=()):
    """Build `onnx` into `engine`; parse() of the run (its device lines name the GPU)."""
    argv = build_command(trtexec, onnx, engine, flags, workspace_mb, major_version, calib_cache, float_layers)
    parsed, _ = checked(argv, "building the engine with trtexec")
    if not os.path.isfile(engine):
        raise TrtexecError("trtexec passed but wrote no engine at %s" % engine)
    return parsed


def time_engine(trtexec, engine):
    """trtexec's timing of an engine: {"command", "status", "throughput_qps", "queries", "walltime_s", "stats"}."""
    argv = timing_command(trtexec, engine)
    parsed, _ = checked(argv, "timing the engine with trtexec", TIMING_TIMEOUT_S)
    if "median" not in parsed["stats"].get("latency_ms", {}):
        raise TrtexecError("trtexec printed no Latency line with a median in its performance summary")
    return {"command": [os.path.basename(argv[0])] + argv[1:], "status": parsed["status"],
            "throughput_qps": parsed["throughput_qps"], "queries": parsed["queries"],
            "walltime_s": parsed["walltime_s"], "stats": parsed["stats"]}


def latency(timed):
    """The result's latency_ms from time_engine(): trtexec's Latency is H2D + GPU compute + D2H."""
    return latency_block(timed["stats"]["latency_ms"], timed["queries"],
                         "trtexec --loadEngine %s: Latency (H2D + GPU compute + D2H), trtexec's own statistics"
                         % " ".join(TIMING_ARGS))
