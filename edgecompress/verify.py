"""Numeric checks of an exported model against its reference on held-out inputs: max abs
difference per output, top-1 agreement, and accuracy when labels exist."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from . import outputs
from .errors import StageError, ToleranceError


@dataclass
class OutputDiff:
    name: str
    max_abs_diff: float
    mean_abs_diff: float


@dataclass
class Parity:
    what: str
    samples: int
    outputs: List[OutputDiff] = field(default_factory=list)
    top1_agreement: Optional[float] = None
    # top-1 agreement with the original (unpruned) model, where the reference is another model (the
    # FP32 student): without labels it is the summary's figure, computed here once for both
    original_agreement: Optional[float] = None
    accuracy: Optional[float] = None
    reference_accuracy: Optional[float] = None
    # the task's own figure (not a classifier), against the reference and the original: TASK_METRICS
    task_metric: Optional[str] = None
    task_agreement: Optional[float] = None
    original_task_agreement: Optional[float] = None
    task_details: Optional[dict] = None  # the task's other figures (task_metrics): mean IoU, PSNR, worst cosine ...
    tolerance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [f"  {o.name:<16} max |diff| {o.max_abs_diff:.3g}  mean |diff| {o.mean_abs_diff:.3g}" for o in self.outputs]
        if self.top1_agreement is not None:
            rows.append(f"  top-1 agreement  {self.top1_agreement:.2%} over {self.samples} held-out samples")
        if self.original_agreement is not None:
            rows.append(f"  agreement with the original model {self.original_agreement:.2%}")
        if self.accuracy is not None:
            # whose accuracy the reference's is: the FP32 student, mostly, which the table does not show
            reference = self.what.split(" vs ")[-1] if " vs " in self.what else "the reference"
            rows.append(f"  accuracy         {self.accuracy:.2%} ({reference} {self.reference_accuracy:.2%})")
        if self.task_agreement is not None:  # as the summary's table prints it: a share in %, R^2 and cosine as numbers
            from .report import figure_text

            on = judged_output(self.task_metric, [o.name for o in self.outputs])
            rows.append(f"  {METRIC_WORDS[self.task_metric]}{on} "
                        f"{figure_text(self.task_metric, self.task_agreement)} over {self.samples} held-out samples"
                        + (f" (with the original {figure_text(self.task_metric, self.original_task_agreement)})"
                           if self.original_task_agreement is not None else ""))
        d = self.task_details or {}
        if d.get("confident_anchors") is not None:
            rows.append(_anchor_row(d, self.samples))
        if d.get("mean_iou") is not None:
            original = (f", the original {d['original_mean_iou_labels']:.4f}"
                        if d.get("original_mean_iou_labels") is not None else "")
            rows.append(f"  mean IoU {d['mean_iou']:.4f}" + (f"; against the data's masks {d['mean_iou_labels']:.4f} "
                                                             f"(the reference {d['reference_mean_iou_labels']:.4f}"
                                                             f"{original})"
                                                             if d.get("mean_iou_labels") is not None else ""))
        if d.get("cosine_min") is not None:
            rows.append(f"  worst cosine {d['cosine_min']:.4f}, nearest-neighbour agreement "
                        + ("-" if d.get("nn_agreement") is None else f"{d['nn_agreement']:.2%}")
                        + (f" (with the original: worst cosine {d['original_cosine_min']:.4f}, nearest-neighbour "
                           f"agreement {d['original_nn_agreement']:.2%})" if d.get("original_nn_agreement") is not None
                           else ""))
        if d.get("min_psnr_db") is not None:
            rows.append(_regression_row(d))
        margins = d.get("margins") or {}
        if margins.get("close_calls") and self.top1_agreement is not None and self.top1_agreement < 1:
            rows.append(_margins_row(margins))
        return "\n".join(rows)


def _classes_lost(candidate: np.ndarray, original: np.ndarray) -> List[dict]:
    """The classes the original gives some pixel of the samples and the candidate none, each with its share of
    the original's pixels: a student that lost a class of three kept 93.6% pixel agreement (a walkthrough)."""
    mine, theirs = candidate.argmax(1), original.argmax(1)
    kept = set(np.unique(mine).tolist())
    return [{"class": int(k), "original_pixel_share": float((theirs == k).mean())}
            for k in np.unique(theirs).tolist() if k not in kept]


