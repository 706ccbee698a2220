"""What a deploy starts from, and every check that can fail before any work: the profile, the
device, the destination, the model (with its teacher) and the data, and whether they fit each
other. A deploy that would fail for its inputs fails here, in seconds, not after distilling."""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import numpy as np

from . import backends, bundle, data as data_mod, distill, inventory, models, profile as profile_mod, prune, tasks, verify
from .console import log
from .errors import InputError
from .records import Inputs


def load_and_check(opts) -> Inputs:
    """The run's Inputs (opts: pipeline.DeployOptions), each checked."""
    prof, note = profile_mod.load(opts.target, opts.overrides)
    prof = with_demo_defaults(prof, opts)
    if note:
        log(note)
    demo = demo_for(opts)
    name = bundle.bundle_name(demo.model_name if demo else models.name_for(opts.model), prof.name)
    bundle.check_destination(Path(opts.out), name, opts.force)
    device = inventory.get(opts.device) if opts.device else None
    if device is not None and device.target != prof.name:
        log(f"note: device {device.name} is listed with target {device.target}; this run uses profile {prof.name}")
    if prof.distill.steps != 0:  # a training device this machine lacks: said before the teacher or data load
        from . import accel

        accel.resolve(prof.distill.device, prof.distill.precision)
    source, dataset, teacher = _load(opts, prof)
    _check_source(source, prof, opts)
    data_mod.require_samples(dataset, 2, "a training and a held-out split", "verify.held_out_fraction")
    if source.kind == "torch":  # whether the data fits the model is worth knowing before how much there is
        check_fit(source.module, dataset)
        distill.check_data(prof.distill, dataset.x)
        if teacher is not source.module:
            check_teacher(teacher, source.module, dataset, opts.teacher)
    task = choose_task(source, dataset, prof.task)
    log(tasks.log_line(task))
    prof = prof.model_copy(update={"task": task.kind, "distill": prof.distill.model_copy(
        update={"losses": tasks.losses_for(task, prof.distill.losses)})})
    train, held = data_mod.split(dataset, prof.verify.held_out_fraction)
    if task.kind == "classification":
        check_labels(source, train)
    _check_calibration(prof, dataset, train)
    from . import user_code

    held = _in_memory(held.subset(slice(0, prof.verify.samples)))
    postprocess, metric = user_code.load(opts.postprocess, "--postprocess"), user_code.load(opts.metric, "--metric")
    if postprocess or metric:  # a mistake in the user's code is said now, not after the distillation
        k = min(8, len(held.x))
        names, values = original_outputs(source, held.x[:k])
        user_code.try_on_original(metric, postprocess, names, values,
                                  {"x": held.x[:k], **({"y": held.y[:k]} if held.y is not None else {}),
                                   **{key: v[:k] for key, v in held.arrays.items()}})
    return Inputs(prof=prof, source=source, teacher=teacher, dataset=dataset, train=train, held=held, device=device,
                  name=name, work=Path(opts.out) / f".{name}.work", teacher_spec=opts.teacher, task=task,
                  postprocess=postprocess, metric=metric)


def _in_memory(part):
    """The checks' samples (at most verify.samples) as an in-memory array: every check runs them whole."""
    from dataclasses import replace

    from . import rows

    return replace(part, x=rows.materialized(part.x))


def original_outputs(source, x) -> tuple:
    """(output names, numpy outputs) of the user's model on the samples x."""
    if source.kind == "torch":
        import torch

        from . import outputs

        with torch.no_grad():
            out = source.module.eval()(torch.from_numpy(np.asarray(x)))
        return outputs.names(out), [t.numpy() for t in outputs.flatten(out)]
    from . import export

    return [o["name"] for o in export.io_spec(source.onnx_path)["outputs"]], verify.onnx_outputs(source.onnx_path, x)


