"""The deploy pipeline: the only module that calls every stage. Reads top to bottom:
load -> prune -> distill -> export -> quantize -> verify -> bench -> bundle."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from . import bench, bundle, data as data_mod, distill, export, inventory, models, profile as profile_mod, prune
from . import engine, outlock, quantize, verify
from .console import log
from .describe import bundle_files, bundle_texts, describe
from .errors import InputError, StageError


@dataclass
class DeployOptions:
    model: Optional[str] = None
    target: str = "host"
    data: Optional[str] = None
    weights: Optional[str] = None
    teacher: Optional[str] = None
    teacher_weights: Optional[str] = None
    input_shape: Optional[str] = None
    out: Path = Path("dist")
    overrides: List[str] = field(default_factory=list)
    device: Optional[str] = None
    resume: bool = False
    force: bool = False
    quiet: bool = False


def deploy(opts: DeployOptions) -> dict:
    t_start = time.perf_counter()
    prof, note = profile_mod.load(opts.target, opts.overrides)
    prof = with_demo_defaults(prof, opts)
    if note:
        log(note)
    bundle.check_destination(Path(opts.out), bundle.bundle_name(models.name_for(opts.model), prof.name), opts.force)
    device = inventory.get(opts.device) if opts.device else None
    if device is not None and device.target != prof.name:
        log(f"note: device {device.name} is listed with target {device.target}; this run uses profile {prof.name}")
    source, dataset, teacher = load_inputs(opts, prof)
    if source.kind == "onnx" and prof.runtime == "litert":
        raise InputError(f"the {prof.name} target converts from PyTorch, and {opts.model} is an ONNX file",
                         hint="pass the PyTorch model as file.py:factory (with --weights)")
    name = bundle.bundle_name(source.name, prof.name)  # = models.name_for(opts.model): checked at the start
    data_mod.require_samples(dataset, 2, "a training and a held-out split", "verify.held_out_fraction")
    if source.kind == "torch":  # whether the data fits the model is worth knowing before how much there is
        check_fit(source.module, dataset)
        distill.check_data(prof.distill, dataset.x)
        if teacher is not source.module:
            check_teacher(teacher, source.module, dataset, opts.teacher)
    train, held = data_mod.split(dataset, prof.verify.held_out_fraction)
    check_labels(source, train)
    if prof.quantize.precision == "int8" and len(train) < prof.quantize.calibration_samples:
        total = math.ceil(prof.quantize.calibration_samples / (1 - prof.verify.held_out_fraction))
        raise InputError(f"data {dataset.source} has {len(dataset)} samples; INT8 calibration takes "
                         f"{prof.quantize.calibration_samples} from the training split "
                         f"({1 - prof.verify.held_out_fraction:.0%} of the data, here {len(train)}), so it needs "
                         f"{total} samples in all", hint=f"give more data, or lower it with --set "
                                                         f"quantize.calibration_samples={len(train)}")
    held = held.subset(slice(0, prof.verify.samples))
    work = Path(opts.out) / f".{name}.work"
    # the run owns its work folder: a second run into OUT/<name> is refused before --force could delete it
    with outlock.held(Path(opts.out), name), bundle.disk_errors_named(Path(opts.out)):
        keep_interrupted_progress(work, opts)
        work.mkdir(parents=True, exist_ok=True)
        log(f"deploy {source.name} -> {prof.name}: {len(train)} training / {len(held)} held-out samples from "
            f"{dataset.source}")
        if Path(dataset.source).is_dir():  # an image folder: which size its images were given
            log(f"data: {dataset.preprocessing['note']}")

        with _progress_kept_on_failure(work):
            return compress_measure_bundle(opts, prof, source, teacher, dataset, train, held, work, device, name,
                                           t_start)


@contextlib.contextmanager
def _progress_kept_on_failure(work: Path):
    """A stage that fails after distillation (a check, the export, the benchmark) leaves the
    distilled student in the checkpoint: say how to go on from it instead of distilling again."""
    try:
        yield
    except StageError as exc:
        if (work / "checkpoint.pt").is_file():
            kept = (f"the distilled student is kept in {work}: the same command with --resume (changing only "
                    "quantize, export, verify or bench settings if you like) goes on from it without distilling again")
            exc.hint = f"{exc.hint}; {kept}" if exc.hint else kept
        raise
    except KeyboardInterrupt as exc:
        raise KeyboardInterrupt(_interrupted_note(work)) from exc


def _interrupted_note(work: Path) -> str:
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


def compress_measure_bundle(opts: DeployOptions, prof, source, teacher, dataset, train, held, work: Path, device,
                            name: str, t_start: float) -> dict:
    """Prune and distill (or take the .onnx as it is), convert for the runtime and check, measure both
    models, and publish the bundle."""
    if source.kind == "torch":
        budget = None
        if prof.prune.latency_budget_ms is not None:
            prof, budget = fit_latency_budget(source, prof, train, work, device, opts)
        stages = compress_torch(source, teacher, prof, train, held, work, opts)
        stages["pruning"]["latency_budget"] = budget
    else:
        if prof.prune.latency_budget_ms is not None:
            raise InputError(f"prune.latency_budget_ms prunes a PyTorch model, and {opts.model} is an ONNX file",
                             hint="pass the PyTorch model as file.py:factory, or drop the latency budget")
        stages = prepare_onnx(source, prof, held, work)
    deployed, parity, trt, to_measure = prepare_for_runtime(stages, prof, train, held, work, device)
    stages["parity"], stages["held_y"] = parity, held.y
    turns = (f"taking turns in {prof.bench.rounds} rounds, each model's median round reported"
             if prof.bench.rounds > 1 else "one after the other")
    log(f"bench: original and compressed model on {device.name if device else 'this host'}, {turns}")
    results = bench.measure(to_measure, bench.settings_here(prof.bench, device), prof.runtime, device=device,
                            quiet=opts.quiet, input_shape=(1, *dataset.x.shape[1:]))
    summary, manifest = describe(source, prof, dataset, stages, deployed, results, device, trt, work)
    if stages["pruning"].get("latency_budget"):
        summary["latency_budget"] = budget_outcome(stages["pruning"]["latency_budget"], results["compressed"])
        log(summary["latency_budget"]["note"])
    published = bundle.write(Path(opts.out), name, files=bundle_files(deployed, trt, work),
                             texts=bundle_texts(dataset, manifest, summary), manifest=manifest,
                             parity=stages["parity_arrays"], force=opts.force)
    shutil.rmtree(work, ignore_errors=True)  # the run finished: its checkpoint is no longer needed
    summary["after"]["zip_bytes"] = bundle.zip_bytes(published)
    summary.update(bundle=str(published), zip=str(bundle.zip_path(published)),
                   seconds=round(time.perf_counter() - t_start, 1))
    return summary


def keep_interrupted_progress(work: Path, opts: DeployOptions) -> None:
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


def with_demo_defaults(prof, opts: DeployOptions):
    """The demo's data are 8x8 digit scans and its teacher learned them shifted by up to a pixel
    (wrapping round; on the digits' blank borders the same as the zero fill used here): the student
    is taught on such shifts too, unless the profile file or --set names distill.shift_pixels."""
    if opts.model is not None or opts.data is not None or "shift_pixels" in prof.distill.model_fields_set:
        return prof
    return prof.model_copy(update={"distill": prof.distill.model_copy(update={"shift_pixels": 1})})


def prepare_for_runtime(stages: dict, prof, train, held, work: Path, device) -> tuple:
    """The deployed model for the target's runtime, its parity check, the TensorRT plan (or None)
    and what bench measures: {label: model file or bench.Model}."""
    if prof.runtime == "tensorrt":
        deployed, parity, trt = prepare_engine(stages, prof, train, held, work, device)
        return deployed, parity, trt, trt.models
    if prof.runtime == "litert":
        deployed, parity, original_tflite = prepare_tflite(stages, prof, train, held, work)
        # the GPU delegate exists on the phone; this host measures with XNNPACK as the stand-in
        options = {"threads": bench.settings_here(prof.bench, device, quiet=True).threads,
                   "delegate": prof.bench.delegate if device else "xnnpack"}
        return deployed, parity, None, {label: bench.Model(path, "litert", options)
                                        for label, path in (("original", original_tflite), ("compressed", deployed))}
    deployed, parity = quantize_and_check(stages, prof, train, held, work)
    return deployed, parity, None, {"original": stages["original_onnx"], "compressed": deployed}


def load_inputs(opts: DeployOptions, prof):
    shape = data_mod.parse_shape(opts.input_shape) if opts.input_shape else None
    if opts.model is None:
        from . import demo

        teacher, path = demo.teacher(prof.verify.held_out_fraction, log=log)
        source = models.ModelSource("demo", "torch", models.sha256_file(path), module=teacher)
        dataset = data_mod.load(opts.data, prof.preprocess, shape) if opts.data else demo.dataset()
    else:
        source = _seeded_load(opts.model, opts.weights)
        if not opts.data:
            raise InputError("--data is required with your own model (calibration, distillation and checks need "
                             "samples)", hint="pass an .npz with x (and y) or a folder of images in class sub-folders")
        dataset = data_mod.load(opts.data, prof.preprocess, shape)
    teacher = source.module
    if opts.teacher:
        teacher = _seeded_load(opts.teacher, opts.teacher_weights, role="--teacher").module
    elif opts.teacher_weights:
        raise InputError("--teacher-weights needs --teacher", hint="name the teacher with --teacher file.py:factory")
    return source, dataset, teacher


def _seeded_load(spec: str, weights: Optional[str], role: str = "model"):
    """The factory is called under a fixed seed: a model without --weights starts from the same
    random weights every run, so the same command distils the same student, and --resume goes on
    against the teacher the interrupted run had (the caller's random state is left as it was)."""
    if spec.endswith(".onnx"):
        return models.load(spec, weights, role=role)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return models.load(spec, weights, role=role)


def check_teacher(teacher, student, dataset, spec: str) -> None:
    import torch

    check_fit(teacher, dataset, f"the teacher ({spec})")
    example = torch.from_numpy(dataset.x[:2])
    with torch.no_grad():
        t_shape, s_shape = tuple(teacher.eval()(example).shape), tuple(student.eval()(example).shape)
    if t_shape != s_shape:
        raise InputError(f"--teacher {spec} outputs shape {t_shape[1:]} but the model outputs {s_shape[1:]}",
                         hint="the teacher must predict the same classes as the model")


def check_fit(model, dataset, role: str = "the model") -> None:
    """The data must fit the model, and labels its outputs, before any work starts."""
    import torch

    example = torch.from_numpy(dataset.x[:2])
    layer = prune.failing_layer(model.eval(), example)
    if layer is not None:
        raise InputError(f"data {dataset.source}: samples of shape {dataset.sample_shape} do not fit {role} "
                         f"(it fails in layer '{layer}')", hint="check the data's layout and --input-shape")
    with torch.no_grad():
        out = model(example)
    logits = out[0] if isinstance(out, (tuple, list)) else out
    if logits.dim() == 2:
        data_mod.check_label_names(dataset, logits.shape[1], role)
    if dataset.y is not None and logits.dim() == 2 and int(dataset.y.max()) >= logits.shape[1]:
        raise InputError(f"data {dataset.source}: 'y' has class index {int(dataset.y.max())} but {role} has "
                         f"{logits.shape[1]} outputs", hint="labels must be 0 .. outputs-1")


def check_labels(source, train, samples: int = 128, batch: int = 32) -> None:
    """A trained model that is right no more often than chance on the labels was most likely trained
    with its classes in another order (an image folder numbers them by sorted folder name): said
    before any work, since distilling with those labels would teach the student the wrong classes."""
    if train.y is None:
        return
    classes = int(train.y.max()) + 1
    x, y = train.x[:samples], train.y[:samples]
    # in batches: a large model's activations for 128 images at once can be gigabytes
    logits = (verify.torch_outputs(source.module, x, batch) if source.kind == "torch"
              else verify.onnx_outputs(source.onnx_path, x))[0]
    if logits.ndim != 2 or classes < 2:
        return
    accuracy = float((logits.argmax(1) == y).mean())
    if accuracy <= 1.5 / max(classes, logits.shape[1]):
        outputs = "" if logits.shape[1] == classes else (f" (the model has {logits.shape[1]} outputs; the labels "
                                                         f"use {classes} classes)")
        log(f"warning: the original model is right on {accuracy:.1%} of {len(y)} training samples, no better than "
            f"chance{outputs}. Likely causes, most likely first:\n"
            + "\n".join(f"  {i}. {c}" for i, c in enumerate(_chance_causes(source, train), 1)))


def _chance_causes(source, train) -> List[str]:
    """Why a model may score at chance, in the order a user should check them (the walkthrough's forgotten
    --weights and other preprocessing were both blamed on the folder order)."""
    causes = []
    if source.kind == "torch" and source.weights is None and source.name != "demo":
        causes.append("no --weights was given, so the model has the weights its factory made (untrained?): "
                      "pass --weights FILE.pt")
    pre = train.preprocessing
    if Path(train.source).is_dir():
        causes.append(f"the images are given as (pixel * {pre['scale']:.6g} - mean) / std with preprocess.mean="
                      f"{pre['mean']} and preprocess.std={pre['std']}: if the model was trained with other values, "
                      "pass them with --set preprocess.mean=[...] --set preprocess.std=[...]")
    else:
        causes.append(f"{Path(train.source).name}'s x is not preprocessed as the model was trained (scale, mean, "
                      "std, layout)")
    causes.append("the classes are in another order than the model's outputs: an image folder's classes are "
                  "numbered in sorted folder-name order (the manifest's labels show it); name the folders so that "
                  "they sort in the model's order (0_cat, 1_dog, ...)")
    return causes


def compress_torch(source, teacher, prof, train, held, work: Path, opts: DeployOptions) -> dict:
    import torch

    teacher = teacher.eval()
    example = torch.from_numpy(train.x[:1])
    student = copy.deepcopy(source.module).eval()
    macs_before, params_before = prune.count(student, example)
    prune_report, distill_report = prune_and_distill_(student, teacher, prof, train, example, work, source, opts)
    distill_report["teacher"] = opts.teacher or "the unpruned model"
    distill_report["teacher_params"] = prune.count(teacher, example)[1]
    macs_after, params_after = prune.count(student, example)
    prune_report.update(params_before=params_before, params_after=params_after, macs_before=macs_before,
                        macs_after=macs_after, nonzero_params_after=prune.count_nonzero(student))
    original_onnx = export.export_onnx(source.module, example, work / "original.onnx", prof.export, prune.failing_layer)
    student_onnx = export.export_onnx(student, example, work / "student_fp32.onnx", prof.export, prune.failing_layer)
    names = [o["name"] for o in export.io_spec(student_onnx)["outputs"]]
    ref_student = verify.torch_outputs(student, held.x)
    ref_original = verify.torch_outputs(source.module, held.x)
    checks = [
        verify.check(verify.compare("original.onnx vs PyTorch original", verify.onnx_outputs(original_onnx, held.x),
                                    ref_original, names, held.y), False, prof.verify),
        verify.check(verify.compare("student FP32 ONNX vs PyTorch student", verify.onnx_outputs(student_onnx, held.x),
                                    ref_student, names, held.y), False, prof.verify),
    ]
    if prof.prune.structure == "2:4":
        prune_report["two_four"] = check_two_four(student_onnx, prune_report["masked_layers"])
    log("export: ONNX FP32 matches PyTorch (max |diff| "
        + ", ".join(f"{o.max_abs_diff:.2g}" for c in checks for o in c.outputs) + ")")
    return {"original_onnx": original_onnx, "student_onnx": student_onnx, "reference": ref_student,
            "student": student, "original": source.module, "example": example,
            "reference_original": ref_original, "output_names": names, "checks": checks,
            "pruning": prune_report, "distillation": distill_report,
            "counts_before": (params_before, macs_before), "counts_after": (params_after, macs_after)}


BUDGET_RATIOS = [round(0.05 * i, 2) for i in range(1, 19)]  # 5% .. 90% of the channels removed


def fit_latency_budget(source, prof, train, work: Path, device, opts: DeployOptions):
    """The profile with the smallest prune.ratio (a multiple of 5%) whose pruned, quantized model
    reaches prune.latency_budget_ms on the bench device, found by bisection: each probe prunes a
    copy (L2; which channels go does not change the speed), exports, quantizes and times it
    briefly. The result is kept in the work folder, so --resume continues with the same ratio."""
    import torch

    budget_ms, saved = prof.prune.latency_budget_ms, work / "latency_budget.json"
    found = json.loads(saved.read_text()) if opts.resume and saved.is_file() else None
    if found is None or found["budget_ms"] != budget_ms:  # a changed budget is searched again
        found = _search_ratio(source, prof, torch.from_numpy(train.x[:1]), train, work, device, budget_ms)
        saved.write_text(json.dumps(found))
    where = device.name if device else "this host"
    if found["ratio"] == 0:
        log(f"prune: the unpruned model already reaches {budget_ms} ms on {where}: no pruning")
        update = {"structure": "none"}
    else:
        log(f"prune: {found['ratio']:.0%} of the channels removed reaches the {budget_ms} ms budget on {where}")
        update = {"ratio": found["ratio"]}
    return prof.model_copy(update={"prune": prof.prune.model_copy(update=update)}), found


def budget_outcome(found: dict, compressed: dict) -> dict:
    """Whether the deployed model, distilled and measured with the full bench budget, met it."""
    p50 = compressed["latency_ms"]["p50"]
    met = p50 <= found["budget_ms"]
    note = (f"prune: latency budget {found['budget_ms']} ms: the compressed model's p50 is {p50:.3f} ms "
            f"({'met' if met else 'missed: the probe was faster; the device may be busy (see the p50 drift)'})")
    return {"budget_ms": found["budget_ms"], "ratio": found["ratio"], "p50_ms": p50, "met": met, "note": note}


def _search_ratio(source, prof, example, train, work: Path, device, budget_ms: float) -> dict:
    from .errors import StageError

    probes = {}
    short = bench.settings_here(prof.bench, device, quiet=True).model_copy(
        update={"runs": 20, "seconds": 1.0, "warmup_runs": 5, "warmup_seconds": 0.3, "energy": "none",
                "idle_seconds": 0, "rounds": 1})

    def p50_at(ratio: float) -> float:
        model = copy.deepcopy(source.module).eval()
        if ratio:
            prune.prune_channels_(model, prof.prune.model_copy(update={"ratio": ratio, "iterative_steps": 1,
                                                                       "importance": "l2"}), example)
        path = export.export_onnx(model, example, work / "probe.onnx", prof.export, prune.failing_layer)
        if prof.quantize.precision == "int8":
            calib = train.x[: min(32, prof.quantize.calibration_samples)]  # the speed does not depend on it
            path = quantize.quantize_int8(path, work / "probe-int8.onnx", calib, prof.quantize, export.INPUT_NAME)
        result = bench.measure({"probe": path}, short, prof.runtime, device, quiet=True)["probe"]
        probes[f"{ratio:.2f}"] = p50 = result["latency_ms"]["p50"]
        log(f"prune: latency budget {budget_ms} ms: {ratio:.0%} of the channels removed -> p50 {p50:.3f} ms")
        return p50

    if p50_at(0.0) <= budget_ms:
        return {"ratio": 0.0, "budget_ms": budget_ms, "probes_p50_ms": probes}
    # Latency need not fall as the ratio grows (narrow layers can run slower kernels: a walkthrough saw
    # 90% slower than 50%), so a coarse grid is probed first and the search refines below the first
    # grid ratio that meets the budget, rather than trusting the widest ratio alone.
    grid = [i for i, r in enumerate(BUDGET_RATIOS) if round(r * 100) % 25 == 0] + [len(BUDGET_RATIOS) - 1]
    hi = next((i for i in sorted(set(grid)) if p50_at(BUDGET_RATIOS[i]) <= budget_ms), None)
    if hi is None:
        tried = ", ".join(f"{float(r):.0%} -> {p:.3f} ms" for r, p in probes.items())
        raise StageError("prune", f"prune.latency_budget_ms {budget_ms} is out of reach on "
                         f"{device.name if device else 'this host'}: no ratio probed met it ({tried})",
                         hint="raise the budget, set prune.ratio yourself, or start from a smaller model")
    lo = max([i for i in grid if i < hi], default=-1) + 1  # bisect between the grid point below and hi
    while lo < hi:
        mid = (lo + hi) // 2
        if p50_at(BUDGET_RATIOS[mid]) <= budget_ms:
            hi = mid
        else:
            lo = mid + 1
    return {"ratio": BUDGET_RATIOS[hi], "budget_ms": budget_ms, "probes_p50_ms": probes}


def check_two_four(onnx_path: Path, masked_layers: List[str]) -> dict:
    """Every masked layer must still hold the 2:4 pattern in the exported ONNX (BatchNorm folding
    scales whole output channels, so zeros stay zeros; anything else that breaks it fails here)."""
    from .errors import StageError

    layers = verify.two_four_layers(onnx_path)
    sparse = [name for name, bad in layers.items() if bad == 0]
    if len(sparse) < len(masked_layers):
        broken = {name: bad for name, bad in layers.items() if bad}
        raise StageError("export", f"{len(masked_layers)} layers were pruned 2:4 but only {len(sparse)} weights in "
                         f"{onnx_path.name} keep the pattern; groups of four with fewer than two zeros: {broken}",
                         hint="set prune.structure=channel, or report the model: an export step rewrote the weights")
    log(f"export: 2:4 pattern intact in {len(sparse)} ONNX weights ({len(masked_layers)} layers masked)")
    return {"sparse_onnx_weights": sparse, "masked_layers": len(masked_layers)}


def prune_and_distill_(student, teacher, prof, train, example, work: Path, source, opts) -> tuple:
    """Prune in `iterative_steps` rounds with an equal share of the distillation budget after each;
    every round checkpoints, so --resume continues where an interrupted run stopped."""
    p, d = prof.prune, prof.distill
    ckpt_path = work / "checkpoint.pt"
    meta = {"model_sha256": source.sha256, "profile_sha256": _profile_hash(prof), "data_sha256": _data_hash(train)}
    resume = _load_checkpoint(ckpt_path, meta, student) if opts.resume else None
    rounds = p.iterative_steps if p.structure == "channel" else 1
    steps = None if d.steps is None else d.steps // rounds
    seconds = None if d.minutes is None else d.minutes * 60 / rounds
    ignore = prune.ignored_modules(student, p) if p.structure != "none" else []
    masks = None
    if p.structure in ("unstructured", "2:4"):
        masks = (prune.magnitude_masks(student, p.ratio, ignore) if p.structure == "unstructured"
                 else prune.two_four_masks(student, ignore))
        masks = _masks_after_resume(student, masks) if resume else masks
    regularize = None
    if p.importance == "bn_scale" and p.structure == "channel" and p.sparsity_training.steps:
        regularize = prune.slimming_regularizer(student, p.sparsity_training.reg)
    report_d, curve = None, []
    first_round = 0 if regularize else 1
    for rnd in range(first_round, rounds + 1):
        state = resume if resume and resume["round"] == rnd else None
        if resume and resume["round"] > rnd:
            continue
        if rnd == 0:  # network slimming: L1 on BN scales first, so bn_scale ranks channels well
            curve = distill.distill_(student, teacher, train, d, steps=p.sparsity_training.steps, seconds=None,
                                     checkpoint=ckpt_path, meta=dict(meta, round=0), resume=state,
                                     regularize=regularize, label="slimming").loss_curve
            continue
        if state is None:
            _prune_round_(student, teacher, prof, train, example, rnd, masks)
        if d.steps == 0:
            log(f"distill {rnd}/{rounds}: skipped (distill.steps=0): the pruned model is not trained again")
            continue
        report_d = distill.distill_(student, teacher, train, d, steps=steps, seconds=seconds, checkpoint=ckpt_path,
                                    meta=dict(meta, round=rnd), resume=state,
                                    after_step=(lambda: prune.apply_masks_(student, masks)) if masks else None,
                                    label=f"distill {rnd}/{rounds}", curve=curve)
        curve = report_d.loss_curve
        log(f"distill {rnd}/{rounds}: {report_d.steps} steps in {report_d.seconds:.1f} s, "
            f"loss {report_d.final_loss if report_d.final_loss is None else round(report_d.final_loss, 4)} "
            f"({' + '.join(report_d.losses)}{', label-free' if report_d.label_free else ''})")
    pruning = {"structure": p.structure, "ratio": {"none": 0.0, "2:4": 0.5}.get(p.structure, p.ratio),
               "masked_layers": sorted(masks) if masks else [],
               "round_to": p.round_to, "importance": p.importance, "iterative_steps": rounds, "ignored_layers": ignore}
    return pruning, _distill_dict(report_d, d)


def _prune_round_(student, teacher, prof, train, example, rnd: int, masks) -> None:
    p = prof.prune
    if p.structure == "channel":
        prune.prune_channels_(student, p, example, step=rnd, grad_fn=_taylor_grads(teacher, train, prof.distill))
    elif p.structure in ("unstructured", "2:4"):
        prune.apply_masks_(student, masks)
        if p.structure == "2:4" and prof.runtime != "tensorrt" and rnd == 1:
            log(f"prune: warning: 2:4 sparsity speeds up only TensorRT's sparse tensor cores; {prof.runtime} runs "
                "the model dense, so expect no speed-up (the zipped size shows the gain, as with unstructured)")
    if p.structure != "none":
        macs, params = prune.count(student, example)
        log(f"prune {rnd}/{p.iterative_steps if p.structure == 'channel' else 1} ({p.structure}, {p.importance}): "
            f"{params:,} params, {macs:,} MACs, {prune.count_nonzero(student):,} non-zero")


def _taylor_grads(teacher, train, d):
    """Gradients for Taylor importance: the loss against labels, or against the teacher's top-1."""
    def fill(model):
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(train.x[: min(len(train), 4 * d.batch_size)])
        target = torch.from_numpy(train.y[: len(x)]) if train.y is not None else teacher(x).argmax(1).detach()
        F.cross_entropy(model(x), target).backward()
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
    memoryview, not a copy: the split can be most of the memory a run uses)."""
    import numpy as np

    digest = hashlib.sha256(f"{train.x.shape} {train.x.dtype}".encode())
    digest.update(memoryview(np.ascontiguousarray(train.x)).cast("B"))
    if train.y is not None:
        digest.update(memoryview(np.ascontiguousarray(train.y)).cast("B"))
    return digest.hexdigest()


def _profile_hash(prof) -> str:
    """The settings a checkpoint's student depends on: how it was pruned and distilled. The later
    stages' (quantize, export, verify, bench) may change on --resume, so a run that failed a check
    after distillation continues with a loosened check instead of distilling again."""
    trained_by = prof.model_dump(mode="json", include={"prune", "distill"})
    return hashlib.sha256(json.dumps(trained_by, sort_keys=True).encode()).hexdigest()


def _load_checkpoint(path: Path, meta: dict, student) -> Optional[dict]:
    """The checkpoint (tensors and plain data: a planted file is refused, never run), checked against
    this run; the student, a fresh copy of the user's unpruned model, takes its pruned structure."""
    if not path.is_file():
        log(f"--resume: no checkpoint at {path}; starting from the beginning")
        return None
    state = distill.load_checkpoint(path)
    for key, value in meta.items():
        if state.get(key) != value:
            what = {"model": "another model (or other weights)", "profile": "other prune or distill settings",
                    "data": "other data (or another --input-shape)"}[key.split("_")[0]]
            raise InputError(f"--resume: the checkpoint {path} was made with {what}",
                             hint="pass the same model, data and settings as the interrupted run, or run with "
                                  "--force instead of --resume to start over")
    try:
        distill.restore_(student, state)
    except InputError as exc:
        raise InputError(f"--resume: {path}: {exc.message}", hint=exc.hint) from None
    log(f"--resume: continuing round {state['round']} at step {state['step']} from {path}")
    return state


def _distill_dict(r, d) -> dict:
    if r is None:
        return {"steps": 0, "seconds": 0.0, "temperature": d.temperature, "alpha": d.alpha, "losses": list(d.losses),
                "final_loss": None}
    return {"steps": r.steps, "seconds": r.seconds, "temperature": r.temperature, "alpha": r.alpha,
            "losses": r.losses, "final_loss": r.final_loss, "label_free": r.label_free, "loss_curve": r.loss_curve}


def prepare_onnx(source, prof, held, work: Path) -> dict:
    """An .onnx model: no pruning or distillation; the reference is the model itself on ORT FP32."""
    original = models.write_single_file(source.onnx_path, work / "original.onnx")
    names = [o["name"] for o in export.io_spec(original)["outputs"]]
    ref = verify.onnx_outputs(original, held.x)
    return {"original_onnx": original, "student_onnx": original, "reference": ref, "reference_original": ref,
            "output_names": names, "checks": [], "pruning": {"structure": "none", "ratio": 0.0},
            "distillation": {"steps": 0, "seconds": 0.0, "final_loss": None, "note": "ONNX input: not distilled"},
            "counts_before": (None, None), "counts_after": (None, None)}


def quantize_and_check(stages: dict, prof, train, held, work: Path):
    q = prof.quantize
    if q.precision == "int8":
        calib = train.x[: q.calibration_samples]
        log(f"quantize: INT8 QDQ ({q.activations} activations, {q.weights} per-channel={q.per_channel} weights"
            f"{', 7-bit (reduce_range)' if q.reduce_range else ''}), {len(calib)} calibration samples")
        deployed = quantize.quantize_int8(stages["student_onnx"], work / "model.onnx", calib, q, _input_name(stages))
    elif q.precision == "fp32":
        deployed = shutil.copy(stages["student_onnx"], work / "model.onnx")
    else:
        raise InputError(f"quantize.precision {q.precision} is not supported by the {prof.runtime} runtime",
                         hint="use fp32 or int8 for ONNX Runtime targets")
    deployed = Path(deployed)
    exact = q.precision == "int8" and verify.exact_int8_for(prof.runtime, prof.device.arch)
    if exact:
        log(f"verify: INT8 products computed exactly, as the {prof.device.arch} target does (not with the u8 x s8 "
            "kernel that saturates on x86 CPUs without VNNI)")
    out = verify.onnx_outputs(deployed, held.x, exact_int8=exact)
    stages["exact_int8"] = exact
    parity = verify.check(verify.compare(f"deployed {q.precision} model vs its reference", out, stages["reference"],
                                         stages["output_names"], held.y, stages["reference_original"]),
                          q.precision != "fp32", prof.verify)
    log("verify: " + parity.table().strip().replace("\n", "\n        "))
    stages["parity_arrays"] = parity_arrays(stages, held, out)
    stages["deployed_outputs"] = out
    return deployed, parity


def prepare_engine(stages: dict, prof, train, held, work: Path, device):
    """TensorRT: the engine is built on the device, from model.onnx (FP32; the device applies FP16
    or INT8 with the calibration samples) or, for INT8 on TensorRT 11, from a Q/DQ ONNX made here."""
    q = prof.quantize
    model = Path(shutil.copy(stages["student_onnx"], work / "model.onnx"))
    out = verify.onnx_outputs(model, held.x)
    parity = verify.check(verify.compare("model.onnx (the engine's source) vs PyTorch", out, stages["reference"],
                                         stages["output_names"], held.y, stages["reference_original"]),
                          False, prof.verify)
    calib = train.x[: q.calibration_samples]
    qdq = None
    if q.precision == "fp16" and "student" in stages:  # an .onnx input has no PyTorch student to run in FP16
        stages["checks"].append(check_fp16(stages, prof, held))
    if q.precision == "int8":
        # TensorRT takes symmetric INT8 only: int8 activations with zero point 0
        qdq = quantize.quantize_int8(model, work / "model_qdq.onnx", calib,
                                     q.model_copy(update={"activations": "int8"}), _input_name(stages),
                                     symmetric=True)
        qdq_out = verify.onnx_outputs(qdq, held.x, exact_int8=verify.exact_int8_for(prof.runtime, prof.device.arch))
        stages["checks"].append(verify.check(verify.compare("model_qdq.onnx (INT8 Q/DQ) vs PyTorch", qdq_out,
                                                            stages["reference"], stages["output_names"], held.y),
                                             True, prof.verify))
    stages["parity_arrays"] = parity_arrays(stages, held, out)
    stages["deployed_outputs"] = out
    trt = engine.plan(stages["original_onnx"], model, qdq, prof, calib, work, device)
    log(f"engine: {'built on ' + device.name if device else 'to be built on the device on first use'}, "
        f"{q.precision}{', from the Q/DQ ONNX' if trt.build_settings['onnx'] == 'model_qdq.onnx' else ''}")
    return model, parity, trt


def prepare_tflite(stages: dict, prof, train, held, work: Path):
    """LiteRT: the student to .tflite (full-integer INT8, calibrated on the data, or FP32), the
    original to FP32 .tflite for the comparison, each checked against PyTorch on held-out data."""
    from . import litert

    q, nhwc = prof.quantize, prof.export.channels_last
    log(f"export: converting to .tflite with litert-torch; the converter's own messages wait in "
        f"{litert.converter_log(work / 'model.tflite')} and are shown if it fails")
    original = litert.export_tflite(stages["original"], stages["example"], work / "original.tflite",
                                    channels_last=nhwc, layer_of_failure=prune.failing_layer)
    verify.check(verify.compare("original.tflite vs PyTorch original", litert.tflite_outputs(original, held.x),
                                stages["reference_original"], stages["output_names"], held.y), False, prof.verify)
    if q.precision == "int8":
        log(f"quantize: full-integer INT8 for LiteRT, {min(len(train), q.calibration_samples)} calibration samples")
        model = litert.quantize_tflite_int8(stages["student"], stages["example"], train.x[: q.calibration_samples],
                                            work / "model.tflite", channels_last=nhwc, per_channel=q.per_channel,
                                            layer_of_failure=prune.failing_layer)
    else:  # fp32, and fp16: the GPU delegate computes in FP16 from the float model
        model = litert.export_tflite(stages["student"], stages["example"], work / "model.tflite", channels_last=nhwc,
                                     layer_of_failure=prune.failing_layer)
    if q.precision == "fp16":
        stages["checks"].append(check_fp16(stages, prof, held))
    out = litert.tflite_outputs(model, held.x)
    what = ("model.tflite (an FP32 file the GPU delegate runs in FP16; here run in FP32)" if q.precision == "fp16"
            else f"model.tflite ({q.precision})")
    parity = verify.check(verify.compare(f"{what} vs PyTorch student", out, stages["reference"],
                                         stages["output_names"], held.y, stages["reference_original"]),
                          q.precision == "int8", prof.verify)
    log("verify: " + parity.table().strip().replace("\n", "\n        "))
    stages["parity_arrays"] = parity_arrays(stages, held, out)
    stages["deployed_outputs"] = out
    stages["original_model_file"] = original
    return model, parity, original


def check_fp16(stages: dict, prof, held):
    """FP16 targets (a TensorRT FP16 engine, the LiteRT GPU delegate) compute in half precision, which
    nothing here runs: the student is computed in FP16 by PyTorch on this CPU and must agree with its
    FP32 self as a quantized model must (a walkthrough found FP16 never checked)."""
    report = verify.check(verify.compare("student in FP16 arithmetic (PyTorch on this CPU, a stand-in for the "
                                         "device's FP16) vs PyTorch student",
                                         verify.fp16_outputs(stages["student"], held.x), stages["reference"],
                                         stages["output_names"], held.y), True, prof.verify)
    log("verify: FP16 " + report.table().strip().replace("\n", "\n        "))
    return report


def parity_arrays(stages: dict, held, out: list) -> dict:
    """The samples stored in the bundle's parity.npz (`verify` re-runs them): the first 32 held-out
    inputs with the deployed model's, the FP32 student's and the original's first output."""
    n = min(32, len(held))
    return {"x": held.x[:n], "expected": out[0][:n], "reference": stages["reference"][0][:n],
            "original": stages["reference_original"][0][:n]}


def _input_name(stages) -> str:
    return export.io_spec(stages["student_onnx"])["inputs"][0]["name"]
