"""Target profiles: a typed, closed schema (unknown keys are errors), loaded from YAML, merged with
`--set key=value` overrides and reported all at once with the file, the key and a suggestion."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ProfileError
from .registry import closest
# re-exported: inventory, cli, commands and tests read YAML through profile
from .yamlfile import (UTF8_HINT, apply_override, duplicate_keys, load_yaml, parse_overrides,  # noqa: F401
                       read_profile_yaml, yaml_text)

_read_yaml = read_profile_yaml  # cli.py and tests/test_coverage.py still call the old private name

TARGETS_DIR = Path(__file__).parent / "targets"
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Device(Closed):
    arch: Literal["arm64", "armv7", "x86_64"]
    cores: int = Field(ge=1, le=256)
    accelerator: str = "none"
    memory_gb: Optional[float] = Field(default=None, gt=0)


class SparsityTraining(Closed):
    """Network slimming: L1 on BN scales before pruning with bn_scale importance."""

    steps: int = Field(default=0, ge=0)
    reg: float = Field(default=1e-4, ge=0)


class Prune(Closed):
    structure: Literal["channel", "unstructured", "2:4", "none"] = "channel"
    ratio: float = Field(default=0.5, gt=0, lt=1)
    # Instead of a ratio: the p50 (ms) the compressed model must reach on the bench device; the
    # smallest ratio that reaches it is searched for (ONNX Runtime targets, channel pruning).
    latency_budget_ms: Optional[float] = Field(default=None, gt=0)
    round_to: Optional[int] = Field(default=8, ge=1)
    importance: Literal["l2", "taylor", "bn_scale"] = "l2"
    iterative_steps: int = Field(default=1, ge=1, le=50)
    ignore: List[str] = Field(default_factory=list)
    sparsity_training: SparsityTraining = Field(default_factory=SparsityTraining)

    @field_validator("structure", mode="before")
    @classmethod
    def _sexagesimal(cls, value):
        # YAML 1.1 reads an unquoted 2:4 as the base-60 number 124
        return "2:4" if value == 124 else value


class Distill(Closed):
    steps: Optional[int] = Field(default=600, ge=0)
    minutes: Optional[float] = Field(default=None, gt=0)
    # None: the task's own (classification soft + ce; segmentation pixel_kl + pixel_ce; detection box_l1 +
    # score_bce; embedding cosine + mse; regression var_mse: tasks.DEFAULT_LOSSES)
    losses: Optional[List[Literal["soft", "ce", "hard", "feature", "pixel_kl", "pixel_ce", "box_l1", "score_bce",
                                  "score_kl", "cosine", "mse", "var_mse"]]] = None
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    feature_layers: List[Tuple[str, str]] = Field(default_factory=list)
    feature_weight: float = Field(default=1.0, ge=0)
    # Shift each image by its own offset of up to this many pixels (zeros fill the gap), the same
    # input for teacher and student: the student learns the teacher's answers on more than the
    # stored images.
    shift_pixels: int = Field(default=0, ge=0, le=32)
    # More views of the same images, identical for teacher and student (distill.augmented): flip mirrors half
    # the images left-right, crop takes a random part (60-100% of the area) resized back to the input size;
    # a segmentation's masks get the same flip and crop, so pixel_ce still reads the right labels.
    augment: List[Literal["flip", "crop"]] = Field(default_factory=list)
    checkpoint_every: int = Field(default=100, ge=1)
    # where and how distillation trains (accel.py); only training moves, every other stage stays on the CPU
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")  # --train-device
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    workers: int = Field(default=0, ge=0, le=64)  # DataLoader processes reading (decoding) batches ahead

    @model_validator(mode="after")
    def _budget(self):
        if self.steps is None and self.minutes is None:
            raise ValueError("give a budget: distill.steps and/or distill.minutes (steps: 0 skips distillation)")
        if "feature" in (self.losses or []) and not self.feature_layers:
            raise ValueError("losses has 'feature' but feature_layers is empty: name pairs [student_layer, teacher_layer]")
        return self


class Quantize(Closed):
    precision: Literal["fp32", "fp16", "int8"] = "int8"
    calibration_samples: int = Field(default=128, ge=1)
    activations: Literal["uint8", "int8"] = "uint8"
    weights: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    # 7-bit weights: x86 CPUs without VNNI compute u8 x s8 with VPMADDUBSW, whose int16 sums
    # saturate; on small layers that flipped a third of the decisions here. ARM has no such issue.
    reduce_range: bool = False
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    # layers left in float in the INT8 file (heads are where INT8 loses most: ORT issue 14233). auto:
    # INT8 everywhere when it meets verify's tolerance, else each output's head (its last conv/linear and
    # what follows it) in float, where that does better, both measured; none: INT8 everywhere; or a list
    # of the model's layer names (model.named_modules(); an .onnx input: its node names)
    keep_float: Union[Literal["auto", "none"], List[str]] = "auto"
    # ptq: calibrate the distilled student (the default: QAT's gain is model-dependent, see
    # benchmarks/results/qat.json, and its steps are slower); qat: the last qat_fraction of the distillation
    # budget trains with the runtime's fake quantization (edgecompress/qat.py); auto: PTQ's parity measured
    # first (simulated), QAT only where it misses verify's tolerance, else that share is ordinary distillation
    method: Literal["ptq", "qat", "auto"] = "ptq"
    qat_fraction: float = Field(default=0.2, gt=0, lt=1)


class Preprocess(Closed):
    """How raw images become the model's input: x = (pixel * scale - mean) / std, per channel."""

    layout: Literal["NCHW"] = "NCHW"
    size: Optional[Tuple[int, int]] = None  # (height, width); default: from --input-shape, else 224x224
    channels: Literal[1, 3] = 3
    scale: float = Field(default=1 / 255, gt=0)
    mean: List[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: List[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225])


