"""Quantization-aware distillation (quantize.method: ptq | qat | auto). The last part of the distillation
budget (quantize.qat_fraction of distill.steps / distill.minutes) trains the student with fake quantization
of the kind its runtime computes, the teacher frozen and the losses the same:

- every Conv/Linear's weight rounded per output channel to symmetric int8 ([-127, 127], scale max|w|/127:
  the rule ONNX Runtime's QDQ quantizer, TensorRT's Q/DQ and LiteRT's PT2E quantizer apply to weights, so the
  runtime derives the very scales the student trained with from the trained weights). Per channel commutes
  with BatchNorm's per-channel factor, so rounding the unfolded weight is rounding the folded one;
- every Conv/Linear's input rounded to the runtime's activation type: ONNX Runtime uint8 asymmetric
  ([0, 255], zero point from the range), LiteRT int8 asymmetric ([-128, 127]), TensorRT int8 symmetric
  ([-127, 127], zero point 0), with the range of each input calibrated (min/max over the calibration samples,
  as quantize.calibration_method minmax does) and then followed by a moving average over the training batches.

BatchNorm keeps its running statistics during QAT (they are folded into the conv in the file).
`auto` first measures PTQ's parity: the INT8 file the back end would make of the student now, against the FP32
student (as keep_float's auto does), and spends the QAT steps only where it misses verify's tolerance; otherwise
the share is spent as ordinary distillation. What the file carries: ONNX Runtime and TensorRT's Q/DQ get the trained input ranges
of every Conv/Gemm through quantize_static's TensorQuantOverrides (rmin/rmax); LiteRT's PT2E graph gets them
by replacing the (histogram) observer of each Conv/Linear input with a min/max one holding the trained range
after calibration. The other tensors (a residual Add's output, pooling, the logits) are calibrated as in PTQ."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .console import log

RECORD_ATTR = "edgecompress_qat"  # the student carries its QatRecord here, for the back ends and the manifest
QAT_LR_FACTOR = 0.1  # QAT fine-tunes a converged student: the distillation's full step size would undo it
EMA_MOMENTUM = 0.01  # torch's MovingAverageMinMaxObserver default: ranges follow the weights as they move


@dataclass
class Scheme:
    """The integer grid the runtime computes on: activations [act_qmin, act_qmax], weights symmetric."""

    runtime: str
    act_qmin: int
    act_qmax: int
    act_symmetric: bool
    weight_qmax: int  # weights in [-weight_qmax, weight_qmax], zero point 0
    per_channel: bool
    carried: str  # what of the trained quantization the runtime's file carries

    def describe(self) -> str:
        kind = "symmetric" if self.act_symmetric else "asymmetric"
        grid = "uint8" if self.act_qmin == 0 else "int8"
        return (f"{grid} {kind} activations, {'per-channel' if self.per_channel else 'per-tensor'} symmetric int8 "
                f"weights [-{self.weight_qmax}, {self.weight_qmax}]")


def scheme_for(prof) -> Scheme:
    """The runtime's INT8 as its back end makes it (Backend.qat_scheme)."""
    from . import backends

    return backends.get(prof.runtime).qat_scheme(prof.quantize)


@dataclass
class QatRecord:
    """The manifest's compression.quantization.qat: what quantize.method did and why."""

    setting: str  # the profile's ptq | qat | auto
    method: str  # ptq | qat: what the student was trained for
    reason: str
    steps: int = 0  # steps trained with fake quantization
    seconds: float = 0.0
    lr: Optional[float] = None
    metric: Optional[str] = None  # the parity figure (verify.figure) both simulations were judged by
    ptq_figure: Optional[float] = None  # auto: the PTQ file vs the FP32 student; qat: simulated (calibrated ranges)
    qat_simulated: Optional[float] = None  # the QAT student, fake-quantized with its trained ranges, vs itself
    scheme: str = ""
    carried: str = ""
    ranges: Dict[str, List[float]] = field(default_factory=dict)  # module: [rmin, rmax] of its input, trained

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ranges"] = len(self.ranges)  # how many inputs' ranges were trained; the values live in the file
        return out


