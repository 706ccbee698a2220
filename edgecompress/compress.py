"""Compression: the user's model pruned in rounds with the distillation budget shared between them
(masks, Taylor gradients, network slimming), every round checkpointed so --resume goes on where an
interrupted run stopped; an .onnx input is taken as it is. Returns the Compressed record with the
references every conversion is checked against."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Optional

from . import distill, distributed, export, models, prune, qat, verify
from .checkpoint import left_whole_of
from .console import log
from .errors import InputError
from .records import Compressed, Distillation, Pruning


def run(inputs, resume: bool, latency_budget: Optional[dict] = None) -> Compressed:
    """The compressed model for `inputs` (records.Inputs); an .onnx input is not compressed.
    `latency_budget`: what budget.fit found, recorded with the pruning."""
    if inputs.source.kind == "onnx":
        return from_onnx(inputs)
    return compress_torch(inputs, resume, latency_budget)


def compress_torch(inputs, resume: bool, latency_budget: Optional[dict] = None) -> Compressed:
    import torch

    source, prof, train, held = inputs.source, inputs.prof, inputs.train, inputs.held
    teacher = inputs.teacher.eval()
    example = torch.from_numpy(train.x[:1])
    student = copy.deepcopy(source.module).eval()
    macs_before, params_before = prune.count(student, example)
    pruning, report = prune_and_distill_(student, teacher, prof, train, example, inputs.work, source, resume,
                                         inputs.task, held=held)
    macs_after, params_after = prune.count(student, example)
    distillation = _distillation(report, prof.distill, teacher=inputs.teacher_spec or "the unpruned model",
                                 teacher_params=prune.count(teacher, example)[1])
    pruning = Pruning(**pruning, params_before=params_before, params_after=params_after, macs_before=macs_before,
                      macs_after=macs_after, nonzero_params_after=prune.count_nonzero(student),
                      latency_budget=latency_budget)
    return Compressed(student=student, original=source.module, example=example,
                      reference=verify.torch_outputs(student, held.x),
                      reference_original=verify.torch_outputs(source.module, held.x),
                      output_names=export.names_of_outputs(student, example), pruning=pruning,
                      distillation=distillation)


def from_onnx(inputs) -> Compressed:
    """An .onnx model: no pruning or distillation; the reference is the model itself on ORT FP32."""
    original = models.write_single_file(inputs.source.onnx_path, inputs.work / "original.onnx")
    names = [o["name"] for o in export.io_spec(original)["outputs"]]
    ref = verify.onnx_outputs(original, inputs.held.x)
    from .backends import onnx_files

    stored = onnx_files.parameters(original)  # the file's weight values: the table's params, unchanged by INT8
    return Compressed(student=None, original=None, example=None, reference=ref, reference_original=ref,
                      output_names=names, pruning=Pruning(structure="none", ratio=0.0, params_before=stored,
                                                          params_after=stored),
                      distillation=Distillation(steps=0, seconds=0.0, final_loss=None, note="ONNX input: not distilled"),
                      onnx_file=original)


def prune_and_distill_(student, teacher, prof, train, example, work: Path, source, resume_run: bool,
                       task=None, held=None) -> tuple:
    """Prune in `iterative_steps` rounds with an equal share of the distillation budget after each;
    every round checkpoints, so --resume continues where an interrupted run stopped. quantize.method qat or
    auto keeps the last qat_fraction of the budget for qat.finish_ (round iterative_steps + 1; `held`: the
    held-out data auto judges PTQ's parity on)."""
    p, d = prof.prune, prof.distill
    ckpt_path = work / "checkpoint.pt"
    meta = {"model_sha256": source.sha256, "profile_sha256": _profile_hash(prof), "data_sha256": _data_hash(train),
            "profile_settings": _trained_by(prof)}  # not compared: it names what changed where the hash differs
    resume = _resumed(ckpt_path, meta, student) if resume_run else None
    rounds = p.iterative_steps if p.structure == "channel" else 1
    qat_steps, qat_seconds = qat.budget_share(prof) if held is not None else (0, 0.0)
    steps = None if d.steps is None else (d.steps - (qat_steps or 0)) // rounds
    seconds = None if d.minutes is None else (d.minutes * 60 - (qat_seconds or 0)) / rounds
    ignore = prune.ignored_modules(student, p, example) if p.structure != "none" else []  # every output's head
    left_whole = left_whole_of(resume)  # the rounds the checkpoint has done pruned (and left whole) already
    masks = None
    if p.structure in ("unstructured", "2:4"):
        masks = (prune.magnitude_masks(student, p.ratio, ignore) if p.structure == "unstructured"
                 else prune.two_four_masks(student, ignore))
        masks = _masks_after_resume(student, masks) if resume else masks
    regularize = None
    if p.importance == "bn_scale" and p.structure == "channel" and p.sparsity_training.steps:
        regularize = prune.slimming_regularizer(student, p.sparsity_training.reg)
    report_d, curve = None, []
    round_seconds = list((resume or {}).get("round_seconds", []))  # the finished rounds' (kept in checkpoints)
    first_round = 0 if regularize else 1
    for rnd in range(first_round, rounds + 1):
        state = resume if resume and resume["round"] == rnd else None
        if resume and resume["round"] > rnd:
            continue
        if rnd == 0:  # network slimming: L1 on BN scales first, so bn_scale ranks channels well
            curve = distill.distill_(student, teacher, train, d, steps=p.sparsity_training.steps, seconds=None,
                                     checkpoint=ckpt_path, meta=dict(meta, round=0), resume=state,
                                     regularize=regularize, label="slimming", task=task).loss_curve
            continue
        if state is None:
            left_whole += _prune_round_everywhere_(student, teacher, prof, train, example, rnd, masks)
        if d.steps == 0:
            log(f"distill {rnd}/{rounds}: skipped (distill.steps=0): the pruned model is not trained again")
            continue
        report_d = distill.distill_(student, teacher, train, d, steps=steps, seconds=seconds, checkpoint=ckpt_path,
                                    meta=dict(meta, round=rnd, left_whole=sorted(set(left_whole)),
                                              round_seconds=list(round_seconds)), resume=state,
                                    after_step=(lambda: prune.apply_masks_(student, masks)) if masks else None,
                                    label=f"distill {rnd}/{rounds}", curve=curve, task=task)
        curve = report_d.loss_curve
        round_seconds.append(round(report_d.seconds, 2))
        # resumed: the figures count the interrupted run's steps and seconds too, which is said
        since = f" (with the interrupted run's {state['step']}, resumed at it)" if state and state.get("step") else ""
        log(f"distill {rnd}/{rounds}: {report_d.steps} steps in {report_d.seconds:.1f} s{since}, "
            f"loss {report_d.final_loss if report_d.final_loss is None else round(report_d.final_loss, 4)} "
            f"({' + '.join(report_d.losses)}{', label-free' if report_d.label_free else ''})")
    if held is not None and d.steps != 0:  # the QAT part (quantize.method), after the last round
        state = resume if resume and resume["round"] == rounds + 1 else None
        qat.finish_(student, teacher, train, held, prof, checkpoint=ckpt_path, resume=state, curve=curve, task=task,
                    meta=dict(meta, round=rounds + 1, left_whole=sorted(set(left_whole)),
                              round_seconds=list(round_seconds)))
    pruning = {"structure": p.structure, "ratio": {"none": 0.0, "2:4": 0.5}.get(p.structure, p.ratio),
               "masked_layers": sorted(masks) if masks else [],
               "round_to": p.round_to, "importance": p.importance, "iterative_steps": rounds, "ignored_layers": ignore,
               "left_whole": sorted(set(left_whole))}
    return pruning, _all_rounds(report_d, round_seconds)


def _all_rounds(report_d, round_seconds: list):
    """The last round's report with the seconds of every round (a walkthrough's manifest gave the last of two
    rounds, 0.8 s of 21.3), and steps/s and images/s over all of them."""
    if report_d is None or len(round_seconds) < 2:
        return report_d
    total = float(sum(round_seconds))
    training = dict(report_d.training or {})
    if training.get("steps_per_s") and total > 0:
        per_image = (training.get("images_per_s") or 0) / training["steps_per_s"]
        training["steps_per_s"] = round(report_d.steps * len(round_seconds) / total, 2)
        training["images_per_s"] = round(training["steps_per_s"] * per_image, 1) if per_image else None
    return dataclasses.replace(report_d, seconds=round(total, 2), training=training or report_d.training,
                               round_seconds=list(round_seconds))


def _resumed(path: Path, meta: dict, student) -> Optional[dict]:
    """The checkpoint to continue from; under torchrun rank 0 reads it and sends it to the others (on another
    machine the file is not there), and every rank's student takes its structure and weights."""
    world = distributed.current()
    if not world.distributed:
        return _load_checkpoint(path, meta, student)
    state = distributed.broadcast(_load_checkpoint(path, meta, student) if world.main else None)
    if state is not None and not world.main:
        distill.restore_(student, state)
    return state


def _prune_round_everywhere_(student, teacher, prof, train, example, rnd: int, masks) -> list:
    """One pruning round; under torchrun decided on rank 0, whose pruned structure and weights every other
    rank then takes, so all of them train the same student."""
    world = distributed.current()
    left = _prune_round_(student, teacher, prof, train, example, rnd, masks) if world.main else None
    if world.distributed:
        shared = distributed.broadcast({"state": distill.checkpoint_state(student), "left": left} if world.main else None)
        if not world.main:
            distill.restore_(student, shared["state"])
            left = shared["left"]
    return left


def _prune_round_(student, teacher, prof, train, example, rnd: int, masks) -> list:
    """One round's pruning, in place; the layers it left whole (pruning them broke the model)."""
    p, left = prof.prune, []
    if p.structure == "channel":
        left = prune.prune_channels_(student, p, example, step=rnd, grad_fn=_taylor_grads(teacher, train, prof.distill))
    elif p.structure in ("unstructured", "2:4"):
        prune.apply_masks_(student, masks)
    if p.structure != "none":
        macs, params = prune.count(student, example)
        log(f"prune {rnd}/{p.iterative_steps if p.structure == 'channel' else 1} ({p.structure}, {p.importance}): "
            f"{params:,} params, {macs:,} MACs, {prune.count_nonzero(student):,} non-zero")
    return left


def _taylor_grads(teacher, train, d):
    """Gradients for Taylor importance: the loss against labels, or against the teacher's top-1."""
    def fill(model):
        import torch
        import torch.nn.functional as F

        from . import outputs

        x = torch.from_numpy(train.x[: min(len(train), 4 * d.batch_size)])
        out = outputs.flatten(model(x))
        if out[0].dim() != 2 or (train.y is not None and train.y.ndim != 1):
            # not a classifier: how far the outputs move from the teacher's ranks the channels
            with torch.no_grad():
                target = outputs.flatten(teacher(x))
            sum(F.mse_loss(o, t) + o.pow(2).mean() * 1e-3 for o, t in zip(out, target)).backward()
            return
        target = torch.from_numpy(train.y[: len(x)]) if train.y is not None else outputs.flatten(teacher(x))[0].argmax(1).detach()
        F.cross_entropy(out[0], target).backward()
    return fill


def _masks_after_resume(student, masks: dict) -> dict:
    """The checkpoint's weights already carry the masks' zeros: the same layers' masks, rebuilt from
    those zeros (ranking the trained weights afresh could pick others). Only the layers the profile
    masks: the classifier and the depthwise convolutions stay dense (2:4 checks every masked one)."""
    modules = dict(student.named_modules())
    return {name: modules[name].weight.detach() != 0 for name in masks}


def _data_hash(train) -> str:
    """The training split's fingerprint: another data set, or the same images at another size
    (--input-shape), must not continue a checkpoint trained on this one. Hashed in place (a
    memoryview, not a copy: the split can be most of the memory a run uses; memory-mapped rows a chunk at a
    time, the same bytes in the same order, so the same digest)."""
    import numpy as np

    from . import rows

    digest = hashlib.sha256(f"{train.x.shape} {train.x.dtype}".encode())
    for part in rows.chunks(train.x):
        digest.update(memoryview(np.ascontiguousarray(part)).cast("B"))
    if train.y is not None:
        digest.update(memoryview(np.ascontiguousarray(train.y)).cast("B"))
    return digest.hexdigest()


def _trained_by(prof) -> dict:
    """The settings a checkpoint's student depends on: how it was pruned and distilled. The later
    stages' (quantize, export, verify, bench) may change on --resume, so a run that failed a check
    after distillation continues with a loosened check instead of distilling again."""
    trained_by = prof.model_dump(mode="json", include={"prune", "distill"})
    for where in ("device", "precision", "workers"):  # how and where it trains: a run stopped on a GPU may go on here
        trained_by["distill"].pop(where, None)
    if prof.quantize.method != "ptq":  # QAT takes its share of the budget and trains with fake quantization
        trained_by["qat"] = [prof.quantize.method, prof.quantize.qat_fraction]
    return trained_by


def _profile_hash(prof) -> str:
    return hashlib.sha256(json.dumps(_trained_by(prof), sort_keys=True).encode()).hexdigest()


def _changed_settings(before: Optional[dict], now: dict) -> dict:
    """{'distill.steps': (1200, 500)} for each setting that differs, (the checkpoint's, this run's); a checkpoint
    older than this record: {}."""
    if not isinstance(before, dict):
        return {}

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    old, new = flat(before), flat(now)
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _load_checkpoint(path: Path, meta: dict, student) -> Optional[dict]:
    """The checkpoint (tensors and plain data: a planted file is refused, never run), checked against
    this run; the student, a fresh copy of the user's unpruned model, takes its pruned structure."""
    if not path.is_file():
        log(f"--resume: no checkpoint at {path}; starting from the beginning")
        return None
    state = distill.load_checkpoint(path)
    for key, value in meta.items():
        if key != "profile_settings" and state.get(key) != value:
            what = {"model": "another model (or other weights)", "profile": "other prune or distill settings",
                    "data": "other data (or another --input-shape)"}[key.split("_")[0]]
            changed = _changed_settings(state.get("profile_settings"), meta.get("profile_settings") or {})
            same = ""
            if key == "profile_sha256" and changed:  # a walkthrough shortened distill.steps and was told no key
                what += " (" + ", ".join(f"{k} {a} there, {b} now" for k, (a, b) in changed.items()) + ")"
                same = " (" + " ".join(f"--set {k}={a}" for k, (a, b) in changed.items() if a is not None) + ")"
            raise InputError(f"--resume: the checkpoint {path} was made with {what}",
                             hint=f"pass the same model, data and settings as the interrupted run{same}, or run with "
                                  "--force instead of --resume to start over")
    try:
        distill.restore_(student, state)
    except InputError as exc:
        raise InputError(f"--resume: {path}: {exc.message}", hint=exc.hint) from None
    log(f"--resume: continuing round {state['round']} at step {state['step']} from {path}")
    return state


def _distillation(r, d, **teacher) -> Distillation:
    if r is None:
        return Distillation(steps=0, seconds=0.0, temperature=d.temperature, alpha=d.alpha, losses=list(d.losses or []),
                            final_loss=None, **teacher)
    return Distillation(steps=r.steps, seconds=r.seconds, temperature=r.temperature, alpha=r.alpha, losses=r.losses,
                        final_loss=r.final_loss, label_free=r.label_free, loss_curve=r.loss_curve,
                        training=r.training, round_seconds=r.round_seconds, **teacher)