def choose_task(source, dataset, requested: str):
    """The task (tasks.Task) from the model's outputs on two samples: what --task or the profile asks for,
    or what auto sees."""
    names, values = original_outputs(source, dataset.x[:2])
    y = dataset.y
    if y is not None and y.ndim == 3 and requested in ("auto", "segmentation"):
        return tasks.Task("segmentation", "the data's y holds masks (N, H, W)" if requested == "auto"
                          else "--task / the profile's task")
    return tasks.choose(requested, names, [v.shape for v in values], values[0], y)


def _check_source(source, prof, opts) -> None:
    backend = backends.get(prof.runtime)
    if source.kind == "onnx" and not backend.takes_onnx:
        raise InputError(f"the {prof.name} target converts from PyTorch, and {opts.model} is an ONNX file",
                         hint="pass the PyTorch model as file.py:factory (with --weights)")
    if prof.prune.structure == "2:4" and not backend.sparse_2_4:
        log(f"prune: warning: 2:4 sparsity speeds up only TensorRT's sparse tensor cores; {prof.runtime} runs "
            "the model dense, so expect no speed-up (the zipped size shows the gain, as with unstructured)")
    _check_keep_float(source, prof.quantize)
    if source.kind == "onnx" and prof.prune.latency_budget_ms is not None:
        raise InputError(f"prune.latency_budget_ms prunes a PyTorch model, and {opts.model} is an ONNX file",
                         hint="pass the PyTorch model as file.py:factory, or drop the latency budget")


def opts_demo_free(source) -> bool:
    """Whether `source` is the user's model, not a built-in demo (whose teacher is trained, not loaded)."""
    from . import demo

    return source.name not in {demo.get(n).model_name for n in demo.NAMES}


def _check_keep_float(source, q) -> None:
    """A layer name quantize.keep_float gives must exist, said before hours of distillation, not after."""
    from . import keep_float

    if not isinstance(q.keep_float, list):
        return
    if q.precision != "int8":
        log(f"note: quantize.keep_float lists layers, and quantize.precision {q.precision} quantizes none: it has "
            "no effect")
    elif source.kind == "torch":
        keep_float.modules_checked(source.module, q.keep_float)
    else:
        import onnx

        keep_float.onnx_nodes(onnx.load(str(source.onnx_path)), q.keep_float, str(source.onnx_path))


def _check_calibration(prof, dataset, train) -> None:
    q, held_out = prof.quantize, prof.verify.held_out_fraction
    if q.precision == "int8" and len(train) < q.calibration_samples:
        total = math.ceil(q.calibration_samples / (1 - held_out))
        raise InputError(f"data {dataset.source} has {len(dataset)} samples; INT8 calibration takes "
                         f"{q.calibration_samples} from the training split ({1 - held_out:.0%} of the data, here "
                         f"{len(train)}), so it needs {total} samples in all",
                         hint=f"give more data, or lower it with --set quantize.calibration_samples={len(train)}")


def with_demo_defaults(prof, opts):
    """A built-in demo's teacher learned its images under its own augmentation (digits: rolled by up to a pixel;
    animals: shifted by up to 2 and mirrored) and its small student was tuned on validation data (animals: lr):
    the student is taught so (demo.Demo.distill), each setting unless --set or the user's own profile file names
    it (a built-in target's distill section is the general recipe the demo's replaces). A user's model or data:
    the profile as it is."""
    from .yamlfile import parse_overrides

    if opts.model is not None or opts.data is not None:
        return prof
    given = {key.split(".", 1)[1] for key in parse_overrides(opts.overrides) if key.startswith("distill.")}
    if profile_mod.is_file_target(opts.target):  # the user's own file: what it names is theirs
        given |= prof.distill.model_fields_set
    update = {k: v for k, v in demo_for(opts).distill.items() if k not in given}
    return prof.model_copy(update={"distill": prof.distill.model_copy(update=update)}) if update else prof


