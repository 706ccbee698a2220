import numpy as np
import pytest

import ec_stats


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 1001])
def test_percentiles_match_numpy_linear(n):
    values = sorted(np.random.default_rng(n).exponential(2.0, n).tolist())
    for q in (0, 1, 25, 50, 90, 99, 99.9, 100):
        assert ec_stats.percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12, abs=1e-12)


def test_summary_of_a_known_array():
    values = [4.0, 1.0, 100.0, 3.0, 2.0]
    s = ec_stats.summarize(values, "perf_counter_ns around session.run")
    assert s["p50"] == 3.0
    assert s["p90"] == pytest.approx(61.6)  # rank 3.6 of 5: 4 + 0.6 * (100 - 4)
    assert s["p99"] == pytest.approx(96.16)
    assert s["mean"] == pytest.approx(22.0)
    assert s["std"] == pytest.approx(np.std(values))  # population std, ddof=0
    assert s["std"] != pytest.approx(np.std(values, ddof=1))
    assert (s["min"], s["max"], s["n"]) == (1.0, 100.0, 5)
    assert s["method"] == "perf_counter_ns around session.run"


def test_summary_matches_numpy_on_many_near_equal_values():
    values = (1.0 + 1e-9 * np.random.default_rng(0).standard_normal(100_000)).tolist()
    s = ec_stats.summarize(values, "m")
    assert s["mean"] == pytest.approx(np.mean(values), rel=1e-15)
    assert s["std"] == pytest.approx(np.std(values), rel=1e-6)


def test_empty_and_out_of_range_inputs_are_errors():
    with pytest.raises(ValueError):
        ec_stats.summarize([], "m")
    with pytest.raises(ValueError):
        ec_stats.percentile([1.0], 101)


@pytest.mark.parametrize("done, elapsed, want_runs, want_seconds, max_runs, expected", [
    (0, 0.0, 10, 0.0, 100, True),     # runs still owed
    (10, 0.0, 10, 0.0, 100, False),   # both budgets met
    (10, 0.5, 10, 1.0, 100, True),    # count met, seconds still owed
    (5, 2.0, 10, 1.0, 100, True),     # seconds met, count still owed
    (100, 0.5, 10, 1.0, 100, True),   # the cap never cuts a seconds budget (a fast CPU reaches it first)
    (100, 0.5, 500, 1.0, 100, True),  # not even with the count still owed
    (100, 9.0, 500, 1.0, 100, False),  # but it caps the count budget
])
def test_stopping_rule_needs_both_budgets_and_caps_only_the_count(done, elapsed, want_runs, want_seconds,
                                                               max_runs, expected):
    assert ec_stats.keep_going(done, elapsed, want_runs, want_seconds, max_runs) is expected


def test_stability_of_a_steady_window_is_zero_spread():
    s = ec_stats.stability([2.0] * 1000)  # 2 s of run time: 4 parts of ~0.5 s
    assert s == {"parts": 4, "part_p50_min": 2.0, "part_p50_max": 2.0, "spread_pct": 0.0}


def test_stability_sees_a_slowdown_in_the_second_half():
    values = [2.0] * 600 + [3.0] * 400  # 1.2 s at 2 ms, then 1.2 s at 3 ms: 4 parts of 250 runs
    s = ec_stats.stability(values)
    assert s["parts"] == 4
    assert (s["part_p50_min"], s["part_p50_max"]) == (2.0, 3.0)
    assert s["spread_pct"] == pytest.approx(50.0)  # (3 - 2) / whole p50 of 2


def test_stability_needs_two_parts():
    assert ec_stats.stability([1.0] * 400) is None  # 0.4 s of run time
    assert ec_stats.stability([300.0] * 8) is None  # 2.4 s, but fewer than 5 runs a part
    assert ec_stats.stability([300.0] * 10)["parts"] == 2


def test_stability_of_runs_too_fast_for_the_clock_is_none():
    assert ec_stats.stability([0.0] * 600 + [2000.0] * 10) is None  # a p50 of 0 ms has no relative spread


def test_stability_parts_are_parts_of_the_window_not_of_the_summed_run_time():
    """A 5 us model's runs fill a fraction of its window (the loop's own time is the rest): 1.2 s of
    window is two parts whatever that fraction."""
    runs = [0.005] * 100000  # 0.5 s of run time
    assert ec_stats.stability(runs) is None
    assert ec_stats.stability(runs, window_s=1.2)["parts"] == 2
    assert ec_stats.stability(runs, window_s=60.0)["parts"] == 20


def record(values, **limits):
    latencies = ec_stats.Latencies(**limits)
    for v in values:
        latencies.add(v)
    return latencies, latencies.summary("m")


def test_latencies_that_fit_are_kept_whole_and_summarized_exactly():
    values = np.random.default_rng(3).exponential(2.0, 5000).tolist()
    latencies, summary = record(values, keep=5000, fold_every=512)
    assert latencies.sample == values  # in order, every one
    assert summary == dict(ec_stats.summarize(values, "m"), sampled=5000)


def test_past_the_limit_every_run_counts_and_an_even_sample_gives_the_percentiles():
    values = (1.0 + np.random.default_rng(4).exponential(0.2, 300000)).tolist()
    latencies, summary = record(values, keep=20000)
    assert 10000 <= summary["sampled"] == len(latencies.sample) <= 20000
    assert summary["n"] == 300000
    assert summary["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    assert summary["std"] == pytest.approx(np.std(values), rel=1e-9)
    assert (summary["min"], summary["max"]) == (min(values), max(values))
    for q, key in ((50, "p50"), (90, "p90"), (99, "p99")):
        assert summary[key] == pytest.approx(np.percentile(values, q), rel=0.02)


def test_the_sample_does_not_alias_with_a_latency_that_alternates():
    _, summary = record([1.0, 3.0] * 100000, keep=1000)  # every 2nd, 4th, ... run would be all 3.0 ms
    assert summary["sampled"] <= 1000 and summary["mean"] == pytest.approx(2.0)
    assert summary["p90"] == 3.0 and summary["min"] == 1.0 and summary["p50"] in (1.0, 2.0, 3.0)


def test_the_sample_keeps_the_runs_in_order_for_the_drift_parts():
    latencies, _ = record([2.0] * 60000 + [3.0] * 40000, keep=5000)  # 2 ms for 120 s, then 3 ms for 120 s
    s = ec_stats.stability(latencies.sample, window_s=240.0)
    assert s["parts"] == 20 and (s["part_p50_min"], s["part_p50_max"]) == (2.0, 3.0)


def test_the_slow_share_counts_runs_and_their_time():
    assert ec_stats.slow_share([1.0] * 8 + [6.0, 6.0], 2.0) == (0.2, 0.6)
