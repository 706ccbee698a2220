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
