"""LiteRT's `benchmark_model` on an Android phone: its command line from a runner job, and its
output parsed into the result contract (../shared/reference/devices.md, Android section).

The output formats handled (lines with or without an `INFO: ` prefix):
  The input model file size (MB): 4.27635
  Initialized session in 92.318ms.
  count=50 first=33228 curr=33130 min=32687 max=33239 avg=33071.8 std=129
  count=50 first=... curr=... min=... max=... avg=145528 std=13583 p5=140545 median=141253 p95=187533
  count=N curr=X(all same)
  Inference timings in us: Init: 5388, First inference: 101726, Warmup (avg): 92755.2, Inference (avg): 90865.9
  Memory footprint delta from the start of the tool (MB): init=54.2852 overall=73.4102
  Overall peak memory footprint (MB) via periodic monitoring: 93.2383
The stat lines are in microseconds; the warm-up's comes before the timed runs'. std is the
population std. Pure text work: no device, no adb."""
from __future__ import annotations

import re
import shlex
from typing import Dict, List, Optional

METHOD = "benchmark_model (us)"
DELEGATES = ("xnnpack", "gpu", "none")  # none: the plain CPU kernels (XNNPACK off)
DEFAULT_CPU_MASK = "f0"  # the big cores of a typical 4+4 arm64 phone
OPTIONS = ("threads", "delegate", "cpu_mask")
_PREFIX = re.compile(r"^(?:INFO|WARNING|WARN|ERROR|VERBOSE): ")
_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_PAIR = re.compile(rf"(\w+)=({_NUMBER})(\(all same\))?")
_TIMING = re.compile(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUMBER})")


class OutputError(ValueError):
    """benchmark_model's output has no timed-run statistics; the message quotes its tail."""


def options(runtime_options: dict) -> dict:
    """threads, delegate, cpu_mask from a job's runtime_options; ValueError names a bad key."""
    unknown = sorted(set(runtime_options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"runtime_options {', '.join(unknown)} are not benchmark_model options; valid: "
                         f"{', '.join(OPTIONS)}")
    threads = runtime_options.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"runtime_options.threads must be an integer >= 1 or null, got {threads!r}")
    delegate = runtime_options.get("delegate") or "xnnpack"
    if delegate not in DELEGATES:
        raise ValueError(f"runtime_options.delegate must be one of {', '.join(DELEGATES)}, got {delegate!r}")
    given = str(runtime_options.get("cpu_mask") or DEFAULT_CPU_MASK)
    mask = given.lower()[2:] if given.lower().startswith("0x") else given.lower()
    if not re.fullmatch(r"[0-9a-f]+", mask) or int(mask, 16) == 0:
        raise ValueError(f"runtime_options.cpu_mask must be a non-zero hex CPU mask such as f0, got {given!r}")
    return {"threads": threads, "delegate": delegate, "cpu_mask": mask}


def arguments(graph: str, opts: dict, warmup: dict, runs: dict) -> List[str]:
    """benchmark_model's flags for a job's options and warm-up/run budgets (count and seconds)."""
    args = [f"--graph={graph}"]
    if opts["threads"] is not None:
        args.append(f"--num_threads={opts['threads']}")
    args += [f"--warmup_runs={int(warmup.get('runs', 1))}",
             f"--warmup_min_secs={float(warmup.get('seconds', 0.5)):g}",
             f"--num_runs={int(runs.get('count', 50))}",
             f"--min_secs={float(runs.get('seconds', 1.0)):g}"]
    # benchmark_model stops at --max_secs (150 s by default): keep it above what the job asks for
    seconds = float(runs.get("seconds", 1.0))
    if seconds * 2 > 150:
        args.append(f"--max_secs={seconds * 2:g}")
    if opts["delegate"] == "gpu":
        args.append("--use_gpu=true")
    else:
        args.append(f"--use_xnnpack={'true' if opts['delegate'] == 'xnnpack' else 'false'}")
    args.append("--report_peak_memory_footprint=true")
    return args


def command(binary: str, args: List[str], cpu_mask: str) -> str:
    """The shell line that runs benchmark_model pinned by taskset; every word quoted."""
    return " ".join(shlex.quote(w) for w in ["taskset", cpu_mask, binary, *args])


def _stat(line: str) -> Optional[dict]:
    """The numbers of a `count=...` line, with `(all same)` expanded to min=max=avg, std 0."""
    if not line.startswith("count="):
        return None
    values: Dict[str, float] = {}
    for key, value, same in _PAIR.findall(line):
        values[key] = float(value)
        if same:
            values.update(min=float(value), max=float(value), avg=float(value), std=0.0, all_same=1.0)
            values.setdefault("first", float(value))
    if "count" not in values or "avg" not in values:
        return None
    values["count"] = int(values["count"])
    return values


