"""The README's first command: the built-in demo, with nothing but the package installed."""
import json
import subprocess
import sys

import numpy as np
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
    # the example gives the answers the bundle was checked with, also on this x86 host (ARM arithmetic)
    folder = tmp_path / "demo-raspberry-pi-5"
    assert json.loads((folder / "manifest.json").read_text())["metrics"]["parity_exact_int8"] is True
    stored = np.load(folder / "parity.npz")
    for i in range(8):
        np.save(tmp_path / "one.npy", stored["x"][i])
        run = subprocess.run([sys.executable, str(folder / "example.py"), str(tmp_path / "one.npy")],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        top_label, top_p = run.stdout.split()[:2]
        probs = np.exp(stored["expected"][i] - stored["expected"][i].max())
        assert top_label == str(int(stored["expected"][i].argmax()))
        assert float(top_p) == pytest.approx(probs.max() / probs.sum(), abs=1e-3)
    # an 8-bit image of a digit gets the same answer as the same pixels given as an array: the
    # manifest's preprocessing is for images (0-255), not for sklearn's 0-16 grey levels
    from PIL import Image

    for i in range(4):
        pixels = np.clip(np.round(stored["x"][i][0] * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(tmp_path / "digit.png")
        np.save(tmp_path / "digit.npy", (pixels / np.float32(255))[None].astype(np.float32))
        answers = [subprocess.run([sys.executable, str(folder / "example.py"), str(tmp_path / f)],
                                  capture_output=True, text=True, timeout=60).stdout.split()[:2]
                   for f in ("digit.png", "digit.npy")]
        assert answers[0][0] == answers[1][0] and float(answers[0][1]) == pytest.approx(float(answers[1][1]), abs=1e-3)


@pytest.mark.slow
def test_demo_full_budget_stays_close_to_the_teacher(tmp_path):
    """The default profile's whole budget (1200 steps); about 40 s. Run with -m slow."""
    code, out, err = run_cli("deploy", "--target", "arm", "--out", tmp_path, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["after"]["accuracy"] >= summary["before"]["accuracy"] - 0.01
    assert summary["after"]["macs"] < summary["before"]["macs"] / 3.5


def test_the_demo_teaches_on_shifted_digits_unless_the_profile_or_set_says_otherwise(tmp_path):
    from edgecompress import profile
    from edgecompress.inputs import with_demo_defaults
    from edgecompress.pipeline import DeployOptions

    demo_run = DeployOptions(model=None, target="arm")
    prof, _ = profile.load("arm")
    assert prof.distill.shift_pixels == 0 and with_demo_defaults(prof, demo_run).distill.shift_pixels == 1
    prof, _ = profile.load("arm", ["distill.shift_pixels=2"])
    set_two = DeployOptions(model=None, target="arm", overrides=["distill.shift_pixels=2"])
    assert with_demo_defaults(prof, set_two).distill.shift_pixels == 2
    own = tmp_path / "mine.yaml"
    own.write_text(profile.dump(profile.load("arm")[0]).replace("shift_pixels: 0", "shift_pixels: 0  # mine"))
    prof, _ = profile.load(str(own))
    assert with_demo_defaults(prof, DeployOptions(model=None, target=str(own))).distill.shift_pixels == 0  # the file said 0
    prof, _ = profile.load("arm")
    assert with_demo_defaults(prof, DeployOptions(model="net.py:build", target="arm")).distill.shift_pixels == 0