class Export(Closed):
    # what the runtime loads (TensorRT builds from ONNX): left out, it follows the runtime; given, it is checked
    format: Optional[Literal["onnx", "tflite"]] = None
    opset: int = Field(default=17, ge=11, le=23)
    channels_last: bool = True  # tflite: NHWC input (and 4-D outputs), so no transposes run on the phone


class Verify(Closed):
    """Tolerances for the exported model against PyTorch on held-out inputs."""

    max_abs_diff: float = Field(default=1e-3, gt=0)  # FP32 export: numerics must match closely
    min_top1_agreement: float = Field(default=0.97, ge=0, le=1)  # quantized: decisions must agree
    # the other tasks' figures for a quantized model (verify.task_agreement): 1 is a perfect match
    min_pixel_agreement: float = Field(default=0.95, ge=0, le=1)  # segmentation: pixels with the same class
    min_confident_agreement: float = Field(default=0.9, ge=0, le=1)  # detection: confident anchors kept, same class
    # detection: an anchor is confident where its best class score (times objectness, if any) exceeds this
    score_threshold: float = Field(default=0.5, gt=0, lt=1)
    min_cosine: float = Field(default=0.98, ge=-1, le=1)  # embedding: mean cosine similarity
    min_r2: float = Field(default=0.95, le=1)  # regression: R^2 of the outputs against the reference's
    # --metric: how far each of your figures may fall from the original's (None: reported, not checked)
    max_metric_drop: Optional[float] = Field(default=None, ge=0)
    # --postprocess: the share of the original's boxes the deployed model must find (IoU 0.5; None: reported)
    min_box_recall: Optional[float] = Field(default=None, ge=0, le=1)
    held_out_fraction: float = Field(default=0.2, gt=0, lt=1)
    samples: int = Field(default=512, ge=1)  # held-out samples checked; the demo has 359


class Bench(Closed):
    warmup_runs: int = Field(default=10, ge=0)
    warmup_seconds: float = Field(default=1.0, ge=0)
    runs: int = Field(default=100, ge=1)
    seconds: float = Field(default=3.0, ge=0)
    threads: int = Field(default=2, ge=1)
    # Measure the models in turn this many times, each time with 1/rounds of `runs` and `seconds`, and
    # report each model's median round: a burst of load on a shared machine then hits one round of
    # each model instead of all of one model's runs, so the speed-up survives it.
    rounds: int = Field(default=1, ge=1, le=20)
    # a power source by name (the device side's ec_energy.SOURCES), "auto" (the first found) or "none"
    # battery and powerstats: Android phones, measured by the adb runner on the phone
    energy: Literal["auto", "none", "ina3221", "ina3221x", "tegrastats", "nvml", "rapl", "pi5_pmic", "battery",
                    "powerstats"] = "auto"
    delegate: Literal["xnnpack", "gpu", "none"] = "xnnpack"  # LiteRT on the device (on this host: xnnpack)
    energy_interval_ms: Optional[float] = Field(default=None, ge=1)  # None: the source's own rate
    idle_seconds: float = Field(default=1.0, ge=0)
    max_runs: int = Field(default=100000, ge=1)  # caps a count (runs, warmup_runs) only; seconds and the energy window always hold
    lock_clocks: bool = False  # Jetson: jetson_clocks --store, pin, always --restore afterwards


