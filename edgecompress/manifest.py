"""The bundle's manifest.json as a pydantic model: the contract with apps (DESIGN.md, "Bundle"),
typed section by section, read back with its schema_version checked first. Every section keeps
the keys it does not know (`extra="allow"`): a newer minor version or an app may add keys, and
reading a manifest must not drop them. The keys it knows must be there where required and of the
type given, without coercion ("3" is not an integer here), so that a manifest round-trips exactly:
Manifest.from_dict(data, where).to_dict() == data, key order included."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, PlainValidator, PrivateAttr, ValidationError,
                      model_serializer, model_validator)
from pydantic_core import PydanticCustomError

from .errors import InputError
from .manifest_errors import REBUILD, decode, is_inside_name  # noqa: F401 (part of this module's interface)
from .manifest_errors import problem as _problem, stage as _stage, unreadable as _unreadable

SCHEMA_VERSION = 1  # the major version this edgecompress writes and reads
MANIFEST = "manifest.json"
PARITY = "parity.npz"
MAX_MANIFEST_BYTES = 64 << 20  # far more than any manifest: a larger file is not one
UPGRADE = "upgrade edgecompress (pip install -U edgecompress) to read this bundle"


def _leaf(kind: str, words: str, fits):
    """A JSON value taken as it is, or the error `kind` ("Input should be <words>")."""
    def check(value):
        if isinstance(value, bool) or not fits(value):
            raise PydanticCustomError(kind, f"Input should be {words}")
        return value
    return Annotated[Any, PlainValidator(check)]


# An int stays an int where a float may stand (pydantic's float writes 3 back as 3.0), a bool is
# never a number, and a tensor dimension is its size, the name of a dynamic one, or null.
Number = _leaf("number_type", "a number", lambda v: isinstance(v, (int, float)))
Dim = _leaf("dim_type", "a dimension", lambda v: v is None or isinstance(v, (int, str)))
Version = _leaf("version_type", "a version number", lambda v: isinstance(v, (int, str)))


class Section(BaseModel):
    """One object of the manifest: known keys typed, unknown keys kept, and the keys written back
    in the order they were read (or given, for one built in code)."""

    model_config = ConfigDict(extra="allow", strict=True, ser_json_inf_nan="constants")
    _keys: tuple = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data, handler):
        made = handler(data)
        if isinstance(data, dict):
            made._keys = tuple(data)
        return made

    @model_serializer(mode="wrap")
    def _in_order(self, handler):
        out = handler(self)
        if not self._keys:
            return out
        first = {k: out[k] for k in self._keys if k in out}
        return {**first, **{k: v for k, v in out.items() if k not in first}}


# The sections, in the order build() writes them. Required: what DESIGN.md's bundle contract
# promises and every schema-1 manifest has held; the rest may be absent (older bundles of the
# same major version lack later additions). Optional[...] without a default: present, maybe null.

class Runtime(Section):
    name: str
    version: Optional[str]  # null where TensorRT is on the device and no device was reached
    note: Optional[str] = None


class ModelFile(Section):
    file: str  # a plain name the files list (manifest_read.check_named_files)
    format: str  # onnx | tflite
    opset: Optional[int] = None  # the ONNX file's own opset; null for a .tflite
    parameters: Optional[int] = None  # stored weight values, counted in the published file


class TensorQuantization(Section):
    scale: Number
    zero_point: int


class Preprocessing(Section):
    layout: Optional[str] = None
    size: Optional[List[int]] = None
    scale: Optional[Number] = None
    mean: Optional[List[Number]] = None
    std: Optional[List[Number]] = None
    note: Optional[str] = None


class Tensor(Section):
    name: str
    shape: List[Dim]
    dtype: str
    layout: Optional[str] = None  # a .tflite's NHWC input
    quantization: Optional[TensorQuantization] = None
    preprocessing: Optional[Preprocessing] = None  # the first input's
    model_name: Optional[str] = None  # an output's name in the model (dict key or output_N) where the file's differs


class TwoFour(Section):
    masked_layers: Optional[int] = None
    sparse_onnx_weights: Optional[List[str]] = None


class LatencyBudget(Section):
    ratio: Optional[Number] = None
    budget_ms: Optional[Number] = None
    probes_p50_ms: Optional[Dict[str, Number]] = None
    p50_ms: Optional[Number] = None  # the deployed model's, timed in full (metrics.latency_ms.compressed.p50)
    met: Optional[bool] = None  # p50_ms <= budget_ms


class Pruning(Section):
    structure: str
    ratio: Number
    masked_layers: Optional[List[str]] = None
    round_to: Optional[int] = None
    importance: Optional[str] = None
    iterative_steps: Optional[int] = None
    ignored_layers: Optional[List[str]] = None
    left_whole: Optional[List[str]] = None  # layers whose pruning broke the forward pass or the export
    params_before: Optional[int]  # null for an .onnx input: nothing was pruned or counted here
    params_after: Optional[int]
    macs_before: Optional[int]
    macs_after: Optional[int]
    nonzero_params_after: Optional[int] = None
    two_four: Optional[TwoFour] = None
    latency_budget: Optional[LatencyBudget] = None


class Training(Section):
    """Where and how distillation ran (accel.py, distributed.py)."""
    device: str  # cpu, cuda:0, mps
    device_name: str
    precision: str  # fp32 | bf16 | fp16
    world_size: int
    steps_per_s: Optional[Number] = None
    images_per_s: Optional[Number] = None


class Distillation(Section):
    steps: int  # per pruning round
    seconds: Number  # all rounds together (round_seconds: each)
    temperature: Optional[Number] = None
    alpha: Optional[Number] = None
    losses: Optional[List[str]] = None
    final_loss: Optional[Number]  # null where nothing was distilled
    label_free: Optional[bool] = None
    loss_curve: Optional[List[List[Number]]] = None  # [round, step, loss] each
    teacher: Optional[str] = None
    teacher_params: Optional[int] = None
    note: Optional[str] = None
    training: Optional[Training] = None  # since issue 15
    round_seconds: Optional[List[Number]] = None  # each round's, where prune.iterative_steps > 1


class KeepFloat(Section):
    """quantize.keep_float as it was applied (keep_float.FloatChoice)."""
    setting: Union[str, List[str]]  # auto | none | the layer names the profile gave
    layers: List[str]  # operations the INT8 file computes in float; empty: INT8 everywhere
    metric: Optional[str] = None  # the parity figure the choice was made by
    int8_everywhere: Optional[Number] = None  # that figure with every layer in INT8; null: not measured
    kept_in_float: Optional[Number] = None  # ... with the heads (auto) or the named layers in float
    reason: str = ""


class Quantization(Section):
    precision: str  # fp32 | fp16 | int8; the INT8 recipe's keys only where INT8 was made
    keep_float: Optional[KeepFloat] = None
    activations: Optional[str] = None
    weights: Optional[str] = None
    per_channel: Optional[bool] = None
    reduce_range: Optional[bool] = None
    calibration_method: Optional[str] = None
    calibration_samples: Optional[int] = None


class Compression(Section):
    pruning: Pruning
    distillation: Distillation
    quantization: Quantization


class Accuracy(Section):
    metric: str  # accuracy | agreement | a task's figure (verify.TASK_METRICS)
    teacher: Optional[Number]
    student: Optional[Number]
    student_fp32: Optional[Number] = None
    samples: Optional[int] = None
    original_margin: Optional[Number] = None  # agreement only


class LatencyStats(Section):
    """The runner protocol's latency_ms; a runtime's own tool may not give every figure (trtexec: no
    std, no run count; p90 only in versions that print it), so only p50 is sure to be a number."""

    p50: Number
    p90: Optional[Number] = None
    p99: Optional[Number] = None
    mean: Optional[Number] = None
    std: Optional[Number] = None
    min: Optional[Number] = None
    max: Optional[Number] = None
    n: Optional[int] = None
    sampled: Optional[int] = None
    method: Optional[str] = None


class Stability(Section):
    parts: Optional[int] = None
    part_p50_min: Optional[Number] = None
    part_p50_max: Optional[Number] = None
    spread_pct: Optional[Number] = None


class Rounds(Section):
    count: Optional[int] = None
    chosen: Optional[int] = None
    p50_ms: Optional[List[Number]] = None
    spread_pct: Optional[Number] = None


class Energy(Section):
    source: Optional[str] = None
    mj_per_inference_total: Optional[Number] = None
    mj_per_inference_net: Optional[Number] = None


class OutputDiff(Section):
    name: str
    max_abs_diff: Number
    mean_abs_diff: Number


class Parity(Section):
    what: str
    samples: int
    outputs: List[OutputDiff]
    top1_agreement: Optional[Number] = None
    original_agreement: Optional[Number] = None
    accuracy: Optional[Number] = None
    reference_accuracy: Optional[Number] = None
    task_metric: Optional[str] = None  # a task other than classification: which figure task_agreement is
    task_agreement: Optional[Number] = None
    original_task_agreement: Optional[Number] = None
    task_details: Optional[Dict[str, Any]] = None
    tolerance: Optional[Dict[str, Number]] = None  # max_abs_diff, min_top1_agreement or the task's


class TimedInput(Section):
    name: Optional[str] = None
    shape: Optional[List[Dim]] = None


class MeasuredOn(Section):
    device_name: Optional[str] = None
    where: Optional[str] = None  # host | device
    arch: Optional[str] = None
    runtime: Optional[str] = None
    runtime_version: Optional[str] = None
    host: Optional[str] = None
    governor: Optional[str] = None
    cpu: Optional[Dict[str, Any]] = None  # {"model", "int8_features"} from the device's /proc/cpuinfo
    throttled: Optional[bool] = None
    runs: Optional[Dict[str, Optional[int]]] = None
    threads: Optional[int] = None
    inputs: Optional[Dict[str, Optional[List[TimedInput]]]] = None
    note: Optional[str] = None
    proxy: Optional[bool] = None  # ONNX Runtime stood in for a runtime that runs only on the device


class DeviceState(Section):
    """What the bench device said of itself (deploy/ec_bench.device_info); its other keys are kept."""

    arch: Optional[str] = None
    python: Optional[str] = None
    platform: Optional[str] = None
    runtime: Optional[str] = None
    runtime_version: Optional[str] = None
    cpu_count: Optional[int] = None
    governor: Optional[str] = None
    throttled: Optional[bool] = None
    throttle_reason: Optional[str] = None


class Metrics(Section):
    accuracy: Accuracy
    latency_ms: Dict[str, LatencyStats]  # per model: original, compressed
    first_run_ms: Optional[Dict[str, Optional[Number]]] = None
    load_ms: Optional[Dict[str, Optional[Number]]] = None
    peak_rss_mb: Optional[Dict[str, Optional[Number]]] = None
    latency_stability: Optional[Dict[str, Optional[Stability]]] = None
    latency_rounds: Optional[Dict[str, Optional[Rounds]]] = None
    parity_exact_int8: bool = False  # absent in bundles from before the exact checks
    user_figures: Optional[Dict[str, Any]] = None  # --metric / --postprocess: per model, the user's figures
    energy_mj_per_inference: Optional[Number]  # null with energy_reason saying why
    energy_reason: Optional[str] = None
    energy: Optional[Dict[str, Optional[Energy]]] = None
    parity: List[Parity]  # every check deploy ran, the deployed model's last
    measured_on: MeasuredOn
    device_state: Optional[DeviceState] = None


class FileEntry(Section):
    sha256: str
    bytes: int = Field(ge=0)


class ProfileDump(Section):
    """The resolved profile the bundle was built with; only its verify section is read back here
    (profile.validate checks the whole of it where bench needs it)."""

    verify: Dict[str, Any]


class Provenance(Section):
    edgecompress_version: str
    torch_version: Optional[str] = None
    onnxruntime_version: Optional[str] = None  # the host's, for the ONNX checks
    litert_torch_version: Optional[str] = None
    ai_edge_litert_version: Optional[str] = None
    source_model_sha256: Optional[str] = None
    source_format: Optional[str] = None  # torch | onnx
    data: Optional[str] = None
    profile: ProfileDump


class BuildSettings(Section):
    onnx: str = None  # may be absent, never null: the file the engine is built from
    calibration: Optional[str] = None
    precision: Optional[str] = None
    timing: Optional[str] = None
    workspace_mb: Optional[int] = None


class Engine(Section):
    """A TensorRT bundle's engine: where it was built, for what, from what."""

    status: Optional[str] = None
    build_settings: Optional[BuildSettings] = None
    engine: Optional[Dict[str, Any]] = None
    build_ms: Optional[Number] = None
    tensorrt_version: Optional[str] = None
    files: Optional[List[str]] = None
    valid_for: Optional[Dict[str, Any]] = None