def _margins_row(m: dict) -> str:
    return (f"  close calls      {m['close_calls']} of {m['samples']}: the reference's top two raw scores nearer than "
            f"twice the most this model moved the sample's scores (median gap {m['top2_gap_median']:.3g}, median "
            f"largest move {m['largest_move_median']:.3g}, both in raw scores)")


def _close_call_hint(report: Parity) -> str:
    """Where most decisions were close calls, the disagreement is the model's, not the compression's: an
    untrained classifier (random weights, a factory that does not load its checkpoint) is the usual cause."""
    from .summary import NEAR_TIE_MARGIN  # the summary's test of the original's near ties, here on the reference

    m = (report.task_details or {}).get("margins") or {}
    if report.top1_agreement is None or not m.get("samples"):
        return ""
    ties = m.get("probability_gap_median", 1.0) < NEAR_TIE_MARGIN
    if m["close_calls"] < m["samples"] / 2 and not ties:
        return ""
    return (f"the reference is unsure of its decisions ({m['close_calls']} of {m['samples']} samples close calls; its "
            f"two likeliest classes {m.get('probability_gap_median', 0.0):.3g} apart in probability at the median), "
            "which more calibration data does not mend: is the model trained, with its weights loaded (--weights, "
            "or by your factory)? A trained classifier is seldom that unsure; at random weights top-1 agreement means "
            "little, and --set verify.min_top1_agreement=0 lets the run through")


def _worst_r2(report: Parity) -> str:
    """For a regressor's pooled R^2, the output that pulls it down (a walkthrough's failure named none)."""
    outs = [o for o in (report.task_details or {}).get("outputs") or [] if o.get("r2") is not None]
    if report.task_metric != "r2" or len(outs) < 2:
        return ""
    worst = min(outs, key=lambda o: o["r2"])
    return f"; the worst output is {worst['name']} (R^2 {worst['r2']:.4f})"


def _anchor_row(d: dict, samples: int) -> str:
    """A detector's confident anchors, whose they are, and the raw outputs' PSNR (all that is compared where none
    is confident); a threshold every anchor passes counts the background too, which is said."""
    from .task_metrics import MIN_CONFIDENT_ANCHORS

    psnr = ", ".join(f"{k} {v:.1f} dB" for k, v in (d.get("psnr_db") or {}).items())
    count, threshold, best = d["confident_anchors"], d["threshold"], d.get("max_reference_score")
    if 0 < count < MIN_CONFIDENT_ANCHORS:
        row = (f"  the reference's confident anchors: only {count} of {d.get('anchors') or '?'} (score above "
               f"{threshold:g}), fewer than {MIN_CONFIDENT_ANCHORS}: too few to judge, so no agreement is checked")
    elif count == 0:
        row = (f"  confident anchors: none of the reference's scores exceeds {threshold:g} over {samples} held-out "
               f"samples (verify.score_threshold; its highest {best:.4g}): no anchor was compared" if best is not None
               else f"  confident anchors: none over {samples} held-out samples: no anchor was compared")
    else:
        row = (f"  the reference's confident anchors: {count} of {d.get('anchors') or '?'} (score above {threshold:g}), "
               f"mean box difference {d['mean_box_diff']:.3g}")
        if d.get("anchors") and count == d["anchors"]:
            row += (" -- every anchor, so background anchors are counted too: raise verify.score_threshold to "
                    "where your model's detections are")
    return row + (f"; PSNR {psnr}" if psnr else "")


def _regression_row(d: dict) -> str:
    """A regressor's errors, each with the output it comes from (a walkthrough's 'largest relative error 289'
    named neither the output nor what 289 was)."""
    outs = d.get("outputs") or []

    def worst(key, largest=True) -> str:  # the output the figure comes from, where there are several
        if len(outs) < 2:
            return ""
        return (max if largest else min)(outs, key=lambda o: o.get(key) or 0)["name"]
    psnr_in, range_in, rel_in = worst("psnr_db", False), worst("max_range_error"), worst("max_rel_error")
    row = f"  PSNR {d['min_psnr_db']:.1f} dB ({psnr_in + ', ' if psnr_in else ''}the worst output), largest error "
    if "max_range_error" in d:
        row += f"{d['max_range_error']:.2%} of {range_in + chr(39) + 's' if range_in else 'its output' + chr(39) + 's'} range, "
    rel = d["max_rel_error"]
    row += f"largest relative error {rel:.3g} (|diff| / |original value|{', in ' + rel_in if rel_in else ''}"
    return row + ("; large where the original's values are near 0)" if rel > 1 else ")")


