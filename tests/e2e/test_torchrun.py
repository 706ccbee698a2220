"""Distillation under torchrun, as a user starts it: `torchrun --nproc-per-node=2 -m edgecompress deploy ...` on this
CPU host (gloo), against the same command as one process; a rank killed mid-run; --resume and an elastic restart."""
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

from ecutil import wait_until

TORCHRUN = Path(sys.executable).with_name("torchrun")

MODEL = '''
import torch.nn as nn


class Block(nn.Module):
    """A residual block, as users write them."""

    def __init__(self, ch):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch))

    def forward(self, x):
        return (x + self.b(self.a(x))).relu()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = Block(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return {"logits": self.head(self.block(self.stem(x)).mean((2, 3)))}


def build():
    return Net()
'''

SETS = ["bench.runs=20", "bench.seconds=0", "bench.warmup_runs=2", "bench.warmup_seconds=0", "bench.rounds=1",
        "verify.min_top1_agreement=0", "quantize.calibration_samples=32"]

pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun")
    (root / "model.py").write_text(MODEL)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3, 16, 16)).astype(np.float32)
    y = ((x[:, 0, :8].mean((1, 2)) > 0).astype(np.int64) * 2 + (x[:, 1, :, :8].mean((1, 2)) > 0)).astype(np.int64)
    np.savez(root / "data.npz", x=x, y=y)
    return root


def _command(project: Path, out: Path, steps: int, processes: int, *extra: str, restarts: int = 0) -> list:
    deploy = ["deploy", "model.py:build", "--data", "data.npz", "--target", "arm", "--out", str(out),
              "--set", f"distill.steps={steps}", *sum((["--set", s] for s in SETS), []), *extra]
    if processes == 1:
        return [sys.executable, "-m", "edgecompress", *deploy]
    # --standalone: torchrun's c10d rendezvous on a free port (its static one failed to reconnect the ranks after
    # an elastic restart here, as pytorch/pytorch#167288 reports for NCCL)
    return [str(TORCHRUN), "--standalone", f"--nproc-per-node={processes}", f"--max-restarts={restarts}",
            "-m", "edgecompress", *deploy]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", EDGECOMPRESS_PROGRESS="1")


def _run(project: Path, out: Path, steps: int, processes: int, *extra: str, restarts: int = 0):
    return subprocess.run(_command(project, out, steps, processes, *extra, restarts=restarts), cwd=project,
                          env=_env(), capture_output=True, text=True, timeout=600)


def _manifest(out: Path) -> dict:
    bundles = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(bundles) == 1, bundles
    return json.loads((bundles[0] / "manifest.json").read_text())


def test_two_processes_train_what_one_trains_and_write_one_bundle(project, tmp_path):
    one = _run(project, tmp_path / "one", 80, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run(project, tmp_path / "two", 80, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "torchrun: 2 processes (gloo), rank 0 writes the bundle; a global batch of 64 is 32 samples on each" in two.stderr
    assert two.stdout.count("bundle: ") == 1, "only rank 0 prints the summary"
    assert two.stderr.count("prune 1/1") == 1, "only rank 0 speaks"
    m1, m2 = _manifest(tmp_path / "one"), _manifest(tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["model-raspberry-pi-5", "model-raspberry-pi-5.zip"]
    t1, t2 = m1["compression"]["distillation"], m2["compression"]["distillation"]
    assert (t1["training"]["world_size"], t2["training"]["world_size"]) == (1, 2)
    assert t2["training"]["backend"] == "gloo" and t2["steps"] == t1["steps"] == 80
    # the same global batches; BatchNorm sees half a batch on each rank, so the losses differ a little
    assert abs(t2["final_loss"] - t1["final_loss"]) <= 0.05 * t1["final_loss"], (t1["final_loss"], t2["final_loss"])
    a1 = m1["metrics"]["parity"][-1]["top1_agreement"]
    a2 = m2["metrics"]["parity"][-1]["top1_agreement"]
    assert abs(a1 - a2) <= 0.05, (a1, a2)
    assert m2["compression"]["pruning"]["params_after"] == m1["compression"]["pruning"]["params_after"]


def _workers(parent: int) -> list:
    """The pids whose parent is `parent` (torchrun's worker processes)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            kids.append(int(stat.parent.name))
    return kids


def _kill_a_rank_after_a_checkpoint(proc, out: Path) -> None:
    checkpoint = out / ".model-raspberry-pi-5.work" / "checkpoint.pt"
    assert wait_until(checkpoint.is_file, timeout_s=120), "no checkpoint was written"
    time.sleep(0.5)
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers
    os.kill(max(workers), signal.SIGKILL)  # one rank dies without a word


def test_a_killed_rank_stops_every_rank_keeps_the_checkpoint_and_resume_continues(project, tmp_path):
    from edgecompress.checkpoint import load_checkpoint

    out = tmp_path / "out"
    cmd = _command(project, out, 4000, 2, "--set", "distill.checkpoint_every=25")
    proc = subprocess.Popen(cmd, cwd=project, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _kill_a_rank_after_a_checkpoint(proc, out)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert not _workers(proc.pid), "every rank stopped"
    assert "[distill] torchrun rank 0: lost contact with another rank" in err and "--resume continues" in err
    assert not [p for p in out.iterdir() if not p.name.startswith(".")], "no bundle"
    state = load_checkpoint(out / ".model-raspberry-pi-5.work" / "checkpoint.pt")  # intact: it loads
    assert 0 < state["step"] < 4000
    resumed = _run(project, out, 4000, 2, "--set", "distill.checkpoint_every=25", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"--resume: continuing round 1 at step {state['step']}" in resumed.stderr
    assert _manifest(out)["compression"]["distillation"]["steps"] == 4000


def test_an_elastic_restart_goes_on_from_the_checkpoint(project, tmp_path):
    out = tmp_path / "out"
    cmd = _command(project, out, 3000, 2, "--set", "distill.checkpoint_every=25", restarts=1)
    proc = subprocess.Popen(cmd, cwd=project, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _kill_a_rank_after_a_checkpoint(proc, out)
        stdout, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "torchrun restart 1: continuing from the checkpoint (as --resume)" in err
    assert "--resume: continuing round 1 at step" in err
    assert _manifest(out)["compression"]["distillation"]["steps"] == 3000


def test_an_uneven_batch_split_is_refused_before_any_work(project, tmp_path):
    done = subprocess.run(_command(project, tmp_path / "o", 10, 2, "--set", "distill.batch_size=63"), cwd=project,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "distill.batch_size=63 does not split evenly over 2 processes" in done.stderr
    assert "--set distill.batch_size=64" in done.stderr
