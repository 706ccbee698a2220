"""Distillation's progress display: tqdm on a terminal, a line every tenth of the budget in logs."""
from __future__ import annotations

import os
import sys
import time
from typing import Optional

from . import console


class _LogProgress:
    """Progress for logs (no terminal): a line every tenth of the budget, with loss and ETA; a budget
    in minutes only (no step count) gets a line every tenth of its time, with the time left."""

    def __init__(self, label: str, total: Optional[int], initial: int, seconds_left: Optional[float] = None):
        self.label, self.total, self.n, self.start_n = label, total, initial, initial
        self.t0, self.loss, self.seconds_left = time.perf_counter(), "", seconds_left
        self.next_at = initial + max(1, (total or 1) // 10)
        self.next_s = (seconds_left or 0) / 10

    def update(self, k: int) -> None:
        self.n += k
        elapsed = time.perf_counter() - self.t0
        if not self.total and self.seconds_left and elapsed >= self.next_s:
            self.next_s += self.seconds_left / 10
            console.log(f"{self.label}: step {self.n} loss {self.loss}, {max(0.0, self.seconds_left - elapsed):.0f} s left")
        if self.total and self.n >= self.next_at:
            self.next_at = self.n + max(1, self.total // 10)
            rate = (self.n - self.start_n) / max(1e-9, time.perf_counter() - self.t0)
            eta = (self.total - self.n) / rate if rate else float("nan")
            console.log(f"{self.label}: step {self.n}/{self.total} loss {self.loss} ETA {eta:.0f} s")

    def set_postfix(self, loss: str) -> None:
        self.loss = loss

    def close(self) -> None:
        pass


def _progress(label: str, total: Optional[int], initial: int, seconds_left: Optional[float] = None):
    if os.environ.get("EDGECOMPRESS_PROGRESS") == "0":
        return _LogProgress(label, None, initial)
    if not sys.stderr.isatty():
        return _LogProgress(label, total, initial, seconds_left)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=label, unit="step", leave=False, dynamic_ncols=True)
