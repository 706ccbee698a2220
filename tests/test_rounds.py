"""bench.rounds: the models take turns, each round a fresh device-side process with its share of
the budget, and each model's result is its median round, kept whole."""
import json
import re

import pytest

from ecutil import fast_sets, run_cli


def test_median_round_is_the_middle_one_and_is_kept_whole():
    from edgecompress.bench import median_round

    rounds = [{"latency_ms": {"p50": p}, "load_ms": i} for i, p in enumerate([3.0, 1.0, 2.0])]
    chosen = median_round(rounds)
    assert chosen["latency_ms"]["p50"] == 2.0 and chosen["load_ms"] == 2  # every key from that same round
    assert chosen["rounds"] == {"count": 3, "p50_ms": [3.0, 1.0, 2.0], "chosen": 3, "spread_pct": 100.0}
    even = median_round([{"latency_ms": {"p50": p}} for p in [4.0, 1.0, 3.0, 2.0]])
    assert even["latency_ms"]["p50"] == 2.0 and even["rounds"]["chosen"] == 4  # the lower of the middle two
    assert median_round(rounds[:1]) is rounds[0]  # one round: nothing added


def test_a_round_without_a_p50_keeps_the_first_and_says_so():
    from edgecompress.bench import median_round

    chosen = median_round([{"latency_ms": {"p50": None}, "id": 1},
                           {"latency_ms": {"p50": 2.0}, "id": 2, "warnings": ["throttled"]}])
    assert chosen["id"] == 1 and chosen["rounds"]["chosen"] == 1 and chosen["rounds"]["p50_ms"] == [None, 2.0]
    assert chosen["warnings"] == ["round 2: throttled"]


def test_warnings_of_every_round_are_kept_and_tagged():
    from edgecompress.bench import median_round

    rounds = [{"latency_ms": {"p50": 1.0}, "warnings": ["throttled: 85 C"]},
              {"latency_ms": {"p50": 2.0}, "warnings": ["short window"]},
              {"latency_ms": {"p50": 3.0}, "warnings": ["short window"]}]
    assert median_round(rounds)["warnings"] == [
        "short window", "round 1: throttled: 85 C",
        "the rounds' p50s spread by 100%: the device was busy or throttling, so the p50 will not repeat to better "
        "than that"]
    calm = [{"latency_ms": {"p50": p}, "warnings": []} for p in (1.0, 1.02, 1.05)]
    assert median_round(calm)["warnings"] == []


def test_speedups_are_paired_by_round_and_a_wide_spread_warns():
    from edgecompress import bench, summary as describe

    results = {"original": {"rounds": {"count": 3, "p50_ms": [4.0, 6.0, 5.0], "chosen": 3, "spread_pct": 40.0}},
               "compressed": {"rounds": {"count": 3, "p50_ms": [2.0, 2.0, 2.5], "chosen": 1, "spread_pct": 25.0}}}
    assert bench.round_speedups(results["original"], results["compressed"]) == [2.0, 3.0, 2.0]
    rounds = {k: v["rounds"] for k, v in results.items()}
    assert "speed-up per round: 2.00x / 3.00x / 2.00x" in describe._rounds_note(
        rounds, bench.round_speedups(results["original"], results["compressed"]))
    note = describe._drift_note(results)
    assert "rounds' p50s spread by more than 10% (original 40%, compressed 25%)" in note
    calm = {k: {"rounds": dict(v["rounds"], spread_pct=5.0)} for k, v in results.items()}
    assert describe._drift_note(calm) == ""


def test_tensorrt_targets_refuse_more_than_one_round():
    from edgecompress import profile
    from edgecompress.errors import ProfileError

    with pytest.raises(ProfileError, match="TensorRT targets measure in one round"):
        profile.load("jetson-orin-nano", ["bench.rounds=3"])


