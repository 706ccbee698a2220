"""Writing and opening bundles: bundle.write itself (the folder, its zip and the checksum table,
published by two renames), names that fit in a file name (B4), leftovers of killed runs (F10), an
--out that is read-only or full (F11/B8), and zips unpacked only as their manifest lists (F6)."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ecutil import fast_sets, make_data, run_cli

NAME = "net-host-cpu"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One fast deploy: (its bundle folder, its zip)."""
    from ecutil import MODEL_SRC

    root = tmp_path_factory.mktemp("built")
    (root / "net.py").write_text(MODEL_SRC)
    x, y = make_data()
    np.savez(root / "data.npz", x=x, y=y)
    code, _, err = run_cli("deploy", f"{root}/net.py:build", "--target", "host-cpu", "--data", root / "data.npz",
                           "--out", root / "dist", *fast_sets("distill.steps=10"))
    assert code == 0, err
    return root / "dist" / NAME, root / "dist" / f"{NAME}.zip"


def has_remedy(err: str) -> bool:
    return "\n  -> " in err and "Traceback" not in err and "does not handle" not in err


# ---------------------------------------------------------------------------------------------
# B4: a profile name is part of file names
# ---------------------------------------------------------------------------------------------

def test_a_profile_name_with_a_slash_is_refused_before_any_work(tmp_path, model_file, npz_data):
    out = tmp_path / "out"
    code, _, err = run_cli("deploy", f"{model_file}:build", "--target", "host-cpu", "--data", npz_data, "--out", out,
                           "--set", "name=pi5/lab", *fast_sets())
    assert code == 2 and "--set name: 'pi5/lab' is not a usable profile name" in err, err
    assert "letters, digits, '.', '_' and '-' (A-Za-z0-9._-)" in err and has_remedy(err)
    assert not out.exists()


def test_a_profile_file_whose_name_has_a_space_is_refused(tmp_path):
    from edgecompress import profile

    text = (Path(profile.__file__).parent / "targets" / "host-cpu.yaml").read_text()
    (tmp_path / "mine.yaml").write_text(text.replace("name: host-cpu", "name: my lab pi", 1))
    code, _, err = run_cli("targets", "show", tmp_path / "mine.yaml")
    assert code == 2 and "name: 'my lab pi' is not a usable profile name" in err and str(tmp_path / "mine.yaml") in err


# ---------------------------------------------------------------------------------------------
# F10: kill -9 while writing leaves hidden temporaries; the next write removes the dead ones
# ---------------------------------------------------------------------------------------------