class TensorRT(Closed):
    """How the device builds its engine (TensorRT runs only there: engines are not portable)."""

    workspace_mb: int = Field(default=1024, ge=16)
    compare_sparse: bool = True  # with prune.structure 2:4: build dense and sparse, keep the faster
    timing: Literal["api", "trtexec"] = "api"
    trtexec: Optional[str] = None  # default: /usr/src/tensorrt/bin/trtexec, then PATH


class Profile(Closed):
    name: str
    family: Literal["arm", "host", "jetson", "android"]
    description: str = ""
    default_for_family: bool = False
    runtime: Literal["onnxruntime", "litert", "tensorrt"]
    # what the model does (tasks.py): the distillation losses and the checks follow it; auto decides from the
    # model's outputs and says what it chose
    task: Literal["auto", "classification", "detection", "segmentation", "embedding", "regression"] = "auto"
    device: Device
    prune: Prune = Field(default_factory=Prune)
    distill: Distill = Field(default_factory=Distill)
    quantize: Quantize = Field(default_factory=Quantize)
    preprocess: Preprocess = Field(default_factory=Preprocess)
    export: Export = Field(default_factory=Export)
    verify: Verify = Field(default_factory=Verify)
    bench: Bench = Field(default_factory=Bench)
    tensorrt: TensorRT = Field(default_factory=TensorRT)

    @field_validator("name")
    @classmethod
    def _safe_in_file_names(cls, value: str) -> str:
        # the name becomes part of the bundle's folder and zip names: a '/' made a path that did not
        # exist, and failed only after the whole pipeline had run
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} is not a usable profile name: it becomes part of the bundle's file names, so "
                             "it may hold only letters, digits, '.', '_' and '-' (A-Za-z0-9._-), e.g. pi5-lab")
        return value

    @model_validator(mode="after")
    def _fits_the_runtime(self):
        problems = [p for p in (check(self) for check in CROSS_CHECKS) if p]
        if problems:  # all of them at once, as the field errors are
            raise ValueError("\n".join(problems))
        return self


def _precision(p: Profile) -> Optional[str]:
    precisions = {"onnxruntime": ("fp32", "int8"), "tensorrt": ("fp32", "fp16", "int8"),
                  "litert": ("fp32", "fp16", "int8")}[p.runtime]
    if p.quantize.precision not in precisions:
        return (f"quantize.precision {p.quantize.precision} is not available on {p.runtime}; "
                f"choose one of {', '.join(precisions)}")
    return None


def _litert_activations(p: Profile) -> Optional[str]:
    if p.runtime == "litert" and p.quantize.precision == "int8" and p.quantize.activations != "int8":
        return ("quantize.activations must be int8 on litert: full-integer INT8 (PT2E) quantizes "
                "activations to int8 with symmetric int8 weights (--set quantize.activations=int8)")
    return None


def _export_format(p: Profile) -> Optional[str]:
    wanted = {"onnxruntime": "onnx", "tensorrt": "onnx", "litert": "tflite"}[p.runtime]
    if p.export.format is None:
        p.export.format = wanted  # the resolved profile (targets show, the bundle) says what was used
    elif p.export.format != wanted:
        return (f"export.format {p.export.format}: the {p.runtime} runtime loads {wanted} models "
                f"(--set export.format={wanted}, or choose a target whose runtime takes {p.export.format})")
    return None


def _latency_budget(p: Profile) -> Optional[str]:
    # the search measures each candidate on the profile's own back end, so any runtime works; only channel
    # pruning has a ratio whose latency falls steadily enough to search
    if p.prune.latency_budget_ms is not None and p.prune.structure != "channel":
        return (f"prune.latency_budget_ms searches a channel ratio; this profile has structure "
                f"{p.prune.structure}: set prune.structure=channel or prune.ratio instead")
    return None


def _tensor_core_lanes(p: Profile) -> Optional[str]:
    if p.runtime == "tensorrt" and p.prune.structure == "channel" and p.prune.round_to:
        lanes = 32 if p.quantize.precision == "int8" else 16
        if p.quantize.precision != "fp32" and p.prune.round_to % lanes:
            return (f"prune.round_to {p.prune.round_to} leaves tensor cores idle at {p.quantize.precision}: "
                    f"use a multiple of {lanes} (--set prune.round_to={lanes})")
    return None


