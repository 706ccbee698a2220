"""What kind of model this is (the profile's `task`, `--task`): classification, detection,
segmentation, embedding or regression. It decides the distillation losses' defaults and what the
checks compare. `auto` decides from the outputs (and the data), and the run says what it chose and
how to override it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from .outputs import EMBEDDING_KEYS
from .task_metrics import are_logits

KINDS = ("classification", "detection", "segmentation", "embedding", "regression")

# the losses each task distils with unless distill.losses names others
DEFAULT_LOSSES = {"classification": ["soft", "ce"], "segmentation": ["pixel_kl", "pixel_ce"],
                  "detection": ["box_l1", "score_bce"], "embedding": ["cosine", "mse"], "regression": ["var_mse"]}


@dataclass(frozen=True)
class Task:
    kind: str
    reason: str  # why: "--task", or what auto saw in the outputs
    boxes: Optional[int] = None  # detection: the index of the (N, A, 4) box output
    scores: Optional[int] = None  # detection: the index of the (N, A, K) score output

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "reason": self.reason}
        if self.kind == "detection":
            out.update(boxes_output=self.boxes, scores_output=self.scores)
        return out


def choose(requested: str, names: Sequence[str], shapes: Sequence[Sequence[int]], first: Optional[np.ndarray] = None,
           y: Optional[np.ndarray] = None) -> Task:
    """The task for outputs `names` with `shapes` (batch first) on a few samples; `first`: the first
    output's values there (an embedding's rows have unit length); `y`: the data's labels, if any."""
    boxes, scores = _detection_heads(shapes)
    if requested != "auto":
        from .errors import InputError

        fits, what = _NEEDS.get(requested, (lambda s: True, ""))
        if requested == "classification" and names[0] in EMBEDDING_KEYS and "logits" in names:
            raise InputError(f"--task classification reads the first output, and a dict's '{names[0]}' comes first "
                             f"(before 'logits'): the outputs are {_described(names, shapes)}",
                             hint=f"deploy with --task embedding (the '{names[0]}' output is then judged by cosine "
                                  "similarity), or return the class scores without the embedding for a classifier")
        if not fits([list(s) for s in shapes]):
            auto = _auto(names, shapes, None, None, boxes, scores).kind
            raise InputError(f"--task {requested} needs {what}; the model's outputs are {_described(names, shapes)}",
                             hint=f"choose another --task (auto reads these outputs as {auto}), or return what "
                                  f"--task {requested} reads from the model")
        return Task(requested, "--task / the profile's task", boxes, scores)
    return _auto(names, shapes, first, y, boxes, scores)


# what a task's checks, losses and example program read from the first output (a forced --task that does not
# fit crashed in distillation, or shipped a bundle whose check compared nothing: two walkthroughs)
_NEEDS = {"classification": (lambda s: len(s[0]) == 2 and s[0][1] > 1, "class scores (N, classes) as the first output"),
          "segmentation": (lambda s: len(s[0]) == 4 and min(s[0][1:]) > 1,
                           "class maps (N, classes, height, width) as the first output"),
          "embedding": (lambda s: len(s[0]) == 2 and s[0][1] > 1,
                        "a vector per sample (N, dimensions) as the first output"),
          "detection": (lambda s: _detection_heads(s)[0] is not None,
                        "a box output (N, anchors, 4) and a score output (N, anchors, classes)")}


