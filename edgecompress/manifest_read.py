"""Reading a bundle back, for `verify` and `bench`: the manifest checked when it is read (through
manifest.Manifest: its schema_version, every key's type, the file names it gives), the checks that
need the bundle's files (the files it names, the stored samples, the model file against the
manifest's description of it: inputs, outputs, parameter count). A bundle that does not match its
manifest, or one whose files are damaged, is a StageError (exit 3) naming the file and saying to
rebuild it, as verify's checksum failures are; never a traceback. The functions take the manifest
as the dict read_manifest returns, or as a manifest.Manifest."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

from . import manifest as manifest_mod
from .errors import StageError
# the bundle contract's names, defined in manifest.py and imported from here by older callers
from .manifest import MANIFEST, PARITY, REBUILD, SCHEMA_VERSION, Manifest, is_inside_name  # noqa: F401


def _stage(message: str) -> StageError:
    return StageError("verify", message, hint=REBUILD)


def parse(raw: bytes, where: str) -> dict:
    """The manifest in `raw` (the bytes of `where`), checked; every problem names `where`. The dict
    is the Manifest's to_dict(), which is the JSON as read (tests/test_manifest.py)."""
    return manifest_mod.parse(raw, where).to_dict()


def check(data, where: str) -> None:
    """`data` is a manifest edgecompress can read (manifest.Manifest.from_dict), else the error naming
    each key that is not."""
    Manifest.from_dict(data, where)


def _as_dict(manifest: Union[dict, Manifest]) -> dict:
    return manifest.to_dict() if isinstance(manifest, Manifest) else manifest


def named_files(manifest: Union[dict, Manifest]) -> dict:
    """{key: file name} for every manifest key that names a file the commands open."""
    manifest = _as_dict(manifest)
    names = {"model.file": manifest["model"]["file"]}
    settings = (manifest.get("engine") or {}).get("build_settings") or {}
    for key in ("onnx", "calibration"):
        if settings.get(key) is not None:
            names[f"engine.build_settings.{key}"] = settings[key]
    return names


def check_named_files(manifest: Union[dict, Manifest], where: str) -> None:
    """Every file the manifest names is a plain file name listed in its files: a crafted
    model.file of /home/me/.ssh/id_ed25519 or ../x would otherwise be run, or sent to a device."""
    manifest = _as_dict(manifest)
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


def check_samples_fit(manifest: Union[dict, Manifest], x_shape: tuple, where: str) -> None:
    """The stored samples have the shape of the model's first input (its fixed dimensions), as
    NCHW or, for a LiteRT model, as the NHWC they are transposed to."""
    manifest = _as_dict(manifest)
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
    from . import backends

    path = Path(path)
    try:
        return backends.for_file(path).file_facts(path)
    except StageError:
        raise
    except Exception as exc:  # a damaged file: whatever the reader raises, say which file
        raise _stage(f"{path} cannot be read as a {path.suffix[1:]} model: {type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def model_mismatches(manifest: Union[dict, Manifest], facts: dict) -> List[str]:
    """Where the model file differs from what the manifest says of it."""
    manifest = _as_dict(manifest)
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
