"""Reading a bundle back, for `verify` and `bench`: the manifest checked in one place when it is
read (the keys they use, the file names it gives, its schema_version), the stored samples, and the
model file against the manifest's description of it (inputs, outputs, parameter count). A bundle
that does not match its manifest, or one whose files are damaged, is a StageError (exit 3) naming
the file and saying to rebuild it, as verify's checksum failures are; never a traceback."""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import List, Optional

from .errors import InputError, StageError

SCHEMA_VERSION = 1  # the major version this edgecompress writes and reads
MANIFEST = "manifest.json"
PARITY = "parity.npz"
REBUILD = "rebuild the bundle with edgecompress deploy (do not edit the files inside it)"

# (keys, type) that verify and bench read; anything else in a manifest is for people and apps
REQUIRED = [(("model", "file"), str), (("files",), dict), (("inputs",), list), (("outputs",), list),
            (("metrics",), dict), (("compression", "quantization", "precision"), str),
            (("provenance", "profile", "verify"), dict)]
OPTIONAL = [(("model", "parameters"), int), (("metrics", "parity_exact_int8"), bool),
            (("provenance", "source_format"), str), (("engine",), dict), (("engine", "build_settings"), dict),
            (("engine", "build_settings", "onnx"), str), (("engine", "build_settings", "calibration"), (str, type(None)))]


def _stage(message: str) -> StageError:
    return StageError("verify", message, hint=REBUILD)