def _tensorrt_rounds(p: Profile) -> Optional[str]:
    # round 1 builds the engine and later rounds load it from the device's cache, so the manifest's
    # build facts would depend on which round came out the median
    if p.runtime == "tensorrt" and p.bench.rounds > 1:
        return (f"bench.rounds {p.bench.rounds}: TensorRT targets measure in one round (the engine is built in "
                "it); set bench.rounds=1")
    return None


CROSS_CHECKS = (_precision, _litert_activations, _export_format, _latency_budget, _tensor_core_lanes, _tensorrt_rounds)


def _fields_at(loc: Tuple) -> List[str]:
    """The valid keys of the schema section at `loc`, for suggestions."""
    model: Any = Profile
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _describe(err: dict, overrides: Dict[str, str]) -> str:
    key = ".".join(str(p) for p in err["loc"])
    # an override of a section that does not exist is reported at the section: match by prefix
    given = [k for k in overrides if k == key or k.startswith(key + ".")]
    where = f"--set {given[0]}" if given else key
    if err["type"] == "extra_forbidden":
        parent, leaf = err["loc"][:-1], str(err["loc"][-1])
        valid = _fields_at(parent)
        return f"{where}: unknown key.{closest(leaf, valid)} Valid keys here: {', '.join(valid)}"
    if err["type"] == "value_error":  # our own rules: their messages name the keys and the remedy
        msg = err["msg"].removeprefix("Value error, ")
        return msg if not err["loc"] else "\n".join(f"{where}: {line}" for line in msg.split("\n"))
    if err["type"] == "missing":  # its input is the whole section around it: no use to print
        inside = _fields_at(err["loc"])
        return f"{where}: required, and missing" + (f" (a section with {', '.join(inside)})" if inside else "")
    example = f" (a list: --set {key}=[...])" if err["type"] == "list_type" and given else ""
    return f"{where}: {err['msg']} (got {err.get('input')!r}){example}"


def validate(data: dict, source: str, overrides: Dict[str, str] | None = None) -> Profile:
    overrides = overrides or {}
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        problems = [line for e in exc.errors() for line in _describe(e, overrides).split("\n")]
        across_keys = any(not e["loc"] for e in exc.errors())  # a rule your --set values may have broken
        what = f"profile {source} with your --set values" if any(p.startswith("--set ") for p in problems) \
            or (overrides and across_keys) else f"profile {source}"
        raise ProfileError(
            f"{what} has {len(problems)} problem(s):\n  " + "\n  ".join(problems),
            hint="fix the keys above (edgecompress targets show NAME prints a valid profile)",
        ) from None


def available() -> Dict[str, Path]:
    return {p.stem: p for p in sorted(TARGETS_DIR.glob("*.yaml"))}


def family_default(family: str) -> Optional[str]:
    for name, path in available().items():
        data = read_profile_yaml(path)
        if data.get("family") == family and data.get("default_for_family"):
            return name
    return None


def is_file_target(target: str) -> bool:
    """Whether --target names the user's own profile file (a .yaml path), not a built-in target or family."""
    return target.endswith((".yaml", ".yml"))


def resolve_name(target: str) -> Tuple[Path, Optional[str]]:
    """A profile name, family name or path to a YAML file -> (path, note for the user)."""
    if is_file_target(target):
        path = Path(target)
        if not path.is_file():
            raise ProfileError(f"profile file {target} does not exist",
                               hint="check the path, or pass a target name (edgecompress targets lists them)")
        return path, None
    known = available()
    if target in known:
        return known[target], None
    default = family_default(target)
    if default:
        return known[default], f"target family '{target}' resolves to its default profile '{default}'"
    families = sorted({read_profile_yaml(p).get("family") for p in known.values()})
    raise ProfileError(
        f"unknown target '{target}'.{closest(target, list(known) + families)}",
        hint=f"known targets: {', '.join(known)}; families: {', '.join(families)} "
        "(or pass a path to your own .yaml profile)",
    )


def load(target: str, overrides: List[str] | None = None) -> Tuple[Profile, Optional[str]]:
    path, note = resolve_name(target)
    data = read_profile_yaml(path)
    pairs = parse_overrides(overrides or [])
    for key, raw in pairs.items():
        apply_override(data, key, raw)
    return validate(data, str(path), pairs), note


def dump(profile: Profile) -> str:
    return yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False)
