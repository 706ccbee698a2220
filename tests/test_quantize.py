"""quantize.py on a real model: a small conv net trained for a few steps, exported to ONNX, quantized
by ONNX Runtime with calibration data, and run next to its FP32 file."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ecutil import MODEL_SRC, make_data
from edgecompress import export, profile, quantize
from edgecompress.errors import StageError

CALIBRATION = 32


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    """MODEL_SRC's conv net after 40 Adam steps on the quadrant data (it then classifies them all
    right), exported to ONNX; with the data its calibration comes from."""
    import torch
    import torch.nn.functional as F

    ns: dict = {}
    exec(MODEL_SRC, ns)
    torch.manual_seed(0)
    model = ns["build"]()
    x, y = make_data(200)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    path = tmp_path_factory.mktemp("quant") / "fp32.onnx"
    export.export_onnx(model.eval(), torch.from_numpy(x[:1]), path, profile.load("host-cpu")[0].export)
    return path, x


def _run(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _zero_point_dtypes(path) -> dict:
    import onnx

    return {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.data_type).name
            for i in onnx.load(str(path)).graph.initializer if i.name.endswith("zero_point")}


def test_int8_file_has_qdq_nodes_and_stays_close_to_fp32(fp32, tmp_path):
    src, x = fp32
    cfg = profile.load("host-cpu")[0].quantize  # uint8 activations, int8 per-channel weights, minmax
    dst = quantize.quantize_int8(src, tmp_path / "int8.onnx", x[:CALIBRATION], cfg, "input")
    import onnx

    ops = Counter(n.op_type for n in onnx.load(str(dst)).graph.node)
    assert ops["QuantizeLinear"] == 6 and ops["DequantizeLinear"] == 12, ops  # 6 activations; + 3 weights, 3 biases
    held, _ = make_data(64, seed=1)  # 64 samples the calibration never saw
    want, got = _run(src, held), _run(dst, held)
    assert float((want.argmax(1) == got.argmax(1)).mean()) >= 0.9  # measured 1.0
    out_scale = quantize.quantization_params(dst)["output"]["scale"]
    # measured 7.1 output quantization steps (0.28 on logits up to 5.7): rounding in 3 quantized layers adds up
    assert np.abs(want - got).max() <= 12 * out_scale


def test_input_and_output_scales_are_the_calibration_range_over_255(fp32, tmp_path):
    src, x = fp32
    dst = quantize.quantize_int8(src, tmp_path / "int8.onnx", x[:CALIBRATION], profile.load("host-cpu")[0].quantize,
                                 "input")
    params = quantize.quantization_params(dst)
    assert set(params) == {"input", "output"}
    calib = x[:CALIBRATION]
    lo, hi = min(float(calib.min()), 0.0), max(float(calib.max()), 0.0)  # minmax: the range always holds 0
    assert params["input"]["scale"] == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert params["input"]["zero_point"] == round(-lo / params["input"]["scale"]) == 83
    assert isinstance(params["input"]["scale"], float) and isinstance(params["input"]["zero_point"], int)
    assert 0 <= params["output"]["zero_point"] <= 255 and params["output"]["scale"] > params["input"]["scale"]
    dtypes = _zero_point_dtypes(dst)
    assert dtypes["input_zero_point"] == dtypes["output_zero_point"] == "uint8", "activations: uint8"
    kinds = Counter(dtypes.values())
    assert kinds == {"uint8": 5, "int8": 3, "int32": 3}, dtypes  # 5 activations; 2 conv + 1 gemm weights; biases


def test_symmetric_int8_has_zero_points_of_zero_as_tensorrt_needs(fp32, tmp_path):
    src, x = fp32
    cfg = profile.load("host-cpu")[0].quantize.model_copy(update={"activations": "int8"})
    dst = quantize.quantize_int8(src, tmp_path / "sym.onnx", x[:CALIBRATION], cfg, "input", symmetric=True)
    params = quantize.quantization_params(dst)
    assert params["input"]["zero_point"] == 0 and params["output"]["zero_point"] == 0
    bound = float(np.abs(x[:CALIBRATION]).max())
    assert params["input"]["scale"] == pytest.approx(bound / 127, rel=1e-6)  # [-bound, bound] onto -127..127
    assert set(_zero_point_dtypes(dst).values()) <= {"int8", "int32"}, "no uint8 anywhere"


def test_a_node_kept_in_fp32_has_no_quantized_inputs(fp32, tmp_path):
    import onnx

    src, x = fp32
    gemm = next(n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Gemm")
    dst = quantize.quantize_int8(src, tmp_path / "keep.onnx", x[:CALIBRATION], profile.load("host-cpu")[0].quantize,
                                 "input", keep_fp32=[gemm])
    graph = onnx.load(str(dst)).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    kept = next(n for n in graph.node if n.name == gemm)
    weight, bias = kept.input[1:]
    assert weight not in made_by and bias not in made_by, "its weight and bias are float initializers, no DQ"
    assert Counter(_zero_point_dtypes(dst).values())["int8"] == 2, "the two convs' weights only"


def test_a_model_that_cannot_be_quantized_is_a_stage_error_with_the_way_out(tmp_path):
    (tmp_path / "not.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(StageError) as exc:
        quantize.quantize_int8(tmp_path / "not.onnx", tmp_path / "q.onnx", np.zeros((2, 1, 8, 8), np.float32),
                               profile.load("host-cpu")[0].quantize, "input")
    assert exc.value.stage == "quantize" and exc.value.message.startswith("[quantize] INT8 quantization of not.onnx "
                                                                          "failed: ")
    assert exc.value.hint == "try --set quantize.precision=fp32, or another quantize.calibration_method"


def test_quantizing_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """ONNX Runtime's shape inference writes sym_shape_infer_temp.onnx and a .data file to the cwd when
    it stops early (an upsample by a scale factor does that): a user's folder must not collect them."""
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from edgecompress import export, quantize
    from edgecompress.profile import Export, Quantize

    class Up(nn.Module):  # a decoder's skip connection: the upsampled coarse map added to the finer one
        def __init__(self):
            super().__init__()
            self.fine, self.coarse = nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 4, 3, 2, 1)

        def forward(self, x):
            f = self.fine(x)
            return f + F.interpolate(self.coarse(f), scale_factor=2.0, mode="bilinear", align_corners=False)

    work, cwd = tmp_path / "work", tmp_path / "user"
    work.mkdir()
    cwd.mkdir()
    x = np.random.default_rng(0).normal(size=(8, 3, 16, 16)).astype(np.float32)
    src = export.export_onnx(Up().eval(), torch.from_numpy(x[:1]), work / "m.onnx", Export(), None)
    monkeypatch.chdir(tmp_path)
    logged = []
    monkeypatch.setattr(quantize.console, "log", logged.append)
    quantize.quantize_int8(Path("work") / src.name, work / "q.onnx", x, Quantize(), export.INPUT_NAME)  # relative, as deploy gives it
    assert (work / "q.onnx").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["user", "work"]
    assert not any("pre-processing skipped" in line and "FileNotFound" in line for line in logged), logged


