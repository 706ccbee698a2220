"""The records write the manifest's and the summary's keys exactly as the bundle contract has them
(the keys of a demo manifest saved before the records existed, benchmarks/results/manifests_before)."""
import json
from pathlib import Path

import pytest

from edgecompress.records import Accuracy, Distillation, Pruning, Side, Summary

SAVED = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "manifests_before" / "arm.json"


def test_a_pruned_models_record_writes_the_manifests_pruning_keys():
    saved = json.loads(SAVED.read_text())["compression"]["pruning"]
    pruning = Pruning(structure="channel", ratio=0.5, params_before=241898, params_after=61050, macs_before=4775178,
                      macs_after=1207946, nonzero_params_after=61050, masked_layers=[], round_to=8, importance="l2",
                      iterative_steps=1, ignored_layers=["15"])
    written = pruning.to_dict()
    assert written.pop("left_whole") == []  # new since the saved manifest: the layers pruning left whole
    assert written == saved
    assert pruning.to_dict(two_four={"masked_layers": 2})["two_four"] == {"masked_layers": 2}


def test_an_onnx_input_has_only_the_structure_the_ratio_and_unknown_counts():
    assert Pruning("none", 0.0).to_dict() == {"structure": "none", "ratio": 0.0, "params_before": None,
                                              "params_after": None, "macs_before": None, "macs_after": None}


def test_distillation_drops_what_did_not_happen_but_keeps_a_null_final_loss():
    saved = json.loads(SAVED.read_text())["compression"]["distillation"]
    record = Distillation(**saved)
    assert record.to_dict() == saved
    assert Distillation(steps=0, seconds=0.0, note="ONNX input: not distilled").to_dict() == {
        "steps": 0, "seconds": 0.0, "final_loss": None, "note": "ONNX input: not distilled"}


def test_accuracy_keeps_the_margin_only_without_labels():
    saved = json.loads(SAVED.read_text())["metrics"]["accuracy"]
    assert Accuracy(**saved).to_dict() == saved
    assert Accuracy("agreement", 1.0, 0.9, 0.95, 10, 0.2).to_dict()["original_margin"] == 0.2


def test_the_summary_writes_the_json_deploy_prints():
    side = Side(bytes=10, deflated_bytes=8, params=5, macs=7, accuracy=0.9, p50_ms=1.0)
    s = Summary(name="net", target="arm", before=side, after=Side(1, 1, 1, 1, 0.8, 0.5, nonzero_params=1,
                                                                   zip_bytes=900),
                speedup_p50=2.0, accuracy_metric="accuracy", accuracy_samples=10, latency_ms={}, measured_on={},
                measured_on_text="", accuracy_note=None, rounds=None, speedup_per_round=None, energy_reason=None)
    out = s.to_dict()
    assert sorted(out["before"]) == ["accuracy", "bytes", "deflated_bytes", "macs", "p50_ms", "params"]
    assert out["after"]["zip_bytes"] == 900 and "latency_budget" not in out
    with pytest.raises(AttributeError):  # frozen: no stage adds to a record after it is made
        s.name = "other"