# per task: its figure's words; the verify key of its tolerance for a quantized model is "min_" + the
# figure's name (Parity.task_metric); every figure is 1 for a perfect match
TASK_METRICS = {"segmentation": ("pixel_agreement", "pixel agreement"),
                "detection": ("confident_agreement", "confident-anchor agreement"),
                "embedding": ("cosine", "mean cosine similarity"),
                "regression": ("r2", "R^2")}
METRIC_WORDS = dict(TASK_METRICS.values())
METRIC_TASKS = {metric: task for task, (metric, _) in TASK_METRICS.items()}


def task_agreement(task: str, candidate: List[np.ndarray], reference: List[np.ndarray],
                   score_threshold: float = 0.5) -> Optional[float]:
    """How far `candidate` agrees with `reference` for a task other than classification (1: fully):
    segmentation: the share of pixels with the same class; detection: of the reference's confident
    anchors (largest sigmoid score, times the sigmoid of an objectness output where there is one, above
    score_threshold), the share the candidate also marks confident
    with the same class; embedding: the mean cosine similarity of the first output's vectors;
    regression: R^2 of the candidate's values against the reference's (1 - SSE / SST), all outputs."""
    from . import task_metrics

    if task == "segmentation":  # the same figures task_details reports, from one implementation
        return task_metrics.segmentation(candidate[0], reference[0]).pixel_agreement
    if task == "detection":
        found = _anchor_parity(candidate, reference, score_threshold)
        return _judged(found[0]) if found else None
    if task == "embedding":
        return task_metrics.embedding(candidate[0], reference[0]).cosine_mean
    if task == "regression":
        return task_metrics.r_squared(np.concatenate([v.reshape(len(v), -1) for v in candidate], 1),
                                      np.concatenate([v.reshape(len(v), -1) for v in reference], 1))
    return None


def torch_outputs(model, x: np.ndarray, batch: int = 64) -> List[np.ndarray]:
    import torch

    chunks = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model(torch.from_numpy(x[i: i + batch]))
            chunks.append([o.numpy() for o in outputs.flatten(out)])
    return [np.concatenate(parts) for parts in zip(*chunks)]


def fp16_outputs(model, x: np.ndarray, batch: int = 64) -> List[np.ndarray]:
    """The model computed in FP16 (weights and activations in half precision, PyTorch on this CPU): a
    stand-in for a TensorRT FP16 engine or the LiteRT GPU delegate, which cannot run here. It rounds as
    FP16 does, so an overflow (inf) or a decision that flips in FP16 shows before the device sees it;
    the device's kernels accumulate differently, so it is a check, not the device's own figure."""
    import copy

    import torch

    half = copy.deepcopy(model).eval().half()
    chunks = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = half(torch.from_numpy(x[i: i + batch]).half())
            chunks.append([o.float().numpy() for o in outputs.flatten(out)])
    return [np.concatenate(parts) for parts in zip(*chunks)]