SEGMENTER_SRC = '''
import torch.nn as nn
import torch.nn.functional as F


class TinySegmenter(nn.Module):
    """A user's own segmenter: stride-2 features, per-pixel logits, upsampled to the input's size."""

    def __init__(self, mode="bilinear"):
        super().__init__()
        self.mode = mode
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU())
        self.classifier = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        logits = self.classifier(self.body(x))
        if self.mode == "nearest":
            return {"masks": F.interpolate(logits, scale_factor=2.0, mode="nearest")}
        return {"masks": F.interpolate(logits, scale_factor=2.0, mode=self.mode, align_corners=False)}
'''


@pytest.mark.parametrize("mode, stays_float", [("bilinear", True), ("nearest", False)])
def test_an_interpolating_resize_into_an_output_stays_float(tmp_path, mode, stays_float, monkeypatch):
    """The final bilinear Resize of a segmenter gets no Q/DQ after it (ONNX Runtime runs it in float anyway);
    a nearest one only copies values, so it stays quantized and its output keeps its scale."""
    import onnx
    import torch

    from edgecompress import outputs

    ns: dict = {}
    exec(SEGMENTER_SRC, ns)
    torch.manual_seed(0)
    x = np.random.default_rng(0).random((16, 3, 16, 16), dtype=np.float32)
    model = outputs.flat(ns["TinySegmenter"](mode).eval(), torch.from_numpy(x[:1]))
    src = export.export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "seg.onnx", profile.load("host-cpu")[0].export)
    tails = quantize.resize_tails(src)
    assert bool(tails) == stays_float
    logged = []
    monkeypatch.setattr(quantize.console, "log", logged.append)
    dst = quantize.quantize_int8(src, tmp_path / "seg-int8.onnx", x, profile.load("host-cpu")[0].quantize, "input",
                                 float_tail=True)
    said = [line for line in logged if "interpolating into an output" in line]
    assert bool(said) == stays_float and not any("/inner/" in line for line in said), said  # the model's own names
    graph = onnx.load(str(dst)).graph
    made_by = {o: n for n in graph.node for o in n.output}
    last = made_by[graph.output[0].name]
    assert (last.op_type == "Resize") == stays_float, last.op_type
    assert (graph.output[0].name in quantize.quantization_params(dst)) != stays_float
    fp32_out = _run(src, x)
    int8_out = _run(dst, x)
    assert np.abs(int8_out - fp32_out).max() < 0.1 * np.abs(fp32_out).max(), "still the same masks, within INT8 error"


