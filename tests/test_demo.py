"""The README's first command: the built-in demo, with nothing but the package installed."""
import json

import pytest

from ecutil import fast_sets, run_cli


def test_demo_deploys_with_no_model_and_no_data(tmp_path):
    code, out, err = run_cli("deploy", "--target", "arm", "--out", tmp_path, "--json", *fast_sets())
    assert code == 0, err
    summary = json.loads(out)
    assert "resolves to its default profile 'raspberry-pi-5'" in err
    assert "INT8 products computed exactly, as the arm64 target does" in err
    assert summary["name"] == "demo" and summary["target"] == "raspberry-pi-5"
    assert summary["accuracy_metric"] == "accuracy" and summary["before"]["accuracy"] > 0.95
    assert (tmp_path / "demo-raspberry-pi-5" / "labels.txt").read_text().split() == [str(d) for d in range(10)]


@pytest.mark.slow
def test_demo_full_budget_stays_close_to_the_teacher(tmp_path):
    """The default profile's whole budget (1200 steps); about 40 s. Run with -m slow."""
    code, out, err = run_cli("deploy", "--target", "arm", "--out", tmp_path, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["after"]["accuracy"] >= summary["before"]["accuracy"] - 0.01
    assert summary["after"]["macs"] < summary["before"]["macs"] / 3.5