def onnx_session(path: Path, threads: int = 2, exact_int8: bool = False):
    """exact_int8: compute INT8 products without saturation. x86 CPUs without VNNI multiply u8 x s8
    with VPMADDUBSW, whose int16 pair sums saturate; ARM's dot-product instructions do not. When the
    target is not x86, the check must see the target's arithmetic, not this host's shortcut (ORT's
    session.x64quantprecision; it has no effect on other CPUs)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    model = str(path)
    if exact_int8:
        opts.add_session_config_entry("session.x64quantprecision", "1")
        model = unshared_weights(path) or model
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def unshared_weights(path: Path) -> Optional[bytes]:
    """The model with a DequantizeLinear and its own weight, scale and zero point per weight use, or None
    where no quantized weight is shared. ONNX Runtime's exact-INT8 rewrite of int8 weights
    (x64quantprecision) replaces a weight once per node that reads it and fails on the second ("Attempt
    to replace the existing tensor"): a head shared by an FPN's levels is one such weight. The copy
    computes the same integers; the file that ships keeps its shared weights (ARM's and the GPU's
    runtimes take them as they are)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: Dict[str, list] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, []).append(index)
    weight_dqs = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    if not any(len(readers.get(n.output[0], ())) > 1 or any(len(readers[i]) > 1 for i in n.input if i in inits)
               for n in weight_dqs):
        return None
    count, nodes, seen_inputs = 0, [], set()

    def twin_of(dq, out: str):
        nonlocal count
        count += 1
        names = []
        for name in dq.input:
            if name in inits:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__use{count}"
                graph.initializer.append(copy)
                names.append(copy.name)
            else:
                names.append(name)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dq.attribute}
        return onnx.helper.make_node("DequantizeLinear", names, [out], name=f"{dq.name}__use{count}", **attrs)

    dq_of = {n.output[0]: n for n in weight_dqs}
    for index, node in enumerate(list(graph.node)):
        if node.op_type == "DequantizeLinear" and node.output[0] in dq_of:
            if any(i in seen_inputs for i in node.input if i in inits):  # another DQ already reads this weight
                node = twin_of(node, node.output[0])
            seen_inputs.update(i for i in node.input if i in inits)
            nodes.append(node)
            continue
        for pos, name in enumerate(node.input):
            dq = dq_of.get(name)
            if dq is not None and readers[name][0] != index:  # not this weight's first reader
                out = f"{name}__use{count + 1}"
                nodes.append(twin_of(dq, out))
                node.input[pos] = out
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString()


def onnx_outputs(path: Path, x: np.ndarray, batch: int = 64, threads: int = 2,
                 exact_int8: bool = False) -> List[np.ndarray]:
    session = onnx_session(path, threads, exact_int8)
    first = session.get_inputs()[0]
    if first.shape and isinstance(first.shape[0], int):
        batch = first.shape[0]  # exported with a fixed batch (torch.onnx.export's default): feed it that many
        if len(x) % batch:
            raise StageError("verify", f"{Path(path).name} takes batches of exactly {batch} and {len(x)} held-out "
                                       f"samples do not divide into them",
                             hint="export the model with a dynamic batch (dynamic_axes={'x': {0: 'batch'}}) or a "
                                  "batch of 1")
    name = first.name
    chunks = [session.run(None, {name: x[i: i + batch].astype(np.float32)}) for i in range(0, len(x), batch)]
    return [np.concatenate(parts) for parts in zip(*chunks)]


def compare(what: str, candidate: List[np.ndarray], reference: List[np.ndarray], names: List[str],
            y: Optional[np.ndarray], original: Optional[List[np.ndarray]] = None,
            task: str = "classification", score_threshold: float = 0.5) -> Parity:
    """original: the unpruned model's outputs, when the reference is the student: the deployed
    model's top-1 agreement with them is reported beside the agreement with the reference.
    task: top-1 agreement and accuracy are a classifier's figures; other tasks have their own.
    score_threshold: a detector's confident anchors (verify.score_threshold)."""
    report = Parity(what, len(reference[0]))
    for name, c, r in zip(names, candidate, reference):
        diff = np.abs(c.astype(np.float64) - r.astype(np.float64))
        report.outputs.append(OutputDiff(name, float(diff.max()), float(diff.mean())))
    if task == "classification" and reference[0].ndim == 2 and reference[0].shape[1] > 1:
        c_top, r_top = candidate[0].argmax(1), reference[0].argmax(1)
        report.top1_agreement = float((c_top == r_top).mean())
        if original is not None:
            report.original_agreement = float((c_top == original[0].argmax(1)).mean())
        if y is not None and y.ndim == 1:
            report.accuracy = float((c_top == y).mean())
            report.reference_accuracy = float((r_top == y).mean())
        from .task_metrics import decision_margins

        report.task_details = {"margins": decision_margins(candidate[0], reference[0]).to_dict()}
    elif task in TASK_METRICS:
        report.task_metric = TASK_METRICS[task][0]
        report.task_agreement = task_agreement(task, candidate, reference, score_threshold)
        if original is not None and task != "detection":  # a detector's comes with the original's anchors, below
            report.original_task_agreement = task_agreement(task, candidate, original, score_threshold)
        report.task_details = task_details(task, candidate, reference, y, names, score_threshold)
        if task == "segmentation" and original is not None and report.task_details is not None:
            # a student that learned one class everywhere still agrees with the original on the background's
            # pixels (89% on a canvas of small shapes): the classes each side uses tell
            report.task_details.update(classes_predicted=int(len(np.unique(candidate[0].argmax(1)))),
                                       original_classes_predicted=int(len(np.unique(original[0].argmax(1)))),
                                       classes_lost=_classes_lost(candidate[0], original[0]))
            if report.task_details.get("mean_iou_labels") is not None:  # the original's own score on the masks
                from . import task_metrics

                report.task_details["original_mean_iou_labels"] = task_metrics.segmentation(
                    original[0], original[0], y).mean_iou_labels
                report.task_details["majority_class_labels"] = task_metrics.majority_mean_iou(y, original[0].shape[1])
        if task == "detection" and original is not None and report.task_details is not None:
            # the summary speaks of the original's anchors, which may differ from the FP32 student's
            against_original = _anchor_parity(candidate, original, score_threshold)[0]
            report.original_task_agreement = _judged(against_original)
            report.task_details.update(original_confident_anchors=against_original.confident_anchors,
                                       original_max_score=against_original.max_reference_score)
        if task == "embedding" and original is not None and report.task_details is not None:
            # retrieval reads neighbours, which a mean cosine near 1 can hide: against the original too
            from . import task_metrics

            e = task_metrics.embedding(candidate[0], original[0])
            report.task_details.update(original_cosine_min=e.cosine_min, original_nn_agreement=e.nn_agreement,
                                       original_pairwise_cosine=task_metrics.pairwise_cosine(original[0]))
    return report


