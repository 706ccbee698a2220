"""One deploy at a time per bundle: a run into OUT/<name> holds an exclusive flock on
OUT/.<name>.lock for its whole length. Two runs used to share OUT/.<name>.work (fixed file names,
and the first to finish deleted it), so one run's bundle could be published with the other's
model. The kernel drops a flock when its holder dies, even by kill -9, so a lock left by a dead
run never blocks the next one and needs no stale-lock handling."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from .errors import InputError


def lock_path(out: Path, name: str) -> Path:
    return Path(out) / f".{name}.lock"


@contextlib.contextmanager
def held(out: Path, name: str) -> Iterator[Path]:
    """Hold OUT/.<name>.lock while the block runs; a second run is refused with exit 2, naming the
    holder's pid and host. The file is removed on the way out, while still locked (see _acquire)."""
    path = lock_path(out, name)
    fd = _acquire(path, Path(out) / name)
    try:
        _record_holder(fd)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # before the close: a run waiting on this inode then sees it is gone and retries
        os.close(fd)


def _acquire(path: Path, bundle: Path) -> int:
    """An fd holding the flock on the file now at `path`. The holder unlinks the file before it
    unlocks, so a lock won on an inode that is no longer at `path` is worthless: try again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise InputError(f"another edgecompress deploy into {bundle} is running ({holder}); it holds {path}",
                             hint="wait for it to finish, or pass another --out to run both at once") from None
        except OSError:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _record_holder(fd: int) -> None:
    """Who holds the lock, for the message a refused run prints."""
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)


def _read_holder(fd: int, attempts: int = 20) -> str:
    """The holder's record; it is written just after the lock is taken, so give it a moment."""
    for _ in range(attempts):
        try:
            record = json.loads(os.pread(fd, 4096, 0).decode())
            return f"pid {record['pid']} on host {record['host']}, started {record['started']}"
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "its pid is not recorded yet"
