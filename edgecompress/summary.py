"""The deploy's summary, from the records alone: the before/after table's figures, the accuracy
(or, without labels, the agreement with the original), where the latency was measured, and the
warnings a user must read (an accuracy cost past WARN_DROP_POINTS, a drifting p50)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from . import bench
from .records import Accuracy, Side, Summary

WARN_DROP_POINTS = 2.0  # an accuracy cost past this is said under the table, with what to change
NEAR_TIE_MARGIN = 0.01  # softmax top-1 minus top-2 below this: the original's classes are near ties


def build(run, compressed, deployed, measurement, accuracy: Accuracy, budget: Optional[dict],
          user_figures: Optional[dict] = None) -> Summary:
    results, c = measurement.results, compressed
    lat = {k: v["latency_ms"] for k, v in results.items()}
    rounds = {k: v["rounds"] for k, v in results.items() if v.get("rounds")}
    paired = bench.round_speedups(results["original"], results["compressed"])
    measured = measurement.measured_on
    before = Side(bytes=deployed.original_file.stat().st_size, deflated_bytes=_deflated_bytes(deployed.original_file),
                  params=c.pruning.params_before, macs=c.pruning.macs_before, accuracy=accuracy.teacher,
                  p50_ms=lat["original"]["p50"])
    after = Side(bytes=deployed.model.stat().st_size, deflated_bytes=_deflated_bytes(deployed.model),
                 params=c.pruning.params_after, macs=c.pruning.macs_after, accuracy=accuracy.student,
                 p50_ms=lat["compressed"]["p50"], nonzero_params=c.pruning.nonzero_params_after)
    return Summary(
        name=run.source.name, target=run.prof.name, before=before, after=after,
        speedup_p50=bench.speedup(results["original"], results["compressed"]),
        accuracy_metric=accuracy.metric, accuracy_samples=accuracy.samples, latency_ms=lat, measured_on=measured,
        measured_on_text=f"{measured['note']} Timed runs: {lat['original']['n']} original, "
                         f"{lat['compressed']['n']} compressed." + _rounds_note(rounds, paired) + _drift_note(results)
                         + _paired_note(bench.speedup(results["original"], results["compressed"]), paired)
                         + (_int8_note(lat) or _slower_note(lat, measured, _host_kernels(run.prof.runtime))),
        # every warning that applies, one per line (the first alone hid a lost neighbour behind a mean cosine's)
        accuracy_note="\n".join(note for note in (
            collapse_warning(deployed.parity, run.dataset.labels,
                             masks=run.dataset.y is not None and run.dataset.y.ndim == 3), chance_warning(accuracy, c, deployed.parity),
            same_vector_warning(deployed.parity), untrained_segmenter_warning(deployed.parity, run.dataset.labels),
            accuracy_warning(accuracy, run.prof.quantize.precision != "fp32", user_figures,
                             distilled=bool(c.distillation and c.distillation.steps)),
            neighbour_warning(deployed.parity), no_anchor_warning(deployed.parity)) if note) or None,
        user_figures=user_figures,
        rounds=rounds or None, speedup_per_round=paired, energy_reason=results["compressed"].get("energy_reason"),
        latency_budget=budget,
        distillation=_distillation(c.distillation), mask_iou=_mask_iou(deployed.parity))


def _mask_iou(parity) -> Optional[dict]:
    """The original's and the deployed model's mean IoU on the data's masks: what a segmenter's user judges by,
    in the table beside the pixel agreement with the original (a walkthrough's lost class read 93.58% agreement
    there while its IoU on the masks fell 0.988 -> 0.612)."""
    d = (parity.task_details or {}) if parity is not None and parity.task_metric == "pixel_agreement" else {}
    if d.get("mean_iou_labels") is None or d.get("original_mean_iou_labels") is None:
        return None
    return {"original": d["original_mean_iou_labels"], "deployed": d["mean_iou_labels"]}


def _distillation(d) -> Optional[dict]:
    """Steps over every pruning round, beside the seconds over them (a walkthrough's two rounds of 100 steps read
    'steps 100, seconds 44.0' against 17.7 + 26.3 s); the manifest keeps steps per round."""
    if d is None:
        return None
    rounds = max(1, len(getattr(d, "round_seconds", None) or []))
    return {"steps": d.steps * rounds, "rounds": rounds, "steps_per_round": d.steps, "seconds": d.seconds}


def accuracy(compressed, parity, held_y) -> Accuracy:
    """Top-1 accuracy on held-out labels; without labels, the deployed model's top-1 agreement with the
    original model (the teacher, unless --teacher named another), the same figure the parity check
    reports beside its agreement with the FP32 student (one computation, shown in both places)."""
    if parity.task_metric is not None:  # not a classifier: its own figure, against the original model
        from .verify import METRIC_TASKS, task_agreement

        threshold = (parity.task_details or {}).get("threshold", 0.5)  # a detector's confident anchors, as verify judged
        fp32 = task_agreement(METRIC_TASKS[parity.task_metric], compressed.reference, compressed.reference_original,
                              threshold)
        # the original against itself is 1, unless nothing was compared (a detector with no confident anchor)
        teacher = None if parity.original_task_agreement is None else 1.0
        return Accuracy(parity.task_metric, teacher=teacher, student=parity.original_task_agreement, student_fp32=fp32,
                        samples=parity.samples)
    original = compressed.reference_original[0]
    teacher_top1 = original.argmax(1)
    if held_y is not None:
        return Accuracy("accuracy", teacher=float((teacher_top1 == held_y).mean()), student=parity.accuracy,
                        student_fp32=parity.reference_accuracy, samples=parity.samples)
    fp32 = float((compressed.reference[0].argmax(1) == teacher_top1).mean())
    return Accuracy("agreement", teacher=1.0, student=parity.original_agreement, student_fp32=fp32,
                    samples=parity.samples, original_margin=median_margin(original))


def metric_words(metric: str) -> str:
    """The summary's accuracy row, in words: 'accuracy', 'agreement w/ original', or the task's figure."""
    from .verify import METRIC_WORDS

    return {"accuracy": "accuracy", "agreement": "agreement w/ original"}.get(metric, METRIC_WORDS.get(metric, metric))


def median_margin(logits) -> Optional[float]:
    """The median gap between the original's two most likely classes (softmax), which tells whether
    its top-1 means anything: a random-weight model's classes are near ties, so no student can agree."""
    import numpy as np

    if logits.ndim != 2 or logits.shape[1] < 2:
        return None
    z = logits.astype(np.float64) - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    top2 = np.sort(p, 1)[:, -2:]
    return float(np.median(top2[:, 1] - top2[:, 0]))


