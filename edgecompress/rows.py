"""Samples that stay on disk: the `x` of an uncompressed `.npz` (numpy.savez) read row by row through a
memory map, and a large image folder decoded as its rows are read, so a data set larger than the host's
memory trains without being loaded whole; `batches` reads the training batches ahead in DataLoader workers.

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


class FolderRows:
    """Images of a class-folder data set decoded when their rows are read (resized and normalised as the
    eager reader does), for folders too large to decode into memory up front."""

    def __init__(self, files, size_hw, pre, index: Optional[np.ndarray] = None):
        self.files, self.size_hw, self.pre = list(files), tuple(size_hw), pre
        self.index = np.arange(len(self.files)) if index is None else np.asarray(index, dtype=np.int64)

    @property
    def shape(self) -> Tuple[int, ...]:
        return (len(self.index), self.pre.channels, *self.size_hw)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    ndim = 4
    stored_dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._decode(int(self.index[key]))
        if isinstance(key, tuple):
            return self[key[0]][(slice(None), *key[1:])]
        return np.stack([self._decode(int(i)) for i in np.atleast_1d(self.index[key])]) if len(self.index[key]) \
            else np.empty((0, *self.shape[1:]), np.float32)

    def subset(self, idx) -> "FolderRows":
        return FolderRows(self.files, self.size_hw, self.pre, self.index[idx])

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype, copy=True) -> np.ndarray:
        return np.asarray(self).astype(dtype, copy=False)

    def chunks(self, nbytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        step = max(1, nbytes // max(1, int(np.prod(self.shape[1:])) * 4))
        for start in range(0, len(self.index), step):
            yield self[start:start + step]

    def _decode(self, i: int) -> np.ndarray:
        from . import data

        return data.decode_image(self.files[i], self.size_hw, self.pre)


LAZY = (MappedRows, FolderRows)


def chunks(x, nbytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """`x`'s rows a bounded number at a time, for an ndarray, MappedRows or FolderRows alike."""
    if isinstance(x, LAZY):
        yield from x.chunks(nbytes)
        return
    step = max(1, nbytes // max(1, x[:1].nbytes))
    for start in range(0, len(x), step):
        yield x[start:start + step]


class _StepBatches:
    """Step s -> the rows of batch s (a torch Dataset a DataLoader's workers read in parallel)."""

    def __init__(self, x, index_of, first: int, last: int):
        self.x, self.index_of, self.first, self.last = x, index_of, first, last

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def __getitem__(self, k: int):
        step = self.first + k
        idx = self.index_of(step)
        return step, idx, np.ascontiguousarray(self.x[idx])


def batches(x, index_of, first: int, last: int, workers: int = 0, pin_memory: bool = False):
    """(step, row numbers, rows) for steps first .. last-1, in order. workers > 0: read (decoded, for image folders) by that
    many DataLoader worker processes ahead of the training step; 0: in this process, as each step asks."""
    if workers <= 0:
        for step in range(first, last):
            idx = index_of(step)
            yield step, idx, np.ascontiguousarray(x[idx])
        return
    import torch

    loader = torch.utils.data.DataLoader(_StepBatches(x, index_of, first, last), batch_size=None, shuffle=False,
                                         num_workers=workers, pin_memory=pin_memory, prefetch_factor=2,
                                         persistent_workers=False)
    for step, idx, rows in loader:
        yield int(step), np.asarray(idx), rows