def record_of(student) -> Optional[QatRecord]:
    return getattr(student, RECORD_ATTR, None) if student is not None else None


def budget_share(prof) -> Tuple[Optional[int], Optional[float]]:
    """(steps, seconds) of the distillation budget kept for the QAT part; (0, 0) where none is."""
    q, d = prof.quantize, prof.distill
    if q.method == "ptq" or q.precision != "int8" or not d.steps and d.minutes is None:
        return (0 if d.steps is not None else None), (0.0 if d.minutes is not None else None)
    steps = None if d.steps is None else max(1, int(round(d.steps * q.qat_fraction))) if d.steps else 0
    seconds = None if d.minutes is None else d.minutes * 60 * q.qat_fraction
    return steps, seconds


def _kept_float(prof) -> List[str]:
    """Layers quantize.keep_float names stay float in the file, so QAT leaves them float too (auto starts
    from INT8 everywhere, so it fake-quantizes every layer)."""
    return list(prof.quantize.keep_float) if isinstance(prof.quantize.keep_float, list) else []


class FakeQuant:
    """Fake quantization on a model's Conv/Linear layers, by replacing each one's forward on the
    instance (the state_dict, checkpoints and export see the model unchanged); detach() restores it.
    mode: calibrate (min/max of each input, no rounding), train (moving-average ranges, rounding),
    frozen (the ranges as they are, rounding)."""

    def __init__(self, model, scheme: Scheme, keep_float=()):
        import torch.nn as nn

        from .keep_float import in_module

        self.model, self.scheme, self.mode = model, scheme, "calibrate"
        self.layers = {name: m for name, m in model.named_modules()
                       if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and not in_module(name, keep_float)}
        self.ranges: Dict[str, List[float]] = {name: [math.inf, -math.inf] for name in self.layers}
        self._bn: list = []

    def attach(self) -> "FakeQuant":
        for name, module in self.layers.items():
            module.forward = self._forward(name, module)
        return self

    def detach(self) -> None:
        for module in self.layers.values():
            module.__dict__.pop("forward", None)
        self.unfreeze_bn()

    def freeze_bn(self) -> None:
        """BatchNorm in eval mode whatever model.train() says: the file folds its running statistics."""
        import torch.nn as nn

        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train = (lambda mod: (lambda mode=True: nn.Module.train(mod, False)))(m)
                m.eval()
                self._bn.append(m)

    def unfreeze_bn(self) -> None:
        for m in self._bn:
            m.__dict__.pop("train", None)
        self._bn = []

    def _forward(self, name: str, module):
        import torch.nn as nn
        import torch.nn.functional as F

        def forward(x):
            x = self._activation(name, x)
            if self.mode == "calibrate":
                w = module.weight
            else:
                w = fake_quant_weight(module.weight, self.scheme.weight_qmax, self.scheme.per_channel)
            if isinstance(module, nn.Linear):
                return F.linear(x, w, module.bias)
            return module._conv_forward(x, w, module.bias)
        return forward

    def _activation(self, name: str, x):
        import torch

        r = self.ranges[name]
        if self.mode in ("calibrate", "train"):
            with torch.no_grad():
                lo, hi = float(x.min()), float(x.max())
            if self.mode == "calibrate" or not math.isfinite(r[0]):
                r[0], r[1] = min(r[0], lo), max(r[1], hi)
            elif self.model.training:
                r[0], r[1] = r[0] + EMA_MOMENTUM * (lo - r[0]), r[1] + EMA_MOMENTUM * (hi - r[1])
        if self.mode == "calibrate":
            return x
        return fake_quant_activation(x, r[0], r[1], self.scheme)

    def calibrate(self, x) -> None:
        """Each input's min/max over `x`, in batches (quantize.calibration_method minmax)."""
        import torch

        mode, self.mode = self.mode, "calibrate"
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(x), 64):
                self.model(torch.from_numpy(x[i: i + 64]))
        self.model.train(was_training)
        self.mode = mode if mode != "calibrate" else "frozen"


