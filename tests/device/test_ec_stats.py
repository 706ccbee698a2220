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
    (100, 0.5, 10, 1.0, 100, False),  # the cap wins over the seconds budget
    (100, 9.0, 500, 1.0, 100, False),  # and over the count budget
])
def test_stopping_rule_needs_both_budgets_and_respects_the_cap(done, elapsed, want_runs, want_seconds,
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