def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_run_are_removed_and_a_live_runs_are_kept(tmp_path):
    from edgecompress import bundle

    out = tmp_path / "dist"
    out.mkdir()
    gone, alive = dead_pid(), os.getppid()  # pytest's parent runs as long as this test does
    for pid in (gone, alive):
        (out / f".{NAME}.tmp-{pid}").mkdir()
        (out / f".{NAME}.tmp-{pid}" / "model.onnx").write_bytes(b"half written")
        (out / f".{NAME}.zip.tmp-{pid}").write_bytes(b"half a zip")
    (out / f".other-host-cpu.tmp-{gone}").mkdir()  # another bundle's: not this write's business
    model = tmp_path / "model.bin"
    model.write_bytes(b"a model")
    bundle.write(out, NAME, files={"model.bin": model}, texts={}, manifest={"target": "host-cpu"},
                 parity={"x": np.zeros(1)}, force=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([
        NAME, f"{NAME}.zip", f".{NAME}.tmp-{alive}", f".{NAME}.zip.tmp-{alive}", f".other-host-cpu.tmp-{gone}"])


# ---------------------------------------------------------------------------------------------
# F11/B8: a read-only or full --out, on a real file system mounted for the test
# ---------------------------------------------------------------------------------------------

def in_own_mount(options: str, tmp_path: Path, *cli_args) -> subprocess.CompletedProcess:
    """Run the CLI with a fresh tmpfs (mount OPTIONS) at tmp_path/mnt, in a private user and mount
    namespace (unshare), so nothing is mounted outside the test and no root is needed."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "-Urm", "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
                           capture_output=True)
    if probe.returncode:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.decode().strip()}")
    script = 'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && exec "$@"'
    return subprocess.run(["unshare", "-Urm", "sh", "-c", script, "sh", options, str(mnt), sys.executable, "-c",
                           "import sys; from edgecompress.cli import main; sys.exit(main(sys.argv[1:]))",
                           *map(str, cli_args)], capture_output=True, text=True, timeout=300)


def test_a_read_only_out_is_refused_before_the_model_is_loaded(tmp_path, npz_data):
    marker = tmp_path / "model-was-built"
    (tmp_path / "net.py").write_text(f"import pathlib\ndef build():\n    pathlib.Path({str(marker)!r}).touch()\n")
    out = tmp_path / "mnt" / "dist"
    done = in_own_mount("ro", tmp_path, "deploy", f"{tmp_path}/net.py:build", "--target", "host-cpu", "--data",
                        npz_data, "--out", out)
    assert done.returncode == 2, done.stderr
    assert f"cannot write {out}" in done.stderr and "read-only file system" in done.stderr, done.stderr
    assert "pass --out on a writable disk" in done.stderr and has_remedy(done.stderr)
    assert not marker.exists(), "refused before the model (a big one takes a while) was built"


def test_an_out_that_fills_up_while_writing_names_the_path(tmp_path, model_file, npz_data):
    """64 KiB take the probe, then fill up during the first checkpoint: torch.save says only
    'basic_ios::clear: iostream error' there, and a bundle's files give ENOSPC."""
    out = tmp_path / "mnt" / "dist"
    done = in_own_mount("size=64k", tmp_path, "deploy", f"{model_file}:build", "--target", "host-cpu", "--data",
                        npz_data, "--out", out, *fast_sets())
    assert done.returncode == 2, done.stderr[-3000:]
    assert str(out) in done.stderr and "the disk holding it is full" in done.stderr, done.stderr[-3000:]
    assert "free some space there, or pass --out on a disk with room" in done.stderr and has_remedy(done.stderr)


def test_a_full_disk_while_the_bundle_is_written_is_named(tmp_path, monkeypatch):
    """The bundle's own writing: an ENOSPC from the copy, raised where a real full disk raises it."""
    import errno

    from edgecompress import bundle
    from edgecompress.errors import InputError

    def full(src, dst, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(shutil, "copy", full)
    model = tmp_path / "model.bin"
    model.write_bytes(b"a model")
    with pytest.raises(InputError) as refused:
        bundle.write(tmp_path / "dist", NAME, files={"model.bin": model}, texts={}, manifest={},
                     parity={"x": np.zeros(1)}, force=False)
    assert f".{NAME}.tmp-{os.getpid()}/model.bin" in str(refused.value) and "disk holding it is full" in str(refused.value)
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == [], "its temporaries are removed"


# ---------------------------------------------------------------------------------------------
# F6: a zip is read by its manifest before anything is written
# ---------------------------------------------------------------------------------------------

def bytes_written() -> int:
    """The bytes this process has passed to write() so far (Linux /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


ZEROS_BYTES = 50 << 20


def rezip(src: Path, dst: Path, replace: dict = None, add: dict = None) -> Path:
    """A copy of the bundle zip with some members' contents replaced and others added."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            rel = info.filename.split("/", 1)[1]
            zout.writestr(info.filename, replace.get(rel, zin.read(info)))
        for rel, data in add.items():
            zout.writestr(f"{NAME}/{rel}", data)
    return dst


@pytest.mark.parametrize("case", ["added member", "member larger than listed"])
def test_a_zip_bomb_is_refused_before_anything_is_written(built, tmp_path, case):
    """A 50 MB zero-filled member that deflates to KBs: refused with nothing unpacked (the review's
    2 MB zip wrote 2 GiB to /tmp)."""
    _, zip_file = built
    zeros = bytes(ZEROS_BYTES)
    bomb = rezip(zip_file, tmp_path / f"{NAME}.zip", **({"add": {"zeros.bin": zeros}} if case == "added member"
                                                       else {"replace": {"model.onnx": zeros}}))
    assert bomb.stat().st_size < 1 << 20
    for command in ("verify", "bench"):
        before = bytes_written()
        code, _, err = run_cli(command, bomb)
        written = bytes_written() - before
        assert written < 1 << 20, f"{command} wrote {written:,} bytes"
        assert code == 3 and "(nothing was unpacked)" in err and has_remedy(err), err
        assert ("zeros.bin: not in the manifest" if case == "added member"
                else f"model.onnx: {ZEROS_BYTES:,} bytes in the zip") in err, err


def test_a_zip_that_would_unpack_past_the_limit_is_refused(built, monkeypatch):
    from edgecompress import bundle

    _, zip_file = built
    monkeypatch.setattr(bundle, "MAX_UNZIPPED_BYTES", 1000)
    code, _, err = run_cli("verify", zip_file)
    assert code == 2 and f"bundle {zip_file} would unpack to" in err and "more than the 1,000 bytes edgecompress unpacks" in err, err
    assert "unzip it yourself onto a disk with room and pass the folder" in err


def test_a_zip_unpacks_only_its_listed_members_and_still_verifies_and_benches(built, tmp_path):
    _, zip_file = built
    code, out, err = run_cli("verify", zip_file)
    assert code == 0 and "OK" in out, err
    code, out, err = run_cli("bench", zip_file, "--runs", "5", "--seconds", "0", "--json")
    assert code == 0 and json.loads(out)["results"][0]["latency_ms"]["n"] >= 5, err


def test_a_zip_whose_manifest_is_damaged_is_named_inside_the_zip(built, tmp_path):
    _, zip_file = built
    broken = rezip(zip_file, tmp_path / f"{NAME}.zip", replace={"manifest.json": b"[]"})
    code, _, err = run_cli("verify", broken)
    assert code == 3 and f"{broken}:{NAME}/manifest.json holds a JSON list" in err and has_remedy(err), err


def test_zip_members_outside_its_folder_are_refused(built, tmp_path):
    _, zip_file = built
    evil = rezip(zip_file, tmp_path / f"{NAME}.zip", add={"../../escaped.txt": b"x"})
    code, _, err = run_cli("verify", evil)
    assert code == 2 and "does not hold one bundle folder" in err, err
    assert not (tmp_path / "escaped.txt").exists()


# ---------------------------------------------------------------------------------------------
# bundle.write and bundle.opened on their own: real files, no deploy
# ---------------------------------------------------------------------------------------------
def _write(out: Path, labels: str = "a\nb\n", force: bool = False) -> Path:
    from edgecompress import bundle

    src = out.parent / "src"
    src.mkdir(exist_ok=True)
    (src / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    return bundle.write(out, "toy-host-cpu", {"weights.bin": src / "weights.bin", "sub/extra.txt": src / "weights.bin"},
                        {"labels.txt": labels}, {"schema_version": 1, "name": "toy"},
                        {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, force)


def test_write_publishes_the_folder_and_its_zip_with_a_checksum_of_every_file(tmp_path):
    import hashlib

    from edgecompress import bundle

    out = tmp_path / "dist"
    final = _write(out)
    assert final == out / "toy-host-cpu" and sorted(p.name for p in out.iterdir()) == ["toy-host-cpu",
                                                                                      "toy-host-cpu.zip"]
    m = json.loads((final / "manifest.json").read_text())
    assert (m["schema_version"], m["name"]) == (1, "toy") and sorted(m["files"]) == [
        "labels.txt", "parity.npz", "sub/extra.txt", "weights.bin"], "every file but the manifest itself"
    assert m["files"]["weights.bin"] == {"sha256": hashlib.sha256(b"\x00\x01" * 1000).hexdigest(), "bytes": 2000}
    assert (final / "labels.txt").read_text() == "a\nb\n"
    with np.load(final / "parity.npz") as parity:
        np.testing.assert_array_equal(parity["x"], np.arange(6, dtype=np.float32).reshape(2, 3))
    with zipfile.ZipFile(out / "toy-host-cpu.zip") as zf:
        assert sorted(zf.namelist()) == [f"toy-host-cpu/{n}" for n in (
            "labels.txt", "manifest.json", "parity.npz", "sub/extra.txt", "weights.bin")]
        assert zf.read("toy-host-cpu/manifest.json") == (final / "manifest.json").read_bytes()
    assert bundle.check_files(final, m) == []


def test_a_second_write_is_refused_without_force_and_leaves_the_first_whole(tmp_path):
    from edgecompress.errors import InputError

    out = tmp_path / "dist"
    final = _write(out)
    before = (final / "manifest.json").read_bytes()
    with pytest.raises(InputError, match="already exists"):
        _write(out, labels="c\n")
    assert (final / "manifest.json").read_bytes() == before and (final / "labels.txt").read_text() == "a\nb\n"
    assert sorted(p.name for p in out.iterdir()) == ["toy-host-cpu", "toy-host-cpu.zip"], "no temporaries left"
    _write(out, labels="c\n", force=True)
    assert (final / "labels.txt").read_text() == "c\n"


def test_check_files_names_a_changed_a_missing_and_an_unlisted_file(tmp_path):
    from edgecompress import bundle

    final = _write(tmp_path / "dist")
    m = json.loads((final / "manifest.json").read_text())
    (final / "labels.txt").write_text("changed\n")
    (final / "sub" / "extra.txt").unlink()
    (final / "notes.md").write_text("mine")
    problems = bundle.check_files(final, m)
    assert problems[:2] == ["sub/extra.txt: missing", "notes.md: not in the manifest"]
    assert len(problems) == 3 and problems[2].startswith("labels.txt: sha256 ") and problems[2].endswith(
        f"... != manifest {m['files']['labels.txt']['sha256'][:12]}...")


def test_what_the_bundles_example_writes_when_tried_inside_it_is_not_an_unlisted_file(tmp_path):
    """A walkthrough ran `python example.py` in a segmenter's bundle as its README says, and verify then
    failed on the mask.png it wrote (and would on postprocess.py's __pycache__)."""
    from edgecompress import bundle

    final = _write(tmp_path / "dist")
    m = json.loads((final / "manifest.json").read_text())
    (final / "mask.png").write_bytes(b"\x89PNG")
    (final / "__pycache__").mkdir()
    (final / "__pycache__" / "postprocess.cpython-311.pyc").write_bytes(b"pyc")
    assert bundle.check_files(final, m) == []
    (final / "masks.png").write_bytes(b"\x89PNG")  # anything else is still the user's own file, said
    assert bundle.check_files(final, m) == ["masks.png: not in the manifest"]


def test_a_zip_opens_as_the_same_files_in_a_folder_removed_afterwards(built):
    from edgecompress import bundle

    final, zip_file = built  # a deploy's: opening a zip reads its manifest, which must be a whole one
    with bundle.opened(zip_file) as folder:
        assert folder.name == NAME and folder != final
        assert bundle.file_table(folder) == bundle.file_table(final)
        unpacked = folder
    assert not unpacked.exists()
    with bundle.opened(final) as same:
        assert same == final


def test_the_zip_sits_beside_a_dotted_name_whole_and_a_file_as_out_is_refused(tmp_path):
    from edgecompress import bundle
    from edgecompress.errors import InputError

    assert bundle.zip_path(tmp_path / "mobilenet_v2_1.0-host-cpu") == tmp_path / "mobilenet_v2_1.0-host-cpu.zip"
    assert bundle.bundle_name("net", "host-cpu") == "net-host-cpu"
    (tmp_path / "taken").write_text("")
    with pytest.raises(InputError) as exc:
        bundle.check_destination(tmp_path / "taken", "net-host-cpu", force=False)
    assert exc.value.message == f"--out {tmp_path / 'taken'} is a file, not a folder"



def test_a_zip_left_without_its_folder_is_named_as_what_exists(tmp_path):
    from edgecompress import bundle
    from edgecompress.errors import InputError

    out = tmp_path / "dist"
    out.mkdir()
    (out / "toy-host-cpu.zip").write_bytes(b"PK")
    with pytest.raises(InputError) as info:
        bundle.check_destination(out, "toy-host-cpu", force=False)
    assert f"output {out / 'toy-host-cpu.zip'} already exists" in str(info.value)