def _load(opts, prof):
    shape = data_mod.parse_shape(opts.input_shape) if opts.input_shape else None
    if opts.model is None:
        demo = demo_for(opts)
        teacher, path = demo.teacher(prof.verify.held_out_fraction, log=log)
        source = models.ModelSource(demo.model_name, "torch", models.sha256_file(path), module=teacher)
        dataset = data_mod.load(opts.data, prof.preprocess, shape) if opts.data else demo.dataset()
    else:
        source = seeded_load(opts.model, opts.weights)
        if not opts.data:
            raise InputError("--data is required with your own model (calibration, distillation and checks need "
                             "samples)", hint="pass an .npz with x (and y) or a folder of images in class sub-folders")
        dataset = data_mod.load(opts.data, prof.preprocess, shape)
    teacher = source.module
    if opts.teacher:
        teacher = seeded_load(opts.teacher, opts.teacher_weights, role="--teacher").module
    elif opts.teacher_weights:
        raise InputError("--teacher-weights needs --teacher", hint="name the teacher with --teacher file.py:factory")
    return source, dataset, teacher


def demo_for(opts):
    """The built-in demo (demo.Demo) a run deploys: --demo NAME, else digits when no model is given;
    None for the user's model."""
    from . import demo

    name = getattr(opts, "demo", None)  # DeployOptions.demo, --demo NAME
    if name is not None and opts.model is not None:
        raise InputError(f"both a model ({opts.model}) and --demo {name} were given; --demo deploys a built-in "
                         "model instead of yours", hint=f"drop --demo {name} to deploy {opts.model}, or drop "
                         f"{opts.model} to deploy the {name} demo")
    return None if opts.model is not None else demo.get(name or demo.DEFAULT)


def seeded_load(spec: str, weights: Optional[str], role: str = "model"):
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
    from . import outputs

    example = torch.from_numpy(dataset.x[:2])
    with torch.no_grad():
        t_shapes = [tuple(t.shape[1:]) for t in outputs.flatten(teacher.eval()(example))]
        s_shapes = [tuple(t.shape[1:]) for t in outputs.flatten(student.eval()(example))]
    if t_shapes != s_shapes:
        shown = (lambda shapes: shapes[0] if len(shapes) == 1 else shapes)  # noqa: E731
        raise InputError(f"--teacher {spec} outputs shape {shown(t_shapes)} but the model outputs {shown(s_shapes)}",
                         hint="the teacher must predict the same classes as the model (the same outputs, in the "
                              "same order)")


def _class_output(names, flat) -> int:
    """The output the data's labels and class names count: 'logits' where there is one; beside an embedding
    (a dict's 'embedding' comes first) the first other vector per sample, its ID head's scores; else the first."""
    from .outputs import EMBEDDING_KEYS

    if "logits" in names:
        return names.index("logits")
    if names[0] in EMBEDDING_KEYS:
        return next((i for i, t in enumerate(flat) if i > 0 and t.dim() == 2), 0)
    return 0


def check_fit(model, dataset, role: str = "the model") -> None:
    """The data must fit the model, and labels its outputs, before any work starts."""
    import torch

    example = torch.from_numpy(dataset.x[:2])
    layer = prune.failing_layer(model.eval(), example)
    if layer is not None:
        _refuse_failure(model, example, layer, dataset, role)
    from . import outputs

    with torch.no_grad():
        out = model(example)
    names, flat = outputs.names(out), outputs.flatten(out)
    logits = flat[_class_output(names, flat)]
    if logits.dim() == 2 and (dataset.y is None or dataset.y.ndim == 1):
        data_mod.check_label_names(dataset, logits.shape[1], role)
    labelled_dim = None if dataset.y is None else (4 if dataset.y.ndim == 3 else 2)  # masks label a map's pixels
    if logits.dim() == labelled_dim and int(dataset.y.max()) >= logits.shape[1]:
        what = "classes (its class map's channels)" if labelled_dim == 4 else "outputs"
        raise InputError(f"data {dataset.source}: 'y' has class index {int(dataset.y.max())} but {role} has "
                         f"{logits.shape[1]} {what}", hint=f"labels must be 0 .. {logits.shape[1] - 1}")
    if logits.dim() == 4 and labelled_dim == 4:
        _check_mask_size(dataset, tuple(logits.shape[2:]), role)