class Manifest(Section):
    schema_version: Version
    name: str
    target: str
    task: Optional[str] = None  # classification | detection | segmentation | embedding | regression
    task_reason: Optional[str] = None  # why: --task, the profile, or what auto saw in the outputs
    postprocess: Optional[Dict[str, str]] = None  # --postprocess: {file, function}, the decode function shipped
    runtime: Runtime
    model: ModelFile
    inputs: List[Tensor]
    outputs: List[Tensor]
    labels: Optional[List[str]] = None
    compression: Compression
    metrics: Metrics
    provenance: Provenance
    engine: Optional[Engine] = None
    files: Dict[str, FileEntry]

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "Manifest":
        """`data` (the JSON of `where`) checked: its schema_version (a newer major: InputError, exit 2,
        saying to upgrade), then every key's type (StageError naming each key path), then the file
        names and tensors."""
        if not isinstance(data, dict):
            raise _stage(f"{where} holds a JSON {type(data).__name__}, not a manifest (an object with model, files, "
                         "metrics, ...)")
        check_version(data.get("schema_version"), where)
        try:
            manifest = cls.model_validate(data)
        except ValidationError as exc:
            raise _unreadable(where, [_problem(e) for e in exc.errors()]) from None
        problems = _files_problems(manifest.files) + _tensor_problems(manifest)
        if problems:
            raise _unreadable(where, problems)
        return manifest

    def to_dict(self) -> dict:
        """The manifest as JSON values: exactly the keys read (or set), in their order."""
        return self.model_dump(mode="json", exclude_unset=True)

    # Where the lead's build(run, compressed, deployed, measurement, backend, accuracy) -> Manifest
    # goes: the manifest made from the run's records (today's manifest_build.build, a dict).