def _auto(names, shapes, first, y, boxes, scores) -> Task:
    seen = _described(names, shapes)
    if boxes is not None:
        return Task("detection", f"outputs {seen}: a box output (N, A, 4) and a score output (N, A, K)", boxes, scores)
    lead = list(shapes[0])
    if len(lead) == 4 and lead[2] > 1 and lead[3] > 1:
        if any(word in names[0].lower() for word in _NOT_CLASS_MAPS):
            return Task("regression", f"output '{names[0]}' is a map {lead[1:]} named as values, not class scores")
        return Task("segmentation", f"output '{names[0]}' is a map {lead[1:]} (classes x height x width; keypoint "
                                    "heatmaps or a depth map: --task regression)")
    if len(lead) == 2 and lead[1] > 1 and names[0] in EMBEDDING_KEYS:
        others = f"; the other outputs ({', '.join(names[1:])}) are checked by max |diff|" if len(names) > 1 else ""
        return Task("embedding", f"an output named '{names[0]}' ({lead[1]} values per sample){others}")
    if len(lead) == 2 and "logits" in names:
        return Task("classification", "an output named 'logits'")
    if len(shapes) > 1 and len(lead) == 2 and lead[1] > 1 and _labels_fit(y, lead[1]) \
            and not (first is not None and _unit_rows(first)):
        return Task("classification", f"the first of {len(shapes)} outputs, '{names[0]}', has {lead[1]} values per "
                                      f"sample and the data's labels are classes 0..{int(y.max())}")
    if len(lead) == 2 and first is not None and lead[1] > 1 and _unit_rows(first):
        return Task("embedding", f"output '{names[0]}' has {lead[1]} values of length 1 per sample (L2-normalised)"
                    + (f", the first of {len(shapes)} outputs" if len(shapes) > 1 else ""))
    if len(shapes) == 1 and len(lead) == 2 and lead[1] > 1:
        return Task("classification", f"one output of {lead[1]} values per sample"
                                      + (" and the data has labels" if y is not None else ""))
    if len(shapes) > 1:
        return Task("regression", f"outputs {seen}: several outputs, none named 'logits', no map or box output, and no "
                                  "labels that the first one could score")
    return Task("regression", f"outputs {seen}: not class scores, maps, boxes or unit vectors")


# a map output whose name says it holds values, not class scores (a keypoint net's heatmaps, a depth net)
_NOT_CLASS_MAPS = ("heatmap", "keypoint", "depth", "disparity", "flow", "density")


def _labels_fit(y, classes: int) -> bool:
    """The data's labels are class indices that an output of `classes` values can score."""
    return (y is not None and y.ndim == 1 and len(y) > 0 and np.issubdtype(y.dtype, np.integer)
            and int(y.min()) >= 0 and int(y.max()) < classes)


def _detection_heads(shapes) -> tuple:
    """(index of an (N, A, 4) output, index of an (N, A, K) output with the same A: the class scores,
    K > 1 preferred over a one-value objectness output), else (None, None)."""
    for b, shape in enumerate(shapes):
        if len(shape) == 3 and shape[2] == 4:
            beside = score_outputs(shapes, b)
            if beside:
                return b, next((i for i in beside if shapes[i][2] > 1), beside[0])
    return None, None


def score_outputs(shapes, boxes: int) -> list:
    """Every (N, A, K) output beside the box output `boxes` (N, A, 4): class scores, and objectness
    (K = 1), which a YOLO-style detector multiplies into them."""
    a = shapes[boxes][1]
    return [i for i, s in enumerate(shapes) if i != boxes and len(s) == 3 and s[1] == a]


def score_kinds(outputs, boxes: int) -> dict:
    """{output index: True where it holds logits} for every score output beside the boxes."""
    return {i: are_logits(outputs[i]) for i in score_outputs([o.shape for o in outputs], boxes)}


def confidences(outputs, boxes: int, scores: int, logits: Optional[dict] = None) -> np.ndarray:
    """(N, A, K) probabilities of a detector's scores: the class scores (through a sigmoid where they are
    logits), times each objectness output (K = 1) beside them, likewise. logits: score_kinds of the
    reference, so that a candidate is read the way its reference is; None: decided on `outputs`."""
    logits = score_kinds(outputs, boxes) if logits is None else logits

    def prob(i):
        v = np.asarray(outputs[i], np.float64)
        return 1 / (1 + np.exp(-np.clip(v, -60, 60))) if logits.get(i, True) else np.clip(v, 0.0, 1.0)

    conf = prob(scores)
    for i in score_outputs([o.shape for o in outputs], boxes):
        if i != scores and outputs[i].shape[2] == 1:
            conf = conf * prob(i)
    return conf


def _unit_rows(values: np.ndarray) -> bool:
    norms = np.linalg.norm(values.reshape(len(values), -1).astype(np.float64), axis=1)
    return bool(np.all(np.abs(norms - 1) < 1e-3))


def _described(names, shapes) -> str:
    return ", ".join(f"'{n}' {list(s[1:])}" for n, s in zip(names, shapes))


def log_line(task: Task) -> str:
    how = "" if task.reason.startswith("--task") else (f" (auto: {task.reason}); if that is wrong, pass --task "
                                                      f"{'|'.join(k for k in KINDS if k != task.kind)}")
    return f"task: {task.kind}{how}"


def losses_for(task: Task, configured: Optional[List[str]]) -> List[str]:
    return list(configured) if configured else list(DEFAULT_LOSSES[task.kind])
