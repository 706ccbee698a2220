"""Samples that stay on disk: the `x` of an uncompressed `.npz` (numpy.savez) read row by row through a
memory map, so a data set larger than the host's memory trains without being loaded whole.

Each read maps the file, copies out the rows asked for and unmaps it again: the pages read do not stay in
the process's resident set (a long-lived np.memmap keeps every page it ever touched resident until the
kernel needs the memory, and a run's peak RSS would then be the file's size)."""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

# bytes of a zip local file header before its name and extra field (PKZIP APPNOTE 4.3.7)
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")
CHUNK_BYTES = 16 << 20  # what one scan step reads: 16 MiB


class MappedRows:
    """Rows `index` of an (N, ...) array stored at `offset` in `path`. Indexing (an int, a slice, an array of
    row numbers) returns an in-memory float32 copy of those rows; `subset` composes indices without reading."""

    def __init__(self, path: Path, offset: int, shape: Tuple[int, ...], dtype: np.dtype,
                 index: Optional[np.ndarray] = None):
        self.path, self.offset, self.base_shape, self.stored_dtype = Path(path), int(offset), tuple(shape), np.dtype(dtype)
        self.index = np.arange(shape[0]) if index is None else np.asarray(index, dtype=np.int64)

    # the parts of the ndarray interface the pipeline uses
    @property
    def shape(self) -> Tuple[int, ...]:
        return (len(self.index), *self.base_shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return len(self.base_shape)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._read(self.index[[key]])[0]
        if isinstance(key, tuple):  # x[idx, ...]: rows first, then the rest in memory
            return self[key[0]][(slice(None), *key[1:])]
        return self._read(self.index[key])

    def subset(self, idx) -> "MappedRows":
        return MappedRows(self.path, self.offset, self.base_shape, self.stored_dtype, self.index[idx])

    def __array__(self, dtype=None, copy=None):
        """Every row in memory: for the few places that need the whole array (small held-out parts)."""
        out = self._read(self.index)
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype, copy=True) -> np.ndarray:
        return np.asarray(self).astype(dtype, copy=False)

    def chunks(self, nbytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The rows in order, a bounded number at a time (for scans: checks, the data fingerprint)."""
        row_bytes = max(1, int(np.prod(self.base_shape[1:])) * 4)
        step = max(1, nbytes // row_bytes)
        for start in range(0, len(self.index), step):
            yield self._read(self.index[start:start + step])

    def _read(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.empty((0, *self.base_shape[1:]), np.float32)
        mapped = np.memmap(self.path, dtype=self.stored_dtype, mode="r", offset=self.offset, shape=self.base_shape)
        try:
            if rows[-1] - rows[0] == len(rows) - 1 and (len(rows) == 1 or (np.diff(rows) == 1).all()):
                return np.array(mapped[rows[0]:rows[-1] + 1], dtype=np.float32)  # a run of rows: one copy
            order = np.argsort(rows, kind="stable")  # reading in file order touches each page once
            out = np.empty((len(rows), *self.base_shape[1:]), np.float32)
            out[order] = mapped[rows[order]]
            return out
        finally:
            del mapped  # unmapped here: the pages leave this process's resident set


def stored_member(path: Path, member: str) -> Optional[Tuple[int, Tuple[int, ...], np.dtype]]:
    """(data offset, shape, dtype) of `member` (e.g. 'x.npy') when the .npz stores it uncompressed in C order,
    else None (numpy.savez_compressed deflates it: such a file is read whole)."""
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
        if fields[0] != b"PK\x03\x04":
            return None
        name_len, extra_len = fields[-2], fields[-1]
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        f.seek(start)
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(f))
        if fortran or dtype.hasobject or len(shape) < 2:
            return None
        return f.tell(), tuple(shape), dtype


def materialized(x) -> np.ndarray:
    """An in-memory float32 array of `x` (an ndarray is returned as it is)."""
    return x if isinstance(x, np.ndarray) else np.asarray(x)


def chunks(x, nbytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """`x`'s rows a bounded number at a time, for an ndarray or MappedRows alike."""
    if isinstance(x, MappedRows):
        yield from x.chunks(nbytes)
        return
    step = max(1, nbytes // max(1, x[:1].nbytes))
    for start in range(0, len(x), step):
        yield x[start:start + step]
