"""Latency statistics and the warm-up/timed-run stopping rule. Standard library only, Python >= 3.8.

Percentiles use linear interpolation between the closest ranks (numpy.percentile's default,
method="linear"); std is the population standard deviation (numpy.std's default, ddof=0), so the
numbers can be checked against numpy on the host. Latencies records the timed runs in bounded
memory: every run while they fit, then an even random sample of them (see its docstring).
"""
import math
import operator
import random

KEEP_LATENCIES = 100000  # ~3 MB of floats: a fast model's long window must not grow peak_rss_mb
FOLD_EVERY = 4096  # runs between folds; a fold pauses the loop well under a millisecond


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

    Run until at least `want_runs` runs are done AND at least `want_seconds` have elapsed. `max_runs`
    caps the count only: a seconds budget (and the energy window, passed in as one) always holds,
    because on a fast CPU a cap in runs would otherwise cut the window short by an amount that
    depends on the CPU. Time is bounded by the seconds asked for; memory by Latencies.
    """
    if elapsed_s < want_seconds:
        return True
    return done < min(want_runs, max_runs)


def stability(values_ms, part_s=0.5, min_runs=5, max_parts=20, window_s=None):
    """How much the p50 moved during the timed window: the runs are cut, in order, into equal parts
    of at least `part_s` of the window and at least `min_runs` runs each (at most `max_parts` parts,
    so long windows get longer parts), and the spread of the parts' p50s is reported against the
    whole window's p50. `window_s` is the window's wall time; without it, the summed run time (a
    fast model's runs fill only part of the window: the loop's own time is the rest). `values_ms`
    may be an even sample of the runs (Latencies.sample): parts of it are parts of the window.
    A quiet device gives a few percent; a busy or throttling one, or a latency with two modes,
    more, and its p50 will not repeat to better than that. None when the runs cannot fill two
    parts, or when the p50 is 0 (a clock too coarse to time the runs)."""
    span_s = math.fsum(values_ms) / 1000.0 if window_s is None else window_s
    parts = min(max_parts, int(span_s / part_s), len(values_ms) // min_runs)
    if parts < 2:
        return None
    bounds = [round(i * len(values_ms) / parts) for i in range(parts + 1)]
    p50s = [percentile(sorted(values_ms[a:b]), 50) for a, b in zip(bounds, bounds[1:])]
    whole = percentile(sorted(values_ms), 50)
    if whole <= 0:
        return None
    return {"parts": parts, "part_p50_min": min(p50s), "part_p50_max": max(p50s),
            "spread_pct": 100.0 * (max(p50s) - min(p50s)) / whole}


def slow_share(values_ms, above_ms):
    """(share of the runs, share of their summed time) slower than `above_ms`: how heavy a tail is."""
    slow = [v for v in values_ms if v > above_ms]
    total = math.fsum(values_ms)
    return len(slow) / float(len(values_ms)), (math.fsum(slow) / total if total > 0 else 0.0)


class Latencies(object):
    """The timed runs' latencies (ms) in bounded memory. While at most `keep` runs are done, every
    one is kept and the summary is exact. Past that, `sample` holds between keep/2 and keep of them,
    in order: one run picked at random from each stretch of `stride` consecutive runs (stride
    doubles as the sample fills), so its percentiles and drift parts estimate the whole window's;
    a fixed every-k-th pick would alias with a latency that alternates. n, mean, std, min and max
    always count every run (folded in every FOLD_EVERY runs, so the hot loop only appends)."""

    def __init__(self, keep=None, fold_every=None, seed=0):
        # the module's constants read here, not bound at import, so a test can lower them
        self.keep = keep or KEEP_LATENCIES
        self.fold_every = fold_every or FOLD_EVERY
        self.rng = random.Random(seed)
        self.sample, self.pending, self.stride = [], [], 1
        self.fold_at = self.fold_every  # a multiple of the stride (both powers of two by default)
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.low, self.high = float("inf"), float("-inf")

    def add(self, value_ms):
        self.pending.append(value_ms)
        if len(self.pending) >= self.fold_at:
            self.fold()

    def fold(self):
        """Move the pending runs into the totals and the sample."""
        chunk, self.pending = self.pending, []
        if chunk:
            self._count(chunk)
            self._pick(chunk)
        while len(self.sample) > self.keep:
            self._halve()

    def _count(self, chunk):
        """Chan et al.'s pairwise update: exact enough for millions of near-equal values."""
        k = len(chunk)
        mean = math.fsum(chunk) / k
        deviations = [v - mean for v in chunk]
        m2 = sum(map(operator.mul, deviations, deviations))  # squares add without cancelling: no fsum needed
        total = self.n + k
        delta = mean - self.mean
        self.mean += delta * k / total
        self.m2 += m2 + delta * delta * self.n * k / total
        self.n = total
        self.low, self.high = min(self.low, min(chunk)), max(self.high, max(chunk))

    def _pick(self, chunk):
        s = self.stride
        if s == 1:
            self.sample.extend(chunk)
            return
        whole = len(chunk) - len(chunk) % s
        # random() * s, not randrange(s): a third of the cost, and exact while s is a power of two
        pick = self.rng.random
        self.sample.extend([chunk[i + int(pick() * s)] for i in range(0, whole, s)])
        rest = len(chunk) - whole  # the window's last, partial stretch: kept as often as it is long
        if rest and pick() < rest / float(s):
            self.sample.append(chunk[whole + self.rng.randrange(rest)])

    def _halve(self):
        """One of each pair, at random: the sample then stands for stretches twice as long."""
        odd = len(self.sample) % 2
        kept = [self.sample[i + self.rng.getrandbits(1)] for i in range(0, len(self.sample) - odd, 2)]
        if odd and self.rng.getrandbits(1):
            kept.append(self.sample[-1])
        self.sample, self.stride = kept, self.stride * 2
        self.fold_at = max(self.fold_every, self.stride)

    def summary(self, method):
        """The `latency_ms` block: percentiles from the sample (every run when nothing was thinned),
        the rest from every run; `sampled` is how many runs the percentiles come from."""
        self.fold()
        block = summarize(self.sample, method)
        if self.stride > 1:
            block.update(mean=self.mean, std=math.sqrt(self.m2 / self.n), min=self.low, max=self.high, n=self.n)
        block["sampled"] = len(self.sample)
        return block
