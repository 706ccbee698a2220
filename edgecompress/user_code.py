"""The user's own code for what only the user knows: `--postprocess file.py:decode` turns a
detector's raw outputs into boxes, scores and classes; `--metric file.py:fn` turns outputs and the
data's arrays into named numbers, higher is better (mAP against the user's labels, say). Both are
computed for the original, the FP32 student and the deployed model on the held-out samples."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class UserFunction:
    path: Path
    name: str
    fn: Callable
    flag: str  # --postprocess | --metric

    @property
    def spec(self) -> str:
        return f"{self.path.name}:{self.name}"


def load(spec: Optional[str], flag: str) -> Optional[UserFunction]:
    """file.py:function, imported as a model file is (the user's own file, named on the command line)."""
    if not spec:
        return None
    from .models import _import_file

    file_part, _, name = spec.rpartition(":")
    path = Path(file_part).expanduser()
    if not file_part or not name or not path.is_file():
        raise InputError(f"{flag} {spec!r}: {'no such file ' + str(path) if file_part else 'not path/file.py:function'}",
                         hint=f"pass {flag} path/file.py:function")
    fn = getattr(_import_file(path), name, None)
    if not callable(fn):
        raise InputError(f"{flag} {spec}: {path} has no function '{name}'", hint=f"define def {name}(...) in {path}")
    return UserFunction(path, name, fn, flag)


def metric(user: UserFunction, outputs: Dict[str, np.ndarray], arrays: Dict[str, np.ndarray]) -> Dict[str, float]:
    """user.fn(outputs, arrays) -> {name: number}, checked."""
    try:
        got = user.fn(outputs, arrays)
    except Exception as exc:
        raise InputError(f"--metric {user.spec} raised {type(exc).__name__}: {exc}",
                         hint=f"fix {user.path}; it is called as {user.name}(outputs, data) with dicts of numpy "
                              f"arrays (outputs: {', '.join(outputs)}; data: {', '.join(arrays) or 'x only'})") from None
    if not isinstance(got, dict) or not got or not all(isinstance(k, str) for k in got):
        raise InputError(f"--metric {user.spec} returned {type(got).__name__}, not a dict of named numbers",
                         hint="return e.g. {'map50': 0.71}")
    out = {}
    for key, value in got.items():
        try:
            if isinstance(value, (str, bytes)):  # float("0.9") parses: a string is not the number it spells
                raise TypeError
            out[key] = float(value)
        except (TypeError, ValueError):
            raise InputError(f"--metric {user.spec}: '{key}' is {value!r}, not a number",
                             hint="return plain numbers (higher is better)") from None
        if not math.isfinite(out[key]):
            raise InputError(f"--metric {user.spec}: '{key}' is {value!r}", hint="return finite numbers")
    return out


def decode(user: UserFunction, outputs: Dict[str, np.ndarray]) -> List[tuple]:
    """user.fn(outputs) -> per image (boxes (M, 4) x1 y1 x2 y2, scores (M,), classes (M,)), checked."""
    try:
        got = list(user.fn(outputs))
    except Exception as exc:
        raise InputError(f"--postprocess {user.spec} raised {type(exc).__name__}: {exc}",
                         hint=f"fix {user.path}; it is called as {user.name}(outputs) with a dict of numpy arrays "
                              f"({', '.join(outputs)}) and returns, per image, (boxes, scores, classes)") from None
    n = len(next(iter(outputs.values())))
    if len(got) != n:
        raise InputError(f"--postprocess {user.spec} returned {len(got)} results for {n} images",
                         hint="return one (boxes, scores, classes) per image")
    return [tuple(np.asarray(a) for a in item) for item in got]


def figures(metric_fn: Optional[UserFunction], decode_fn: Optional[UserFunction], names: List[str],
            runs: Dict[str, list], arrays: Dict[str, np.ndarray]) -> dict:
    """{"metric": {model: {name: value}}, "boxes": {model: box parity against the original}} for the
    models in `runs` ({"original"|"student_fp32"|"deployed": outputs on the held-out samples})."""
    from . import task_metrics

    out: dict = {}
    as_dict = {label: dict(zip(names, outs)) for label, outs in runs.items()}
    if metric_fn is not None:
        out["metric"] = {label: metric(metric_fn, o, arrays) for label, o in as_dict.items()}
        out["metric_function"] = metric_fn.spec
    if decode_fn is not None:
        decoded = {label: decode(decode_fn, o) for label, o in as_dict.items()}
        out["boxes"] = {label: task_metrics.detection_boxes(d, decoded["original"]).to_dict()
                        for label, d in decoded.items() if label != "original"}
        out["postprocess_function"] = decode_fn.spec
    return out


def try_on_original(metric_fn: Optional[UserFunction], decode_fn: Optional[UserFunction], names: List[str],
                    outputs: list, arrays: Dict[str, np.ndarray]) -> None:
    """The user's functions called once on the original's outputs for a few held-out samples, before any
    training: a walkthrough's KeyError in --metric surfaced only after the whole distillation."""
    try:
        figures(metric_fn, decode_fn, names, {"original": outputs}, arrays)
    except InputError as exc:
        exc.hint = (f"{exc.hint}; found before training, on the original's outputs for {len(arrays['x'])} held-out "
                    "samples")
        raise


def evaluate(run, compressed, deployed) -> Optional[dict]:
    """The user's figures for the original, the FP32 student and the deployed model (None without
    --metric or --postprocess); the log shows them."""
    if run.metric is None and run.postprocess is None:
        return None
    from .console import log

    arrays = {"x": run.held.x, **({"y": run.held.y} if run.held.y is not None else {}), **run.held.arrays}
    runs = {"original": compressed.reference_original, "student_fp32": compressed.reference,
            "deployed": deployed.outputs}
    out = figures(run.metric, run.postprocess, compressed.output_names, runs, arrays)
    for key in (out.get("metric") or {}).get("original", {}):
        log(f"metric {key} ({run.metric.spec}): original {out['metric']['original'][key]:.4g}, FP32 student "
            f"{out['metric']['student_fp32'][key]:.4g}, deployed {out['metric']['deployed'][key]:.4g}")
    for label, b in (out.get("boxes") or {}).items():
        log(f"boxes ({run.postprocess.spec}), {label} vs original at IoU 0.5: recall {_pct(b['recall'])}, precision "
            f"{_pct(b['precision'])}, class agreement {_pct(b['class_agreement'])}, mean IoU "
            f"{'-' if b['mean_iou'] is None else format(b['mean_iou'], '.3f')}")
    return out


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def check(out: Optional[dict], cfg) -> Optional[dict]:
    """verify.max_metric_drop (each of the user's figures, deployed against original) and
    verify.min_box_recall (the deployed model's boxes against the original's), where set."""
    if out is None:
        return None
    from .errors import ToleranceError

    problems = []
    if cfg.max_metric_drop is not None:
        for key, before in out.get("metric", {}).get("original", {}).items():
            after = out["metric"]["deployed"][key]
            if before - after > cfg.max_metric_drop:
                problems.append(f"metric {key} fell {before - after:.4g} ({before:.4g} -> {after:.4g}) > "
                                f"verify.max_metric_drop {cfg.max_metric_drop:g}")
    recall = ((out.get("boxes") or {}).get("deployed") or {}).get("recall")
    if cfg.min_box_recall is not None and recall is not None and recall < cfg.min_box_recall:
        problems.append(f"box recall against the original {recall:.1%} < verify.min_box_recall {cfg.min_box_recall:.1%}")
    if problems:
        raise ToleranceError("the deployed model does not keep your figures: " + "; ".join(problems),
                             report="", hint="loosen verify.max_metric_drop / verify.min_box_recall with --set if "
                                              "this is acceptable, or distill longer / prune less")
    return out