# `uname -m` / platform.machine() as the profiles name CPUs
ARCH_NAMES = {"aarch64": "arm64", "arm64": "arm64", "armv7l": "armv7", "armv7": "armv7", "x86_64": "x86_64",
              "amd64": "x86_64", "AMD64": "x86_64"}


def cpu_words(cpu: Optional[dict]) -> str:
    """", AMD EPYC with avx2, avx512bw, avx512_vnni": the CPU that timed the models and the INT8 features an
    INT8 speed-up depends on (VNNI on x86, the dot product on ARM); "" where the device did not say."""
    if not cpu or not cpu.get("model"):
        return ""
    features = cpu.get("int8_features") or []
    lacking = ""
    if {"avx2", "avx512bw"} & set(features) and not {"avx512_vnni", "avx_vnni"} & set(features):
        lacking = " (no VNNI)"
    elif {"sve", "i8mm"} & set(features) and "asimddp" not in features:
        lacking = " (no dot product)"
    return f", {cpu['model']} " + (f"with {', '.join(features)}{lacking}" if features
                                   else "without INT8 dot-product features")


def measured_on(results: dict, prof, device, stand_in: Optional[str] = None) -> dict:
    """Where the latency (and energy) figures come from, in words and in fields."""
    r = results["compressed"]
    state = r.get("device") or {}
    on_host = device is None or device.transport == "local"  # a local device is this host under a name
    fields = {"device_name": device.name if device else "this host", "where": "host" if on_host else "device",
              "arch": state.get("arch"), "runtime": state.get("runtime") or prof.runtime,
              "runtime_version": state.get("runtime_version"),
              "host": r.get("host"), "governor": state.get("governor"), "cpu": state.get("cpu"),
              "throttled": state.get("throttled"),
              "clocks_mhz_before": state.get("clocks_mhz_before"), "clocks_mhz_after": state.get("clocks_mhz_after"),
              "runs": {k: v["latency_ms"]["n"] for k, v in results.items()},
              "threads": (r.get("runtime_options") or {}).get("threads"),
              "inputs": {k: [{"name": i.get("name"), "shape": i.get("shape")} for i in v.get("inputs") or []] or None
                         for k, v in results.items()}}
    cpu = cpu_words(state.get("cpu"))
    if device and on_host:
        fields["note"] = (f"Measured on this host as device {device.name} ({r.get('host')}, {state.get('arch')}{cpu}, "
                          f"{prof.runtime} {state.get('runtime_version')}), not on a {prof.name} board unless this "
                          "host is one.")
    elif device:
        fields["note"] = (f"Measured on device {device.name} ({r.get('host')}, {state.get('arch')}{cpu}, "
                          f"{prof.runtime} {state.get('runtime_version')}).")
        arch = ARCH_NAMES.get(state.get("arch") or "", state.get("arch"))
        if arch and arch != prof.device.arch:
            fields["note"] += (f" Its CPU is {state.get('arch')}, not the {prof.device.arch} a {prof.name} has: these "
                               f"figures are that machine's, not a {prof.name}'s.")
    else:
        fields["note"] = (f"Measured on the build host ({r.get('host')}, {state.get('arch')}{cpu}), not on the "
                          f"{prof.name} target: run with --device to measure on the device.")
    if stand_in:
        fields["proxy"] = True
        fields["note"] += f" {stand_in}"
    return fields


