"""Latency statistics and the warm-up/timed-run stopping rule. Standard library only, Python >= 3.8.

Percentiles use linear interpolation between the closest ranks (numpy.percentile's default,
method="linear"); std is the population standard deviation (numpy.std's default, ddof=0), so the
numbers can be checked against numpy on the host.
"""
import math


def percentile(sorted_values, q):
    """The q-th percentile (0..100) of an already sorted, non-empty sequence."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError("percentile q must be in [0, 100], got %r" % (q,))
    position = (len(sorted_values) - 1) * q / 100.0
    low = int(math.floor(position))
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(values_ms, method):
    """The result's `latency_ms` block for a list of per-run latencies in milliseconds."""
    if not values_ms:
        raise ValueError("no timed runs to summarize")
    ordered = sorted(values_ms)
    n = len(ordered)
    mean = math.fsum(ordered) / n
    # fsum keeps the variance exact enough to match numpy on long runs of near-equal values.
    variance = math.fsum((v - mean) ** 2 for v in ordered) / n
    return {
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "mean": mean,
        "std": math.sqrt(variance),
        "min": ordered[0],
        "max": ordered[-1],
        "n": n,
        "method": method,
    }


def keep_going(done, elapsed_s, want_runs, want_seconds, max_runs):
    """The stopping rule shared by warm-up and timed runs.

    Run until at least `want_runs` runs are done AND at least `want_seconds` have elapsed, but never
    more than `max_runs` runs: a fast model then still gets a long enough window, a slow one still
    gets enough samples, and a huge `seconds` cannot run forever.
    """
    if done >= max_runs:
        return False
    return done < want_runs or elapsed_s < want_seconds


def stability(values_ms, part_s=0.5, min_runs=5, max_parts=20):
    """How much the p50 moved during the timed window: the runs are cut, in order, into equal parts
    of at least `part_s` of summed run time and at least `min_runs` runs each (at most `max_parts`
    parts, so long windows get longer parts), and the spread of the parts' p50s is reported against
    the whole window's p50. A quiet device gives a few percent; a busy or throttling one, or a
    latency with two modes, more, and its p50 will not repeat to better than that. None when the
    runs cannot fill two parts, or when the p50 is 0 (a clock too coarse to time the runs)."""
    total_ms = math.fsum(values_ms)
    parts = min(max_parts, int(total_ms / (part_s * 1000.0)), len(values_ms) // min_runs)
    if parts < 2:
        return None
    bounds = [round(i * len(values_ms) / parts) for i in range(parts + 1)]
    p50s = [percentile(sorted(values_ms[a:b]), 50) for a, b in zip(bounds, bounds[1:])]
    whole = percentile(sorted(values_ms), 50)
    if whole <= 0:
        return None
    return {"parts": parts, "part_p50_min": min(p50s), "part_p50_max": max(p50s),
            "spread_pct": 100.0 * (max(p50s) - min(p50s)) / whole}