def activation_grid(rmin: float, rmax: float, s: Scheme) -> Tuple[float, int]:
    """(scale, zero point) of a tensor with range [rmin, rmax], as ORT's compute_scale_zp gives them."""
    rmin, rmax = min(rmin, 0.0), max(rmax, 0.0)
    if s.act_symmetric:
        a = max(-rmin, rmax)
        rmin, rmax = -a, a
    scale = (rmax - rmin) / (s.act_qmax - s.act_qmin)
    if scale == 0:
        return 1.0, 0 if s.act_symmetric else s.act_qmin
    zero = 0 if s.act_symmetric else int(min(s.act_qmax, max(s.act_qmin, round(s.act_qmin - rmin / scale))))
    return scale, zero


def fake_quant_activation(x, rmin: float, rmax: float, s: Scheme):
    import torch

    scale, zero = activation_grid(rmin, rmax, s)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, s.act_qmin, s.act_qmax)


def fake_quant_weight(w, qmax: int, per_channel: bool = True):
    """Symmetric int8 rounding, scale max|w| / qmax per output channel (or the whole tensor); the gradient
    passes straight through (STE) to the float weight."""
    import torch

    if not per_channel:
        scale = float(w.detach().abs().max().clamp_min(1e-12)) / qmax
        return torch.fake_quantize_per_tensor_affine(w, scale, 0, -qmax, qmax)
    scale = (w.detach().abs().flatten(1).amax(1).clamp_min(1e-12) / qmax).float()
    zero = torch.zeros(len(scale), dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -qmax, qmax)


def simulated_outputs(student, record: QatRecord, prof, x) -> list:
    """The student's outputs with the fake quantization it was trained with (its trained ranges, frozen):
    what the exported INT8 file is compared with."""
    from . import verify

    fq = FakeQuant(student, scheme_for(prof), _kept_float(prof)).attach()
    fq.ranges.update({k: list(v) for k, v in record.ranges.items()})
    fq.mode = "frozen"
    try:
        return verify.torch_outputs(student, x)
    finally:
        fq.detach()


def _parity(prof, out, reference, names, y, task: str):
    from . import verify

    report = verify.compare("fake-quantized student", out, reference, names, y, task=task,
                            score_threshold=prof.verify.score_threshold)
    metric, value = verify.figure(report)
    return metric, value, verify.problems(report, True, prof.verify)


