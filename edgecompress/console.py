"""Progress and notes for the person at the terminal: stderr, so that stdout stays the result
(--json) and a pipe can take it. Under torchrun only rank 0 speaks (mute() on the others): N copies of
every line would bury the one that matters; their errors still reach stderr."""
from __future__ import annotations

import sys

_muted = False


def log(msg: str) -> None:
    if not _muted:
        print(msg, file=sys.stderr, flush=True)


def mute(muted: bool = True) -> None:
    global _muted
    _muted = muted


def muted() -> bool:
    return _muted
