"""Bad input through the real CLI: every mistake a user can make exits with the documented code
(2 input, 3 stage) and a message that names the file, key, layer or target and says what to do
(DESIGN.md, "CLI (contract)"). Nothing here needs a device."""
from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ecutil import MODEL_SRC, fast_sets, make_data, run_cli

BUNDLE = "net-host-cpu"  # the factory `build` in net.py is named after the file: net -> net-host-cpu


def ok_sets() -> list:
    """Fast settings for runs that must succeed. The factory's weights are random (torch's global RNG),
    and with 40 held-out samples the default 97% INT8 top-1 agreement allows one flip: loosen it so
    these runs test the output folder, not quantization luck."""
    return fast_sets("verify.min_top1_agreement=0.75")


def has_remedy(err: str) -> bool:
    """The errors' hint line (`  -> what to do`) is how a message says what to do."""
    return "\n  -> " in err


def deploy_args(model, data, *extra, target="host-cpu", out=None):
    args = ["deploy", str(model), "--target", target, "--data", str(data)]
    if out is not None:
        args += ["--out", str(out)]
    return args + list(extra)


@pytest.fixture
def out_dir(tmp_path) -> Path:
    return tmp_path / "dist"


# ---------------------------------------------------------------------------------------------
# one successful fast deploy, shared by the tests that need a real bundle or a real .onnx
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployed")
    model = root / "net.py"
    model.write_text(textwrap.dedent(MODEL_SRC))
    x, y = make_data()
    data = root / "data.npz"
    np.savez(data, x=x, y=y)
    out = root / "dist"
    import torch

    torch.manual_seed(0)
    code, stdout, err = run_cli(*deploy_args(f"{model}:build", data, *ok_sets(), out=out))
    assert code == 0, err
    assert (out / BUNDLE / "manifest.json").is_file()
    return SimpleNamespace(model=model, data=data, out=out, bundle=out / BUNDLE)


# ---------------------------------------------------------------------------------------------
# targets and profiles
# ---------------------------------------------------------------------------------------------

def test_unknown_target_lists_known_and_suggests_closest(model_file, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, target="raspbery-pi-5", out=out_dir))
    assert code == 2, err
    assert "unknown target 'raspbery-pi-5'" in err
    assert "Did you mean 'raspberry-pi-5'?" in err
    for known in ("host-cpu", "raspberry-pi-5", "arm64-cpu"):
        assert known in err, f"the message should list the known target {known}"
    assert has_remedy(err)
    assert not out_dir.exists(), "nothing may be written for a bad target"


BAD_PROFILE = """\
name: my-board
family: arm
runtime: onnxruntime
device: {arch: arm64, cores: 4}
prune:
  ratio: 1.5            # outside (0, 1)
quantize:
  calibraton_samples: 64   # misspelt
bench:
  runs: many            # wrong type
"""


def test_profile_file_reports_all_problems_together(tmp_path, model_file, npz_data, out_dir):
    prof = tmp_path / "my-board.yaml"
    prof.write_text(BAD_PROFILE)
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, target=prof, out=out_dir))
    assert code == 2, err
    assert str(prof) in err, "the message should name the profile file"
    assert "3 problem(s)" in err, "all three problems must be reported in one message"
    lines = err.splitlines()
    misspelt = [ln for ln in lines if "quantize.calibraton_samples" in ln]
    assert misspelt and "Did you mean 'calibration_samples'?" in misspelt[0]
    runs = [ln for ln in lines if "bench.runs" in ln]
    assert runs and "integer" in runs[0] and "'many'" in runs[0]
    ratio = [ln for ln in lines if "prune.ratio" in ln]
    assert ratio and "less than 1" in ratio[0] and "1.5" in ratio[0]
    assert has_remedy(err)