def finish_(student, teacher, train, held, prof, *, checkpoint: Path, meta: dict, resume: Optional[dict],
            curve: Optional[list], task=None) -> QatRecord:
    """The last part of the distillation budget, as quantize.method says; the student keeps the record
    (RECORD_ATTR). `resume`: the checkpoint of an interrupted QAT part (its ranges are calibrated again)."""
    from . import distill, export, verify

    q, setting = prof.quantize, prof.quantize.method
    steps, seconds = budget_share(prof)
    if setting == "ptq" or q.precision != "int8":
        why = "quantize.method ptq" if setting == "ptq" else f"quantize.precision {q.precision}: nothing is quantized"
        return _keep(student, QatRecord(setting, "ptq", why))
    scheme = scheme_for(prof)
    calib = train.x[: q.calibration_samples]
    task_name = getattr(task, "kind", None) or (prof.task if prof.task != "auto" else "classification")
    names = export.names_of_outputs(student, __import__("torch").from_numpy(train.x[:1]))
    reference = verify.torch_outputs(student, held.x)
    metric, ptq, missed = _parity(prof, ptq_file_outputs(student, prof, train, held, checkpoint.parent), reference,
                                  names, held.y, task_name) if setting == "auto" else (None, None, [])
    fq = FakeQuant(student, scheme, _kept_float(prof)).attach()
    fq.calibrate(calib)
    if setting != "auto":  # qat: PTQ's figure simulated, for the record only (auto measured the file)
        metric, ptq, _ = _parity(prof, verify.torch_outputs(student, held.x), reference, names, held.y, task_name)
    d = prof.distill.model_copy(update={"lr": prof.distill.lr * QAT_LR_FACTOR})
    if setting == "auto" and not missed:
        fq.detach()
        reason = (f"auto: the PTQ file meets the tolerance ({metric} {ptq:.4f}), so the QAT share was spent as "
                  "ordinary distillation")
        log(f"qat: {reason}")
        if steps or seconds:
            distill.distill_(student, teacher, train, d, steps=steps, seconds=seconds, checkpoint=checkpoint,
                             meta=meta, resume=resume, label="distill (QAT share)", curve=curve, task=task)
        return _keep(student, QatRecord(setting, "ptq", reason, metric=metric, ptq_figure=ptq,
                                        scheme=scheme.describe()))
    why = ("quantize.method qat" if setting == "qat" else
           f"auto: the PTQ file misses the tolerance ({'; '.join(missed)})")
    log(f"qat: {why}; {steps if steps is not None else '-'} steps with fake quantization ({scheme.describe()}), "
        f"lr {d.lr:g}")
    fq.mode = "train"
    fq.freeze_bn()
    try:
        report = distill.distill_(student, teacher, train, d, steps=steps, seconds=seconds, checkpoint=checkpoint,
                                  meta=meta, resume=resume, label="qat", curve=curve, task=task)
        fq.mode = "frozen"
        fq.unfreeze_bn()
        simulated = verify.torch_outputs(student, held.x)
    finally:
        fq.detach()
    _, qat_value, _ = _parity(prof, simulated, verify.torch_outputs(student, held.x), names, held.y, task_name)
    ptq_what = "the PTQ file" if setting == "auto" else "PTQ simulated"
    log(f"qat: {metric} with the FP32 student: {ptq_what} {_fmt(ptq)} before QAT; the fake-quantized QAT student "
        f"{_fmt(qat_value)} (simulated; the file's own figure is verify's)")
    return _keep(student, QatRecord(setting, "qat", why, report.steps, report.seconds, d.lr, metric, ptq, qat_value,
                                    scheme.describe(), scheme.carried, {k: list(v) for k, v in fq.ranges.items()}))


def ptq_file_outputs(student, prof, train, held, work: Path) -> list:
    """The held-out outputs of the INT8 file PTQ makes of the student now, made as its back end makes it
    (every layer INT8, or the ones quantize.keep_float names left float): what auto judges PTQ by. The
    simulation leaves tensors out (a residual Add, pooling, the logits) and read 0.9746 where the file had
    0.9570 on the MobileNetV2 benchmark, so auto measures the file, as keep_float's auto does."""
    import torch

    from . import backends

    calib, work = train.x[: prof.quantize.calibration_samples], Path(work)
    work.mkdir(parents=True, exist_ok=True)
    return backends.get(prof.runtime).ptq_outputs(student, torch.from_numpy(train.x[:1]), calib, held.x, prof,
                                                  work, _kept_float(prof))


