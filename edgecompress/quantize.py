"""INT8 post-training quantization for ONNX Runtime: static QDQ, calibrated on the data.
Measured on this host (see benchmarks/): uint8 activations + int8 per-channel weights after
`quant_pre_process` is the fast combination; int8 activations or no pre-processing ran slower
than FP32, so the profiles default to the former."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from . import console
from .errors import StageError


class _Reader:
    """Feeds calibration samples one at a time, as ORT's calibrators expect."""

    def __init__(self, input_name: str, x: np.ndarray):
        self.input_name, self.x, self.i = input_name, x, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {self.input_name: self.x[self.i - 1: self.i]}

    def rewind(self):
        self.i = 0


@contextlib.contextmanager
def _cwd(folder):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def quantize_int8(src: Path, dst: Path, calibration_x: np.ndarray, cfg, input_name: str,
                  symmetric: bool = False, keep_fp32: Sequence[str] = (),
                  overrides: Optional[Callable[[object], dict]] = None, float_tail: bool = False) -> Path:
    """symmetric: zero points of 0 for activations and weights (what TensorRT accepts).
    keep_fp32: names of nodes to leave unquantized. overrides: the pre-processed onnx.ModelProto ->
    TensorQuantOverrides (qat.onnx_overrides: the ranges QAT trained; the other tensors are calibrated).
    float_tail: leave a bilinear/cubic Resize that makes a graph output in float (resize_tails)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="ec-quant-") as tmp:
        pre, source = Path(tmp) / "pre.onnx", str(Path(src).resolve())  # resolved here: the cwd changes below
        _pre_process(source, pre, tmp)
        pre = own_initializers(pre, Path(tmp) / "own.onnx")  # after: shape inference stops on the copies
        extra = {"CalibTensorRangeSymmetric": symmetric, "ActivationSymmetric": symmetric, "WeightSymmetric": True,
                 # a normalisation's scale is one value per channel (1-D): ONNX Runtime's default axis 1 is out of
                 # range for it, so it warned ("Axis 1 is out-of-range", once per use) and fell back to one scale
                 "QDQOpTypePerChannelSupportToAxis": {"InstanceNormalization": 0, "BatchNormalization": 0,
                                                      "LayerNormalization": -1}}
        if overrides is not None:
            import onnx

            extra["TensorQuantOverrides"] = overrides(onnx.load(str(pre)))
        tails = resize_tails(pre) if float_tail else []
        if tails:
            from .keep_float import layer_names  # as the model names them, not the export's wrapper path

            console.log(f"quantize: {layer_names(tails)} (interpolating into an output) stays in float: ONNX Runtime "
                        "runs it in float either way, and a Q/DQ pair after it only rounds the output")
        try:
            quantize_static(str(pre), str(dst), _Reader(input_name, calibration_x.astype(np.float32)),
                            quant_format=QuantFormat.QDQ, activation_type=types[cfg.activations],
                            weight_type=types[cfg.weights], per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
                            calibrate_method=methods[cfg.calibration_method], nodes_to_exclude=list(keep_fp32) + tails,
                            extra_options=extra)
        except Exception as exc:
            raise StageError("quantize", f"INT8 quantization of {src.name} failed: {type(exc).__name__}: {exc}",
                             hint="try --set quantize.precision=fp32, or another quantize.calibration_method") from None
    return dst


def _pre_process(source: str, pre: Path, tmp: str) -> None:
    """ORT's quant_pre_process into `pre`: symbolic shape inference first; where it stops ("Incomplete symbolic
    shape inference": a Resize given scales and an empty roi, as F.interpolate exports) again with ONNX's own shape
    inference, which still folds the graph. The segmenter of benchmarks/tasks.py had been quantized without any
    pre-processing for that reason. Pre-processing is an optimisation: where both stop, the file goes as it is."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    failures = []
    for skip_symbolic in (False, True):
        try:
            with _cwd(tmp):  # ORT writes sym_shape_infer_temp.onnx (+ a .data file) to the cwd when shape inference stops
                quant_pre_process(source, str(pre), skip_symbolic_shape=skip_symbolic)
            return
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    shutil.copy(source, pre)
    console.log(f"quantize: pre-processing skipped ({'; '.join(dict.fromkeys(failures))}); the model may run slower")


def own_initializers(src: Path, dst: Path) -> Path:
    """`src` with every Identity of an initializer replaced by a copy of it, written to `dst` (else `src` itself).
    The exporter shares equal weights through Identity nodes (two convs whose folded biases are both zero: a
    freshly initialised BatchNorm, a detector's heads given one prior bias); ONNX Runtime's quantizer then finds
    a bias that is not an initializer ("Expected bias ... to be an initializer"), leaves DQ -> float Conv -> Q, and
    the INT8 file ran 2.8x slower than it does with its biases its own (benchmarks/shared_bias_int8.py)."""
    import onnx

    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception:  # not a model: the quantizer says so, as a StageError with the way out
        return src
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    if any(i.data_location == onnx.TensorProto.EXTERNAL for i in inits.values()):
        return src  # a file with its weights beside it (over 2 GB): left as it is rather than copied around
    outputs = {o.name for o in graph.output}
    shared = [n for n in graph.node if n.op_type == "Identity" and n.input and n.input[0] in inits
              and n.output[0] not in outputs]
    if not shared:
        return src
    for node in shared:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[node.input[0]])
        copy.name = node.output[0]
        graph.initializer.append(copy)
    gone = {id(n) for n in shared}
    keep = [n for n in graph.node if id(n) not in gone]
    del graph.node[:]
    graph.node.extend(keep)
    onnx.save(model, str(dst))
    return dst


# Resize modes ONNX Runtime's CPU kernels compute in float between DQ and Q (its QDQ transformer does not
# fuse them: the uint8 bilinear kernel measured 2.6x slower than the float one on a 4x64x64 map here)
_INTERPOLATING = (b"linear", b"cubic")
_PASS_THROUGH = ("Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")


def resize_tails(path: Path) -> list:
    """Names of the interpolating Resize nodes whose result is a graph output (directly or through reshapes).
    Quantized, such a node runs DQ -> float Resize -> Q -> DQ: the last pair costs time (a segmenter's
    full-size mask: ~10% of its INT8 run, benchmarks/tasks.py) and only rounds what the user reads."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    found = []
    for out in graph.output:
        node = producer.get(out.name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "Resize":
            mode = next((a.s for a in node.attribute if a.name == "mode"), b"nearest")
            if mode in _INTERPOLATING and node.name and node.name not in found:
                found.append(node.name)
    return found


def quantization_params(path: Path) -> dict:
    """Scale and zero point of the QDQ nodes next to each graph input and output."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    io = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    params = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            tensor = node.input[0] if node.op_type == "QuantizeLinear" else node.output[0]
            if tensor in io and node.input[1] in inits:
                params[tensor] = {"scale": float(inits[node.input[1]].reshape(-1)[0]),
                                  "zero_point": int(inits[node.input[2]].reshape(-1)[0]) if len(node.input) > 2 else 0}
    return params