def load(folder: Path) -> Manifest:
    """folder/manifest.json, read and checked (see Manifest.from_dict)."""
    path = Path(folder) / MANIFEST
    if path.is_symlink() or path.stat().st_size > MAX_MANIFEST_BYTES:
        raise _stage(f"{path} is not a manifest edgecompress wrote (a link, or too large)")
    return parse(path.read_bytes(), str(path))


def parse(raw: bytes, where: str) -> Manifest:
    """The manifest in `raw` (the bytes of `where`), checked; every problem names `where`."""
    return Manifest.from_dict(decode(raw, where), where)


def check_version(version, where: str) -> None:
    """A major version above SCHEMA_VERSION is a bundle from a newer edgecompress: the user's
    edgecompress is what must change, not the bundle (InputError, exit 2)."""
    from . import __version__

    if isinstance(version, bool) or not isinstance(version, (int, str)):
        raise _stage(f"{where}: schema_version is {version!r}, not a version number")
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise _stage(f"{where}: schema_version is {version!r}, not a version number") from None
    if major > SCHEMA_VERSION:
        raise InputError(f"{where} has schema_version {version}, newer than the {SCHEMA_VERSION} this edgecompress "
                         f"({__version__}) reads", hint=UPGRADE)


def _files_problems(files: Dict[str, FileEntry]) -> List[str]:
    """Each entry names a file inside the bundle folder."""
    return [f"files: {rel!r} is not a path inside the bundle folder" for rel in files if not is_inside_name(rel)]


def _tensor_problems(manifest: Manifest) -> List[str]:
    return [f"{side}: empty" for side in ("inputs", "outputs") if not getattr(manifest, side)]
