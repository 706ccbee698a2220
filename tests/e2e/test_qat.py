"""quantize.method qat through the CLI, as a user runs it: their own model (a residual block, two outputs
in a dict) deployed for ONNX Runtime on ARM; the last part of distill.steps trains with fake quantization,
the Q/DQ file takes the ranges it trained, and the bundle passes `edgecompress verify`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ecutil import fast_sets, run_cli

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "benchmarks" / "models" / "qat_models.py"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_qat_deploy_on_arm_trains_the_last_share_and_carries_the_ranges(tmp_path):
    sys.path.insert(0, str(MODEL.parent))
    import qat_models

    x, y = qat_models.make_data(320, 5)
    np.savez(tmp_path / "d.npz", x=x.reshape(320, 1, 16, 2, 16, 2).mean((3, 5)).astype(np.float32), y=y)
    code, out, err = run_cli("deploy", f"{MODEL}:residual", "--data", tmp_path / "d.npz", "--target", "arm",
                             "--out", tmp_path / "out", *fast_sets("quantize.method=qat", "verify.min_top1_agreement=0.5"))
    assert code == 0, err
    assert "distill 1/1: 24 steps" in err and "qat: quantize.method qat; 6 steps with fake quantization" in err, err
    assert "5 Conv/Gemm input tensors take the ranges QAT trained" in err
    bundle = next(p for p in (tmp_path / "out").iterdir() if p.is_dir() and not p.name.startswith("."))
    q = json.loads((bundle / "manifest.json").read_text())["compression"]["quantization"]
    assert q["method"] == "qat" and q["qat_fraction"] == 0.2
    code, _, verify_err = run_cli("verify", bundle)
    assert code == 0, verify_err
