"""An interrupted deploy and --resume / --force through the real CLI: a real SIGINT to a real
process, a failed check after distillation, a planted checkpoint that must never be unpickled."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from e2eutil import deploy
from ecutil import fast_sets, make_data, run_cli


def test_ctrl_c_keeps_checkpoint_and_resume_finishes(tmp_path, model_file, npz_data):
    """A real process, a real SIGINT: the run stops with a checkpoint and no bundle; --resume
    continues from that checkpoint (not from zero) and writes the bundle."""
    args = [sys.executable, "-m", "edgecompress.cli", "deploy", f"{model_file}:build", "--target", "host-cpu",
            "--data", str(npz_data), "--out", str(tmp_path / "o"), "--json",
            *fast_sets("distill.steps=1200", "distill.checkpoint_every=20", "prune.iterative_steps=2")]
    env = dict(os.environ, EDGECOMPRESS_PROGRESS="0")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ckpt = tmp_path / "o" / ".net-host-cpu.work" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and ckpt.exists()
    assert not (tmp_path / "o" / "net-host-cpu").exists() and not (tmp_path / "o" / "net-host-cpu.zip").exists()

    changed = subprocess.run(args + ["--set", "distill.lr=0.01", "--resume"], capture_output=True, text=True,
                             env=env, timeout=120)
    assert changed.returncode == 2 and "made with other prune or distill settings" in changed.stderr, \
        "another distillation recipe cannot resume"
    assert "--force instead of --resume" in changed.stderr
    # the key that changed, both values, and the --set that resumes (a walkthrough was told no key)
    assert "0.01 now)" in changed.stderr and "(distill.lr " in changed.stderr and "--set distill.lr=" in changed.stderr
    x2, y2 = make_data(seed=7)
    np.savez(tmp_path / "other.npz", x=x2, y=y2)
    other = [str(tmp_path / "other.npz") if a == str(npz_data) else a for a in args]
    changed = subprocess.run(other + ["--resume"], capture_output=True, text=True, env=env, timeout=120)
    assert changed.returncode == 2 and "made with other data" in changed.stderr, "other data cannot resume"
    saved = ckpt.read_bytes()
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2 and "did not finish" in again.stderr and "--resume" in again.stderr, again.stderr
    assert ckpt.read_bytes() == saved, "a run without --resume must not overwrite the interrupted run's progress"

    finished = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert "--resume: continuing round 1 at step" in finished.stderr
    m = json.loads((tmp_path / "o" / "net-host-cpu" / "manifest.json").read_text())
    assert m["compression"]["distillation"]["steps"] == 600  # the last round's share of 1200 steps
    curve = m["compression"]["distillation"]["loss_curve"]
    assert [(p[0], p[1]) for p in curve] == [(r, s) for r in (1, 2) for s in range(12, 601, 12)], \
        "the loss curve survives the interruption: both rounds, every point, none twice"
    assert not ckpt.parent.exists(), "the checkpoint is removed once the bundle is written"


def test_force_discards_an_interrupted_runs_progress(tmp_path, model_file, npz_data):
    work = tmp_path / "o" / ".net-host-cpu.work"
    work.mkdir(parents=True)
    (work / "checkpoint.pt").write_bytes(b"progress of an interrupted run")
    out, err = deploy(f"{model_file}:build", "--target", "host-cpu", "--data", npz_data, "--out", tmp_path / "o",
                      "--json", "--force", *fast_sets())
    assert "--force: discarding the progress of the earlier run" in err
    assert json.loads(out)["bundle"] == str(tmp_path / "o" / "net-host-cpu") and not work.exists()


def test_a_check_that_fails_after_distillation_resumes_without_distilling_again(tmp_path, model_file, npz_data):
    """The FP32 export check fails (an impossible tolerance) after distillation: the hint says the
    student is kept, and --resume with the check loosened goes on from it."""
    args = [f"{model_file}:build", "--target", "host-cpu", "--data", npz_data, "--out", tmp_path / "o",
            *fast_sets("distill.steps=60")]
    code, _, err = run_cli("deploy", *args, "--set", "verify.max_abs_diff=1e-12")
    assert code == 3 and "the distilled student is kept" in err and "--resume" in err, err
    code, _, err = run_cli("deploy", *args, "--resume")
    assert code == 0, err
    assert "--resume: continuing round 1 at step 60" in err and "distill 1/1: 60 steps in" in err, err
    assert "(with the interrupted run's 60, resumed at it)" in err, err  # none ran now: the line says whose they are


class _Planted:
    """A file planted in a shared --out as OUT/.NAME.work/checkpoint.pt: unpickled, it creates a marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_planted_checkpoint_is_refused_on_resume_and_never_runs(tmp_path, model_file, npz_data):
    """F8: --resume unpickled the checkpoint with weights_only=False before any check."""
    import torch

    work = tmp_path / "o" / ".net-host-cpu.work"
    work.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    torch.save({"x": _Planted(marker)}, work / "checkpoint.pt")  # as the reliability review planted it
    code, _, err = run_cli("deploy", f"{model_file}:build", "--target", "host-cpu", "--data", npz_data,
                           "--out", tmp_path / "o", "--resume", *fast_sets())
    assert code == 2 and not marker.exists(), err
    assert f"the checkpoint {work / 'checkpoint.pt'} was not loaded" in err and "--force" in err and "delete" in err


def test_the_layers_pruning_left_whole_survive_a_resume_after_the_pruning_round(tmp_path):
    """A MobileViT-like attention breaks when its value projections are pruned: the first run leaves
    them whole and fails a check after distillation; --resume does not prune again, so the names
    must come from the checkpoint, and the manifest names the same layers."""
    import re
    from pathlib import Path

    models = Path(__file__).parents[1] / "models" / "adapt_models.py"
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", x=rng.normal(0, 1, (96, 3, 32, 32)).astype(np.float32))
    args = [f"{models}:mobilevit", "--target", "host-cpu", "--data", tmp_path / "images.npz", "--out", tmp_path / "o",
            *fast_sets("distill.steps=20", "prune.ratio=0.3", "prune.iterative_steps=1")]
    code, _, err = run_cli("deploy", *args, "--set", "verify.max_abs_diff=1e-12")
    assert code == 3 and "--resume" in err, err
    found = re.search(r"prune: left whole \(pruning them breaks the [^)]*\): (.*)", err)
    assert found, err
    left_first = found.group(1).strip().split(", ")
    code, _, err = run_cli("deploy", *args, "--resume")
    assert code == 0, err
    assert "--resume: continuing round 1 at step 20" in err and "prune: left whole" not in err, "no second pruning"
    bundle = next(p for p in (tmp_path / "o").iterdir() if p.is_dir() and not p.name.startswith("."))
    pruning = json.loads((bundle / "manifest.json").read_text())["compression"]["pruning"]
    assert pruning["left_whole"] == sorted(left_first) and all(n.startswith("vit.") for n in left_first), left_first