def test_set_override_out_of_range_names_the_set_flag(model_file, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--set", "prune.ratio=1.5", out=out_dir))
    assert code == 2, err
    assert "--set prune.ratio" in err
    assert "less than 1" in err and "1.5" in err
    assert has_remedy(err)


def test_set_override_misspelt_key_suggests_the_right_one(model_file, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--set", "prune.raito=0.3", out=out_dir))
    assert code == 2, err
    assert "--set prune.raito" in err and "Did you mean 'ratio'?" in err


def test_set_without_equals_sign(model_file, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--set", "prune.ratio", out=out_dir))
    assert code == 2, err
    assert "prune.ratio" in err and "key=value" in err and has_remedy(err)


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------

# (factory, substrings the message must contain, whether it must say what to do via a hint)
MODEL_CASES = {
    "file missing": ("missing.py:build", ["missing.py", "does not exist"]),
    "factory missing": ("net.py:nope", ["net.py", "'nope'", "callables in net.py", "build", "broken",
                                        "not_a_module"]),
    "not callable": ("net.py:NOT_CALLABLE", ["net.py:NOT_CALLABLE", "int", "not a callable"]),
    "factory raises": ("net.py:broken", ["net.py", "broken", "NameError", "undefined_name",
                                         "return undefined_name + 1"]),
    "returns a non-Module": ("net.py:not_a_module", ["net.py:not_a_module", "str", "torch.nn.Module"]),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model(case, model_file, npz_data, out_dir):
    spec, expected = MODEL_CASES[case]
    code, _, err = run_cli(*deploy_args(model_file.parent / spec, npz_data, out=out_dir))
    assert code == 2, err
    for text in expected:
        assert text in err, f"{case}: {text!r} missing from:\n{err}"
    assert "Traceback" not in err or case == "factory raises"


def test_factory_traceback_shows_only_the_users_frames(model_file, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(f"{model_file}:broken", npz_data, out=out_dir))
    assert code == 2, err
    assert "Traceback (most recent call last)" in err
    assert f'File "{model_file}"' in err or f'File "{model_file.resolve()}"' in err
    assert "undefined_name" in err
    for ours in ("models.py", "pipeline.py", "cli.py", f"{os.sep}edgecompress{os.sep}"):
        assert ours not in err, f"the user's traceback should not show edgecompress's own frame {ours}"
    assert has_remedy(err) and f"fix the error in {model_file}" in err


def test_import_error_in_model_file_shows_the_users_traceback(tmp_path, npz_data, out_dir):
    bad = tmp_path / "bad_import.py"
    bad.write_text("import torch.nn as nn\nVALUE = 1 / 0\n\ndef build():\n    return nn.Linear(1, 1)\n")
    code, _, err = run_cli(*deploy_args(f"{bad}:build", npz_data, out=out_dir))
    assert code == 2, err
    assert "bad_import.py" in err and "ZeroDivisionError" in err and "VALUE = 1 / 0" in err
    assert "models.py" not in err


@pytest.mark.parametrize("case", ["file missing", "returns a non-Module"])
def test_bad_model_message_says_what_to_do(case, model_file, npz_data, out_dir):
    spec, _ = MODEL_CASES[case]
    code, _, err = run_cli(*deploy_args(model_file.parent / spec, npz_data, out=out_dir))
    assert code == 2
    assert has_remedy(err), err


def test_model_spec_that_is_neither_factory_nor_onnx(model_file, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(model_file, npz_data, out=out_dir))
    assert code == 2, err
    assert str(model_file) in err and "file.py:factory" in err and has_remedy(err)


# ---------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------

def _other_architecture():
    import torch.nn as nn

    # index 0/1/3/4: conv and BN with other channel counts (wrong shape); index 8: no Linear
    # (missing 8.weight/8.bias); index 9: a Linear the factory does not have (unexpected).
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Identity(), nn.Linear(32, 4),
    )


def test_weights_of_another_architecture(tmp_path, model_file, npz_data, out_dir):
    import torch

    weights = tmp_path / "other.pt"
    torch.save(_other_architecture().state_dict(), weights)
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--weights", weights, out=out_dir))
    assert code == 2, err
    assert str(weights) in err and "do not match" in err
    assert "missing (2): 8.weight, 8.bias" in err
    assert "unexpected (2): 9.weight, 9.bias" in err
    assert "wrong shape" in err and "0.weight: file (8, 1, 3, 3) vs model (16, 1, 3, 3)" in err
    assert has_remedy(err)


def test_weights_file_missing(tmp_path, model_file, npz_data, out_dir):
    weights = tmp_path / "nowhere.pt"
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--weights", weights, out=out_dir))
    assert code == 2, err
    assert str(weights) in err and "does not exist" in err


def test_weights_that_are_not_a_torch_file(tmp_path, model_file, npz_data, out_dir):
    weights = tmp_path / "garbage.pt"
    weights.write_bytes(b"not a checkpoint at all")
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--weights", weights, out=out_dir))
    assert code == 2, err
    assert str(weights) in err and "weights_only=True" in err and has_remedy(err)


def test_weights_file_missing_says_what_to_do(tmp_path, model_file, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--weights", tmp_path / "no.pt",
                                        out=out_dir))
    assert code == 2
    assert has_remedy(err), err


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------

def _npz(tmp_path, name="data.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _data_case(case, tmp_path):
    """(data path, extra args, substrings the message must contain)"""
    x, y = make_data()
    if case == "no x":
        return _npz(tmp_path, "nox.npz", inputs=x, y=y), [], ["nox.npz", "no array 'x'", "inputs"]
    if case == "integer x":
        return (_npz(tmp_path, "intx.npz", x=(x * 10).astype(np.int32), y=y), [],
                ["intx.npz", "'x'", "int32", "floating point"])
    if case == "y wrong shape":
        return (_npz(tmp_path, "ybad.npz", x=x, y=y[:, None]), [],
                ["ybad.npz", "'y'", "(200, 1)", "(200,)"])
    if case == "shape disagrees with --input-shape":
        return (_npz(tmp_path, "shape.npz", x=x, y=y), ["--input-shape", "1x3x8x8"],
                ["shape.npz", "(1, 8, 8)", "--input-shape", "(3, 8, 8)"])
    if case == "--input-shape without the batch":
        return (_npz(tmp_path, "nobatch.npz", x=x, y=y), ["--input-shape", "1x8x8"],
                ["nobatch.npz", "(1, 8, 8)", "--input-shape starts with the batch, then the sample's shape: --input-shape 1x1x8x8"])
    if case == "--input-shape of the image only":  # 8x8 reads as batch 8 of an (8,) sample
        return (_npz(tmp_path, "hw.npz", x=x, y=y), ["--input-shape", "8x8"],
                ["hw.npz", "(1, 8, 8)", "then the sample's shape: --input-shape 1x1x8x8"])
    if case == "too few for calibration":
        return (_npz(tmp_path, "few.npz", x=x[:20], y=y[:20]), [],
                ["few.npz has 20 samples", "128 from the training split", "here 16", "160 samples in all",
                 "--set quantize.calibration_samples=16"])
    if case == "few samples of the wrong shape":  # the shape is the first thing to hear about
        return (_npz(tmp_path, "fewbad.npz", x=np.zeros((20, 3, 8, 8), np.float32), y=y[:20]), [],
                ["fewbad.npz", "(3, 8, 8)", "do not fit the model"])
    if case == "channels-last images":  # N, H, W, C as image libraries give them: said so, with the transpose
        return (_npz(tmp_path, "nhwc.npz", x=np.zeros((200, 8, 8, 3), np.float32), y=y), [],
                ["nhwc.npz", "(8, 8, 3)", "look channels-last (H, W, C = 8, 8, 3)", "x.transpose(0, 3, 1, 2)"])
    if case == "path missing":
        return tmp_path / "absent.npz", [], ["absent.npz", "does not exist"]
    if case == "not an npz":
        bad = tmp_path / "broken.npz"
        bad.write_bytes(b"\x00\x01 definitely not a zip")
        return bad, [], ["broken.npz", "could not be read"]
    raise AssertionError(case)


DATA_CASES = ["no x", "integer x", "y wrong shape", "shape disagrees with --input-shape", "--input-shape without the batch",
              "--input-shape of the image only",
              "too few for calibration", "few samples of the wrong shape", "channels-last images", "path missing",
              "not an npz"]


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data(case, tmp_path, model_file, out_dir):
    data, extra, expected = _data_case(case, tmp_path)
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", data, *extra, out=out_dir))
    assert code == 2, err
    for text in expected:
        assert text in err, f"{case}: {text!r} missing from:\n{err}"
    assert "Traceback" not in err
    assert not (out_dir / BUNDLE).exists()


@pytest.mark.parametrize("case", ["no x", "integer x", "shape disagrees with --input-shape",
                                  "too few for calibration", "path missing", "not an npz"])
def test_bad_data_says_what_to_do(case, tmp_path, model_file, out_dir):
    data, extra, _ = _data_case(case, tmp_path)
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", data, *extra, out=out_dir))
    assert code == 2
    assert has_remedy(err), err


def test_missing_data_with_own_model(model_file, out_dir):
    code, _, err = run_cli("deploy", f"{model_file}:build", "--target", "host-cpu", "--out", out_dir)
    assert code == 2, err
    assert "--data" in err and has_remedy(err)


# ---------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------

def test_device_without_an_inventory(model_file, npz_data, out_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--device", "lab-pi", out=out_dir))
    assert code == 2, err
    assert "no device inventory found" in err and "devices.yaml" in err and "EDGECOMPRESS_DEVICES=" in err
    assert not out_dir.exists()


def test_unknown_device_and_inventory_typos(model_file, npz_data, out_dir, tmp_path, monkeypatch):
    inv = tmp_path / "devices.yaml"
    inv.write_text("devices:\n  lab-pi:\n    target: raspberry-pi-5\n    host: 10.0.0.2\n")
    monkeypatch.setenv("EDGECOMPRESS_DEVICES", str(inv))
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--device", "lab-py", out=out_dir))
    assert code == 2 and "unknown device 'lab-py'" in err and "Did you mean 'lab-pi'" in err
    inv.write_text("devices:\n  lab-pi:\n    target: raspberry-pi-5\n    hots: 10.0.0.2\n    port: 99999\n")
    code, _, err = run_cli("devices", "list")
    assert code == 2 and str(inv) in err and "devices.lab-pi.hots" in err and "Did you mean 'host'" in err
    assert "devices.lab-pi.port" in err
    inv.write_text("devices:\n  lab-pi:\n    target: raspbery-pi-5\n    host: 10.0.0.2\n")
    code, _, err = run_cli("devices", "list")
    assert code == 2 and "devices.lab-pi.target" in err and "Did you mean 'raspberry-pi-5'" in err, err
    inv.write_text("devices:\n  lab-pi:\n    target: raspbery-pi-5\n    hots: 10.0.0.2\n")  # both at once
    code, _, err = run_cli("devices", "list")
    assert code == 2 and "has 2 problem(s)" in err and "Did you mean 'raspberry-pi-5'" in err and "'host'" in err, err


def test_set_problems_are_blamed_on_the_set_and_lists_get_an_example(model_file, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--set", "prune.ignore=conv1", out=out_dir))
    assert code == 2 and "with your --set values" in err and "--set prune.ignore=[...]" in err, err


def test_a_teacher_that_does_not_fit_the_labels_is_named_as_the_teacher(model_file, npz_data, out_dir, tmp_path):
    (tmp_path / "teach.py").write_text("import torch.nn as nn\n"
                                       "def two():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))\n")
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--teacher", f"{tmp_path}/teach.py:two",
                                        out=out_dir))
    assert code == 2 and "but the teacher" in err and "teach.py:two" in err, err


@pytest.mark.parametrize("shape", ["abc", "1x0x8x8", "8"])
def test_bad_input_shape(shape, model_file, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--input-shape", shape, out=out_dir))
    assert code == 2, err
    assert f"--input-shape {shape!r}" in err and "1x3x224x224" in err


# ---------------------------------------------------------------------------------------------
# .onnx models
# ---------------------------------------------------------------------------------------------

def test_corrupt_onnx_random_bytes(tmp_path, npz_data, out_dir):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    code, _, err = run_cli(*deploy_args(bad, npz_data, out=out_dir))
    assert code == 2, err
    assert str(bad) in err and "not a valid ONNX model" in err and has_remedy(err)
    assert "Traceback" not in err


def test_corrupt_onnx_truncated(tmp_path, deployed, npz_data, out_dir):
    real = (deployed.bundle / "model.onnx").read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(real[: len(real) // 2])
    code, _, err = run_cli(*deploy_args(bad, npz_data, out=out_dir))
    assert code == 2, err
    assert str(bad) in err and "not a valid ONNX model" in err and has_remedy(err)


def test_onnx_model_missing(tmp_path, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(tmp_path / "nothing.onnx", npz_data, out=out_dir))
    assert code == 2, err
    assert "nothing.onnx" in err and "does not exist" in err


def test_bench_corrupt_onnx(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    code, _, err = run_cli("bench", bad)
    assert code == 2, err
    assert str(bad) in err


# ---------------------------------------------------------------------------------------------
# output folder and bundles
# ---------------------------------------------------------------------------------------------

def test_existing_output_is_refused_without_force(deployed):
    before = sorted(p.name for p in deployed.out.iterdir())
    code, _, err = run_cli(*deploy_args(f"{deployed.model}:build", deployed.data, *ok_sets(), out=deployed.out))
    assert code == 2, err
    assert str(deployed.bundle) in err and "already exists" in err and "--force" in err
    assert sorted(p.name for p in deployed.out.iterdir()) == before, "a refused run must not touch the folder"


def test_existing_output_is_replaced_with_force(deployed, tmp_path):
    out = tmp_path / "dist"
    shutil.copytree(deployed.out, out)
    (out / BUNDLE / "stale.txt").write_text("from the old bundle")
    import torch

    torch.manual_seed(0)
    code, _, err = run_cli(*deploy_args(f"{deployed.model}:build", deployed.data, *ok_sets(), "--force", out=out))
    assert code == 0, err
    assert (out / BUNDLE / "manifest.json").is_file() and (out / f"{BUNDLE}.zip").is_file()
    assert not (out / BUNDLE / "stale.txt").exists(), "--force must replace the bundle folder, not merge into it"
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name or p.name.endswith(".work")]


def test_failed_run_leaves_no_partial_bundle(tmp_path, model_file, npz_data):
    out = tmp_path / "dist"
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data,
                                        *fast_sets("verify.min_top1_agreement=1.0", "verify.max_abs_diff=1e-12"),
                                        out=out))
    assert code == 3, err
    assert "[verify]" in err and "outside the tolerance" in err and "verify." in err and has_remedy(err)
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert BUNDLE not in names and f"{BUNDLE}.zip" not in names, names
    assert not [n for n in names if ".tmp-" in n], names
    # only the resumable progress may remain: the hidden work folder with its checkpoint
    assert set(names) <= {f".{BUNDLE}.work"}, names


def test_verify_detects_a_modified_model(deployed, tmp_path):
    bundle = tmp_path / BUNDLE
    shutil.copytree(deployed.bundle, bundle)
    model = bundle / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\x00")
    code, _, err = run_cli("verify", bundle)
    assert code == 3, err
    assert "model.onnx" in err and "sha256" in err and has_remedy(err)


def test_verify_of_the_untouched_bundle_passes(deployed):
    code, out, err = run_cli("verify", deployed.bundle)
    assert code == 0, err
    assert "OK" in out


@pytest.mark.parametrize("what", ["missing folder", "not a bundle", "corrupt zip"])
def test_verify_bad_bundle_path(what, tmp_path):
    if what == "missing folder":
        path = tmp_path / "nope"
    elif what == "not a bundle":
        path = tmp_path / "empty"
        path.mkdir()
    else:
        path = tmp_path / "bundle.zip"
        path.write_bytes(b"PK\x03\x04 broken")
    code, _, err = run_cli("verify", path)
    assert code == 2, err
    assert str(path) in err


# ---------------------------------------------------------------------------------------------
# bad input that once escaped as a raw traceback or a misleading message
# ---------------------------------------------------------------------------------------------

def _run_or_traceback(*args) -> tuple:
    """run_cli, but an exception escaping main() becomes exit 1 with its traceback, as a user sees it."""
    import traceback

    try:
        return run_cli(*args)
    except Exception as exc:  # noqa: BLE001 - that is the bug these tests document
        return 1, "", "".join(traceback.format_exception(exc))


def test_object_dtype_x(tmp_path, model_file, out_dir):
    data = _npz(tmp_path, "obj.npz", x=np.array([object()] * 3, dtype=object))
    code, _, err = _run_or_traceback(*deploy_args(f"{model_file}:build", data, out=out_dir))
    assert code == 2, err
    assert "obj.npz" in err and "'x'" in err and "Traceback" not in err


def test_data_does_not_fit_the_model(tmp_path, model_file, out_dir):
    x, y = make_data()
    data = _npz(tmp_path, "rgb.npz", x=np.repeat(x, 3, axis=1), y=y)
    code, _, err = _run_or_traceback(*deploy_args(f"{model_file}:build", data, *fast_sets(), out=out_dir))
    assert code == 2, err
    assert "rgb.npz" in err and "(3, 8, 8)" in err and "Traceback" not in err
    assert has_remedy(err)


def test_labels_beyond_the_models_outputs(tmp_path, model_file, out_dir):
    x, y = make_data()
    data = _npz(tmp_path, "ybig.npz", x=x, y=y + 5)  # classes 5..8, the model has 4 outputs
    code, _, err = _run_or_traceback(*deploy_args(f"{model_file}:build", data, *fast_sets(), out=out_dir))
    assert code == 2, err
    assert "ybig.npz" in err and "'y'" in err and "4" in err and "Traceback" not in err


def test_single_sample(tmp_path, model_file, out_dir):
    x, y = make_data()
    data = _npz(tmp_path, "one.npz", x=x[:1], y=y[:1])
    code, _, err = _run_or_traceback(*deploy_args(f"{model_file}:build", data,
                                                  *fast_sets("quantize.precision=fp32"), out=out_dir))
    assert code == 2, err
    assert "one.npz" in err and "samples" in err and "Traceback" not in err


@pytest.mark.filterwarnings("ignore:All-NaN:RuntimeWarning")
def test_non_finite_x(tmp_path, model_file, out_dir):
    x, y = make_data()
    x[3, 0, 2, 2] = np.nan
    x[7, 0, 1, 1] = np.inf
    data = _npz(tmp_path, "nan.npz", x=x, y=y)
    code, _, err = _run_or_traceback(*deploy_args(f"{model_file}:build", data, *fast_sets(), out=out_dir))
    assert code == 2, err
    assert "nan.npz" in err and "'x'" in err and ("NaN" in err or "finite" in err)


def test_nan_outputs_fail_the_parity_check():
    from edgecompress import verify
    from edgecompress.errors import ToleranceError
    from edgecompress.profile import Verify

    ref = [np.zeros((4, 3), np.float32)]
    bad = [np.full((4, 3), np.nan, np.float32)]
    with pytest.raises(ToleranceError):
        verify.check(verify.compare("nan model", bad, ref, ["out"], None), False, Verify())


def test_out_is_a_file(tmp_path, model_file, npz_data):
    out = tmp_path / "afile"
    out.write_text("not a folder")
    code, _, err = _run_or_traceback(*deploy_args(f"{model_file}:build", npz_data, *fast_sets(), out=out))
    assert code == 2, err
    assert str(out) in err and "--out" in err and "Traceback" not in err


def test_teacher_missing_names_the_flag(tmp_path, model_file, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--teacher", f"{tmp_path}/t.py:build",
                                        out=out_dir))
    assert code == 2, err
    assert "t.py" in err and "--teacher" in err


def test_set_unknown_section_names_the_set_flag(model_file, npz_data, out_dir):
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--set", "foo.bar=1", out=out_dir))
    assert code == 2, err
    assert "--set foo.bar" in err


def test_targets_show_without_a_name():
    code, _, err = _run_or_traceback("targets", "show")
    assert code == 2, err
    assert "'show'" not in err and "name" in err


def test_shift_pixels_on_data_that_is_not_images_is_refused_before_any_work(tmp_path):
    model = tmp_path / "mlp.py"
    model.write_text("import torch.nn as nn\n\ndef build():\n    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), "
                     "nn.Linear(16, 3))\n")
    data = tmp_path / "table.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(80, 6)).astype(np.float32), y=rng.integers(0, 3, 80))
    code, _, err = run_cli(*deploy_args(f"{model}:build", data, *fast_sets("distill.shift_pixels=1"),
                                        out=tmp_path / "out"))
    assert code == 2, err
    assert "distill.shift_pixels shifts images (N, C, H, W), and the data is (80, 6)" in err and has_remedy(err)
    assert "prune 1/1" not in err  # refused before pruning started
    assert not (tmp_path / "out" / "mlp-host-cpu").exists()


def test_a_demo_seed_that_is_not_a_number_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_DEMO_SEED", "one")
    code, _, err = run_cli("deploy", "--target", "arm", "--out", tmp_path / "out", *fast_sets())
    assert code == 2 and "EDGECOMPRESS_DEMO_SEED must be an integer, got 'one'" in err and has_remedy(err)


def test_names_with_dots_keep_their_own_zip(tmp_path):
    """mobilenet_v2_1.0 on two targets: two bundles, two zips, neither cut at the dot."""
    from edgecompress import bundle

    out = tmp_path / "dist"
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really a model")
    for target in ("host-cpu", "arm64-cpu"):
        name = bundle.bundle_name("mobilenet_v2_1.0", target)
        bundle.check_destination(out, name, force=False)  # the first bundle must not block the second
        final = bundle.write(out, name, files={"model.onnx": model}, texts={}, manifest={"target": target},
                             parity={"x": np.zeros(1)}, force=False)
        assert bundle.zip_path(final).name == f"{name}.zip"
    assert sorted(p.name for p in out.iterdir()) == ["mobilenet_v2_1.0-arm64-cpu", "mobilenet_v2_1.0-arm64-cpu.zip",
                                                     "mobilenet_v2_1.0-host-cpu", "mobilenet_v2_1.0-host-cpu.zip"]


def test_bench_on_a_file_that_is_no_bundle_says_what_it_is(npz_data):
    code, _, err = run_cli("bench", npz_data)
    assert code == 2 and "is not a bundle (a folder or its .zip)" in err and "does not exist" not in err, err


def test_targets_with_set_but_no_name_is_refused():
    code, _, err = run_cli("targets", "--set", "prune.ratio=0.3")
    assert code == 2 and "targets show NAME --set" in err


def test_a_reader_that_leaves_early_is_not_an_error():
    """`edgecompress targets | head -1`: the pipe closes before the listing is written."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "edgecompress.cli", "targets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the child has printed anything: it starts slower than this
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_closed_progress_pipe_is_a_failure_not_a_success(tmp_path):
    """deploy 2>&1 | head: the reader leaves while deploy still writes progress; the run stops and
    must not exit 0 as if it had finished."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "edgecompress.cli", "deploy", "--target", "arm", "--out",
                             str(tmp_path / "o")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(__import__("os").environ, EDGECOMPRESS_CACHE=str(tmp_path / "cache")))
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=300) == 141
    assert not (tmp_path / "o" / "demo-raspberry-pi-5").exists()


def test_an_unforeseen_failure_exits_3_with_the_traceback_and_a_plain_last_line(monkeypatch, capsys):
    """Not one of our errors (a bug, or a library failing in a way no check foresaw): exit 3, as a
    stage failure, the traceback for the report, and a last line that says what happened."""
    from edgecompress import cli

    def deploy_that_breaks(args):
        return {}["no such key"]

    monkeypatch.setitem(cli.COMMANDS, "deploy", deploy_that_breaks)
    assert cli.main(["deploy", "--target", "arm"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):" and any("deploy_that_breaks" in line for line in err)
    assert err[-2] == "error: edgecompress deploy failed unexpectedly: KeyError: 'no such key'"
    assert "No bundle was written" in err[-1] and "report" in err[-1]


def test_a_factory_that_needs_arguments_is_told_to_give_them_defaults(tmp_path, npz_data, out_dir):
    (tmp_path / "wide.py").write_text("import torch.nn as nn\n"
                                      "def wide(width):\n    return nn.Linear(64, width)\n")
    code, _, err = run_cli(*deploy_args(f"{tmp_path}/wide.py:wide", npz_data, out=out_dir))
    assert code == 2, err
    assert "wide.py:wide() raised TypeError: wide() missing 1 required positional argument: 'width'" in err, err
    assert "raised TypeError:\nTypeError" not in err and "give its parameters defaults" in err
    assert "(def make_model(): return wide(...)) and pass wide.py:make_model" in err


def test_the_wrapper_suggested_for_a_factory_named_build_does_not_call_itself(tmp_path, npz_data, out_dir):
    (tmp_path / "net.py").write_text("import torch.nn as nn\n"
                                     "def build(width):\n    return nn.Linear(64, width)\n")
    code, _, err = run_cli(*deploy_args(f"{tmp_path}/net.py:build", npz_data, out=out_dir))
    assert code == 2 and "def make_model(): return build(...)" in err, err
    assert "def build(): return build(" not in err


def test_a_taken_out_folder_is_refused_before_the_model_is_loaded(tmp_path, npz_data, out_dir):
    marker = tmp_path / "factory-was-called"
    (tmp_path / "slow.py").write_text("import pathlib, torch.nn as nn\n"
                                      f"def build():\n    pathlib.Path({str(marker)!r}).touch()\n"
                                      "    return nn.Linear(64, 4)\n")
    (out_dir / "slow-host-cpu").mkdir(parents=True)
    code, _, err = run_cli(*deploy_args(f"{tmp_path}/slow.py:build", npz_data, out=out_dir))
    assert code == 2 and "already exists" in err and "--force" in err, err
    assert not marker.exists(), "refused before the model (a big one takes a while) was built"


def test_a_whole_pickled_model_as_weights_is_named_without_torchs_unsafe_advice(tmp_path, model_file, npz_data,
                                                                                 out_dir):
    import torch

    weights = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(2, 2), weights)
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--weights", weights, out=out_dir))
    assert code == 2 and "it holds a pickled torch.nn.modules.linear.Linear" in err, err
    assert "weights_only=False" not in err and "\x1b[" not in err and "model.state_dict()" in err


# ---------------------------------------------------------------------------------------------
# files as other editors save them (reliability review B3, B14)
# ---------------------------------------------------------------------------------------------

GOOD_PROFILE = "name: my-board\nfamily: arm\nruntime: onnxruntime\ndevice: {arch: arm64, cores: 4}\n"


def test_a_profile_saved_as_utf16_is_named_with_the_remedy(tmp_path):
    prof = tmp_path / "my-board.yaml"
    prof.write_bytes(b"\xff\xfe" + GOOD_PROFILE.encode("utf-16-le"))  # Notepad's "Unicode"
    code, _, err = run_cli("targets", "show", prof)
    assert code == 2, err
    assert f"profile {prof} is saved as UTF-16" in err and "-> save it as UTF-8" in err and "Traceback" not in err


def test_a_second_block_of_a_section_in_a_profile_is_refused_with_both_lines(tmp_path):
    prof = tmp_path / "my-board.yaml"
    prof.write_text(GOOD_PROFILE + "prune:\n  ratio: 0.3\nquantize:\n  calibration_samples: 64\n"
                    "prune:\n  round_to: 16\n")
    code, _, err = run_cli("targets", "show", prof)
    assert code == 2, err
    assert str(prof) in err and "'prune' is given twice, on lines 5 and 9" in err and has_remedy(err)


# ---------------------------------------------------------------------------------------------
# weights as training scripts save them (B11), data as users have it (B5, B7, B13, NHWC shapes)
# ---------------------------------------------------------------------------------------------

def _weights_as(tmp_path, name, wrap):
    import torch

    from edgecompress import models

    ns: dict = {}
    exec(textwrap.dedent(MODEL_SRC), ns)
    trained = ns["build"]()
    path = tmp_path / name
    torch.save(wrap(trained.state_dict()), path)
    return trained, path, models


@pytest.mark.parametrize("name, wrap, said", [
    ("ckpt.pt", lambda sd: {"model": sd, "epoch": 3, "optimizer": {"state": {}}},
     "is a training checkpoint; loading its 'model' entry (also in it: epoch, optimizer)"),
    ("lightning.ckpt", lambda sd: {"state_dict": sd, "global_step": 10}, "loading its 'state_dict' entry"),
    ("dp.pt", lambda sd: {f"module.{k}": v for k, v in sd.items()}, "without the 'module.' prefix"),
    ("both.pt", lambda sd: {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1},
     "without the 'module.' prefix"),
])
def test_weights_inside_a_checkpoint_or_with_a_wrappers_prefix_are_loaded_and_said(tmp_path, model_file, capsys,
                                                                                  name, wrap, said):
    import torch

    trained, path, models = _weights_as(tmp_path, name, wrap)
    source = models.load(f"{model_file}:build", str(path))
    err = capsys.readouterr().err
    assert f"weights: {path}" in err and said in err, err
    for key, value in trained.state_dict().items():
        assert torch.equal(source.module.state_dict()[key], value), key
    assert source.weights == path


def test_weights_of_a_checkpoint_without_a_known_entry_still_name_what_it_holds(tmp_path, model_file, npz_data,
                                                                               out_dir):
    _, path, _ = _weights_as(tmp_path, "odd.pt", lambda sd: {"ema_weights": sd, "epoch": 3})
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", npz_data, "--weights", path, out=out_dir))
    assert code == 2 and "unexpected (2): ema_weights, epoch" in err and has_remedy(err), err


def test_npz_labels_that_do_not_name_every_class_are_refused_up_front(tmp_path, model_file, out_dir):
    x, y = make_data()  # 4 classes
    data = _npz(tmp_path, "two_names.npz", x=x, y=y, labels=np.array(["cat", "dog"]))
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", data, out=out_dir))
    assert code == 2, err
    assert "two_names.npz: 'y' has class index 3 but 'labels' has 2 names (cat, dog)" in err and has_remedy(err)


def _image_folder(root: Path, classes=("0_a", "1_b", "2_c", "3_d"), per_class: int = 50) -> Path:
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8), 30 * c + i % 5, np.uint8)).save(root / name / f"{i}.png")
    return root


