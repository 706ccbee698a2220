"""Knowledge distillation: the teacher (the unpruned model, or a larger one the user names)
teaches the pruned student. Losses by name from the profile; a budget in steps and/or minutes;
checkpoints so an interrupted run continues with --resume."""
from __future__ import annotations

import contextlib
import functools
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from . import accel, console, distributed
from . import rows as rows_mod
from .console import log
from .errors import EdgeCompressError, ProfileError
from .losses import LABEL_LOSSES, LOSSES, TEMPERATURE_LOSSES, Batch, combine
from .registry import closest
# re-exported: pipeline, compress and tests use distill.<name>
from .checkpoint import CHECKPOINT_FORMAT, checkpoint_state, load_checkpoint, restore_, save_checkpoint  # noqa: F401
from .progress import _LogProgress, _progress  # noqa: F401

SEED = 0
CURVE_POINTS = 50  # about this many loss points per round: enough to see whether it levelled off


def curve_every(steps: Optional[int]) -> int:
    """Steps per loss point; a budget in minutes starts at every step and is thinned as it goes."""
    return max(1, steps // CURVE_POINTS) if steps else 1


def thinned(curve: List[list], rnd: int) -> List[list]:
    """Round `rnd`'s points merged in pairs (the later step, the mean loss): a budget in minutes has no
    step count to space the points by, so they are thinned as they come, about 2 x CURVE_POINTS."""
    mine = [p for p in curve if p[0] == rnd]
    merged = [[rnd, b[1], round((a[2] + b[2]) / 2, 6)] for a, b in zip(mine[::2], mine[1::2])]
    return [p for p in curve if p[0] != rnd] + merged + mine[len(merged) * 2:]


class Interrupted(EdgeCompressError):
    exit_code = 130


class Terminated(Interrupted):
    """Stopped by SIGTERM (timeout, CI, docker stop): 128 + 15, as a shell reports a terminated process."""
    exit_code = 143


@dataclass
class DistillReport:
    steps: int
    seconds: float
    temperature: float
    alpha: float
    losses: List[str]
    final_loss: Optional[float]
    label_free: bool
    loss_curve: List[list]  # [round, step, mean loss over the steps since the previous point]
    training: Optional[dict] = None  # where and how it trained: device, precision, world size, steps/s, images/s
    round_seconds: Optional[List[float]] = None  # each pruning round's seconds, where there were several


class FeatureTap:
    """Captures named layers' outputs in student and teacher; a learned 1x1 projection maps the
    student's width onto the teacher's where pruning made them differ."""

    def __init__(self, student, teacher, pairs, example, projections=None):
        """example: two samples that size the projections; None with `projections` given (a tap moved to the
        training's copy of the teacher keeps its projections)."""
        import torch

        self.pairs = [tuple(p) for p in pairs]
        self.out: Dict[str, object] = {}
        self.hooks = []
        for role, model in (("s", student), ("t", teacher)):
            modules = dict(model.named_modules())
            for pair in self.pairs:
                name = pair[0] if role == "s" else pair[1]
                if name not in modules:
                    which = "student" if role == "s" else "teacher"
                    raise ProfileError(f"distill.feature_layers names {which} layer '{name}', which does not exist."
                                       f"{closest(name, modules)}")
                self.hooks.append(modules[name].register_forward_hook(self._keep(f"{role}:{name}")))
        if projections is not None:
            self.proj = projections
            return
        with torch.no_grad():
            student.eval()(example), teacher(example)
        self.proj = torch.nn.ModuleList(self._projection(s, t) for s, t in self.pairs)

    def _keep(self, key):
        def hook(module, inputs, output):
            self.out[key] = output
        return hook

    def _projection(self, s_name, t_name):
        import torch.nn as nn

        s, t = self.out[f"s:{s_name}"], self.out[f"t:{t_name}"]
        if s.shape[1] == t.shape[1]:
            return nn.Identity()
        return nn.Conv2d(s.shape[1], t.shape[1], 1) if s.dim() == 4 else nn.Linear(s.shape[1], t.shape[1])

    def features(self):
        return [(p(self.out[f"s:{s}"]), self.out[f"t:{t}"]) for p, (s, t) in zip(self.proj, self.pairs)]

    def close(self):
        for h in self.hooks:
            h.remove()


def batch_indices(n: int, batch_size: int, step: int) -> np.ndarray:
    """Step-seeded sampling: a resumed run draws exactly the batches the interrupted one would have."""
    return np.random.default_rng(SEED + step).choice(n, size=min(batch_size, n), replace=False)


def check_data(cfg, x: np.ndarray) -> None:
    """Settings that depend on the data, refused before any work starts."""
    if cfg.augment and x.ndim < 4:
        raise ProfileError(f"distill.augment {cfg.augment} flips and crops images (N, C, H, W), and the data is "
                           f"{tuple(x.shape)}", hint="set distill.augment=[] for data that is not images")
    if not cfg.shift_pixels:
        return
    if x.ndim < 4:
        raise ProfileError(f"distill.shift_pixels shifts images (N, C, H, W), and the data is {tuple(x.shape)}",
                           hint="set distill.shift_pixels=0 for data that is not images")
    if cfg.shift_pixels >= min(x.shape[-2:]):
        raise ProfileError(f"distill.shift_pixels={cfg.shift_pixels} would shift the {x.shape[-2]}x{x.shape[-1]} "
                           "images out of the frame", hint=f"use at most {min(x.shape[-2:]) - 1}, a few percent of "
                                                           "the image size is usual")


def shifted(x, step: int, pixels: int):
    """Each image of the batch moved by its own random offset of up to `pixels` along the last two
    axes (height, width), zeros filling in; seeded by the step, so a resumed run sees the shifts
    the interrupted one would have."""
    import torch

    if not pixels:
        return x
    offsets = np.random.default_rng([SEED, step, 1]).integers(-pixels, pixels + 1, (len(x), 2))
    padded = torch.nn.functional.pad(x, (pixels, pixels, pixels, pixels))
    h, w = x.shape[-2], x.shape[-1]
    out = torch.empty_like(x)
    for dy, dx in {tuple(o) for o in offsets.tolist()}:  # one slice per distinct offset
        rows = torch.from_numpy(np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx)))
        out[rows] = padded[rows, ..., pixels - dy:pixels - dy + h, pixels - dx:pixels - dx + w]
    return out


