"""Models written as users write them: their own nn.Module classes with nested blocks, in a file
that is not importable by name (tests/models/). Each target family deploys them with iterative
pruning; interrupted runs (Ctrl-C in-process, SIGTERM to a real process) continue with --resume;
every bundle passes `edgecompress verify`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ecutil import fast_sets, run_cli

MODELS = Path(__file__).parents[1] / "models"
# a few steps of small batches: these tests are about structure and resuming, not accuracy
SMALL = ("distill.steps=12", "distill.checkpoint_every=4", "distill.batch_size=16")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a 2-core machine shared with other jobs, two threads spin against
    each other and a training step takes 30 times longer; the results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def images(tmp_path) -> Path:
    """3x16x16 images whose class lights one quadrant: small enough that a deploy takes seconds."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    x = rng.normal(0, 0.3, (200, 3, 16, 16)).astype(np.float32)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, :, r * 8:(r + 1) * 8, col * 8:(col + 1) * 8] += 1.5
    path = tmp_path / "calib.npz"
    np.savez(path, x=x, y=y.astype(np.int64))
    return path


def deploy_args(model: str, target: str, data: Path, out: Path, *sets: str) -> list:
    return ["deploy", str(MODELS / model), "--target", target, "--data", str(data), "--out", str(out),
            *fast_sets(*SMALL, *sets)]


def interrupted_at_step(monkeypatch, n: int) -> None:
    """A real SIGINT delivered to this process as the n-th distillation batch is drawn."""
    from edgecompress import distill

    drawn, draw = [0], distill.batch_indices

    def counting(*args):
        drawn[0] += 1
        if drawn[0] == n:
            os.kill(os.getpid(), signal.SIGINT)
        return draw(*args)
    monkeypatch.setattr(distill, "batch_indices", counting)


