"""Distillation checkpoints: the student as tensors and plain data (weights and pruned structure), the
optimizer and the run's progress, written atomically and read back without running any pickled code."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional

from . import prune
from .errors import InputError

CHECKPOINT_FORMAT = 2  # 2: tensors and plain data only (1 pickled Torch-Pruning's module objects)


def save_checkpoint(path: Path, state: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never destroys the previous checkpoint


def load_checkpoint(path: Path) -> dict:
    """A checkpoint read with weights_only=True: tensors and plain data, never code. A file that
    holds anything else (planted in a shared --out, or written by an older edgecompress that
    pickled module objects) is refused without being run."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, the remedy is the same
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = (f"it holds a pickled {found.group(1)}, not only tensors and plain data" if found
                else f"it could not be read ({type(exc).__name__})")
        state = None
    else:
        what = "it is not an edgecompress checkpoint of this version"
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        return state
    raise InputError(f"--resume: the checkpoint {path} was not loaded: {what}",
                     hint=f"delete {path}, or run with --force instead of --resume, to start over (an edgecompress "
                          "older than checkpoint format 2 pickled module objects: its checkpoints cannot be resumed)")


def checkpoint_state(student) -> dict:
    """The student as tensors and plain data: its weights and the pruned structure to rebuild."""
    return {"format": CHECKPOINT_FORMAT, "student": student.state_dict(), "structure": prune.structure_of(student)}


def restore_(model, state: dict) -> None:
    """A fresh copy of the unpruned model takes the checkpoint's pruned structure and weights."""
    prune.rebuild_(model, state["structure"])
    model.load_state_dict(state["student"])


def left_whole_of(state: Optional[dict]) -> List[str]:
    """The layers pruning left whole in the rounds a checkpoint has done (compress puts them in its
    meta): a --resume past those rounds prunes no more, so only the checkpoint still knows them. A
    checkpoint written before they were saved, or none, has none."""
    names = (state or {}).get("left_whole") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError("--resume: the checkpoint's left_whole is not a list of layer names",
                         hint="run with --force instead of --resume to start over")
    return list(names)
