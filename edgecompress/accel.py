"""Where and in what precision distillation trains: distill.device (auto | cpu | cuda | cuda:N | mps) and
distill.precision (auto | fp32 | bf16 | fp16). Only training moves: pruning, export, quantization, calibration
and every check run on the CPU as before, so the bundle is the same whatever trained it.

On a GPU the teacher is frozen in eval mode, cast to the training's half precision and laid out channels-last
(it only runs forward, under no_grad); the student trains in fp32 weights under autocast, with a gradient
scaler for fp16 (bf16 has fp32's exponent range and needs none)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

from .errors import ProfileError

DEVICES_HELP = "distill.device takes auto, cpu, cuda, cuda:N or mps (--train-device on the command line)"
_HALF = {"bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class Placement:
    """The resolved device and precision, and why (the manifest's training record)."""
    device: str  # a torch device string: cpu, cuda:0, mps
    device_name: str  # what it is: the GPU's name, or the CPU's model
    precision: str  # fp32 | bf16 | fp16
    reason: str

    @property
    def kind(self) -> str:
        return self.device.split(":")[0]

    @property
    def on_gpu(self) -> bool:
        return self.kind in ("cuda", "mps")

    def dtype(self):
        """The autocast dtype (None for fp32)."""
        import torch

        return getattr(torch, _HALF[self.precision]) if self.precision in _HALF else None


def resolve(device: str = "auto", precision: str = "auto", torch_module=None) -> Placement:
    """The Placement for the profile's distill.device/precision; a device this machine lacks is a ProfileError
    (exit 2) that says what it has. torch_module: torch, or a stand-in with the same attributes (tests)."""
    torch = torch_module or __import__("torch")
    dev, why = _device(device, torch)
    prec, prec_why = _precision(precision, dev, torch)
    return Placement(dev, _name(dev, torch), prec, f"{why}; {prec_why}")


def _device(requested: str, torch):
    cuda = torch.cuda.is_available()
    mps = bool(getattr(getattr(torch.backends, "mps", None), "is_available", lambda: False)())
    if requested == "auto":
        if cuda:
            return "cuda:0", "device auto: CUDA is present"
        if mps:
            return "mps", "device auto: no CUDA, Apple MPS is present"
        return "cpu", "device auto: no CUDA or MPS device, so the CPU"
    if requested == "cpu":
        return "cpu", "device cpu, as asked"
    if requested == "mps":
        if not mps:
            raise ProfileError("distill.device=mps, and this machine has no MPS device (Apple silicon with a "
                               "torch build that supports it)", hint="use --train-device auto or cpu")
        return "mps", "device mps, as asked"
    kind, _, index = requested.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ProfileError(f"distill.device={requested!r} is not a device", hint=DEVICES_HELP)
    if not cuda:
        built = getattr(torch.version, "cuda", None)
        what = (f"torch {torch.__version__} was built without CUDA" if not built
                else f"torch {torch.__version__} (CUDA {built}) finds no CUDA device (driver, CUDA_VISIBLE_DEVICES?)")
        raise ProfileError(f"distill.device={requested}, and this machine has no CUDA device: {what}",
                           hint="use --train-device cpu (or auto, which takes CUDA only where it is present); to "
                                "train on a GPU, run on a machine with one and a CUDA build of torch")
    n = torch.cuda.device_count()
    i = int(index or 0)
    if i >= n:
        raise ProfileError(f"distill.device={requested}, and this machine has {n} CUDA device(s) (cuda:0"
                           f"{f' .. cuda:{n - 1}' if n > 1 else ''})", hint=f"use one of cuda:0 .. cuda:{n - 1}")
    return f"cuda:{i}", f"device {requested}, as asked"


def _precision(requested: str, device: str, torch):
    kind = device.split(":")[0]
    if requested == "auto":
        if kind == "cuda":
            if torch.cuda.is_bf16_supported():
                return "bf16", "precision auto: bf16 (this GPU has it)"
            return "fp16", "precision auto: fp16 with a gradient scaler (this GPU has no bf16)"
        return "fp32", f"precision auto: fp32 on {'the CPU' if kind == 'cpu' else kind}"
    if requested in ("bf16", "fp16", "fp32"):
        if requested == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise ProfileError(f"distill.precision=bf16, and {_name(device, torch)} has no bf16",
                               hint="use distill.precision=fp16 (with a gradient scaler) or auto")
        return requested, f"precision {requested}, as asked"
    raise ProfileError(f"distill.precision={requested!r} is not a precision", hint="use auto, fp32, bf16 or fp16")


def _name(device: str, torch) -> str:
    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(int(device.partition(":")[2] or 0)))
    if device == "mps":
        return "Apple MPS"
    return _cpu_model()


def _cpu_model() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"CPU ({line.split(':', 1)[1].strip()})"
    except OSError:
        pass
    return f"CPU ({platform.processor() or platform.machine()})"


def autocast(p: Placement):
    """The forward passes' autocast context (a no-op in fp32)."""
    import torch

    if p.dtype() is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=p.kind, dtype=p.dtype())


def grad_scaler(p: Placement):
    """fp16's gradient scaler (small gradients underflow in fp16), else None."""
    if p.precision != "fp16":
        return None
    import torch

    return torch.amp.GradScaler(p.kind)


def training_teacher(teacher, p: Placement):
    """The teacher distillation runs: on the CPU the model itself (in eval, its forward under no_grad); on a GPU a
    frozen copy there, in the training's half precision and channels-last (a copy: casting the user's model to
    bf16 and back would round the weights every later check compares against)."""
    import copy

    import torch

    teacher.eval()
    if not p.on_gpu:
        return teacher
    frozen = copy.deepcopy(teacher).to(p.device, memory_format=torch.channels_last)
    if p.dtype() is not None:
        frozen.to(p.dtype())
    for param in frozen.parameters():
        param.requires_grad_(False)
    return frozen.eval()


def place_student_(student, p: Placement):
    """The student on `p` (its weights stay fp32: autocast computes in half precision where it pays)."""
    import torch

    if p.on_gpu:
        student.to(p.device, memory_format=torch.channels_last)
    return student


def back_to_cpu_(*modules) -> None:
    """After training: everything back on the CPU in fp32, where export and the checks run."""
    import torch

    for m in modules:
        if m is not None:
            m.to("cpu", dtype=torch.float32)


def memory_text(p: Placement) -> Optional[str]:
    """The GPU memory in use now, for the progress line (None on the CPU)."""
    if p.kind != "cuda":
        return None
    import torch

    return f"{torch.cuda.memory_allocated(p.device) / 2**30:.1f}/{torch.cuda.max_memory_allocated(p.device) / 2**30:.1f} GiB"