def _keep(student, record: QatRecord) -> QatRecord:
    setattr(student, RECORD_ATTR, record)
    return record


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def onnx_overrides(model, record: Optional[QatRecord]) -> dict:
    """quantize_static's TensorQuantOverrides for the QDQ quantization of `model` (an onnx.ModelProto, the
    pre-processed one quantize_static reads): the trained range of the input of every Conv/Gemm/MatMul whose
    module the student trained with fake quantization, as rmin/rmax (ORT computes scale and zero point from
    them by the rule the training used; TensorRT's symmetric Q/DQ symmetrizes them as calibration ranges are).
    A tensor feeding several such nodes takes the widest range."""
    import numpy as np

    if record is None or record.method != "qat" or not record.ranges:
        return {}
    found: Dict[str, List[float]] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        r = next((record.ranges[m] for m in module_paths(node.name) if m in record.ranges), None)
        if r is None or not all(map(math.isfinite, r)):
            continue
        have = found.get(node.input[0])
        found[node.input[0]] = [min(r[0], have[0]), max(r[1], have[1])] if have else list(r)
    log(f"quantize: {len(found)} Conv/Gemm input tensors take the ranges QAT trained ({len(record.ranges)} layers "
        "trained; the other tensors are calibrated)")
    return {tensor: [{"rmin": np.float32(min(lo, 0.0)), "rmax": np.float32(max(hi, 0.0))}]
            for tensor, (lo, hi) in found.items()}


def module_paths(node_name: str) -> List[str]:
    """The module path a node the TorchScript exporter named lies in, with and without the first scope (the
    wrapper outputs.flat puts around the model). Its scopes give a Sequential's child as 'expand.0' under
    'expand', so '/inner/blocks/blocks.1/expand/expand.0/Conv' is blocks.1.expand.0."""
    segments = [p for p in node_name.split("/")[:-1] if p]
    paths = []
    for start in (0, 1):
        name: List[str] = []
        for seg in segments[start:]:
            if name and seg.startswith(name[-1] + "."):
                name[-1] = seg
            else:
                name.append(seg)
        paths.append(".".join(name))
    return paths


def overrides_of(student):
    """What quantize.quantize_int8 takes as `overrides` for this student: None unless it trained with QAT."""
    record = record_of(student)
    if record is None or record.method != "qat":
        return None
    return lambda model: onnx_overrides(model, record)


def pt2e_ranges_of(student):
    """What tflite.quantize_tflite_int8 takes as `ranges`: a function that, after calibration, gives the
    observer of each Conv/Linear input the range QAT trained (a min/max observer in place of the histogram
    one), so the .tflite carries it; None unless the student trained with QAT."""
    record = record_of(student)
    if record is None or record.method != "qat" or not record.ranges:
        return None
    log(f"quantize: the .tflite's conv/linear inputs take the ranges QAT trained ({len(record.ranges)} layers; the "
        "other tensors are calibrated)")
    return lambda graph: carry_pt2e_ranges(graph, record)


def _module_of(node) -> Optional[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else None


def carry_pt2e_ranges(graph, record: QatRecord) -> int:
    """The observers (activation_post_process_*) feeding each conv/linear node of a prepared PT2E graph
    whose module trained with QAT take its trained range; how many did. Module paths are matched by their
    end (the channels-last and outputs.flat wrappers put their own names in front)."""
    import torch
    from torchao.quantization.pt2e.observer import MinMaxObserver

    done = 0
    for node in graph.graph.nodes:
        if node.op != "call_function" or not any(k in str(node.target) for k in ("conv", "linear")):
            continue
        path = _module_of(node) or ""
        name = next((m for m in sorted(record.ranges, key=len, reverse=True) if path == m or path.endswith("." + m)),
                    None)
        source = node.args[0] if node.args else None
        if name is None or getattr(source, "op", None) != "call_module":
            continue
        old = getattr(graph, source.target)
        if not hasattr(old, "calculate_qparams") or getattr(old, "dtype", None) != torch.int8:
            continue
        lo, hi = record.ranges[name]
        new = MinMaxObserver(dtype=torch.int8, quant_min=old.quant_min, quant_max=old.quant_max,
                             qscheme=torch.per_tensor_affine)
        new.min_val, new.max_val = torch.tensor(min(lo, 0.0)), torch.tensor(max(hi, 0.0))
        setattr(graph, source.target, new)
        done += 1
    return done