def _anchor_parity(candidate, reference, score_threshold: float):
    """(task_metrics.AnchorParity, score_kinds, the class-score output) of a detector's raw heads, the scores read
    as the reference's are (logits or probabilities, objectness multiplied in); None without a score output."""
    from . import task_metrics
    from .tasks import _detection_heads, confidences, score_kinds

    boxes, scores = _detection_heads([r.shape for r in reference])
    if scores is None:
        return None
    kinds = score_kinds(reference, boxes)
    parity = task_metrics.detection_anchors(candidate[boxes], confidences(candidate, boxes, scores, kinds),
                                            reference[boxes], confidences(reference, boxes, scores, kinds),
                                            threshold=score_threshold, scores_are_logits=False)
    return parity, kinds, scores


def _judged(parity) -> Optional[float]:
    """The confident-anchor agreement a tolerance may judge: none with too few confident anchors, where the figure
    would turn on one of them."""
    from .task_metrics import MIN_CONFIDENT_ANCHORS

    return parity.confident_agreement if parity.confident_anchors >= MIN_CONFIDENT_ANCHORS else None


def task_details(task: str, candidate, reference, y=None, names=None, score_threshold: float = 0.5) -> Optional[dict]:
    """The task's figures beyond the one its tolerance checks (edgecompress.task_metrics), JSON-ready."""
    from . import task_metrics

    if task == "segmentation":
        masks = y if y is not None and y.ndim == 3 and y.shape[1:] == reference[0].shape[2:] else None
        return task_metrics.segmentation(candidate[0], reference[0], masks).to_dict()
    if task == "detection":
        found = _anchor_parity(candidate, reference, score_threshold)
        if found is None:
            return None
        parity, kinds, scores = found
        details = parity.to_dict()
        details["scores_are_logits"] = kinds.get(scores, True)  # the model's own scores (the example programs read it)
        # the one-value outputs the checks multiply into the class scores, so that the examples rank anchors alike
        details["objectness"] = [{"output": i, "are_logits": kinds.get(i, True)} for i in sorted(kinds)
                                 if i != scores and reference[i].shape[2] == 1]
        return details
    if task == "embedding":
        return task_metrics.embedding(candidate[0], reference[0]).to_dict()
    return task_metrics.regression(candidate, reference, names).to_dict()