def _check_mask_size(dataset, map_hw: tuple, role: str) -> None:
    """Masks label pixels of the input or of the class map: at another size (a walkthrough's 32x32 crop of 64x64
    canvases) they were stretched to the map and trained on as if they fit. At the input's size over a smaller
    map, distillation's cross-entropy takes them down to it (nearest), which is said."""
    mask_hw, input_hw = tuple(dataset.y.shape[1:]), tuple(dataset.sample_shape[-2:])
    size = lambda hw: "x".join(map(str, hw))  # noqa: E731
    if mask_hw == map_hw:
        return
    if mask_hw != input_hw:
        raise InputError(f"data {dataset.source}: the masks 'y' are {size(mask_hw)}, but {role}'s class map is "
                         f"{size(map_hw)} and its input {size(input_hw)}",
                         hint="store masks (N, H, W) at the input's or the class map's size, one class index per pixel")
    if role == "the model":  # once: a teacher's class map is checked against the same masks
        log(f"data: the masks are {size(mask_hw)} (the input's size) and the class map {size(map_hw)}: distillation's "
            "cross-entropy takes them to the map's size (nearest); the IoU on the masks needs them at the map's size, "
            "so it is not computed")


def _refuse_failure(model, example, layer: str, dataset, role: str) -> None:
    """A forward pass that fails in the first layer it enters is the data's shape not fitting the model;
    one that fails deeper in, after the first layers took the input, is the model failing by itself (an
    EfficientNet config whose head width does not match its last conv failed in top_bn and was reported
    as the data's fault): said with the error, not blamed on the data."""
    import torch

    first = next((n for n, m in model.named_modules() if n and not list(m.children())), None)
    entered = []
    hook = [m.register_forward_pre_hook(lambda mod, inp, n=n: entered.append(n))
            for n, m in model.named_modules() if n and not list(m.children())]
    error = ""
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:
        error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    finally:
        for h in hook:
            h.remove()
    if len(entered) <= 1 or layer == first:
        shape = dataset.sample_shape
        hint = "check the data's layout and --input-shape"
        if len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
            hint = (f"these samples look channels-last (H, W, C = {', '.join(map(str, shape))}): save "
                    "x.transpose(0, 3, 1, 2), channels first, as PyTorch takes them")
        raise InputError(f"data {dataset.source}: samples of shape {shape} do not fit {role} "
                         f"(it fails in layer '{layer}': {error})", hint=hint)
    raise InputError(f"{role} fails by itself in layer '{layer}' on inputs of shape {dataset.sample_shape} "
                     f"({error}), after {len(entered) - 1} layers ran", hint=f"check that the model runs in PyTorch "
                     f"(model(torch.zeros(2, {', '.join(map(str, dataset.sample_shape))}))) and fix the layer; if it "
                     "needs another input size, pass --input-shape")


def check_labels(source, train, samples: int = 128, batch: int = 32) -> None:
    """A trained model that is right no more often than chance on the labels was most likely trained
    with its classes in another order (an image folder numbers them by sorted folder name): said
    before any work, since distilling with those labels would teach the student the wrong classes."""
    if train.y is None or train.y.ndim != 1:
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
            + "\n".join(f"  {i}. {c}" for i, c in enumerate(chance_causes(source, train), 1)))


def chance_causes(source, train) -> List[str]:
    """Why a model may score at chance, in the order a user should check them (the walkthrough's forgotten
    --weights and other preprocessing were both blamed on the folder order)."""
    causes = []
    if source.kind == "torch" and source.weights is None and opts_demo_free(source):
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
