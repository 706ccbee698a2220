"""manifest.py: the bundle's manifest.json as a typed model. Real manifests (the demo's, saved for
three targets, and a fresh deploy's) round-trip exactly; a newer schema_version says to upgrade
(exit 2); a key of the wrong type or a missing one is named by its dotted path; keys the model does
not know (a newer minor version's, an app's) are kept."""
import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ecutil import MODEL_SRC, fast_sets, make_data, run_cli
from edgecompress import bundle, manifest, manifest_read
from edgecompress.errors import InputError, StageError

SAVED = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "manifests_before"
TARGETS = ["arm", "android", "jetson"]
WHERE = "b/manifest.json"


def saved(target: str) -> dict:
    return json.loads((SAVED / f"{target}.json").read_text())


def refusal(data: dict) -> StageError:
    with pytest.raises(StageError) as caught:
        manifest.Manifest.from_dict(data, WHERE)
    return caught.value


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """One fast deploy's bundle folder (label-free data: accuracy is the agreement, with its margin)."""
    root = tmp_path_factory.mktemp("deployed")
    (root / "net.py").write_text(MODEL_SRC)
    x, _ = make_data()
    np.savez(root / "x_only.npz", x=x)
    code, _, err = run_cli("deploy", f"{root}/net.py:build", "--target", "host-cpu", "--data", root / "x_only.npz",
                           "--out", root / "dist", *fast_sets("distill.steps=10"))
    assert code == 0, err
    return root / "dist" / "net-host-cpu"


@pytest.mark.parametrize("target", TARGETS)
def test_the_demo_manifests_round_trip_exactly(target):
    data = saved(target)
    m = manifest.Manifest.from_dict(copy.deepcopy(data), WHERE)
    assert m.to_dict() == data
    assert json.dumps(m.to_dict()) == json.dumps(data), "the same keys in the same order, ints kept ints"
    # and typed: the sections are read as records, not string paths
    assert m.schema_version == manifest.SCHEMA_VERSION and m.target == data["target"]
    assert m.metrics.latency_ms["compressed"].p50 == data["metrics"]["latency_ms"]["compressed"]["p50"]
    assert [p.samples for p in m.metrics.parity] == [p["samples"] for p in data["metrics"]["parity"]]
    assert m.compression.quantization.precision == data["compression"]["quantization"]["precision"]
    assert (m.engine is not None) == (target == "jetson") and m.files["model." + m.model.format].bytes > 0


def test_a_fresh_bundle_reads_as_a_manifest_and_as_the_same_dict(deployed):
    text = (deployed / "manifest.json").read_text()
    m = bundle.read(deployed)
    assert isinstance(m, manifest.Manifest) and m.metrics.accuracy.metric == "agreement"
    assert m.metrics.accuracy.original_margin is not None and m.labels is None
    assert json.dumps(bundle.read_manifest(deployed), indent=2) + "\n" == text, "read_manifest: the JSON as written"
    code, out, err = run_cli("verify", deployed)
    assert code == 0 and "OK" in out, err


def test_keys_it_does_not_know_are_kept_where_they_stand():
    data = saved("arm")
    data["app"] = {"build": 7}
    data["metrics"]["parity"][0]["seed"] = 3
    data["model"] = {"sha1": "ab", **data["model"]}  # first, before the keys the model knows
    data["files"]["model.onnx"]["signed"] = True
    out = manifest.Manifest.from_dict(copy.deepcopy(data), WHERE).to_dict()
    assert out == data and list(out["model"])[0] == "sha1" and list(out)[-1] == "app"


def test_an_int_stays_an_int_and_no_string_passes_for_a_number():
    data = saved("arm")
    data["compression"]["pruning"]["ratio"] = 1  # where a float stands
    assert manifest.Manifest.from_dict(copy.deepcopy(data), WHERE).to_dict()["compression"]["pruning"]["ratio"] == 1
    assert json.dumps(manifest.Manifest.from_dict(copy.deepcopy(data), WHERE).to_dict()) == json.dumps(data)
    data["model"]["parameters"] = "61632"
    data["metrics"]["parity_exact_int8"] = 1
    data["metrics"]["latency_ms"]["compressed"]["p50"] = True
    text = str(refusal(data))
    assert "model.parameters: is str '61632', expected an integer" in text
    assert "metrics.parity_exact_int8: is int 1, expected true or false" in text
    assert "metrics.latency_ms.compressed.p50: is bool true, expected a number" in text


@pytest.mark.parametrize("version", [2, 99, "2.0"])
def test_a_newer_schema_version_says_to_upgrade_with_exit_2(version):
    data = saved("android")
    data["schema_version"] = version
    with pytest.raises(InputError) as caught:
        manifest.Manifest.from_dict(data, WHERE)
    err = caught.value
    assert err.exit_code == 2
    assert f"{WHERE} has schema_version {version}, newer than the 1 this edgecompress (" in str(err)
    assert err.hint == "upgrade edgecompress (pip install -U edgecompress) to read this bundle"


def test_the_version_is_checked_before_the_keys():
    """A newer bundle may have changed any key: the upgrade is the remedy, not a rebuild."""
    data = saved("arm")
    data.update(schema_version=2, metrics="renamed")
    with pytest.raises(InputError, match="newer than the 1"):
        manifest.Manifest.from_dict(data, WHERE)
    for version, words in [(None, "schema_version is None, not a version number"), (True, "is True, not a version"),
                           ("one", "schema_version is 'one', not a version number")]:
        data = saved("arm")
        data["schema_version"] = version
        assert words in str(refusal(data))
    data = saved("arm")
    data["schema_version"] = "1.4"  # a newer minor version of the same major: read
    assert manifest.Manifest.from_dict(data, WHERE).to_dict()["schema_version"] == "1.4"