def two_four_layers(path: Path) -> dict:
    """For each Conv/Gemm weight in an ONNX file whose input width is a multiple of 4: the number of
    groups of four input channels with fewer than two zeros (0 means the 2:4 pattern holds)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv" and attrs.get("group", 1) != 1:
            continue
        if node.op_type == "Gemm" and not attrs.get("transB", 0):
            w = w.T  # (in, out) -> (out, in): groups run along the input elements of a row
        if w.shape[1 if w.ndim == 4 else -1] % 4:
            continue
        out[node.name or node.input[1]] = two_four_violations(w)
    return out


def two_four_violations(weight) -> int:
    """The 2:4 rule, the one place it is written: the groups of four input channels of a conv (K, C, R, S)
    or linear (out, in) weight holding fewer than two zeros. That axis is the one TensorRT's sparse kernels
    need the pattern on. A width that is not a multiple of 4 cannot hold the pattern and counts 0."""
    w = np.asarray(weight)
    groups = np.moveaxis(w, 1, -1) if w.ndim == 4 else w
    if groups.shape[-1] % 4:
        return 0
    groups = groups.reshape(*groups.shape[:-1], groups.shape[-1] // 4, 4)
    return int(((groups == 0).sum(-1) < 2).sum())


def check(report: Parity, quantized: bool, cfg) -> Parity:
    """FP32 exports must match closely; quantized ones must agree on the decision."""
    found = problems(report, quantized, cfg)
    if found:
        maps = ("; if these maps are not class scores per pixel (keypoint heatmaps, a depth map), deploy with "
                "--task regression" if report.task_metric == TASK_METRICS["segmentation"][0] else "")
        hint = (_close_call_hint(report) if quantized else "") or (
            "loosen verify.* with --set if this is acceptable" + (", or use more calibration data" if quantized else "")
            + maps)
        raise ToleranceError(f"{report.what}: outside the tolerance: " + "; ".join(found), report=report.table(),
                             hint=hint)
    return report


def judged_output(metric: Optional[str], output_names: List[str]) -> str:
    """" of 'embedding'": the output an embedding's or a segmenter's figure is on (the first), where there are
    several (a re-identification net's logits beside its embedding); "" where it reads one output or all of them.
    verify's lines and report.html's checks table both say it."""
    if metric in ("cosine", "pixel_agreement") and len(output_names) > 1:
        return f" of '{output_names[0]}'"
    return ""


def figure(report: Parity) -> tuple:
    """(name, value) of the figure a quantized model is judged by: top-1 agreement for a classifier,
    else the task's (TASK_METRICS)."""
    if report.task_metric is not None:
        return report.task_metric, report.task_agreement
    return "top1_agreement", report.top1_agreement


def problems(report: Parity, quantized: bool, cfg) -> List[str]:
    """What in `report` misses the profile's tolerance (none: it passes); sets report.tolerance."""
    problems = []
    if quantized:
        report.tolerance = {"min_top1_agreement": cfg.min_top1_agreement}
        problems += [f"output '{o.name}' is not finite" for o in report.outputs if not np.isfinite(o.max_abs_diff)]
        if report.top1_agreement is not None and report.top1_agreement < cfg.min_top1_agreement:
            problems.append(f"top-1 agreement {report.top1_agreement:.2%} < {cfg.min_top1_agreement:.2%}")
        if report.task_metric is not None:
            words, key = METRIC_WORDS[report.task_metric], "min_" + report.task_metric
            report.tolerance = {key: getattr(cfg, key)}
            if report.task_agreement is not None and not report.task_agreement >= getattr(cfg, key):
                from .report import NOT_A_SHARE

                if report.task_metric in NOT_A_SHARE:
                    said = f"{report.task_agreement:.4f} < {getattr(cfg, key)}"
                else:  # in %, as the other lines: enough digits that a limit of 0.99999 does not read 100.00%
                    pct = lambda v: f"{v * 100:.3f}".rstrip("0").rstrip(".") + "%"  # noqa: E731
                    said = f"{pct(report.task_agreement)} < {pct(getattr(cfg, key))}"
                problems.append(f"{words} {said} (verify.{key}){_worst_r2(report)}")
    else:
        report.tolerance = {"max_abs_diff": cfg.max_abs_diff}
        problems += [f"output '{o.name}' max |diff| {o.max_abs_diff:.3g} > {cfg.max_abs_diff:g}"
                     for o in report.outputs if not o.max_abs_diff <= cfg.max_abs_diff]  # NaN fails too
    return problems
