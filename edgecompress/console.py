"""Progress and notes for the person at the terminal: stderr, so that stdout stays the result
(--json) and a pipe can take it."""
from __future__ import annotations

import sys


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
