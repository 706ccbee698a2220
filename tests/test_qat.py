"""quantize.method (edgecompress/qat.py): the fake quantization the student trains with is what each
runtime's INT8 file computes (weights' per-channel scales identical, the trained input ranges carried into
ONNX Runtime's and TensorRT's Q/DQ), the exported INT8 file agrees with the fake-quantized student better
than with its FP32 self, and auto chooses QAT only where PTQ misses the tolerance. The model is a user's own:
a residual block and two outputs in a dict (benchmarks/models/qat_models.py:residual); the last test deploys it
through the CLI for ARM with quantize.method=qat. (One file: a tests/e2e/test_qat.py beside it would clash
with this module's name.)"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ecutil import fast_sets, run_cli
from edgecompress import export, profile, qat, quantize, verify

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "models"))
import qat_models  # noqa: E402


def _prof(target: str, *sets: str):
    return profile.load(target, ["distill.batch_size=32", "quantize.calibration_samples=64", *sets])[0]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core host two threads spin against each other (as tests/e2e say)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(_one_thread):
    """The residual net after 30 steps of cross-entropy on drawn shapes (16x16): decisions that are not ties."""
    torch.manual_seed(0)
    x, y = qat_models.make_data(480, 3)
    x = x.reshape(480, 1, 16, 2, 16, 2).mean((3, 5)).astype(np.float32)
    model = qat_models.residual()
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    for step in range(30):
        idx = torch.from_numpy(np.random.default_rng(step).choice(400, 32, replace=False))
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x[idx]))["logits"], torch.from_numpy(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), SimpleNamespace(x=x[:400], y=y[:400]), SimpleNamespace(x=x[400:], y=y[400:])


def _qat_student(trained, tmp_path, target: str, *sets: str):
    model, train, held = trained
    student, prof = copy.deepcopy(model), _prof(target, "quantize.method=qat", "distill.steps=20", *sets)
    record = qat.finish_(student, model, train, held, prof, checkpoint=tmp_path / "ckpt.pt", meta={"round": 2},
                         resume=None, curve=[], task=None)
    return student.eval(), prof, record


def _agreement(a, b) -> float:
    return float((a[0].argmax(1) == b[0].argmax(1)).mean())


def _onnx_int8(student, prof, train, tmp_path, symmetric=False):
    example = torch.from_numpy(train.x[:1])
    fp32 = export.export_onnx(student, example, tmp_path / "s.onnx", prof.export)
    q = prof.quantize.model_copy(update={"activations": "int8"}) if symmetric else prof.quantize
    return fp32, quantize.quantize_int8(fp32, tmp_path / "q.onnx", train.x[:64], q, export.INPUT_NAME,
                                        symmetric=symmetric, overrides=qat.overrides_of(student))


def _initializers(path) -> dict:
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _dq_params(path) -> dict:
    """{tensor a QuantizeLinear quantizes: (scale, zero point)} of a Q/DQ file."""
    import onnx

    inits = _initializers(path)
    return {n.input[0]: (inits[n.input[1]], inits[n.input[2]]) for n in onnx.load(str(path)).graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits}


def test_onnx_runtime_file_carries_the_weight_scales_and_the_trained_ranges(trained, tmp_path):
    student, prof, record = _qat_student(trained, tmp_path, "arm64-cpu")
    assert record.method == "qat" and record.steps == 4 and len(record.ranges) == 5  # 20% of 20 steps; 4 convs + fc
    fp32, q = _onnx_int8(student, prof, trained[1], tmp_path)
    import onnx

    graph = onnx.load(str(q)).graph
    inits = _initializers(q)
    folded = _initializers(fp32)  # the exported weights, BatchNorm folded in
    weights = [n for n in graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
               and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim == 4]
    assert weights
    for dq in weights:
        w_int, scale = inits[dq.input[0]], inits[dq.input[1]]
        w_float = next(v for v in folded.values() if v.shape == w_int.shape and
                       np.allclose(v, w_int * scale.reshape(-1, 1, 1, 1), atol=scale.max()))
        # the scale QAT's weight rounding used (max|w| / 127 per output channel) is the file's
        np.testing.assert_allclose(scale, np.abs(w_float).reshape(len(scale), -1).max(1) / 127, rtol=1e-5)
    # the input of the stem conv takes the range QAT trained, not the calibration samples' min/max
    lo, hi = record.ranges["stem.0"]
    scale, zero = _dq_params(q)[export.INPUT_NAME]
    want_scale, want_zero = qat.activation_grid(lo, hi, qat.scheme_for(prof))
    assert float(scale) == pytest.approx(want_scale, rel=1e-5) and int(zero) == want_zero
    calibrated = trained[1].x[:64]
    assert (lo, hi) != pytest.approx((float(calibrated.min()), float(calibrated.max())), rel=1e-4)


def test_onnx_runtime_int8_agrees_with_the_fake_quantized_student(trained, tmp_path):
    """Measured: the INT8 file's logits lie closer to the fake-quantized student than to its FP32 self; what
    the simulation leaves out (the residual Add's and the logits' own rounding, integer bias) keeps it from
    matching exactly, so the bar is closer-than-FP32 and a mean difference a fraction of the FP32 one."""
    student, prof, record = _qat_student(trained, tmp_path, "arm64-cpu")
    held = trained[2]
    _, q = _onnx_int8(student, prof, trained[1], tmp_path)
    file_out = verify.onnx_outputs(q, held.x, exact_int8=True)
    simulated = qat.simulated_outputs(student, record, prof, held.x)
    fp32 = verify.torch_outputs(student, held.x)
    to_sim, to_fp32 = (np.abs(file_out[0] - o[0]).mean() for o in (simulated, fp32))
    assert _agreement(file_out, simulated) >= 0.95
    assert to_sim < 0.85 * to_fp32, (to_sim, to_fp32)  # measured 0.0100 against 0.0142 (0.70x)


def test_tensorrt_qdq_agrees_with_the_symmetric_simulation(trained, tmp_path):
    student, prof, record = _qat_student(trained, tmp_path, "jetson-orin-nano", "quantize.precision=int8", "prune.round_to=32")
    assert qat.scheme_for(prof).act_symmetric and "symmetric activations" in record.scheme
    _, q = _onnx_int8(student, prof, trained[1], tmp_path, symmetric=True)
    assert all(int(z) == 0 for _, z in _dq_params(q).values())  # TensorRT's zero points
    held = trained[2]
    file_out = verify.onnx_outputs(q, held.x, exact_int8=True)
    simulated = qat.simulated_outputs(student, record, prof, held.x)
    fp32 = verify.torch_outputs(student, held.x)
    assert _agreement(file_out, simulated) >= 0.95
    # measured 0.0066 against 0.0071: symmetric int8 spends a bit on the negative half of ReLU outputs, which
    # the rounding of the un-simulated tensors (Add, pooling, logits) then dominates
    assert np.abs(file_out[0] - simulated[0]).mean() < np.abs(file_out[0] - fp32[0]).mean()


def test_litert_int8_agrees_with_the_fake_quantized_student(trained, tmp_path):
    pytest.importorskip("litert_torch")
    from edgecompress.backends import tflite

    student, prof, record = _qat_student(trained, tmp_path, "android-arm64")
    held = trained[2]
    path = tflite.quantize_tflite_int8(student, torch.from_numpy(held.x[:1]), trained[1].x[:64],
                                       tmp_path / "m.tflite", channels_last=True, ranges=qat.pt2e_ranges_of(student))
    from ai_edge_litert.interpreter import Interpreter

    scale, zero = Interpreter(model_path=str(path)).get_input_details()[0]["quantization"]
    want_scale, want_zero = qat.activation_grid(*record.ranges["stem.0"], qat.scheme_for(prof))
    assert scale == pytest.approx(want_scale, rel=1e-5) and zero == want_zero  # the trained range, carried
    file_out = tflite.tflite_outputs(path, held.x)
    simulated = qat.simulated_outputs(student, record, prof, held.x)
    fp32 = verify.torch_outputs(student, held.x)
    assert _agreement(file_out, simulated) >= 0.95
    assert np.abs(file_out[0] - simulated[0]).mean() < np.abs(file_out[0] - fp32[0]).mean()


def test_auto_keeps_ptq_where_it_meets_the_tolerance_and_trains_qat_where_it_misses(trained, tmp_path):
    model, train, held = trained
    # one calibration sample with a huge value: min/max calibration then spends the input's 256 levels on it,
    # and PTQ's decisions fall apart, which QAT's moving ranges then repair
    spiky = SimpleNamespace(x=train.x.copy(), y=train.y)
    spiky.x[0] *= 60
    runs = {}
    for name, tolerance in (("lenient", 0.0), ("strict", 1.0)):
        student = copy.deepcopy(model)
        prof = _prof("arm64-cpu", "quantize.method=auto", "distill.steps=20", f"verify.min_top1_agreement={tolerance}")
        runs[name] = qat.finish_(student, model, spiky, held, prof, checkpoint=tmp_path / f"{name}.pt",
                                 meta={"round": 2}, resume=None, curve=[], task=None)
    lenient, strict = runs["lenient"], runs["strict"]
    assert lenient.method == "ptq" and "the PTQ file meets the tolerance" in lenient.reason and lenient.qat_simulated is None
    assert strict.method == "qat" and "misses the tolerance" in strict.reason and strict.steps == 4
    assert strict.ptq_figure == lenient.ptq_figure < 1.0  # the same measurement of the PTQ file made both choices
    assert strict.qat_simulated is not None and strict.ranges  # measured after the QAT steps, ranges kept


def test_ptq_leaves_the_budget_and_the_student_alone(trained, tmp_path):
    model, train, held = trained
    prof = _prof("arm64-cpu")
    assert prof.quantize.method == "ptq" and qat.budget_share(prof) == (0, None)
    student = copy.deepcopy(model)
    record = qat.finish_(student, model, train, held, prof, checkpoint=tmp_path / "c.pt", meta={}, resume=None,
                         curve=[], task=None)
    assert record.method == "ptq" and qat.overrides_of(student) is None
    for a, b in zip(student.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert qat.budget_share(_prof("arm64-cpu", "quantize.method=qat", "distill.steps=300")) == (60, None)


def test_qat_deploy_on_arm_trains_the_last_share_and_carries_the_ranges(tmp_path):
    x, y = qat_models.make_data(320, 5)
    np.savez(tmp_path / "d.npz", x=x.reshape(320, 1, 16, 2, 16, 2).mean((3, 5)).astype(np.float32), y=y)
    code, out, err = run_cli("deploy", f"{ROOT / 'benchmarks' / 'models' / 'qat_models.py'}:residual", "--data", tmp_path / "d.npz", "--target", "arm",
                             "--out", tmp_path / "out", *fast_sets("quantize.method=qat", "verify.min_top1_agreement=0.5"))
    assert code == 0, err
    assert "distill 1/1: 24 steps in" in err and "qat: quantize.method qat; 6 steps with fake quantization" in err, err
    assert "5 Conv/Gemm input tensors take the ranges QAT trained" in err
    bundle = next(p for p in (tmp_path / "out").iterdir() if p.is_dir() and not p.name.startswith("."))
    q = json.loads((bundle / "manifest.json").read_text())["compression"]["quantization"]
    assert q["method"] == "qat" and q["qat_fraction"] == 0.2
    assert q["qat"]["method"] == "qat" and q["qat"]["steps"] == 6 and q["qat"]["ranges"] == 5  # what was applied
    code, _, verify_err = run_cli("verify", bundle)
    assert code == 0, verify_err
