"""The typed facts of one deploy, in the order the stages make them: what it starts from (Inputs),
the compressed PyTorch model with how it was pruned and distilled (Compressed), the model file a
back end made for its runtime with its checks (Deployed), and what the bench device measured
(Measurement). Each stage takes the records before it and returns its own; nothing is added to a
record after it is made. The manifest (manifest.build) and the summary (summary.build) are written
from these alone."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple


@dataclass(frozen=True)
class Inputs:
    """What a deploy starts from, checked (inputs.load_and_check): the profile resolved for the
    run, the model, its teacher, the data and its two splits, the bench device."""

    prof: Any  # profile.Profile
    source: Any  # models.ModelSource
    teacher: Any  # nn.Module (the unpruned model itself unless --teacher named another); None for .onnx
    dataset: Any  # data.Dataset: all of it (labels, preprocessing, source)
    train: Any  # data.Dataset: distillation and calibration
    held: Any  # data.Dataset: the checks (at most verify.samples)
    device: Any  # inventory.Device, or None: this host
    name: str  # the bundle's name
    work: Path  # the run's work folder (checkpoints, converted files), OUT/.<name>.work
    teacher_spec: Optional[str] = None  # --teacher, as given
    task: Any = None  # tasks.Task: what the model does, as --task, the profile or auto decided
    postprocess: Any = None  # user_code.UserFunction: --postprocess, the user's decode function
    metric: Any = None  # user_code.UserFunction: --metric, the user's own figure


@dataclass(frozen=True)
class Pruning:
    """How the student was pruned (the manifest's compression.pruning, key for key)."""

    structure: str
    ratio: float
    params_before: Optional[int] = None
    params_after: Optional[int] = None
    macs_before: Optional[int] = None
    macs_after: Optional[int] = None
    nonzero_params_after: Optional[int] = None
    masked_layers: Optional[List[str]] = None
    round_to: Optional[int] = None
    importance: Optional[str] = None
    iterative_steps: Optional[int] = None
    ignored_layers: Optional[List[str]] = None
    left_whole: Optional[List[str]] = None  # found by trial: pruning them broke the forward pass or the export
    latency_budget: Optional[dict] = None  # budget.search's outcome: ratio, budget_ms, probes_p50_ms

    def to_dict(self, two_four: Optional[dict] = None) -> dict:
        """The manifest's keys: an .onnx input (nothing pruned here) has only the structure, the ratio
        and the (unknown) counts."""
        counts = {k: getattr(self, k) for k in COUNT_KEYS}
        if self.iterative_steps is None:
            return {"structure": self.structure, "ratio": self.ratio, **counts}
        out = {"structure": self.structure, "ratio": self.ratio, "masked_layers": self.masked_layers,
               "round_to": self.round_to, "importance": self.importance, "iterative_steps": self.iterative_steps,
               "ignored_layers": self.ignored_layers, "left_whole": self.left_whole or [], **counts, "nonzero_params_after": self.nonzero_params_after}
        if two_four is not None:
            out["two_four"] = two_four
        out["latency_budget"] = self.latency_budget
        return out


COUNT_KEYS = ("params_before", "params_after", "macs_before", "macs_after")


@dataclass(frozen=True)
class Distillation:
    """How the student was taught (the manifest's compression.distillation, key for key)."""

    steps: int
    seconds: float
    temperature: Optional[float] = None
    alpha: Optional[float] = None
    losses: Optional[List[str]] = None
    final_loss: Optional[float] = None
    label_free: Optional[bool] = None
    loss_curve: Optional[List[list]] = None
    teacher: Optional[str] = None
    teacher_params: Optional[int] = None
    note: Optional[str] = None  # why nothing was distilled (an .onnx input)
    training: Optional[dict] = None  # where and how: device, device_name, precision, world_size, steps/s, images/s
    round_seconds: Optional[List[float]] = None  # each pruning round's seconds (seconds: all of them)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("final_loss",)}


@dataclass(frozen=True)
class Compressed:
    """The compressed model, ready for a back end: the PyTorch student and original (None for an
    .onnx input, which `onnx_file` holds instead), and their outputs on the held-out inputs, the
    references every conversion is checked against."""

    student: Any  # nn.Module, pruned and distilled; None for an .onnx input
    original: Any  # nn.Module, the user's model as loaded; None for an .onnx input
    example: Any  # torch.Tensor, one training sample (export traces with it); None for an .onnx input
    reference: List[Any]  # the student's outputs on held.x (np.ndarray per output)
    reference_original: List[Any]  # the original's outputs on held.x
    output_names: List[str]
    pruning: Pruning
    distillation: Distillation
    onnx_file: Optional[Path] = None  # an .onnx input, as one file in the work folder


@dataclass(frozen=True)
class Deployed:
    """What a back end made of a Compressed model: the file the bundle ships, checked."""

    model: Path  # the deployed model file (model.onnx, model.tflite)
    original_file: Path  # the original converted for the same runtime: what "before" is measured on
    parity: Any  # verify.Parity: the deployed model against the FP32 student, over the held-out samples
    checks: Tuple[Any, ...]  # the other checks that ran, in order (verify.Parity each)
    parity_samples: Dict[str, Any]  # parity.npz: x, expected, reference, original
    bench_models: Dict[str, Any]  # {"original"|"compressed": bench.Model}: what bench times
    io: dict  # {"inputs": [...], "outputs": [...]} as the manifest gives them, quantization included
    exact_int8: bool = False  # the checks computed INT8 products exactly, as the target's kernels do
    extra_files: Dict[str, Path] = field(default_factory=dict)  # bundle files besides model and example
    two_four: Optional[dict] = None  # the 2:4 pattern found intact in the exported weights (prune.structure 2:4)
    plan: Any = None  # the back end's own facts (tensorrt: its EnginePlan)
    stand_in: Optional[str] = None  # why bench times something other than the deployed model (none: None)
    outputs: Optional[List[Any]] = None  # the deployed model's outputs on held.x (np.ndarray per output)
    keep_float: Any = None  # keep_float.FloatChoice: the layers the INT8 file keeps in float, and why (None: not INT8)


@dataclass(frozen=True)
class Measurement:
    """What the bench device returned for each model (the runner protocol's result, one per
    label), and where it ran."""

    results: Dict[str, dict]  # {"original": result, "compressed": result}
    device: Any  # inventory.Device, or None: this host
    measured_on: dict  # where the figures come from, in words and fields (summary.measured_on)

    @property
    def compressed(self) -> dict:
        return self.results["compressed"]

    @property
    def original(self) -> dict:
        return self.results["original"]

    def each(self, key: str, default=None) -> Dict[str, Any]:
        """{label: result[key]} over the measured models."""
        return {label: r.get(key, default) for label, r in self.results.items()}


@dataclass(frozen=True)
class Accuracy:
    """Top-1 on held-out labels, or without labels the agreement with the original model."""

    metric: str  # "accuracy" | "agreement" | a task's figure (verify.TASK_METRICS: "segmentation" ...)
    teacher: Optional[float]
    student: Optional[float]
    student_fp32: Optional[float]
    samples: int
    original_margin: Optional[float] = None

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.metric != "agreement":
            out.pop("original_margin")
        return out


@dataclass(frozen=True)
class Side:
    """One column of the before/after table."""

    bytes: int
    deflated_bytes: int
    params: Optional[int]
    macs: Optional[int]
    accuracy: Optional[float]
    p50_ms: Optional[float]
    nonzero_params: Optional[int] = None  # after only
    zip_bytes: Optional[int] = None  # after only, once the bundle is zipped


@dataclass(frozen=True)
class Summary:
    """What a deploy prints at the end (and `--json` writes), built from the records by summary.build."""

    name: str
    target: str
    before: Side
    after: Side
    speedup_p50: Optional[float]
    accuracy_metric: str
    accuracy_samples: int
    latency_ms: Dict[str, dict]
    measured_on: dict
    measured_on_text: str
    accuracy_note: Optional[str]
    rounds: Optional[dict]
    speedup_per_round: Optional[List[float]]
    energy_reason: Optional[str]
    latency_budget: Optional[dict] = None  # budget.outcome, where a budget was set
    user_figures: Optional[dict] = None  # --metric and --postprocess figures (user_code.figures)
    distillation: Optional[dict] = None  # {steps, seconds}: the manifest's, so a script reads the training time here
    # a segmenter with masks in the data: mean IoU on them, {"original": .., "deployed": ..} (verify's task_details)
    mask_iou: Optional[dict] = None
    bundle: Optional[str] = None
    zip: Optional[str] = None
    seconds: Optional[float] = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["before"] = {k: v for k, v in out["before"].items() if k not in ("nonzero_params", "zip_bytes")}
        if self.latency_budget is None:
            out.pop("latency_budget")
        if self.user_figures is None:
            out.pop("user_figures")
        if self.mask_iou is None:
            out.pop("mask_iou")
        return out
