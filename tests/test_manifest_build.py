"""The manifest a deploy writes is checked against the schema before anything is published: a
back end that wrote a wrong type fails the run naming the key, and no bundle appears."""
import numpy as np

from ecutil import FAST, MODEL_SRC, make_data, run_cli


def test_a_wrong_type_in_the_written_manifest_fails_before_the_bundle_is_published(tmp_path, monkeypatch):
    from edgecompress.backends import onnxruntime

    monkeypatch.setattr(onnxruntime.OnnxRuntime, "runtime_section",
                        lambda self, deployed, measurement: {"name": "onnxruntime", "version": 1.32})
    (tmp_path / "net.py").write_text(MODEL_SRC)
    x, y = make_data(300)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    sets = [arg for pair in FAST for arg in ("--set", pair)]
    code, _, err = run_cli("deploy", f"{tmp_path / 'net.py'}:build", "--data", tmp_path / "d.npz", "--target", "arm",
                           "--out", tmp_path / "o", *sets)
    assert code == 3 and "the manifest being written is not a manifest edgecompress can read" in err, err
    assert "runtime.version: is float 1.32, expected a string" in err and "this is a bug in edgecompress" in err
    assert not (tmp_path / "o" / "net-raspberry-pi-5").exists()