def _timings(line: str) -> dict:
    """{init, first inference, warmup (avg), inference (avg)} in us from the timings line."""
    body = line.split(":", 1)[1] if ":" in line else ""
    return {name.strip().lower(): float(value) for name, value in _TIMING.findall(body)}


def _number_after(line: str, marker: str) -> Optional[float]:
    match = re.search(re.escape(marker) + rf"\s*({_NUMBER})", line)
    return float(match.group(1)) if match else None


def parse(text: str) -> dict:
    """Everything benchmark_model reported: stats (warm-up and timed), timings, memory, errors."""
    out: dict = {"stats": [], "timings": {}, "memory": {}, "model_size_mb": None, "session_init_ms": None,
                 "errors": []}
    for raw in text.splitlines():
        line = _PREFIX.sub("", raw.strip())
        if raw.strip().startswith("ERROR"):
            out["errors"].append(line)
        stat = _stat(line)
        if stat is not None:
            out["stats"].append(stat)
        elif line.startswith("Inference timings in us:"):
            out["timings"] = _timings(line)
        elif line.startswith("The input model file size (MB):"):
            out["model_size_mb"] = _number_after(line, "(MB):")
        elif line.startswith("Initialized session in"):
            out["session_init_ms"] = _number_after(line, "Initialized session in")
        elif line.startswith("Memory footprint delta from the start of the tool"):
            out["memory"]["init_delta_mb"] = _number_after(line, "init=")
            out["memory"]["overall_delta_mb"] = _number_after(line, "overall=")
        elif line.startswith("Overall peak memory footprint"):
            out["memory"]["peak_mb"] = _number_after(line, "monitoring:")
    return out


def _timed_and_warmup(parsed: dict) -> tuple:
    """(timed stat, warm-up stat or None). The timed line is the last one, unless the timings line
    says which average belongs to the timed runs."""
    stats, avg = parsed["stats"], parsed["timings"].get("inference (avg)")
    if avg is not None:
        for i in range(len(stats) - 1, -1, -1):
            if abs(stats[i]["avg"] - avg) <= max(1e-6 * abs(avg), 0.051):
                return stats[i], (stats[i - 1] if i > 0 else None)
    return stats[-1], (stats[-2] if len(stats) > 1 else None)


def _ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else value / 1000.0


def latency(timed: dict, warnings: list) -> dict:
    """The contract's latency_ms from a timed stat line (us -> ms)."""
    if "median" in timed:
        p50 = timed["median"]
    elif timed.get("all_same"):
        p50 = timed["avg"]  # every sample was this value
    else:
        p50 = timed["avg"]
        warnings.append("benchmark_model printed no median (an older build): p50 is the mean")
    block = {"p50": _ms(p50), "p90": _ms(timed.get("p90")), "p99": _ms(timed.get("p99")), "mean": _ms(timed["avg"]),
             "std": _ms(timed.get("std")), "min": _ms(timed.get("min")), "max": _ms(timed.get("max")),
             "n": timed["count"], "method": METHOD}
    for extra in ("p5", "p95"):
        if extra in timed:
            block[extra] = _ms(timed[extra])
    return block


def summarize(text: str) -> dict:
    """The result keys benchmark_model's output gives: latency_ms, first_run_ms, load_ms,
    peak_rss_mb, warmup_done, timed_window_s, benchmark_model {...}, warnings. OutputError when
    there are no timed-run statistics."""
    parsed = parse(text)
    if not parsed["stats"]:
        tail = "\n".join(text.strip().splitlines()[-15:]) or "(no output)"
        raise OutputError(f"benchmark_model printed no timing statistics (count=... line); its output ended "
                          f"with:\n{tail}")
    warnings: list = []
    timed, warmup = _timed_and_warmup(parsed)
    block = latency(timed, warnings)
    timings = parsed["timings"]
    init_us = timings.get("init")
    load_ms = _ms(init_us) if init_us is not None else parsed["session_init_ms"]
    first = timings.get("first inference", (warmup or {}).get("first"))
    return {
        "latency_ms": block,
        "first_run_ms": _ms(first),
        "load_ms": load_ms,
        "peak_rss_mb": parsed["memory"].get("peak_mb"),
        "warmup_done": {"runs": warmup["count"] if warmup else None,
                        "avg_ms": _ms(timings.get("warmup (avg)", (warmup or {}).get("avg")))},
        "timed_window_s": timed["count"] * timed["avg"] / 1e6,
        "benchmark_model": {"model_size_mb": parsed["model_size_mb"], "session_init_ms": parsed["session_init_ms"],
                            "memory_mb": parsed["memory"] or None, "errors": parsed["errors"]},
        "warnings": warnings,
    }
