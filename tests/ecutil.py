"""Helpers shared by the tests (imported as `ecutil`; conftest.py holds the fixtures)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

FAST = ["distill.steps=30", "distill.checkpoint_every=10", "bench.runs=20", "bench.seconds=0",
        "bench.warmup_runs=2", "bench.warmup_seconds=0", "bench.idle_seconds=0", "bench.rounds=1",
        "verify.samples=64",
        "quantize.calibration_samples=32",
        # tiny models with random weights have near-tied logits, where one INT8 rounding flips the
        # top-1; the tolerance itself is tested in test_bad_input and test_verify
        "verify.min_top1_agreement=0.85"]


def fast_sets(*extra: str) -> list:
    args = []
    for pair in FAST + list(extra):
        args += ["--set", pair]
    return args


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


def make_data(n: int = 200, classes: int = 4, seed: int = 0):
    """Separable toy classes: each class lights a different quadrant of an 8x8 image."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 0, r * 4:(r + 1) * 4, col * 4:(col + 1) * 4] += 1.5
    return x, y.astype(np.int64)


def run_cli(*args: str) -> tuple:
    """Run the CLI in-process; returns (exit code, stdout, stderr) via capsys-free capture."""
    import contextlib
    import io

    from edgecompress.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def train_weights(path: Path, x, y, steps: int = 150, source: str = MODEL_SRC) -> Path:
    """Train the build() of `source` (MODEL_SRC) briefly so accuracy figures mean something; save its
    state_dict."""
    import torch
    import torch.nn.functional as F

    ns: dict = {}
    exec(source, ns)
    torch.manual_seed(0)
    model = ns["build"]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(xt), yt).backward()
        opt.step()
    torch.save(model.state_dict(), path)
    return path


def wait_until(condition, timeout_s: float = 5.0) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; whether it held."""
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def tripling_model(path: Path) -> Path:
    """y = 3 * x with a dynamic batch: its output sum shows which input values were fed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    three = numpy_helper.from_array(np.array(3.0, dtype=np.float32), "three")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "three"], ["y"])], "triple", [x], [y],
                              initializer=[three])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def processes_inside(root: Path) -> list:
    """Live processes whose working folder is (or was) under root."""
    import os

    found = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            if os.readlink(cwd).startswith(str(root)):
                found.append(cwd.parent.name)
        except OSError:
            continue
    return found
