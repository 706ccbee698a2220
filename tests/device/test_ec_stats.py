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