def verified(bundle: Path) -> str:
    code, out, err = run_cli("verify", bundle)
    assert code == 0 and "OK" in out, out + err
    return out


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_a_resnet_with_its_own_block_class_deploys_on_arm_with_two_pruning_rounds(tmp_path, images):
    """The walkthrough's crash: `Can't pickle <class 'edgecompress_user_resnet.Basic'>` at the first
    checkpoint, exit 3."""
    code, out, err = run_cli(*deploy_args("resnet.py:tiny", "arm", images, tmp_path / "o", "prune.iterative_steps=2"),
                             "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["after"]["params"] < 0.5 * summary["before"]["params"], "two rounds took half the channels"
    pruning = manifest(Path(summary["bundle"]))["compression"]["pruning"]
    assert pruning["iterative_steps"] == 2 and "prune 2/2" in err
    verified(Path(summary["bundle"]))


def test_a_mobilenet_on_jetson_interrupted_in_its_second_round_resumes_there(tmp_path, images, monkeypatch):
    """jetson-orin-nano prunes in 2 rounds: a Ctrl-C in round 2 keeps the checkpoint of the pruned,
    custom-class model; --resume rebuilds round 2's widths from the factory and goes on."""
    args = deploy_args("mobilenet.py:build", "jetson", images, tmp_path / "o")
    interrupted_at_step(monkeypatch, 6 + 3)  # 6 steps per round: the 3rd step of round 2
    code, _, err = run_cli(*args)
    assert code == 130 and "interrupted by Ctrl-C at distill 2/2 step 3" in err, err
    monkeypatch.undo()
    code, out, err = run_cli(*args, "--resume", "--json")
    assert code == 0, err
    assert "--resume: continuing round 2 at step 3" in err and "prune 1/2" not in err and "prune 2/2" not in err
    bundle = Path(json.loads(out)["bundle"])
    m = manifest(bundle)
    assert m["compression"]["pruning"]["iterative_steps"] == 2
    assert [p[:2] for p in m["compression"]["distillation"]["loss_curve"]] == [[r, s] for r in (1, 2)
                                                                               for s in range(1, 7)]
    verified(bundle)


def test_two_four_sparsity_of_a_custom_model_survives_resume(tmp_path, images, monkeypatch):
    """The masks rebuilt after --resume cover the layers masked before it, not the classifier and
    the depthwise convolutions, which stay dense (the 2:4 check failed with exit 3 on them)."""
    args = deploy_args("mobilenet.py:build", "jetson", images, tmp_path / "o", "prune.structure=2:4")
    interrupted_at_step(monkeypatch, 5)
    assert run_cli(*args)[0] == 130
    monkeypatch.undo()
    code, out, err = run_cli(*args, "--resume", "--json")
    assert code == 0, err
    bundle = Path(json.loads(out)["bundle"])
    masked = manifest(bundle)["compression"]["pruning"]["masked_layers"]
    assert masked and not any(name.startswith("classifier") for name in masked)
    assert f"2:4 pattern intact in {len(masked)} ONNX weights ({len(masked)} layers masked)" in err
    verified(bundle)


def test_a_resnet_deploys_on_android_with_two_pruning_rounds(tmp_path, images):
    pytest.importorskip("litert_torch", reason="the [tflite] extra is not installed")
    pytest.importorskip("ai_edge_litert", reason="the [tflite] extra is not installed")
    code, out, err = run_cli(*deploy_args("resnet.py:tiny", "android", images, tmp_path / "o",
                                          "prune.iterative_steps=2"), "--json")
    assert code == 0, err
    bundle = Path(json.loads(out)["bundle"])
    assert manifest(bundle)["model"]["format"] == "tflite" and "prune 2/2" in err
    verified(bundle)


def test_a_model_calling_torch_functions_through_its_module_converts_to_litert_int8(tmp_path, images):
    """A new user's squeeze-excite net (torch.relu, torch.sigmoid through the file's own `torch`)
    failed the LiteRT INT8 step with "No module named 'edgecompress_user_mynet'": torch.export looks
    the globals up by the module's name, and the file was never registered under it."""
    pytest.importorskip("litert_torch", reason="the [tflite] extra is not installed")
    pytest.importorskip("ai_edge_litert", reason="the [tflite] extra is not installed")
    code, out, err = run_cli(*deploy_args("senet.py:build", "android", images, tmp_path / "o"), "--json")
    assert code == 0, err
    bundle = Path(json.loads(out)["bundle"])
    assert manifest(bundle)["compression"]["quantization"]["precision"] == "int8"
    verified(bundle)


def test_sigterm_mid_distillation_saves_at_the_step_boundary_and_resume_continues(tmp_path, images):
    """A real process sent SIGTERM (as `timeout`, CI and `docker stop` do) stops like the first Ctrl-C:
    a checkpoint at the step it reached (no periodic one is due), exit 143; --resume goes on, and
    prunes the model it rebuilt from the checkpoint again in round 2."""
    args = [sys.executable, "-m", "edgecompress.cli",
            *deploy_args("resnet.py:tiny", "arm", images, tmp_path / "o", "distill.steps=200",
                         "distill.checkpoint_every=100000", "prune.iterative_steps=2")]
    env = {k: v for k, v in os.environ.items() if k != "EDGECOMPRESS_PROGRESS"}  # its lines say it is training
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if not line or line.startswith("distill 1/2: step 20/100"):
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    err = "".join(seen) + rest
    assert proc.returncode == 143, err
    assert "SIGTERM: stopping after this step" in err and "interrupted by SIGTERM at distill 1/2 step" in err, err
    ckpt = tmp_path / "o" / ".tiny-raspberry-pi-5.work" / "checkpoint.pt"
    step = torch.load(ckpt, weights_only=True)["step"]
    assert 20 <= step < 100, "saved where it stopped, not at the start or the end of the round"
    finished = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert f"--resume: continuing round 1 at step {step}" in finished.stderr and "prune 2/2" in finished.stderr
    verified(tmp_path / "o" / "tiny-raspberry-pi-5")


@pytest.mark.slow
def test_a_resnet18_at_its_real_widths_deploys_on_every_target_family_and_resumes(tmp_path, monkeypatch):
    """The issue's done-when: ResNet-18 (widths 64-512) in its own file, 3x32x32, on arm, jetson and
    android with two pruning rounds, each interrupted once and resumed."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.normal(0, 1, (200, 3, 32, 32)).astype(np.float32),
             y=rng.integers(0, 4, 200).astype(np.int64))
    for target in ("arm", "jetson", "android"):
        if target == "android" and not _litert():
            continue
        args = deploy_args("resnet.py:resnet18", target, tmp_path / "calib.npz", tmp_path / target,
                           "prune.iterative_steps=2")
        interrupted_at_step(monkeypatch, 9)
        assert run_cli(*args)[0] == 130
        monkeypatch.undo()
        code, out, err = run_cli(*args, "--resume", "--json")
        assert code == 0 and "--resume: continuing round 2 at step 3" in err, err
        verified(Path(json.loads(out)["bundle"]))


def _litert() -> bool:
    try:
        import ai_edge_litert  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError:
        return False
    return True
