"""Bundles: `DIR/<name>-<target>/` and `DIR/<name>-<target>.zip`, written atomically (everything
goes to hidden temporary paths first, then two renames), with a manifest of checksums."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional

import numpy as np

from . import manifest as manifest_mod, manifest_read
from .errors import InputError, StageError
from .manifest import MANIFEST, MAX_MANIFEST_BYTES, PARITY, SCHEMA_VERSION  # noqa: F401 (the contract's names)
from .models import sha256_file
from .procs import pid_alive

# A zip is unpacked only up to this many bytes in all (and never past the temporary disk's free
# space): a bundle of an edge model is far smaller, and a crafted zip expands without bound.
MAX_UNZIPPED_BYTES = 8 << 30
# what writing into --out can meet that the user must fix there (a permission error found later is not
# necessarily a write: it is left as it is)
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
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
        raise InputError(f"output {_existing(final)} already exists",
                         hint="pass --force to replace it, or choose another --out")
    check_writable(out)
    return final


def _existing(final: Path) -> str:
    """What of a bundle is already there: its folder, its zip, or both (a walkthrough's zip alone was
    refused naming the folder, which did not exist)."""
    found = [str(p) for p in (final, zip_path(final)) if p.exists()]
    return " and ".join(found) or str(final)


def check_writable(out: Path) -> None:
    """Create and remove a probe file in --out (and the folders it needs, removed again), so that a
    read-only or full disk is said before the model and data are loaded, not after the pipeline ran."""
    missing = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ec-probe-", dir=out)
        try:
            os.write(fd, b"edgecompress checks that --out is writable\n")
            os.fsync(fd)  # a full disk may accept the write and refuse the blocks only here
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise disk_error(exc, out) from None
    finally:
        for folder in missing:  # child first; one another run has filled since is kept
            with contextlib.suppress(OSError):
                folder.rmdir()


def disk_error(exc: OSError, out: Path) -> InputError:
    """An InputError naming the path and the remedy for an OSError while writing under --out."""
    where = exc.filename or out
    remedies = {errno.ENOSPC: ("the disk holding it is full", "free some space there, or pass --out on a disk with room"),
                errno.EDQUOT: ("your disk quota there is used up", "free some space there, or pass another --out"),
                errno.EROFS: ("it is on a read-only file system", "pass --out on a writable disk"),
                errno.EACCES: ("you may not write there", "pass --out to a folder of yours, or fix its permissions"),
                errno.EPERM: ("you may not write there", "pass --out to a folder of yours, or fix its permissions")}
    what, hint = remedies.get(exc.errno, (exc.strerror or str(exc), "check the --out folder, or pass another --out"))
    return InputError(f"cannot write {where} (--out {out}): {what} ({exc.strerror})", hint=hint)


@contextlib.contextmanager
def disk_errors_named(out: Path) -> Iterator[None]:
    """A full, read-only or forbidden --out found while writing (a checkpoint, an export, the bundle)
    becomes an InputError naming the path, also when a stage wrapped the OSError in its own error."""
    try:
        yield
    except Exception as exc:
        cause = _disk_cause(exc) or _torch_write_failure(exc, Path(out))
        if cause is None:
            raise
        raise disk_error(cause, Path(out)) from None


# torch.save reports a full disk in its C++ writer's words, not as an OSError
TORCH_WRITE_FAILURES = ("iostream error", "PytorchStreamWriter failed", "unexpected pos", "file write failed")
NEARLY_FULL_BYTES = 1 << 20


def _torch_write_failure(exc: Exception, out: Path) -> Optional[OSError]:
    """An ENOSPC OSError standing for torch.save's RuntimeError when --out's disk is (nearly) full."""
    if not isinstance(exc, RuntimeError) or not any(words in str(exc) for words in TORCH_WRITE_FAILURES):
        return None
    try:
        free = shutil.disk_usage(out).free
    except OSError:
        return None
    if free >= NEARLY_FULL_BYTES:
        return None
    return OSError(errno.ENOSPC, f"No space left on device: {free:,} bytes free; torch.save said "
                                 f"{str(exc).splitlines()[0]}", str(out))


def _disk_cause(exc: BaseException) -> Optional[OSError]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def file_table(folder: Path) -> Dict[str, dict]:
    return {rel: {"sha256": sha256_file(folder / rel), "bytes": (folder / rel).stat().st_size}
            for rel in _regular_files(folder) if rel != MANIFEST}


def _regular_files(folder: Path) -> list:
    """The bundle's files, relative and sorted. A symlink (to a file or a folder) is refused: a link
    to /etc/hostname would pass verify once its hash was listed, and a linked folder was skipped."""
    found, links = [], []
    for root, dirs, files in os.walk(folder):
        for entry in dirs + files:
            path = Path(root) / entry
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                links.append(rel)
            elif entry in files and path.is_file():
                found.append(rel)
    if links:
        raise StageError("verify", f"bundle {folder} holds symbolic links: {', '.join(sorted(links))}",
                         hint="a bundle holds plain files only: replace each link with the file itself, or rebuild "
                              "the bundle with edgecompress deploy")
    return sorted(found)


def write(out: Path, name: str, files: Dict[str, Path], texts: Dict[str, str], manifest: dict,
          parity: Dict[str, np.ndarray], force: bool) -> Path:
    """Copy `files`, write `texts` and the parity samples, then the manifest; publish atomically."""
    with disk_errors_named(out):
        out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out, name)
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
            if "model" in manifest:  # what verify holds the model file to, counted in the copy published
                facts = manifest_read.model_facts(tmp / manifest["model"]["file"])
                manifest["model"] = dict(manifest["model"], parameters=facts["parameters"])
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            _zip(tmp, tmp_zip, name)
            _publish(tmp, tmp_zip, final, force)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp_zip.unlink(missing_ok=True)
    return final


def remove_leftovers(out: Path, name: str) -> list:
    """Remove .<name>.tmp-PID/ and .<name>.zip.tmp-PID that a run killed while writing (kill -9, a
    power cut) left behind: those whose pid no longer runs on this host. Returns what went."""
    removed = []
    for path in out.iterdir():
        pid = _leftover_pid(path.name, name)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _leftover_pid(file_name: str, name: str) -> Optional[int]:
    for prefix in (f".{name}.tmp-", f".{name}.zip.tmp-"):
        rest = file_name[len(prefix):] if file_name.startswith(prefix) else ""
        if rest.isdigit():
            return int(rest)
    return None


def _zip(folder: Path, dst: Path, name: str) -> None:
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{name}/{p.relative_to(folder).as_posix()}")


def _publish(tmp: Path, tmp_zip: Path, final: Path, force: bool) -> None:
    zip_file = zip_path(final)
    if final.exists() or zip_file.exists():
        if not force:
            raise InputError(f"output {_existing(final)} already exists", hint="pass --force to replace it")
        shutil.rmtree(final, ignore_errors=True)
        zip_file.unlink(missing_ok=True)
    os.replace(tmp, final)
    os.replace(tmp_zip, zip_file)


@contextlib.contextmanager
def opened(path: Path) -> Iterator[Path]:
    """A bundle folder as is, or a bundle .zip unpacked to a temporary folder removed afterwards:
    only the members its manifest lists, at the sizes it lists, checked before anything is written."""
    path = Path(path)
    if path.is_dir():
        yield _bundle_folder(path)
    elif path.suffix == ".zip" and path.is_file():
        try:
            with zipfile.ZipFile(path) as zf:
                inner, members = _listed_members(zf, path)
                with tempfile.TemporaryDirectory(prefix="ec-bundle-") as tmp:
                    _extract(zf, members, Path(tmp) / inner, path)
                    yield _bundle_folder(Path(tmp) / inner)
        except zipfile.BadZipFile as exc:
            raise InputError(f"bundle {path} is not a valid zip: {exc}",
                             hint="copy the zip again, or pass the bundle folder") from None
    elif path.exists():
        raise InputError(f"{path} is not a bundle (a folder or its .zip)",
                         hint="pass what edgecompress deploy wrote: OUT/<name>-<target> or OUT/<name>-<target>.zip "
                              "(bench also takes an .onnx or .tflite model)")
    else:
        raise InputError(f"bundle {path} does not exist", hint="pass the bundle folder or its .zip")


def _listed_members(zf: zipfile.ZipFile, path: Path) -> tuple:
    """(the bundle folder's name, {relative name: ZipInfo}) for the manifest and the files it lists,
    after the checks that need no writing: one folder, no member the manifest does not list, each
    member at the size the manifest gives, and the total within what may be unpacked."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    tops = {i.filename.split("/")[0] for i in zf.infolist()}
    if len(tops) != 1 or any(not manifest_read.is_inside_name(i.filename) or "/" not in i.filename for i in infos):
        raise InputError(f"{path} does not hold one bundle folder",
                         hint="pass a zip that edgecompress deploy wrote, or the bundle folder")
    inner = tops.pop()
    members = {i.filename[len(inner) + 1:]: i for i in infos}
    if len(members) != len(infos):
        raise StageError("verify", f"bundle {path} holds a member twice", hint=manifest_read.REBUILD)
    manifest = _zip_manifest(zf, members.get(MANIFEST), path, inner)
    listed = manifest["files"]
    problems = [f"{rel}: not in the manifest" for rel in members if rel not in listed and rel != MANIFEST]
    problems += [f"{rel}: {info.file_size:,} bytes in the zip, {listed[rel]['bytes']:,} in the manifest"
                 for rel, info in members.items() if rel in listed and info.file_size != listed[rel]["bytes"]]
    if problems:
        added = all(p.endswith(": not in the manifest") for p in problems)
        raise StageError("verify", f"bundle {path} does not match its manifest (nothing was unpacked):\n  "
                         + "\n  ".join(problems), hint="remove the files you added from the zip (keep your own files "
                                                       "beside the bundle)" if added else manifest_read.REBUILD)
    _check_room(sum(i.file_size for i in members.values()), path)
    return inner, members


def _zip_manifest(zf: zipfile.ZipFile, info, path: Path, inner: str) -> dict:
    if info is None:
        raise InputError(f"{path} is not a bundle: its folder {inner} has no {MANIFEST}",
                         hint="pass a zip that edgecompress deploy wrote, or the bundle folder")
    where = f"{path}:{info.filename}"
    if info.file_size > MAX_MANIFEST_BYTES:
        raise StageError("verify", f"{where} is {info.file_size:,} bytes, far more than a manifest",
                         hint=manifest_read.REBUILD)
    return manifest_read.parse(zf.read(info), where)


def _check_room(total: int, path: Path) -> None:
    tmp = Path(tempfile.gettempdir())
    free = shutil.disk_usage(tmp).free
    if total > MAX_UNZIPPED_BYTES or total > free:
        limit = f"more than the {MAX_UNZIPPED_BYTES:,} bytes edgecompress unpacks from a zip" \
            if total > MAX_UNZIPPED_BYTES else f"more than the {free:,} bytes free in {tmp}"
        raise InputError(f"bundle {path} would unpack to {total:,} bytes, {limit}",
                         hint="unzip it yourself onto a disk with room and pass the folder (or set TMPDIR)")


def _extract(zf: zipfile.ZipFile, members: Dict[str, zipfile.ZipInfo], folder: Path, path: Path) -> None:
    """Write each member as a plain file (never a link), reading no more than its stated size."""
    for rel, info in members.items():
        dst = folder / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(dst, "xb") as out:
            shutil.copyfileobj(src, out, 1 << 20)  # zipfile stops at file_size and checks the CRC


def _bundle_folder(path: Path) -> Path:
    if not (path / MANIFEST).is_file():
        raise InputError(f"{path} is not a bundle: it has no {MANIFEST}",
                         hint="pass the folder edgecompress deploy wrote (OUT/<name>-<target>), or its .zip")
    return path


def read(folder: Path) -> manifest_mod.Manifest:
    """The bundle's manifest, read and checked (schema_version, keys, file names) as a Manifest."""
    return manifest_mod.load(folder)


def read_manifest(folder: Path) -> dict:
    """The bundle's manifest as its JSON dict, checked through the Manifest as it is read."""
    return read(folder).to_dict()


EXAMPLE_OUTPUTS = ("mask.png",)  # what the bundle's example programs write when run inside it, as its README says


def _example_output(rel: str) -> bool:
    """Whether `rel` is what running the bundle's own example left (mask.png, Python's __pycache__ of
    postprocess.py): verify must not fail a bundle for having been tried."""
    return rel in EXAMPLE_OUTPUTS or rel.startswith("__pycache__/")


def check_files(folder: Path, manifest: dict) -> list:
    """Problems with the bundle's files against the manifest: changed, missing or unlisted (what its
    example programs write aside)."""
    listed = manifest.get("files", {})
    actual = file_table(folder)
    problems = [f"{rel}: missing" for rel in listed if rel not in actual]
    problems += [f"{rel}: not in the manifest" for rel in actual if rel not in listed and not _example_output(rel)]
    problems += [f"{rel}: sha256 {actual[rel]['sha256'][:12]}... != manifest {meta['sha256'][:12]}..."
                 for rel, meta in listed.items() if rel in actual and actual[rel]["sha256"] != meta["sha256"]]
    return problems


def check_checksums(folder: Path, manifest: dict, names: Iterable[str], path: str) -> None:
    """The files a command runs or sends (bench's model, a TensorRT bundle's ONNX and calibration)
    are those the manifest lists, unchanged, and no link is in the folder."""
    _regular_files(folder)
    problems = []
    for rel in names:
        meta, file = manifest["files"][rel], folder / rel
        if not file.is_file():
            problems.append(f"{rel}: missing")
            continue
        digest = sha256_file(file)  # once: a model file can be hundreds of MB
        if digest != meta["sha256"]:
            problems.append(f"{rel}: sha256 {digest[:12]}... != manifest {meta['sha256'][:12]}...")
    if problems:
        raise StageError("verify", f"bundle {path} does not match its manifest:\n  " + "\n  ".join(problems),
                         hint=manifest_read.REBUILD)


def model_file(manifest: dict) -> str:
    return manifest["model"]["file"]


def zip_bytes(final: Path) -> Optional[int]:
    z = zip_path(final)
    return z.stat().st_size if z.exists() else None
