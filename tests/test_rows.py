"""An uncompressed .npz is read row by row through a memory map (rows.py): the rows equal numpy's, a
subset composes without reading, a compressed file is read whole, and a scan keeps the resident set small."""
from __future__ import annotations

import numpy as np
import pytest

from edgecompress import data, rows
from edgecompress.compress import _data_hash
from edgecompress.errors import InputError


def _saved(tmp_path, x, compressed=False, **more):
    path = tmp_path / ("c.npz" if compressed else "u.npz")
    (np.savez_compressed if compressed else np.savez)(path, x=x, **more)
    return path


def test_uncompressed_npz_rows_are_mapped_and_equal_numpys(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3, 8, 8)).astype(np.float32)
    ds = data.load_npz(_saved(tmp_path, x, y=np.arange(50) % 3))
    assert isinstance(ds.x, rows.MappedRows) and ds.x.shape == x.shape and ds.x.dtype == np.float32
    idx = np.array([7, 3, 3, 49, 0])
    assert np.array_equal(ds.x[idx], x[idx]) and np.array_equal(ds.x[5], x[5])
    assert np.array_equal(ds.x[:4], x[:4]) and np.array_equal(ds.x[10:20, 1], x[10:20, 1])
    train, held = data.split(ds, 0.2)
    order_train, order_held = data.split_indices(50, 0.2)
    assert isinstance(train.x, rows.MappedRows) and np.array_equal(np.asarray(train.x), x[order_train])
    assert np.array_equal(train.subset(slice(2, 6)).x[:], x[order_train][2:6]), "a subset of a subset"
    assert np.array_equal(held.y, (np.arange(50) % 3)[order_held])


def test_the_fingerprint_of_mapped_rows_is_the_in_memory_arrays(tmp_path):
    """--resume compares it: a run from a mapped file and one from the same array in memory agree."""
    x = np.random.default_rng(1).normal(size=(40, 2, 4, 4)).astype(np.float32)
    mapped, _ = data.split(data.load_npz(_saved(tmp_path, x)), 0.25)
    in_memory, _ = data.split(data.Dataset(x, None, "mem"), 0.25)
    assert _data_hash(mapped) == _data_hash(in_memory)
    assert _data_hash(mapped) != _data_hash(data.split(data.Dataset(x + 1, None, "mem"), 0.25)[0])


def test_float64_rows_are_read_as_float32_and_compressed_files_whole(tmp_path):
    x = np.random.default_rng(2).normal(size=(10, 5))
    mapped = data.load_npz(_saved(tmp_path, x[:, :, None] * np.ones((1, 1, 2))))
    assert isinstance(mapped.x, rows.MappedRows) and mapped.x[:2].dtype == np.float32
    whole = data.load_npz(_saved(tmp_path, x.astype(np.float32), compressed=True))
    assert isinstance(whole.x, np.ndarray) and whole.x.dtype == np.float32


def test_a_nan_in_a_late_chunk_is_found_and_named(tmp_path, monkeypatch):
    monkeypatch.setattr(rows, "CHUNK_BYTES", 4 * 16 * 3)  # three rows a chunk
    x = np.zeros((20, 1, 4, 4), np.float32)
    x[17, 0, 2, 2] = np.nan
    with pytest.raises(InputError, match=r"NaN or infinite values in 1 sample"):
        data.load_npz(_saved(tmp_path, x))


def test_integer_x_is_refused_with_its_dtype(tmp_path):
    with pytest.raises(InputError, match=r"'x' has dtype int64, expected floating point"):
        data.load_npz(_saved(tmp_path, np.ones((4, 3, 2, 2), np.int64)))


_PEAK = """
import sys
import numpy as np
from edgecompress import data
from edgecompress.compress import _data_hash


def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))


with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to now: the imports' own peak is not counted
    f.write("5")
base = status("VmRSS:")
if sys.argv[2] == "whole":
    x = np.load(sys.argv[1])["x"]
else:
    from pathlib import Path
    ds = data.load_npz(Path(sys.argv[1]))
    _data_hash(ds)
    ds.x[np.arange(0, len(ds.x), 7)[:64]]
print((status("VmHWM:") - base) // 1024)
"""


def _peak_growth_mib(path, how: str) -> int:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _PEAK, str(path), how], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def test_scanning_a_large_mapped_file_keeps_the_resident_set_small(tmp_path):
    """A 256 MiB x: the checks' scan, the fingerprint and a batch read it all, and the peak RSS of the process
    grows by a small part of it; numpy reading the same file whole (the measurement's control) grows by all."""
    import zipfile

    n, shape = 4096, (4, 64, 64)  # 4096 rows of 64 KiB
    big = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(n, *shape))
    big[::97] = 1.0
    big.flush()
    del big
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        z.write(tmp_path / "x.npy", "x.npy")
    (tmp_path / "x.npy").unlink()
    mapped, whole = _peak_growth_mib(path, "mapped"), _peak_growth_mib(path, "whole")
    assert whole >= 200, f"the control read the file whole and grew only {whole} MiB: the measurement is off"
    assert mapped < 80, f"peak RSS grew {mapped} MiB reading a 256 MiB file row by row"


def _image_folder(root, per_class=6):
    from PIL import Image

    rng = np.random.default_rng(3)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_large_image_folder_is_decoded_as_read_and_equals_the_eager_one(tmp_path, monkeypatch, capsys):
    from edgecompress.profile import Preprocess

    root = _image_folder(tmp_path / "imgs")
    eager = data.load(str(root), Preprocess(), None)
    monkeypatch.setattr(data, "EAGER_BYTES", 1000)  # 12 images of 3x12x12 float32 are 20 kB
    lazy = data.load(str(root), Preprocess(), None)
    assert isinstance(lazy.x, rows.FolderRows) and lazy.x.shape == eager.x.shape
    assert "are decoded as training reads them" in capsys.readouterr().err
    assert np.array_equal(np.asarray(lazy.x), eager.x) and np.array_equal(lazy.y, eager.y)
    train_l, _ = data.split(lazy, 0.25)
    train_e, _ = data.split(eager, 0.25)
    assert np.array_equal(train_l.x[[4, 0, 2]], train_e.x[[4, 0, 2]])
    assert _data_hash(train_l) == _data_hash(train_e), "the same fingerprint whichever way it was read"


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_come_in_step_order_with_or_without_workers(tmp_path, workers):
    x = np.random.default_rng(4).normal(size=(30, 2, 3, 3)).astype(np.float32)
    mapped = data.load_npz(_saved(tmp_path, x)).x

    def index_of(step):
        return np.random.default_rng(step).permutation(30)[:5]

    got = list(rows.batches(mapped, index_of, 3, 9, workers=workers))
    assert [s for s, _, _ in got] == list(range(3, 9))
    for step, idx, batch in got:
        assert np.array_equal(idx, index_of(step)) and np.array_equal(np.asarray(batch), x[index_of(step)])
