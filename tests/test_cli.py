"""cli.py through cli.main: `bench` parses its flags and `--set bench.KEY=VALUE`, runs on a real
.onnx, prints the table, and maps a bad setting to exit code 2 before any model is loaded."""
import json
import re

import pytest

from ecutil import run_cli, tripling_model


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return tripling_model(tmp_path_factory.mktemp("cli") / "triple.onnx")


def _table_row(out: str, device: str) -> dict:
    lines = out.split("\n")
    head = re.split(r"\s{2,}", lines[0].strip())
    row = next(line for line in lines[2:] if line.startswith(device + "  "))
    return dict(zip(head, re.split(r"\s{2,}", row.strip())))


def test_bench_with_a_flag_and_a_set_prints_the_table(tiny_onnx):
    code, out, err = run_cli("bench", tiny_onnx, "--runs", "5", "--set", "bench.seconds=0.2")
    assert code == 0, err
    row = _table_row(out, "this host")
    assert int(row["n"]) >= 5 and row["runtime"].startswith("onnxruntime ") and float(row["p50 ms"]) > 0
    assert "timed on this host: x 1x8 float32" in out


def test_bench_json_carries_the_named_settings(tiny_onnx):
    code, out, err = run_cli("bench", tiny_onnx, "--runs", "6", "--set", "bench.seconds=0", "--set", "bench.rounds=1",
                             "--warmup", "2", "--set", "bench.warmup_seconds=0", "--set", "bench.energy=none", "--json")
    assert code == 0, err
    (result,) = json.loads(out)["results"]
    assert result["latency_ms"]["n"] == 6 and result["warmup_done"]["runs"] == 2 and result["energy"] is None
    assert "rounds" not in result  # one round: no rounds note


@pytest.mark.parametrize("args, message", [
    (["--set", "bench.rnus=5"], "--set bench.rnus: unknown key. Did you mean 'runs'?"),
    (["--set", "prune.ratio=0.3"], "--set prune.ratio: bench takes only bench.* keys"),
    (["--runs", "5", "--set", "bench.runs=7"], "--runs 5 and --set bench.runs=7 disagree"),
    (["--threads", "0"], "--threads (bench.threads): Input should be greater than or equal to 1"),
    (["--set", "bench.runs"], "--set 'bench.runs' is not key=value"),
])
def test_a_bad_bench_setting_exits_2_naming_it(tiny_onnx, args, message):
    code, out, err = run_cli("bench", tiny_onnx, *args)
    assert code == 2 and out == "" and message in err, err
    assert "loading" not in err  # refused before the model was loaded


def test_a_bad_setting_is_refused_before_the_artifact_is_read(tmp_path):
    code, _, err = run_cli("bench", tmp_path / "missing.onnx", "--set", "bench.rnus=5")
    assert code == 2 and "bench.rnus" in err and "missing.onnx" not in err, err


def test_bench_help_names_the_key_of_each_flag(capsys):
    from edgecompress.cli import main

    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert done.value.code == 0
    for flag, key in (("--runs", "bench.runs"), ("--warmup", "bench.warmup_runs"), ("--seconds", "bench.seconds"),
                      ("--threads", "bench.threads"), ("--rounds", "bench.rounds"),
                      ("--lock-clocks", "bench.lock_clocks")):
        assert re.search(re.escape(flag) + r"(?: [A-Z_]+)? [^()]*\(= --set " + re.escape(key) + "=", text), flag
    assert "--set bench.KEY=VALUE" in text