BOX_RECALL_TRUSTED = 0.95  # a detector whose decoded boxes match the original's this well kept its answer


def _mend_segmenter(masks: bool) -> str:
    return ("distill longer (--set distill.steps=N), " + ("" if masks else "with masks in the data (y) if you have "
            "them, ") + "or prune less (--set prune.ratio=R)")


def collapse_warning(parity, names: Optional[List[str]] = None, masks: bool = False) -> Optional[str]:
    """A segmenter that answers one class for every pixel while the original used several, or that never gives
    one of the original's classes: its pixel agreement is the other classes' share, which reads well (93.6% with
    one class of three lost); say what happened. names: the data's class names, in class order; masks: the data
    has masks (the advice to add them is then left out)."""
    d = (parity.task_details or {}) if parity is not None and parity.task_metric == "pixel_agreement" else {}
    mine, theirs, lost = d.get("classes_predicted"), d.get("original_classes_predicted"), d.get("classes_lost") or []
    if not theirs or theirs < 2 or not (mine == 1 or lost):
        return None
    if mine == 1:
        return (f"warning: the deployed model gives every pixel of the {parity.samples} held-out samples one class, "
                f"where the original uses {theirs}: its pixel agreement ({parity.original_task_agreement:.2%}) is the "
                f"share of that class's pixels, not a kept answer; {_mend_segmenter(masks)}")
    said = ", ".join(f"{_class_name(k['class'], names)} ({k['original_pixel_share']:.1%} of the original's pixels)"
                     for k in lost)
    return (f"warning: the deployed model never gives class{'es' if len(lost) > 1 else ''} {said} to any pixel of the "
            f"{parity.samples} held-out samples, which the original does: its pixel agreement "
            f"({parity.original_task_agreement:.2%}) hides {'them' if len(lost) > 1 else 'it'}; {_mend_segmenter(masks)}")


def untrained_segmenter_warning(parity, names: Optional[List[str]] = None) -> Optional[str]:
    """A segmenter whose original scores no better on the masks than calling every pixel their most common class:
    the agreement with it (and the IoU against it) says nothing of what compression kept (the README's own
    random-weight example: 0.0133 on the masks)."""
    d = (parity.task_details or {}) if parity is not None and parity.task_metric == "pixel_agreement" else {}
    mine, floor = d.get("original_mean_iou_labels"), d.get("majority_class_labels")
    if mine is None or not floor or mine > floor["mean_iou"]:
        return None
    return (f"warning: the original scores mean IoU {mine:.4f} on the masks of the {parity.samples} held-out samples, "
            f"no better than calling every pixel class {_class_name(floor['class'], names)} ({floor['mean_iou']:.4f}):"
            " the agreement with it says nothing of what compression kept. Deploy the trained model (--weights), "
            "with masks in its class order")


def _class_name(k: int, names: Optional[List[str]]) -> str:
    return f"{k} '{names[k]}'" if names and 0 <= k < len(names) else str(k)


