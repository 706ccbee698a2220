"""Distillation's progress display: tqdm on a terminal, a line every tenth of the budget in logs; both show
the loss, steps/s and images/s, the ETA, and on a GPU the memory in use."""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional

from . import console


class _LogProgress:
    """Progress for logs (no terminal): a line every tenth of the budget, with loss and ETA; a budget
    in minutes only (no step count) gets a line every tenth of its time, with the time left."""

    def __init__(self, label: str, total: Optional[int], initial: int, seconds_left: Optional[float] = None,
                 batch_size: Optional[int] = None, memory: Optional[Callable[[], Optional[str]]] = None):
        self.label, self.total, self.n, self.start_n = label, total, initial, initial
        self.t0, self.loss, self.seconds_left = time.perf_counter(), "", seconds_left
        self.batch_size, self.memory = batch_size, memory
        self.next_at = initial + max(1, (total or 1) // 10)
        self.next_s = (seconds_left or 0) / 10

    def update(self, k: int) -> None:
        self.n += k
        elapsed = time.perf_counter() - self.t0
        if not self.total and self.seconds_left and elapsed >= self.next_s:
            self.next_s += self.seconds_left / 10
            console.log(f"{self.label}: step {self.n} loss {self.loss}{self._rates()}, "
                        f"{max(0.0, self.seconds_left - elapsed):.0f} s left")
        if self.total and self.n >= self.next_at:
            self.next_at = self.n + max(1, self.total // 10)
            rate = (self.n - self.start_n) / max(1e-9, time.perf_counter() - self.t0)
            eta = (self.total - self.n) / rate if rate else float("nan")
            console.log(f"{self.label}: step {self.n}/{self.total} loss {self.loss}{self._rates()} ETA {eta:.0f} s")

    def _rates(self) -> str:
        return rates_text(self.n - self.start_n, time.perf_counter() - self.t0, self.batch_size, self.memory)

    def set_postfix(self, loss: str) -> None:
        self.loss = loss

    def close(self) -> None:
        pass


def rates_text(steps: int, seconds: float, batch_size: Optional[int] = None,
               memory: Optional[Callable[[], Optional[str]]] = None) -> str:
    """', 12.3 steps/s, 787 images/s, GPU 1.2/1.5 GiB' (what is known of it)."""
    if steps <= 0 or seconds <= 0:
        return ""
    rate = steps / seconds
    text = f", {rate:.1f} steps/s" + (f", {rate * batch_size:.0f} images/s" if batch_size else "")
    used = memory() if memory else None
    return text + (f", GPU {used}" if used else "")


class _TqdmProgress:
    """tqdm's bar with the loss, images/s and GPU memory after it (tqdm itself shows steps/s and the ETA)."""

    def __init__(self, label, total, initial, batch_size, memory):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=label, unit="step", leave=False, dynamic_ncols=True)
        self.start_n, self.t0, self.batch_size, self.memory = initial, time.perf_counter(), batch_size, memory

    def update(self, k: int) -> None:
        self.bar.update(k)

    def set_postfix(self, loss: str) -> None:
        steps, seconds = self.bar.n - self.start_n, time.perf_counter() - self.t0
        extra = {}
        if self.batch_size and steps > 0 and seconds > 0:
            extra["img/s"] = f"{steps * self.batch_size / seconds:.0f}"
        used = self.memory() if self.memory else None
        if used:
            extra["GPU"] = used
        self.bar.set_postfix(loss=loss, **extra)

    def close(self) -> None:
        self.bar.close()


def _progress(label: str, total: Optional[int], initial: int, seconds_left: Optional[float] = None,
              batch_size: Optional[int] = None, memory: Optional[Callable[[], Optional[str]]] = None):
    if os.environ.get("EDGECOMPRESS_PROGRESS") == "0" or console.muted():
        return _LogProgress(label, None, initial)
    if not sys.stderr.isatty():
        return _LogProgress(label, total, initial, seconds_left, batch_size, memory)
    return _TqdmProgress(label, total, initial, batch_size, memory)
