"""deploy() itself: the Summary it returns agrees with the bundle it published, and the run's work
folder is gone once the bundle is out."""
import json
import os

import numpy as np

from ecutil import MODEL_SRC, make_data


def test_deploy_returns_the_summary_of_the_bundle_it_wrote(tmp_path):
    from edgecompress.pipeline import DeployOptions, deploy
    from edgecompress.records import Summary

    (tmp_path / "net.py").write_text(MODEL_SRC)
    x, y = make_data(300)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    from ecutil import FAST

    sets = list(FAST)
    summary = deploy(DeployOptions(model=f"{tmp_path / 'net.py'}:build", data=str(tmp_path / "d.npz"), target="arm",
                                   out=tmp_path / "o", overrides=sets))
    assert isinstance(summary, Summary) and summary.bundle == str(tmp_path / "o" / "net-raspberry-pi-5")
    manifest = json.loads((tmp_path / "o" / "net-raspberry-pi-5" / "manifest.json").read_text())
    assert summary.after.zip_bytes == os.path.getsize(summary.zip)
    assert summary.after.accuracy == manifest["metrics"]["accuracy"]["student"]
    assert summary.after.params == manifest["compression"]["pruning"]["params_after"]
    assert summary.latency_ms["compressed"] == manifest["metrics"]["latency_ms"]["compressed"]
    assert summary.after.bytes == manifest["files"]["model.onnx"]["bytes"]
    assert not (tmp_path / "o" / ".net-raspberry-pi-5.work").exists()


def test_the_manifest_counts_the_seconds_of_every_pruning_round(tmp_path):
    """A walkthrough's manifest said 'seconds 0.79' per round for a run whose first round took 20.5 s: the last
    round's figure. Now seconds covers every round, and round_seconds lists each."""
    from edgecompress.pipeline import DeployOptions, deploy

    from ecutil import FAST

    (tmp_path / "net.py").write_text(MODEL_SRC)
    x, y = make_data(300)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    summary = deploy(DeployOptions(model=f"{tmp_path / 'net.py'}:build", data=str(tmp_path / "d.npz"),
                                   target="host-cpu", out=tmp_path / "o", overrides=list(FAST) + ["prune.iterative_steps=2"]))
    d = json.loads((tmp_path / "o" / "net-host-cpu" / "manifest.json").read_text())["compression"]["distillation"]
    # --json's figures: steps over both rounds beside the seconds over both (it gave one round's steps)
    assert summary.to_dict()["distillation"] == {"steps": 30, "rounds": 2, "steps_per_round": 15, "seconds": d["seconds"]}
    assert len(d["round_seconds"]) == 2 and d["steps"] == 15
    assert d["seconds"] == round(sum(d["round_seconds"]), 2)
    assert d["training"]["steps_per_s"] * d["seconds"] == __import__("pytest").approx(30, rel=0.05)
