"""Model input: `path/file.py:factory` (+ optional weights), an `.onnx` file, or the built-in demo."""
from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import InputError
from .registry import closest


@dataclass
class ModelSource:
    name: str
    kind: str  # "torch" | "onnx"
    sha256: str
    module: Any = None  # nn.Module for kind == "torch"
    onnx_path: Optional[Path] = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def user_traceback(exc: BaseException, user_file: Path) -> str:
    """The traceback from the first frame in the user's file on: their code, not ours."""
    tb = exc.__traceback__
    while tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve() != user_file.resolve():
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb) if tb else traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def raised(what: str, exc: BaseException, user_file: Path) -> str:
    """'X raised E:' and the user's traceback, or 'X raised E: message' when none of their code ran."""
    detail = user_traceback(exc, user_file)
    return f"{what} raised {detail}" if "\n" not in detail else f"{what} raised {type(exc).__name__}:\n{detail}"


def _import_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"edgecompress_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # let the user's file import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise InputError(raised(f"importing {path}", exc, path), hint=f"fix the error in {path}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def _called_from_here(exc: BaseException) -> bool:
    """A TypeError raised by the call itself (missing arguments), not inside the user's code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename == __file__


def name_for(spec: Optional[str]) -> str:
    """The bundle's model name, from the command line alone (so a taken --out is refused before any
    loading): the factory's name, or the file's where the factory has a generic one."""
    if spec is None:
        return "demo"
    if spec.endswith(".onnx") or ":" not in spec:
        return Path(spec).stem
    file_part, _, factory_name = spec.rpartition(":")
    return factory_name if factory_name not in ("build", "model", "create") else Path(file_part).stem


def load_factory(spec: str, weights: Optional[str], role: str = "model") -> ModelSource:
    import torch

    file_part, _, factory_name = spec.rpartition(":")
    if not file_part or not factory_name:
        raise InputError(f"model {spec!r} is not path/file.py:factory", hint="example: models/net.py:build")
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise InputError(f"{role} file {path} does not exist", hint="check the path; the form is path/file.py:factory")
    module = _import_file(path)
    factory = getattr(module, factory_name, None)
    if factory is None:
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise InputError(f"{path} has no '{factory_name}'.{closest(factory_name, names)}",
                         hint=f"callables in {path.name}: {', '.join(names) or 'none'}")
    if not callable(factory):
        raise InputError(f"{path}:{factory_name} is a {type(factory).__name__}, not a callable",
                         hint="point at a function or class that returns an nn.Module")
    try:
        model = factory()
    except Exception as exc:
        hint = f"fix the error in {path}"
        if isinstance(exc, TypeError) and "argument" in str(exc) and _called_from_here(exc):
            hint = (f"edgecompress calls {factory_name}() with no arguments: give its parameters defaults, or "
                    f"add a small function that builds the model you want (def build(): return {factory_name}(...))")
        raise InputError(raised(f"{path}:{factory_name}()", exc, path), hint=hint) from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{path}:{factory_name}() returned {type(model).__name__}, not a torch.nn.Module",
                         hint=f"make {factory_name}() return the model (an nn.Module instance)")
    digest = hashlib.sha256(path.read_bytes())
    if weights:
        _load_weights(model, Path(weights).expanduser())
        digest.update(bytes.fromhex(sha256_file(Path(weights).expanduser())))
    return ModelSource(name_for(spec), "torch", digest.hexdigest(), module=model.eval())


def _load_weights(model, path: Path) -> None:
    import torch

    if not path.is_file():
        raise InputError(f"weights file {path} does not exist", hint="check the --weights path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's message tells how to load unsafely; the class it met is what the user needs to hear
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"it holds a pickled {found.group(1)}" if found else re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        raise InputError(f"weights {path} could not be loaded with weights_only=True: {what.splitlines()[0]}",
                         hint="save them with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"weights {path} hold a {type(state).__name__}, not a state_dict")
    _check_state(model, state, path)
    model.load_state_dict(state)


def _check_state(model, state: dict, path: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise InputError(f"weights {path} do not match the model:\n  " + "\n  ".join(parts),
                         hint="check that the factory builds the same architecture the weights were saved from")


def load_onnx(spec: str) -> ModelSource:
    import onnx

    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(f"model file {path} does not exist",
                         hint="check the path; a PyTorch model is given as path/file.py:factory")
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path} is not a valid ONNX model: {first}",
                         hint="re-export it, or pass the PyTorch factory (file.py:factory) instead") from None
    data_files = external_data_files(path)
    digest = sha256_file(path) if not data_files else \
        hashlib.sha256("".join(sha256_file(p) for p in [path, *data_files]).encode()).hexdigest()  # all its parts
    return ModelSource(path.stem, "onnx", digest, onnx_path=path)


def external_data_files(path: Path) -> list:
    """The files beside an .onnx that hold its weights (torch.onnx.export writes NAME.onnx.data)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    graph = onnx.load(str(path), load_external_data=False).graph
    return sorted({path.parent / ExternalDataInfo(t).location for t in graph.initializer if uses_external_data(t)})


def write_single_file(path: Path, dst: Path) -> Path:
    """`path` as one self-contained .onnx at `dst`: a copy of the .onnx alone would lose weights kept
    in external data files, and a device is sent one model file."""
    import shutil

    import onnx

    if not external_data_files(path):
        return Path(shutil.copy(path, dst))
    model = onnx.load(str(path))  # reads the external weights in
    if model.ByteSize() >= 2 ** 31:
        raise InputError(f"{path} holds over 2 GB of weights, more than one ONNX file can",
                         hint="edge targets need far smaller models: prune or choose a smaller model first")
    onnx.save(model, str(dst))
    return dst


def load(spec: Optional[str], weights: Optional[str], role: str = "model") -> ModelSource:
    if spec is None:
        raise InputError("no model given")  # the pipeline handles the demo before calling this
    if spec.endswith(".onnx"):
        if weights:
            raise InputError("--weights applies to a PyTorch factory, not to an .onnx model")
        return load_onnx(spec)
    if ":" in spec:
        return load_factory(spec, weights, role)
    raise InputError(f"{role} {spec!r} is neither file.py:factory nor an .onnx file",
                     hint="example: edgecompress deploy models/net.py:build --target arm --data calib.npz")