def _grey_sets() -> list:
    return ["--set", "preprocess.channels=1", "--set", "preprocess.mean=[0.5]", "--set", "preprocess.std=[0.5]"]


def test_an_image_too_large_to_decode_is_named_with_what_to_do(tmp_path, model_file, out_dir):
    import struct
    import zlib

    root = _image_folder(tmp_path / "scans", per_class=2)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    big = root / "1_b" / "scan.png"  # a 20000x20000 header, as a flatbed scan has
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                    + chunk(b"IEND", b""))
    code, _, err = _run_or_traceback(*deploy_args(f"{model_file}:build", root, *_grey_sets(), out=out_dir))
    assert code == 2, err
    assert f"image {big} is too large to decode safely" in err and "shrink it" in err and "Traceback" not in err


def test_hidden_folders_and_appledouble_files_are_not_classes(tmp_path, model_file, out_dir):
    """`.ipynb_checkpoints/` sorted first and became class 0 ("'y' has class index 4 but the model has
    4 outputs"); `._0.png` stopped the run as an unreadable image."""
    root = _image_folder(tmp_path / "imgs")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "__MACOSX" / "0_a").mkdir(parents=True)
    (root / "0_a" / "._0.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (root / "unsorted").mkdir()
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", root, *_grey_sets(),
                                        *fast_sets("verify.min_top1_agreement=0"), "--json", out=out_dir))
    assert code == 0, err
    assert "skipped 3 hidden or macOS entries (.ipynb_checkpoints/, 0_a/._0.png, __MACOSX/)" in err
    assert "unsorted/ is empty: it is not a class" in err
    assert (out_dir / BUNDLE / "labels.txt").read_text().split() == ["0_a", "1_b", "2_c", "3_d"]


@pytest.mark.parametrize("kind", ["folder", "npz"])
def test_a_channels_last_input_shape_is_told_the_nchw_shape(tmp_path, model_file, out_dir, kind):
    if kind == "folder":
        data, sets = _image_folder(tmp_path / "imgs", per_class=2), ["--set", "preprocess.channels=3"]
    else:
        data, sets = _npz(tmp_path, "rgb.npz", x=np.zeros((40, 3, 8, 8), np.float32)), []
    code, _, err = run_cli(*deploy_args(f"{model_file}:build", data, "--input-shape", "1x8x8x3", *sets, out=out_dir))
    assert code == 2, err
    assert "--input-shape 1x8x8x3 puts the 3 channels last (NHWC), but inputs here are NCHW" in err
    assert "-> --input-shape 1x3x8x8" in err
