"""Bundles: `DIR/<name>-<target>/` and `DIR/<name>-<target>.zip`, written atomically (everything
goes to hidden temporary paths first, then two renames), with a manifest of checksums."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Iterator, Optional

import numpy as np

from .errors import InputError, StageError
from .models import sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
PARITY = "parity.npz"
EXAMPLES = Path(__file__).parent / "templates"


def bundle_name(model_name: str, target: str) -> str:
    return f"{model_name}-{target}"


def zip_path(final: Path) -> Path:
    """OUT/<name>.zip beside the folder; not with_suffix, which would cut a name like
    mobilenet_v2_1.0-host-cpu at its dot and make two bundles share one zip."""
    return final.parent / f"{final.name}.zip"


def check_destination(out: Path, name: str, force: bool) -> Path:
    """Refuse to overwrite a bundle unless --force; checked before any work starts."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder", hint="pass a folder for the bundle, e.g. --out dist")
    final = out / name
    if (final.exists() or zip_path(final).exists()) and not force:
        raise InputError(f"output {final} already exists", hint="pass --force to replace it, or choose another --out")
    return final


def file_table(folder: Path) -> Dict[str, dict]:
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write(out: Path, name: str, files: Dict[str, Path], texts: Dict[str, str], manifest: dict,
          parity: Dict[str, np.ndarray], force: bool) -> Path:
    """Copy `files`, write `texts` and the parity samples, then the manifest; publish atomically."""
    out.mkdir(parents=True, exist_ok=True)
    final = out / name
    tmp = out / f".{name}.tmp-{os.getpid()}"
    tmp_zip = out / f".{name}.zip.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for rel, src in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, tmp / rel)
        for rel, text in texts.items():
            (tmp / rel).write_text(text)
        np.savez_compressed(tmp / PARITY, **parity)
        manifest = dict(manifest, files=file_table(tmp))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _zip(tmp, tmp_zip, name)
        _publish(tmp, tmp_zip, final, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp_zip.unlink(missing_ok=True)
    return final


def _zip(folder: Path, dst: Path, name: str) -> None:
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{name}/{p.relative_to(folder).as_posix()}")


def _publish(tmp: Path, tmp_zip: Path, final: Path, force: bool) -> None:
    zip_file = zip_path(final)
    if final.exists() or zip_file.exists():
        if not force:
            raise InputError(f"output {final} already exists", hint="pass --force to replace it")
        shutil.rmtree(final, ignore_errors=True)
        zip_file.unlink(missing_ok=True)
    os.replace(tmp, final)
    os.replace(tmp_zip, zip_file)


@contextlib.contextmanager
def opened(path: Path) -> Iterator[Path]:
    """A bundle folder as is, or a bundle .zip extracted to a temporary folder removed afterwards."""
    path = Path(path)
    if path.is_dir():
        yield _bundle_folder(path)
    elif path.suffix == ".zip" and path.is_file():
        with tempfile.TemporaryDirectory(prefix="ec-bundle-") as tmp:
            try:
                with zipfile.ZipFile(path) as zf:
                    zf.extractall(tmp)
            except zipfile.BadZipFile as exc:
                raise InputError(f"bundle {path} is not a valid zip: {exc}",
                                 hint="copy the zip again, or pass the bundle folder") from None
            inner = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(inner) != 1:
                raise InputError(f"{path} does not hold one bundle folder",
                                 hint="pass a zip that edgecompress deploy wrote, or the bundle folder")
            yield _bundle_folder(inner[0])
    elif path.exists():
        raise InputError(f"{path} is not a bundle (a folder or its .zip)",
                         hint="pass what edgecompress deploy wrote: OUT/<name>-<target> or OUT/<name>-<target>.zip "
                              "(bench also takes an .onnx or .tflite model)")
    else:
        raise InputError(f"bundle {path} does not exist", hint="pass the bundle folder or its .zip")


def _bundle_folder(path: Path) -> Path:
    if not (path / MANIFEST).is_file():
        raise InputError(f"{path} is not a bundle: it has no {MANIFEST}",
                         hint="pass the folder edgecompress deploy wrote (OUT/<name>-<target>), or its .zip")
    return path


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except json.JSONDecodeError as exc:
        raise StageError("verify", f"{folder / MANIFEST} is not valid JSON: {exc}") from None


def check_files(folder: Path, manifest: dict) -> list:
    """Problems with the bundle's files against the manifest: changed, missing or unlisted."""
    listed = manifest.get("files", {})
    actual = file_table(folder)
    problems = [f"{rel}: missing" for rel in listed if rel not in actual]
    problems += [f"{rel}: not in the manifest" for rel in actual if rel not in listed]
    problems += [f"{rel}: sha256 {actual[rel]['sha256'][:12]}... != manifest {meta['sha256'][:12]}..."
                 for rel, meta in listed.items() if rel in actual and actual[rel]["sha256"] != meta["sha256"]]
    return problems


def model_file(manifest: dict) -> str:
    return manifest["model"]["file"]


def zip_bytes(final: Path) -> Optional[int]:
    z = zip_path(final)
    return z.stat().st_size if z.exists() else None
