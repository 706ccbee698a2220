"""The run's work folder, OUT/.<name>.work: the distillation checkpoint and the converted files
live there until the bundle is published. Nothing in it is lost by accident: an earlier run's
progress is not overwritten without --resume or --force, and a run that fails or is interrupted
after distilling says how to go on from its checkpoint."""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from .console import log
from .errors import InputError, StageError


def keep_interrupted_progress(work: Path, opts) -> None:
    """An interrupted run's checkpoint is never overwritten by accident: without --resume the run
    stops before any work, unless --force says to discard it."""
    checkpoint = work / "checkpoint.pt"
    if opts.resume or not checkpoint.is_file():
        return
    if not opts.force:
        raise InputError(f"{checkpoint} holds the distillation progress of an earlier run of this model and target "
                         "that did not finish (interrupted, or failed after distilling)",
                         hint="add --resume to continue it with the same model and profile (a changed setting "
                              "cannot resume), or --force to discard it and start over")
    log(f"--force: discarding the progress of the earlier run in {work}")
    shutil.rmtree(work)


@contextlib.contextmanager
def progress_kept_on_failure(work: Path):
    """A stage that fails after distillation (a check, the export, the benchmark) leaves the
    distilled student in the checkpoint: say how to go on from it instead of distilling again."""
    try:
        yield
    except (StageError, InputError) as exc:  # InputError: the user's --metric failing on the deployed model, say
        if (work / "checkpoint.pt").is_file() and "--resume" not in f"{exc.message} {exc.hint}":
            kept = (f"the distilled student is kept in {work}: the same command with --resume (changing only "
                    "quantize, export, verify or bench settings if you like) goes on from it without distilling again")
            exc.hint = f"{exc.hint}; {kept}" if exc.hint else kept
        raise
    except KeyboardInterrupt as exc:
        raise KeyboardInterrupt(interrupted_note(work)) from exc


def interrupted_note(work: Path) -> str:
    """What a Ctrl-C (or SIGTERM) outside distillation's own handler leaves, said exactly: the kept
    checkpoint, or that none was saved yet, in which case the work folder goes (a walkthrough found an
    empty .work folder and 'a checkpoint, if one was saved, is kept')."""
    checkpoint = work / "checkpoint.pt"
    if checkpoint.is_file():
        return (f"no bundle was written; the distillation progress in {checkpoint} is kept, and the same command "
                "with --resume continues from it")
    if not (work / "latency_budget.json").is_file():
        shutil.rmtree(work, ignore_errors=True)
    return "no bundle was written, and no distillation checkpoint had been saved yet: the same command starts over"