def no_anchor_warning(parity) -> Optional[str]:
    """A detector whose original marks no anchor confident: the confident-anchor agreement compared nothing, and
    the table's 100% for the original is no answer kept (a walkthrough's untrained detector read as fine)."""
    from .task_metrics import MIN_CONFIDENT_ANCHORS

    d = (parity.task_details or {}) if parity is not None and parity.task_metric == "confident_agreement" else {}
    count = d.get("original_confident_anchors")
    if count is None or count >= MIN_CONFIDENT_ANCHORS:
        return None
    best, threshold = d.get("original_max_score"), d.get("threshold", 0.5)
    if count:
        return (f"warning: the original marks only {count} anchor{'s' if count > 1 else ''} confident on the "
                f"{parity.samples} held-out samples (score above verify.score_threshold {threshold:g}), fewer than "
                f"{MIN_CONFIDENT_ANCHORS}: too few to judge, so no agreement was checked; the raw outputs' PSNR is in "
                "the verify lines. Check on more samples (--set verify.samples=N with more data), train the model "
                "further, or give --postprocess file.py:decode for box-level parity")
    highest = f" (its highest score {best:.4g})" if best is not None else ""
    lower = (f"; only if scores that low are detections for your model, a threshold under {best:.3g} (--set "
             f"verify.score_threshold={_below(best)})" if best else "")
    return (f"warning: the original marks no anchor confident on the {parity.samples} held-out samples{highest}, "
            f"none above verify.score_threshold {threshold:g}, so no detection was compared: only the raw outputs "
            f"were (their PSNR is in the verify lines). An untrained head answers so: give the trained weights "
            f"(--weights){lower}; or --postprocess file.py:decode for box-level parity")


def _below(score: float) -> str:
    """A round threshold under `score` (0.0123 -> 0.01)."""
    import math

    step = 10 ** math.floor(math.log10(score))
    value = math.floor(score / step) * step
    value = value if value < score else value - step
    return f"{value:.10g}" if value > 0 else f"{score / 2:.2g}"


def chance_warning(acc: Accuracy, compressed, parity) -> Optional[str]:
    """A classifier whose original is right no more often than chance on the held-out labels: its accuracy row
    (a walkthrough's untrained net: 10% -> 15%, '+5 points') says nothing of what compression kept; the agreement
    with the original does (6.25% there). The run warned before any work; the summary says it again."""
    reference = getattr(compressed, "reference_original", None)
    if acc.metric != "accuracy" or acc.teacher is None or not reference or reference[0].ndim != 2:
        return None
    classes = reference[0].shape[1]
    if classes < 2 or acc.teacher > 1.5 / classes:
        return None
    agreement = getattr(parity, "original_agreement", None)
    agree = f"; the deployed model agrees with it on {agreement:.2%} of them" if agreement is not None else ""
    return (f"warning: the original is right on {acc.teacher:.2%} of the {acc.samples} held-out samples, about chance "
            f"for {classes} classes{agree}: the accuracy row says nothing of what compression kept. Deploy the trained "
            "model (--weights), with the labels in its class order")


SAME_VECTOR_COSINE = 0.95  # an embedding whose vectors for different samples agree this well tells them apart poorly


def same_vector_warning(parity) -> Optional[str]:
    """An embedding net whose original gives nearly one vector for every sample (a walkthrough's random-weight
    embedder: mean cosine between different samples 0.998): the cosine figures against it read near 1 whatever
    compression did."""
    d = (parity.task_details or {}) if parity is not None and parity.task_metric == "cosine" else {}
    spread = d.get("original_pairwise_cosine")
    if spread is None or spread < SAME_VECTOR_COSINE:
        return None
    return (f"warning: the original gives nearly the same vector for every held-out sample (mean cosine between "
            f"different samples {spread:.4f}): the cosine figures against it say little of what compression kept. "
            "Deploy the trained model (--weights)")


NN_WARN = 0.9  # an embedding whose nearest neighbours moved for more than 1 sample in 10 is said