def augmented(x, y, step: int, kinds):
    """(x, y) with distill.augment's flips and crops, a function of the step (a resumed run sees the views the
    interrupted one would have). The same x goes to teacher and student; y changes only where it is a mask
    (N, H, W): class labels and label-free batches pass through."""
    import torch
    import torch.nn.functional as F

    if not kinds or x.dim() != 4:
        return x, y
    rng = np.random.default_rng([SEED, step, 2])
    masks = y is not None and y.dim() == 3
    if "flip" in kinds:
        flip = torch.from_numpy(np.flatnonzero(rng.random(len(x)) < 0.5))
        x = x.clone()
        x[flip] = x[flip].flip(-1)
        if masks:
            y = y.clone()
            y[flip] = y[flip].flip(-1)
    if "crop" in kinds:
        h, w = x.shape[-2:]
        xs, ys = [], []
        for i in range(len(x)):
            area, ratio = rng.uniform(0.6, 1.0), np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            ch = max(1, min(h, int(round(h * np.sqrt(area / ratio)))))
            cw = max(1, min(w, int(round(w * np.sqrt(area * ratio)))))
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            xs.append(F.interpolate(x[i:i + 1, :, top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                                    align_corners=False))
            if masks:
                part = y[i:i + 1, top:top + ch, left:left + cw][:, None].float()
                ys.append(F.interpolate(part, size=(h, w), mode="nearest")[:, 0].to(y.dtype))
        x = torch.cat(xs)
        y = torch.cat(ys) if masks else y
    return x, y


def cosine_lr(lr: float, step: int, steps: Optional[int], elapsed_s: float, seconds: Optional[float]) -> float:
    """Cosine decay over the budget (steps, or time when only minutes are given). A function of
    progress alone, so a resumed run continues on the same curve with no scheduler state."""
    fractions = [f for f in ((step / steps) if steps else None, (elapsed_s / seconds) if seconds else None)
                 if f is not None]
    progress = min(1.0, max(fractions)) if fractions else 0.0
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def _seeded(fn):
    """Distillation's own randomness (dropout, a projection's initial weights) comes from torch's
    generator seeded here and at every step, so the same command trains the same student on the
    same machine and a resumed run goes on as the uninterrupted one would have; the caller's random
    state is left as it was."""
    @functools.wraps(fn)
    def seeded(*args, **kwargs):
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            return fn(*args, **kwargs)
    return seeded


def step_seed(rnd: int, step: int) -> int:
    """Torch's seed for a step: its own in every round, and the same when a resumed run gets there."""
    return SEED + 1_000_003 * rnd + step


@_seeded
def distill_(student, teacher, train, cfg, *, steps: Optional[int], seconds: Optional[float],
             checkpoint: Path, meta: dict, resume: Optional[dict] = None,
             regularize: Optional[Callable[[], None]] = None, after_step: Optional[Callable[[], None]] = None,
             label: str = "distill", curve: Optional[List[list]] = None, task=None) -> DistillReport:
    """Train `student` in place for at most `steps` steps and/or `seconds` seconds. `curve`: the loss
    points of earlier rounds, continued here (a checkpoint carries them, so --resume keeps them).
    task: tasks.Task (which outputs a detector's boxes and scores are; the default losses)."""
    import torch

    if cfg.losses is None:  # the task's own losses (a deploy resolves them in inputs; a direct call here)
        from . import tasks

        cfg = cfg.model_copy(update={"losses": tasks.losses_for(task or tasks.Task("classification", ""), None)})

    check_data(cfg, train.x)
    world = distributed.current()
    distributed.check_batch(cfg.batch_size, world)
    place = accel.resolve(distributed.device_for(cfg.device, world), cfg.precision)
    # x stays as it is (memory-mapped rows of a large .npz are read a batch at a time); y is small
    x, y = train.x, None if train.y is None else torch.from_numpy(train.y)
    tap = FeatureTap(student, teacher, cfg.feature_layers, torch.from_numpy(x[:2])) if "feature" in cfg.losses else None
    accel.place_student_(student, place)
    if tap:
        tap.proj.to(place.device)
    frozen = accel.training_teacher(teacher, place)
    if tap and frozen is not teacher:
        tap.close()  # the copy on the GPU is the one whose features count
        tap = FeatureTap(student, frozen, cfg.feature_layers, None, projections=tap.proj)
    params = list(student.parameters()) + (list(tap.proj.parameters()) if tap else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    run = _Progress(curve, steps, meta.get("round", 1), resume)
    if resume:
        opt.load_state_dict(resume["optimizer"])
        if tap and resume.get("projections"):
            tap.proj.load_state_dict(resume["projections"])
    student.train()
    model, step_ = distributed.wrap(student, world, place.device), _Stepper(place, tap, regularize)
    bar = _progress(label, steps, run.step, None if seconds is None else seconds - run.spent_s,
                    batch_size=cfg.batch_size, memory=lambda: accel.memory_text(place))
    t0, rnd, first = time.perf_counter() - run.spent_s, run.rnd, run.step
    if place.on_gpu or world.distributed or cfg.precision != "auto":
        log(f"{label}: training on {place.device_name} ({place.device}, {place.precision}"
            f"{f', {world.size} processes' if world.distributed else ''}): {place.reason}")
    used = used_losses(cfg.losses, y)
    log(f"{label}: {recipe_text(cfg, steps, seconds, used)}")

    def state():
        return dict(meta, **checkpoint_state(student), step=run.step, seconds=time.perf_counter() - t0,
                    optimizer=opt.state_dict(), recent_losses=run.recent[-20:], loss_curve=run.curve,
                    projections=tap.proj.state_dict() if tap else None)

    def rows_of(step):
        return distributed.local_rows(batch_indices(len(x), cfg.batch_size, step), world)

    with _stop_on_ctrl_c() as stop:
        try:
            last = steps if steps is not None else 2 ** 62  # a budget in minutes: until the time is up
            for step, idx, rows in rows_mod.batches(x, rows_of, run.step, last, cfg.workers,
                                                    pin_memory=place.kind == "cuda"):
                # every rank stops at the same step (time, Ctrl-C and SIGTERM reach the ranks at different steps)
                if seconds is not None and distributed.any_rank(time.perf_counter() - t0 >= seconds, world):
                    break
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(cfg.lr, run.step, steps, time.perf_counter() - t0, seconds)
                torch.manual_seed(step_seed(rnd, run.step))  # dropout's masks: a function of the step, as the batch
                xb = shifted(torch.as_tensor(rows).to(place.device, non_blocking=True), run.step, cfg.shift_pixels)
                yb = None if y is None else y[torch.as_tensor(idx)].to(place.device, non_blocking=True)
                xb, yb = augmented(xb, yb, run.step, cfg.augment)
                loss = step_(model, frozen, xb, yb, cfg, opt, (getattr(task, "boxes", None), getattr(task, "scores", None)))
                if after_step:
                    after_step()
                run.record(distributed.mean(loss, world))
                bar.set_postfix(loss=f"{np.mean(run.recent[-20:]):.4f}")  # before update: a log line shows this step's
                bar.update(1)
                if run.step % cfg.checkpoint_every == 0 and world.main:
                    save_checkpoint(checkpoint, state())
                    if not sys.stderr.isatty():
                        log(f"{label}: checkpoint at step {run.step} -> {checkpoint}")
                if distributed.any_rank(stop.requested, world):  # after the step whose batch the signal met
                    break
        finally:
            if tap:
                tap.close()
            distributed.unsync_batchnorm_(student)
            accel.back_to_cpu_(student, tap.proj if tap else None)
    trained_s = time.perf_counter() - t0  # the whole budget spent, this run's and an interrupted one's
    if stop.requested:
        if world.main:
            save_checkpoint(checkpoint, state())
        bar.close()
        raise (Terminated if stop.signal_name == "SIGTERM" else Interrupted)(
            f"interrupted by {stop.signal_name} at {label} step {run.step}; progress saved to {checkpoint}",
            hint="run the same command again with --resume to continue")
    bar.close()
    student.eval()
    if world.main:
        save_checkpoint(checkpoint, state())
    return DistillReport(run.step, round(trained_s, 2), cfg.temperature, cfg.alpha, used,
                         float(np.mean(run.recent[-20:])) if run.recent else None, y is None, run.curve,
                         _training_record(place, world, run.step - first, trained_s - run.spent_s, cfg.batch_size))


def used_losses(names, y) -> List[str]:
    """The losses that apply: the label losses need labels of their kind (ce: classes, pixel_ce: masks)."""
    return [name for name in names
            if not (name in ("ce", "pixel_ce") and (y is None or (y.dim() == 3) != (name == "pixel_ce")))]


def recipe_text(cfg, steps: Optional[int], seconds: Optional[float], used: List[str]) -> str:
    """The recipe in one line, so a log says what trained the student (the profile, the demo's defaults and
    --set all feed it)."""
    budget = " or ".join(b for b in (f"{steps} steps" if steps is not None else "",
                                     f"{seconds / 60:g} min" if seconds is not None else "") if b)
    views = ([f"shifts up to {cfg.shift_pixels} px"] if cfg.shift_pixels else []) + list(cfg.augment)
    label = [n for n in used if n in LABEL_LOSSES]
    knobs = ([f"T {cfg.temperature:g}"] if set(used) & TEMPERATURE_LOSSES else []) + \
        ([f"alpha {cfg.alpha:g}"] if label and [n for n in used if n not in LABEL_LOSSES and n != "feature"] else [])
    soft = f" ({', '.join(knobs)})" if knobs else ""
    return (f"{budget} x batch {cfg.batch_size}, lr {cfg.lr:g} (cosine decay), losses {' + '.join(used) or 'none'}{soft}, "
            f"views: {', '.join(views) or 'as given'}")


def _training_record(place, world, steps_here: int, seconds_here: float, batch_size: int) -> dict:
    """Where and how this distillation ran (the manifest's compression.distillation.training)."""
    rate = steps_here / seconds_here if steps_here and seconds_here > 0 else None
    return {"device": place.device, "device_name": place.device_name, "precision": place.precision,
            "world_size": world.size, "backend": world.backend, "why": place.reason,
            "steps_per_s": None if rate is None else round(rate, 2),
            "images_per_s": None if rate is None else round(rate * batch_size, 1)}


class _Progress:
    """Where a run stands: its step and the seconds spent (both from the checkpoint on --resume), the
    recent losses and the loss curve, thinned as it grows so that it keeps about CURVE_POINTS points."""

    def __init__(self, curve: Optional[List[list]], steps: Optional[int], rnd: int, resume: Optional[dict]):
        self.rnd, self.step, self.spent_s, self.recent = rnd, 0, 0.0, []
        self.curve, self.every = list(curve or []), curve_every(steps)
        if resume:
            self.step, self.spent_s, self.recent = resume["step"], resume["seconds"], resume["recent_losses"]
            self.curve = list(resume.get("loss_curve") or [])
            mine = [p[1] for p in self.curve if p[0] == rnd]
            self.every = mine[-1] - mine[-2] if len(mine) >= 2 else self.every  # as thinned before the interruption

    def record(self, loss: float) -> None:
        self.step += 1
        self.recent.append(loss)
        if self.step % self.every == 0:
            self.curve.append([self.rnd, self.step, round(float(np.mean(self.recent[-self.every:])), 6)])
            count = sum(p[0] == self.rnd for p in self.curve)  # at steps e, 2e, ... ne: pairs end on 2e's
            if count > 2 * CURVE_POINTS and count % 2 == 0:
                self.curve, self.every = thinned(self.curve, self.rnd), self.every * 2


class _Stop:
    requested = False
    signal_name = "Ctrl-C"


@contextlib.contextmanager
def _stop_on_ctrl_c():
    """The first Ctrl-C asks the loop to stop at the next step boundary, so the checkpoint holds
    whole steps only; a second one interrupts at once (the last periodic checkpoint stays). The
    CLI hands SIGTERM to whatever handles SIGINT, so it arrives here too, with its own number."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        stop.signal_name = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}.get(signum, f"signal {signum}")
        console.log(f"\n{stop.signal_name}: stopping after this step and saving a checkpoint (again to abort)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


class _Stepper:
    """One optimisation step on the resolved device and precision: the teacher's forward under no_grad, the
    student's under autocast (bf16/fp16), fp16's gradient scaler, and the feature projections' gradients
    averaged over torchrun's ranks (DDP averages the student's)."""

    def __init__(self, place, tap, regularize):
        self.place, self.tap, self.regularize = place, tap, regularize
        self.scaler = accel.grad_scaler(place)

    def __call__(self, model, teacher, xb, yb, cfg, opt, heads=(None, None)) -> float:
        import torch

        from . import outputs

        with torch.no_grad(), accel.autocast(self.place):
            t_out = outputs.flatten(teacher(xb))
        with accel.autocast(self.place):
            s_out = outputs.flatten(model(xb))
            batch = Batch(s_out, t_out, yb, cfg.temperature, self.tap.features() if self.tap else [], *heads)
            terms = {name: LOSSES.get(name)(batch) for name in cfg.losses}
            loss = combine(terms, cfg.alpha, cfg.feature_weight)
        if loss is None:
            raise ProfileError(f"distill.losses {cfg.losses} need labels, and the data has none",
                               hint="add 'soft' or 'hard' to distill.losses for label-free distillation")
        opt.zero_grad()
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.scaler:
            self.scaler.unscale_(opt)  # the regularizer and the projections' average see true gradients
        if self.tap:
            distributed.average_gradients_(self.tap.proj.parameters())
        if self.regularize:
            self.regularize()
        if self.scaler:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        return float(loss.detach())

