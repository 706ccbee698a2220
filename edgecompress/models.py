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
    weights: Optional[Path] = None  # the --weights file loaded into module; None: the factory's own weights


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
    """The user's file as a module registered in sys.modules, as an import would: tools that look a
    function's globals up by its module name (torch.export's tracer for the LiteRT INT8 path, pickle)
    find it. The name carries a hash of the path, so a model and a teacher both named net.py differ."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    name = f"edgecompress_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))  # let the user's file import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
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
            wrapper = "make_model" if factory_name != "make_model" else "make_my_model"  # not one that calls itself
            hint = (f"edgecompress calls {factory_name}() with no arguments: give its parameters defaults, or "
                    f"add a small function that builds the model you want (def {wrapper}(): return "
                    f"{factory_name}(...)) and pass {path.name}:{wrapper}")
        raise InputError(raised(f"{path}:{factory_name}()", exc, path), hint=hint) from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{path}:{factory_name}() returned {type(model).__name__}, not a torch.nn.Module",
                         hint=f"make {factory_name}() return the model (an nn.Module instance)")
    digest = hashlib.sha256(path.read_bytes())
    if weights:
        _load_weights(model, Path(weights).expanduser())
        digest.update(bytes.fromhex(sha256_file(Path(weights).expanduser())))
    return ModelSource(name_for(spec), "torch", digest.hexdigest(), module=model.eval(),
                       weights=Path(weights).expanduser() if weights else None)


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
    if not isinstance(state, dict):
        raise InputError(f"weights {path} hold a {type(state).__name__}, not a state_dict",
                         hint="save them with torch.save(model.state_dict(), path)")
    state = _without_wrapper_prefix(model, _state_dict_in(state, path), path)
    _check_state(model, state, path)
    model.load_state_dict(state)


# where training scripts keep the weights in a checkpoint ({"model": sd, "epoch": 3, "optimizer": ...})
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "model_state", "net", "network")
# what wrappers put before every key: DataParallel / DistributedDataParallel, torch.compile
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _is_state_dict(value) -> bool:
    import torch

    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _state_dict_in(state: dict, path: Path) -> dict:
    """A training checkpoint's weights entry, said, or the state_dict itself."""
    from .console import log

    if _is_state_dict(state):
        return state
    for key in CHECKPOINT_KEYS:
        if _is_state_dict(state.get(key)):
            others = [str(k) for k in state if k != key]
            log(f"weights: {path} is a training checkpoint; loading its '{key}' entry"
                + (f" (also in it: {', '.join(others[:6])}{' ...' if len(others) > 6 else ''})" if others else ""))
            return state[key]
    return state  # _check_state names what it holds


def _without_wrapper_prefix(model, state: dict, path: Path) -> dict:
    """Keys saved from a DataParallel or torch.compile wrapper (module.0.weight for 0.weight)."""
    from .console import log

    own = model.state_dict()
    for prefix in WRAPPER_PREFIXES:
        if state and all(str(k).startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
            log(f"weights: {path} was saved from a wrapped model; loading it without the '{prefix}' prefix of its "
                "keys")
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


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