def neighbour_warning(parity) -> Optional[str]:
    """An embedding's mean cosine with the original can read 0.999 while the nearest neighbour of many
    samples changed, which is what retrieval and re-identification read: say so."""
    d = (parity.task_details or {}) if parity is not None and parity.task_metric == "cosine" else {}
    nn = d.get("original_nn_agreement")
    if nn is None or nn >= NN_WARN:
        return None
    return (f"warning: the nearest neighbour of {1 - nn:.0%} of the {parity.samples} held-out samples changed "
            f"against the original (nearest-neighbour agreement {nn:.2%}; mean cosine similarity "
            f"{parity.original_task_agreement:.4f}): for retrieval that is the figure to judge; near-duplicate samples "
            "flip easily, so check it on your gallery; prune less (--set prune.ratio=R), distill longer, or keep "
            "FP32 (--set quantize.precision=fp32) to move fewer")


def accuracy_warning(acc: Accuracy, quantized: bool, user_figures: Optional[dict] = None,
                     distilled: bool = True) -> Optional[str]:
    """The run passed its checks (the deployed model matches the student it came from), but the
    student may have learned too little, or quantization cost more than it should: say so, with the
    knob that helps. Which one, the FP32 student's accuracy tells (without it: the student's). A
    detector's raw-anchor figure moves when its boxes do not: where the user's decode function shows
    the boxes kept, that is said instead of a warning."""
    before, after = acc.teacher, acc.student
    if before is None or after is None or (before - after) * 100 <= WARN_DROP_POINTS:
        return None
    boxes = ((user_figures or {}).get("boxes") or {}).get("deployed") or {}
    if acc.metric == "confident_agreement" and (boxes.get("recall") or 0) >= BOX_RECALL_TRUSTED:
        return (f"note: {metric_words(acc.metric)} fell {(before - after) * 100:.2f} points, but the decoded boxes "
                f"match the original's at {boxes['recall']:.1%} recall, {boxes.get('precision', 0):.1%} precision "
                "(--postprocess): anchors near the threshold changed sides, the boxes did not")
    what = {"accuracy": "accuracy", "agreement": "agreement with the original"}.get(
        acc.metric, f"{metric_words(acc.metric)} with the original")
    fp32 = acc.student_fp32
    if quantized and fp32 is not None and (before - fp32) * 100 <= WARN_DROP_POINTS:
        remedy = ("quantization lost it (the FP32 student kept it): try more calibration samples "
                  "(--set quantize.calibration_samples=N), another calibration_method, or keep FP32 "
                  "(--set quantize.precision=fp32)")
    elif not distilled:
        remedy = ("pruning cost it and nothing taught it back (no distillation ran: distill.steps=0): distill "
                  "(--set distill.steps=N, say 1200) or prune less (--set prune.ratio=R)")
    else:
        remedy = ("the compressed model learned too little: distill longer (--set distill.steps=N) or prune less "
                  "(--set prune.ratio=R); the distillation loss curve in report.html shows whether the loss was "
                  "still falling")
    margin = acc.original_margin
    if margin is not None and margin < NEAR_TIE_MARGIN:
        remedy = (f"the original model's top-1 is a near tie (median gap between its two likeliest classes "
                  f"{margin:.2g}, as with random or untrained weights), so its classes say little and agreement "
                  f"with them is mostly chance: pass the trained weights (--weights), or data with labels")
    from .report import NOT_A_SHARE

    fell = (f"{before - after:.4f} ({before:.4f} -> {after:.4f})" if acc.metric in NOT_A_SHARE
            else f"{(before - after) * 100:.2f} points ({before:.2%} -> {after:.2%})")
    return f"warning: {what} fell {fell} on {acc.samples} held-out samples: {remedy}"


def _rounds_note(rounds: dict, paired: Optional[List[float]]) -> str:
    """Every round's p50, so the reader sees how far the rounds agreed, not only the median one."""
    if not rounds:
        return ""
    count = next(iter(rounds.values()))["count"]
    each = "; ".join(f"{k} " + " / ".join("-" if p is None else f"{p:.3g}" for p in r["p50_ms"])
                     for k, r in rounds.items())
    pairs = f"; speed-up per round: {' / '.join(f'{s:.2f}x' for s in paired)}" if paired else ""
    return (f" The models took turns in {count} rounds; each figure is its model's median round "
            f"(p50 per round, ms: {each}{pairs}).")


