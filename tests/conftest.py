"""Shared fixtures: a user's model file and data written to disk, as a user would have them, and
settings that keep end-to-end runs short."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

FAST = ["distill.steps=30", "distill.checkpoint_every=10", "bench.runs=20", "bench.seconds=0",
        "bench.warmup_runs=2", "bench.warmup_seconds=0", "bench.idle_seconds=0", "verify.samples=64",
        "quantize.calibration_samples=32"]


def fast_sets(*extra: str) -> list:
    args = []
    for pair in FAST + list(extra):
        args += ["--set", pair]
    return args


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGECOMPRESS_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("EDGECOMPRESS_PROGRESS", "0")
    yield
    mp.undo()


MODEL_SRC = '''
import torch.nn as nn


def build():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4),
    )


def broken():
    return undefined_name + 1


NOT_CALLABLE = 3


def not_a_module():
    return "hello"
'''


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent(MODEL_SRC))
    return path


def make_data(n: int = 200, classes: int = 4, seed: int = 0):
    """Separable toy classes: each class lights a different quadrant of an 8x8 image."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 0, r * 4:(r + 1) * 4, col * 4:(col + 1) * 4] += 1.5
    return x, y.astype(np.int64)


@pytest.fixture
def npz_data(tmp_path) -> Path:
    x, y = make_data()
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    return path


def run_cli(*args: str) -> tuple:
    """Run the CLI in-process; returns (exit code, stdout, stderr) via capsys-free capture."""
    import contextlib
    import io

    from edgecompress.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()