def parse(raw: bytes, where: str) -> dict:
    """The manifest in `raw` (the bytes of `where`), checked; every problem names `where`."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _stage(f"{where} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise _stage(f"{where} is not valid JSON: {exc}") from None
    check(data, where)
    return data


def check(data, where: str) -> None:
    if not isinstance(data, dict):
        raise _stage(f"{where} holds a JSON {type(data).__name__}, not a manifest (an object with model, files, "
                     "metrics, ...)")
    _check_version(data.get("schema_version"), where)
    problems = [p for keys, kind in REQUIRED for p in [_key_problem(data, keys, kind, required=True)] if p]
    problems += [p for keys, kind in OPTIONAL for p in [_key_problem(data, keys, kind, required=False)] if p]
    if not problems:
        problems = _files_problems(data["files"]) + _tensor_problems(data)
    if problems:
        raise _stage(f"{where} is not a manifest edgecompress can read:\n  " + "\n  ".join(problems))


def _check_version(version, where: str) -> None:
    from . import __version__

    if isinstance(version, bool) or not isinstance(version, (int, str)):
        raise _stage(f"{where}: schema_version is {version!r}, not a version number")
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise _stage(f"{where}: schema_version is {version!r}, not a version number") from None
    if major > SCHEMA_VERSION:
        raise InputError(f"{where} has schema_version {version}, newer than the {SCHEMA_VERSION} this edgecompress "
                         f"({__version__}) reads", hint="upgrade edgecompress to read this bundle")


def _key_problem(data: dict, keys: tuple, kind, required: bool) -> Optional[str]:
    node = data
    for i, key in enumerate(keys):
        if not isinstance(node, dict):
            return f"{'.'.join(keys[:i])}: is a {type(node).__name__}, not an object"
        if key not in node:
            return f"{'.'.join(keys[:i + 1])}: missing" if required else None
        node = node[key]
    if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
        return f"{'.'.join(keys)}: is {type(node).__name__} {_short(node)}, expected {_kind_name(kind)}"
    return None


def _kind_name(kind) -> str:
    names = {str: "a string", dict: "an object", list: "a list", int: "an integer", bool: "true or false"}
    return " or ".join(names.get(k, "null") for k in kind) if isinstance(kind, tuple) else names[kind]


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _files_problems(files: dict) -> List[str]:
    """Each entry names a file inside the bundle folder, with its sha256 and size."""
    problems = []
    for rel, meta in files.items():
        if not is_inside_name(rel):
            problems.append(f"files: {rel!r} is not a path inside the bundle folder")
        elif not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str)
                  and isinstance(meta.get("bytes"), int) and not isinstance(meta.get("bytes"), bool)
                  and meta["bytes"] >= 0):
            problems.append(f"files.{rel}: needs sha256 (a string) and bytes (a size), got {_short(meta)}")
    return problems


def _tensor_problems(data: dict) -> List[str]:
    problems = []
    for side in ("inputs", "outputs"):
        if not data[side]:
            problems.append(f"{side}: empty")
        for i, t in enumerate(data[side]):
            if not (isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("shape"), list)
                    and isinstance(t.get("dtype"), str)):
                problems.append(f"{side}[{i}]: needs name, shape and dtype, got {_short(t)}")
    return problems


def is_inside_name(rel) -> bool:
    """A relative path of plain parts (no '..', no absolute path, no backslash)."""
    if not isinstance(rel, str) or not rel or "\\" in rel or rel.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def named_files(manifest: dict) -> dict:
    """{key: file name} for every manifest key that names a file the commands open."""
    names = {"model.file": manifest["model"]["file"]}
    settings = (manifest.get("engine") or {}).get("build_settings") or {}
    for key in ("onnx", "calibration"):
        if settings.get(key) is not None:
            names[f"engine.build_settings.{key}"] = settings[key]
    return names


def check_named_files(manifest: dict, where: str) -> None:
    """Every file the manifest names is a plain file name listed in its files: a crafted
    model.file of /home/me/.ssh/id_ed25519 or ../x would otherwise be run, or sent to a device."""
    problems = [p for key, name in named_files(manifest).items()
                for p in [_name_problem(key, name, manifest["files"])] if p]
    if problems:
        raise _stage(f"{where} names files outside the bundle: " + "; ".join(problems))


def _name_problem(key: str, name, files: dict) -> Optional[str]:
    if not isinstance(name, str) or "/" in name or not is_inside_name(name):
        return f"{key} is {name!r}, not a plain file name"
    if name not in files:
        return f"{key} is {name!r}, which its files do not list"
    return None


def load_parity(path: Path, keys=("x", "expected", "reference")) -> dict:
    """The stored samples, as plain numeric arrays (np.load with allow_pickle=False)."""
    import zipfile

    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array, not the named arrays of an .npz")
        with loaded as parity:
            stored = {k: parity[k] for k in parity.files}
    except ValueError as exc:
        # numpy's own text here advises loading the file unsafely: never repeat that
        text = str(exc).lower()
        reason = ("it is not an .npz of plain numeric arrays (it may hold pickled or object data, which edgecompress "
                  "never loads)" if "pickle" in text or "object arrays" in text else str(exc).split(". ")[0])
        raise _stage(f"{path} is not the bundle's stored samples: {reason}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _stage(f"{path} cannot be read as the bundle's stored samples: {type(exc).__name__}: {exc}") from None
    missing = [k for k in keys if k not in stored]
    if missing:
        raise _stage(f"{path} lacks the arrays {', '.join(missing)} (it holds {', '.join(stored) or 'none'})")
    bad = [k for k in keys if stored[k].dtype.kind not in "fiu" or stored[k].ndim < 1]
    if bad or stored["x"].ndim < 2:
        raise _stage(f"{path}: {', '.join(bad or ['x'])} must be numeric arrays of samples")
    return stored


def check_samples_fit(manifest: dict, x_shape: tuple, where: str) -> None:
    """The stored samples have the shape of the model's first input (its fixed dimensions), as
    NCHW or, for a LiteRT model, as the NHWC they are transposed to."""
    want = manifest["inputs"][0]["shape"]
    layouts = [list(x_shape[1:])] + ([[x_shape[2], x_shape[3], x_shape[1]]] if len(x_shape) == 4 else [])
    fixed = lambda w: isinstance(w, int) and not isinstance(w, bool)  # noqa: E731 (dynamic dims are names)
    if len(want) != len(x_shape) or not any(all(not fixed(w) or w == d for w, d in zip(want[1:], dims))
                                            for dims in layouts):
        raise _stage(f"{where}: the stored samples in {PARITY} are {list(x_shape[1:])} per sample and the model's "
                     f"input {manifest['inputs'][0]['name']!r} takes {want[1:]}")


def model_facts(path: Path) -> dict:
    """inputs, outputs (name, shape, dtype) and parameters (the number of stored weight values:
    the ONNX initializers' elements, or the .tflite's constant tensors' elements) of a model file."""
    path = Path(path)
    try:
        if path.suffix == ".tflite":
            from . import litert

            io = litert.io_spec(path)
            return {**io, "parameters": _tflite_parameters(path)}
        from . import export

        return {**export.io_spec(path), "parameters": _onnx_parameters(path)}
    except StageError:
        raise
    except Exception as exc:  # a damaged file: whatever the reader raises, say which file
        raise _stage(f"{path} cannot be read as a {path.suffix[1:]} model: {type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def _onnx_parameters(path: Path) -> int:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    count = 0
    for init in graph.initializer:
        size = 1
        for d in init.dims:
            size *= d
        count += size
    for sparse in graph.sparse_initializer:
        count += sparse.values.dims[0] if sparse.values.dims else 0
    return count


def _tflite_parameters(path: Path) -> int:
    from ai_edge_litert import schema_py_generated as schema

    fb = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    count = 0
    for g in range(fb.SubgraphsLength()):
        graph = fb.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            buffer = fb.Buffers(tensor.Buffer()) if tensor.Buffer() < fb.BuffersLength() else None
            if buffer is not None and (buffer.DataLength() or buffer.Size()):
                size = 1
                for d in tensor.ShapeAsNumpy() if tensor.ShapeLength() else []:
                    size *= int(d)
                count += size
    return count


def model_mismatches(manifest: dict, facts: dict) -> List[str]:
    """Where the model file differs from what the manifest says of it."""
    problems = []
    for side in ("inputs", "outputs"):
        said, found = manifest[side], facts[side]
        if len(said) != len(found):
            problems.append(f"{len(found)} {side} in the model file, {len(said)} in the manifest")
            continue
        for s, f in zip(said, found):
            for key in ("name", "shape", "dtype"):
                if s.get(key) != f.get(key):
                    problems.append(f"{side[:-1]} {s.get('name')!r}: {key} {f.get(key)!r} in the model file, "
                                    f"{s.get(key)!r} in the manifest")
    recorded = manifest["model"].get("parameters")
    if recorded is not None and recorded != facts["parameters"]:
        problems.append(f"{facts['parameters']:,} parameters in the model file, {recorded:,} in the manifest "
                        "(model.parameters)")
    return problems