def test_a_wrong_type_is_named_by_its_key_path_not_in_pydantics_words():
    data = saved("jetson")
    data["metrics"]["parity"][0]["samples"] = "x"
    data["metrics"]["parity"][2]["outputs"][0]["max_abs_diff"] = None
    err = refusal(data)
    assert err.exit_code == 3 and "rebuild the bundle" in err.hint
    assert str(err).startswith(f"[verify] {WHERE} is not a manifest edgecompress can read:\n  ")
    assert "  metrics.parity.0.samples: is str 'x', expected an integer\n" in str(err)
    assert "  metrics.parity.2.outputs.0.max_abs_diff: is null, expected a number" in str(err)
    assert "pydantic" not in str(err) and "validation error" not in str(err) and "Input should" not in str(err)


def test_missing_required_keys_are_each_named():
    data = saved("jetson")
    del data["compression"]["quantization"]["precision"]
    del data["metrics"]["latency_ms"]["original"]["p50"]
    del data["provenance"]["profile"]["verify"]
    del data["runtime"]["version"]  # required, though it may be null
    text = str(refusal(data))
    for key in ("compression.quantization.precision", "metrics.latency_ms.original.p50", "provenance.profile.verify",
                "runtime.version"):
        assert f"  {key}: missing" in text, text
    data = saved("jetson")
    data["runtime"]["version"] = None  # null is what it says without a device
    del data["engine"], data["labels"], data["metrics"]["device_state"]  # optional keys
    assert "engine" not in manifest.Manifest.from_dict(copy.deepcopy(data), WHERE).to_dict()


def test_files_and_tensors_are_checked_after_the_keys():
    data = saved("arm")
    data["files"]["../x"] = {"sha256": "0", "bytes": 1}
    data["outputs"] = []
    text = str(refusal(data))
    assert "files: '../x' is not a path inside the bundle folder" in text and "outputs: empty" in text
    data = saved("arm")
    data["files"]["model.onnx"]["bytes"] = -1
    assert "files.model.onnx.bytes: input should be greater than or equal to 0, got int -1" in str(refusal(data))
    assert "holds a JSON list, not a manifest" in str(refusal([]))


def test_load_reads_the_folder_with_the_size_limit_and_says_what_is_wrong(tmp_path, monkeypatch):
    (tmp_path / "manifest.json").write_text(json.dumps(saved("android")))
    assert manifest.load(tmp_path).to_dict() == saved("android")
    monkeypatch.setattr(manifest, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(StageError, match="is not a manifest edgecompress wrote \\(a link, or too large\\)"):
        manifest.load(tmp_path)
    monkeypatch.undo()
    (tmp_path / "manifest.json").write_bytes(b'{"t\xe4rget": 1}')
    with pytest.raises(StageError, match="manifest.json is not UTF-8 text \\(byte 0xe4 at offset 3\\)"):
        manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"name": ')
    with pytest.raises(StageError, match="manifest.json is not valid JSON"):
        manifest.load(tmp_path)
    os.unlink(tmp_path / "manifest.json")
    (tmp_path / "real.json").write_text(json.dumps(saved("android")))
    (tmp_path / "manifest.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(StageError, match="a link, or too large"):
        manifest.load(tmp_path)


def test_manifest_read_takes_a_manifest_or_its_dict():
    data = saved("jetson")
    m = manifest.Manifest.from_dict(copy.deepcopy(data), WHERE)
    assert manifest_read.named_files(m) == manifest_read.named_files(data) == {
        "model.file": "model.onnx", "engine.build_settings.onnx": "model.onnx"}
    manifest_read.check_named_files(m, WHERE)
    manifest_read.check_samples_fit(m, (4, 1, 8, 8), WHERE)
    assert manifest_read.parse(json.dumps(data).encode(), WHERE) == data
    assert manifest_read.SCHEMA_VERSION == bundle.SCHEMA_VERSION == manifest.SCHEMA_VERSION


def test_verify_of_a_bundle_from_a_newer_edgecompress_exits_2_saying_to_upgrade(deployed, tmp_path):
    import shutil

    folder = tmp_path / "net-host-cpu"
    shutil.copytree(deployed, folder)
    data = json.loads((folder / "manifest.json").read_text())
    data["schema_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(data))
    code, _, err = run_cli("verify", folder)
    assert code == 2 and f"{folder / 'manifest.json'} has schema_version 99, newer than the 1" in err, err
    assert "-> upgrade edgecompress (pip install -U edgecompress) to read this bundle" in err and "Traceback" not in err
    code, _, err = run_cli("bench", folder, "--runs", "5", "--seconds", "0")
    assert code == 2 and "has schema_version 99" in err, err


def test_the_bundles_example_program_refuses_a_newer_manifest(deployed, tmp_path):
    import shutil
    import subprocess
    import sys

    folder = tmp_path / "bundle"
    shutil.copytree(deployed, folder)
    ran = subprocess.run([sys.executable, str(folder / "example.py")], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr  # as built, it runs its first stored sample
    data = json.loads((folder / "manifest.json").read_text())
    data["schema_version"] = 2
    (folder / "manifest.json").write_text(json.dumps(data))
    ran = subprocess.run([sys.executable, str(folder / "example.py")], capture_output=True, text=True)
    assert ran.returncode == 1 and "manifest.json has schema_version 2, newer than the 1 this example reads" in ran.stderr