def _int8_note(lat: dict) -> str:
    """Where the FP32 student was timed too (ONNX Runtime) and ran clearly faster than the INT8 file:
    INT8 does not pay for this model on this CPU (a walkthrough's small embedder: 0.014 ms FP32
    against 0.026 ms INT8, shipped without a word)."""
    fp32, int8 = (lat.get("student_fp32") or {}).get("p50"), (lat.get("compressed") or {}).get("p50")
    if not fp32 or not int8 or fp32 > int8 * 0.9:
        return ""
    return (f"\nnote: the FP32 student ran faster here than the INT8 file ({fp32:.3g} against {int8:.3g} ms): INT8 "
            "does not pay for this model on this CPU; --set quantize.precision=fp32 ships the faster file "
            "(measure on the device before deciding: its INT8 kernels may differ)")


def _host_kernels(runtime: str) -> str:
    from . import backends  # the back ends import summary's wording helpers

    return backends.get(runtime).host_kernels


def _slower_note(lat: dict, measured: dict, kernels: str) -> str:
    """The deployed model timed slower than the original, said with where that was measured (a walkthrough's
    Android bundle: 0.017 -> 0.047 ms on the x86 build host, '2.77x slower' without a word). The FP32 student
    is offered only where it was timed faster than the original (a walkthrough's tiny MLP: it was slower still).
    `kernels`: the runtime's own words for why host timings differ (Backend.host_kernels)."""
    before, after = (lat.get("original") or {}).get("p50"), (lat.get("compressed") or {}).get("p50")
    if not before or not after or after <= before * 1.05:
        return ""
    fp32 = (lat.get("student_fp32") or {}).get("p50")
    ship_fp32 = ("" if fp32 and fp32 >= before else
                 ", or ship the FP32 student with --set quantize.precision=fp32")
    if measured.get("where") == "host":
        where = (f": timed on this host, not on the target, whose kernels differ ({kernels}); measure on the device "
                 f"with --device before deciding{ship_fp32}")
    else:
        where = ": on this device the compression does not pay in speed; " + (
            "--set quantize.precision=fp32, or a larger prune.ratio" if ship_fp32 else "a larger prune.ratio")
    if fp32 and fp32 >= before:
        where += f" (the FP32 student was slower still: {fp32:.3g} ms; the model may be too small to gain)"
    return f"\nnote: the deployed model ran slower than the original ({after:.3g} against {before:.3g} ms){where}"


def _paired_note(headline: Optional[float], paired: Optional[List[float]]) -> str:
    """The headline speed-up divides each model's median round, which may come from different rounds; where the
    rounds' own ratios (the pairs that ran side by side) disagree with it, say so (a walkthrough: 1.16x headline
    beside 0.76x / 0.73x / 1.16x per round)."""
    if not headline or not paired or len(paired) < 2:
        return ""
    import statistics

    mid = statistics.median(paired)
    if abs(headline - mid) <= 0.1 * mid:
        return ""
    slower = sum(1 for s in paired if s < 1)
    also = f"; in {slower} of {len(paired)} rounds the deployed model was the slower" if slower and headline >= 1 else ""
    return (f"\nwarning: round by round the speed-up was {min(paired):.2f}x to {max(paired):.2f}x (median "
            f"{mid:.2f}x), not the {headline:.2f}x of the two median rounds{also}: the load changed between rounds; "
            "run bench again on a quiet device")


def _drift_note(results: dict) -> str:
    """A warning line when the p50 moved within a timed window, or between the rounds: the speed-up is
    then no more exact than that."""
    note = ""
    for key, what, modes in (("stability", "the p50 drifted within the timed window", " (or the latency has two modes)"),
                             ("rounds", f"the rounds' p50s spread by more than {bench.NOISY_SPREAD_PCT:.0f}%", "")):
        spreads = {k: (v.get(key) or {}).get("spread_pct") for k, v in results.items()}
        noisy = {k: s for k, s in spreads.items() if s is not None and s > bench.NOISY_SPREAD_PCT}
        if noisy:
            parts = ", ".join(f"{k} {s:.0f}%" for k, s in noisy.items())
            note += (f"\nwarning: {what} ({parts}): the machine was busy or throttling{modes}, so these latencies "
                     "will not repeat to better than that; run bench again on a quiet device")
    return note


def _deflated_bytes(path: Path) -> int:
    """The model's size once zipped: where unstructured pruning's zeros pay off."""
    import zlib

    return len(zlib.compress(path.read_bytes(), 9))