NORMS_SRC = '''
import torch
import torch.nn as nn


class Norms(nn.Module):
    """GroupNorm (exported as InstanceNormalization over the groups) and a LayerNorm over the channels, whose
    scale varies per channel as a trained one does."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.ln = nn.LayerNorm(16)
        with torch.no_grad():
            self.ln.weight.copy_(torch.linspace(0.05, 3.0, 16))
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = self.gn(self.conv(x)).mean((2, 3))
        return self.fc(self.ln(x))


def build():
    return Norms().eval()
'''


def test_a_normalisation_s_scale_is_quantized_per_channel_without_a_warning(tmp_path, caplog):
    """ONNX Runtime's per-channel axis for a normalisation's 1-D scale defaulted to 1: it warned 'Axis 1 is
    out-of-range' once per use (a GroupNorm net printed five) and gave a LayerNorm's varied scale one INT8 scale."""
    import logging

    import onnx
    import torch
    from onnx import numpy_helper

    ns: dict = {}
    exec(NORMS_SRC, ns)
    prof = profile.load("raspberry-pi-5")[0]
    src = export.export_onnx(ns["build"](), torch.zeros(1, 3, 16, 16), tmp_path / "fp.onnx", prof.export)
    x = np.random.default_rng(0).normal(0, 1, (32, 3, 16, 16)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        dst = quantize.quantize_int8(src, tmp_path / "q.onnx", x, prof.quantize, "input")
    assert not [r for r in caplog.records if "out-of-range" in r.getMessage()]
    graph = onnx.load(str(dst)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    ln = next(n for n in graph.node if n.op_type == "LayerNormalization")
    gamma = producer[ln.input[1]]
    assert gamma.op_type == "DequantizeLinear" and inits[gamma.input[1]].shape == (16,), "one scale per channel"


SHARED_BIAS_SRC = '''
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Net(nn.Module):
    """Freshly initialised: every BatchNorm folds into a zero bias, which the exporter shares between convs."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = Block(3, 8), Block(8, 8), Block(8, 8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):  # upsampling by a factor stops ORT's symbolic shape inference in its pre-processing
        y = self.a(x)
        return self.head(F.interpolate(self.c(self.b(F.max_pool2d(y, 2))), scale_factor=2.0, mode="nearest") + y)
'''


def test_convs_sharing_one_exported_bias_are_all_quantized(tmp_path, monkeypatch):
    """The exporter writes equal biases once, behind Identity nodes, which ORT's pre-processing folds; but its
    symbolic shape inference stopped on the upsample, pre-processing was skipped, and the quantizer left those
    convs as DQ -> float Conv -> Q: the INT8 file ran 2.8x slower than with each conv's bias its own."""
    import onnx
    import onnxruntime as ort
    import torch

    ns: dict = {}
    exec(SHARED_BIAS_SRC, ns)
    model = ns["Net"]().eval()
    x = np.random.default_rng(0).normal(0, 1, (32, 3, 16, 16)).astype(np.float32)
    src = export.export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "fp32.onnx", profile.load("host-cpu")[0].export)
    assert "Identity" in [n.op_type for n in onnx.load(str(src)).graph.node], "the exporter no longer shares biases"
    cfg = profile.load("raspberry-pi-5")[0].quantize
    logged = []
    monkeypatch.setattr(quantize.console, "log", logged.append)
    dst = quantize.quantize_int8(src, tmp_path / "int8.onnx", x, cfg, "input")
    assert not any("pre-processing skipped" in line for line in logged), logged
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["QLinearConv"] == 4 and ops["Conv"] == 0, ops
    reference = model(torch.from_numpy(x)).detach().numpy()
    out = session.run(None, {"input": x})[0]
    assert np.abs(out - reference).max() < 0.1 * np.abs(reference).max()


def test_an_identity_of_a_weight_becomes_the_weight_s_own_copy(tmp_path):
    """Where pre-processing cannot run at all, the quantizer still needs every conv's bias as an initializer."""
    import onnx
    import onnxruntime as ort
    import torch

    ns: dict = {}
    exec(SHARED_BIAS_SRC, ns)
    x = np.random.default_rng(1).normal(0, 1, (2, 3, 16, 16)).astype(np.float32)
    src = export.export_onnx(ns["Net"]().eval(), torch.from_numpy(x[:1]), tmp_path / "fp32.onnx",
                             profile.load("host-cpu")[0].export)
    own = quantize.own_initializers(src, tmp_path / "own.onnx")
    assert own != src and "Identity" not in [n.op_type for n in onnx.load(str(own)).graph.node]
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]  # noqa: E731
    assert np.array_equal(run(own), run(src))
    assert quantize.own_initializers(own, tmp_path / "again.onnx") == own  # nothing left to copy: the file itself