def test_each_round_gets_its_share_of_the_runs_and_seconds_but_all_the_warmup():
    from edgecompress.bench import round_share
    from edgecompress.profile import Bench

    share = round_share(Bench(runs=100, seconds=3.0, warmup_runs=10, warmup_seconds=1.0, rounds=3))
    assert (share.runs, share.seconds, share.warmup_runs, share.warmup_seconds) == (34, 1.0, 10, 1.0)
    one = Bench(runs=100, seconds=3.0)
    assert round_share(one) is one


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    import torch

    from edgecompress import export
    from edgecompress.profile import Export

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten()).eval()
    folder = tmp_path_factory.mktemp("tiny")
    return export.export_onnx(model, torch.zeros(1, 1, 8, 8), folder / "tiny.onnx", Export())


def test_models_take_turns_through_the_real_runner(tiny_onnx, capsys):
    from edgecompress import bench
    from edgecompress.profile import Bench

    cfg = Bench(runs=6, seconds=0, warmup_runs=1, warmup_seconds=0, idle_seconds=0, energy="none", rounds=3)
    results = bench.measure({"a": tiny_onnx, "b": tiny_onnx}, cfg, "onnxruntime")
    order = []
    for label, rnd in re.findall(r"bench (\w) on this host, round (\d)/3", capsys.readouterr().err):
        if (label, rnd) not in order:
            order.append((label, rnd))
    assert order == [("a", "1"), ("b", "1"), ("a", "2"), ("b", "2"), ("a", "3"), ("b", "3")]
    for r in results.values():
        p50s = r["rounds"]["p50_ms"]
        assert len(p50s) == 3 and r["latency_ms"]["p50"] == sorted(p50s)[1] == p50s[r["rounds"]["chosen"] - 1]
        assert r["latency_ms"]["n"] == 2  # ceil(6 / 3) runs in the chosen round
        assert r["device_name"] == "this host"


def test_bench_rounds_flag_and_its_bad_values(tiny_onnx):
    code, out, err = run_cli("bench", tiny_onnx, "--rounds", "2", "--runs", "4", "--seconds", "0", "--json")
    assert code == 0, err
    result = json.loads(out)["results"][0]
    assert result["rounds"]["count"] == 2 and len(result["rounds"]["p50_ms"]) == 2
    code, out, err = run_cli("bench", tiny_onnx, "--rounds", "2", "--runs", "4", "--seconds", "0")
    assert code == 0 and re.search(r"rounds on this host: p50 [\d.]+, [\d.]+ ms; the row is round [12], the median; "
                                   r"spread \d+%", out), out
    code, _, err = run_cli("bench", tiny_onnx, "--rounds", "0")
    assert code == 2 and "--rounds" in err and "greater than or equal to 1" in err, err
    code, _, err = run_cli("bench", tiny_onnx, "--runs", "0")
    assert code == 2 and "--runs" in err, err


def test_deploy_reports_every_round_and_the_median_one(tmp_path, model_file, npz_data):
    code, out, err = run_cli("deploy", f"{model_file}:build", "--target", "host-cpu", "--data", npz_data,
                             "--out", tmp_path / "dist", "--json", *fast_sets("distill.steps=0", "bench.rounds=3"))
    assert code == 0, err
    summary = json.loads(out)
    assert "taking turns in 3 rounds" in err
    for label in ("original", "compressed"):
        rounds = summary["rounds"][label]
        assert rounds["count"] == 3 and summary["latency_ms"][label]["p50"] == sorted(rounds["p50_ms"])[1]
    assert "The models took turns in 3 rounds" in summary["measured_on_text"]
    manifest = json.loads((tmp_path / "dist" / "net-host-cpu" / "manifest.json").read_text())
    assert manifest["metrics"]["latency_rounds"]["compressed"]["count"] == 3
    distilled = manifest["compression"]["distillation"]
    assert summary["distillation"] == {"steps": distilled["steps"], "rounds": 1, "steps_per_round": distilled["steps"],
                                       "seconds": distilled["seconds"]}
