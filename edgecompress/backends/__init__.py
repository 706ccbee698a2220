"""One back end per runtime, the host twin of the device side's runtime registry
(deploy/ec_runtimes.RUNTIMES). A back end owns everything its runtime does differently: it converts
a Compressed model into the file the bundle ships and checks it (convert), says what bench times
(Deployed.bench_models, and for_timing in the latency-budget search), and gives the bundle its
files, texts and manifest sections, and `verify` and `bench` their way of running a bundle's model.
The pipeline, the manifest, the summary, the report and the commands ask BACKENDS, never the
runtime's name. Adding a runtime: one module here, one profile `runtime:` value (with its section
if it has settings), one device-side loader in deploy/ec_runtimes.py, one example template."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence

from ..registry import Registry


class Backend(Protocol):
    runtime: str  # the profile's runtime value
    model_file: str  # the bundle's model file name
    suffix: str  # the model file's suffix: bench and verify on a bare file pick the back end by it
    example: str  # the template shipped as the bundle's example.py
    takes_onnx: bool  # whether an .onnx input can be deployed (a PyTorch-only converter cannot)
    sparse_2_4: bool  # whether 2:4 sparsity runs faster on it (TensorRT's sparse tensor cores)
    bare_file_profile: Optional[str]  # the profile `bench` uses for a bare model file on this host
    runs_bare_files: bool  # whether `bench`/`verify` run a bare model file with it (tensorrt: a bundle's only)
    host_kernels: str  # why a timing on the build host says little of the target's (the summary's slower note)

    def convert(self, compressed, run):
        """records.Deployed: the runtime's model file made from `compressed` (records.Compressed)
        for `run` (records.Inputs), with every check of it against PyTorch."""

    def for_timing(self, module, run, name: str):
        """A bench.Model of `module` converted as convert would, without checks: what the
        latency-budget search times. Raises InputError where nothing can time this runtime."""

    def runtime_section(self, deployed, measurement) -> dict:
        """The manifest's runtime: {name, version[, note]}."""

    def manifest_sections(self, deployed, measurement, work: Path) -> dict:
        """Sections of the manifest only this runtime has (tensorrt: engine)."""

    def bundle_files(self, deployed, work: Path) -> Dict[str, Path]:
        """{name in the bundle: file}: the model, example.py and what they need."""

    def bundle_texts(self, manifest: dict) -> Dict[str, str]:
        """Texts written for this model (the Kotlin runner with its quantization constants)."""

    def run_section(self, manifest: dict) -> str:
        """The bundle README's "Run it"."""

    def precision_text(self, manifest: dict) -> str:
        """The README's precision of the model file."""

    def outputs(self, model_file: Path, x, manifest: dict) -> list:
        """The model file's outputs on `x`, as `verify` re-runs them."""

    def bench_model(self, folder: Path, manifest: dict, here: bool, artifact: Path):
        """What `bench` times from the bundle `artifact`, opened in `folder` (a path or a bench.Model);
        `here`: on this host, which a runtime that runs only on the device refuses."""

    def random_inputs(self, model: Path, shape: Optional[Sequence[int]]) -> Optional[List[dict]]:
        """The job's inputs.random for a model whose non-batch dimensions are dynamic, else None."""

    def bare_file(self, path: Path, tmp: Path) -> Path:
        """A bare model file made ready to send to a device (checked; one file), `tmp` for a copy."""

    def opset(self, path: Path) -> Optional[int]:
        """The model file's ONNX opset, for the manifest (None where it has none)."""

    def file_facts(self, path: Path) -> dict:
        """inputs, outputs (name, shape, dtype) and parameters (stored weight values) of a model file,
        as `verify` compares them with the manifest."""

    def converter_versions(self) -> dict:
        """Versions of the host packages that wrote the file (provenance)."""

    def qat_scheme(self, q):
        """qat.Scheme: the fake quantization that matches this runtime's INT8 (quantize.method qat)."""

    def ptq_outputs(self, student, example, calib, x, prof, work: Path, kept: list) -> list:
        """The outputs on `x` of the INT8 file PTQ makes of `student` now, `kept` layers in float (what
        quantize.method auto judges PTQ by)."""


BACKENDS: Registry = Registry("runtime")


def get(runtime: str) -> Backend:
    return BACKENDS.get(runtime)


def bare_file_backends() -> Dict[str, Backend]:
    """{model-file suffix: the back end that runs such a file bare} (TensorRT takes a bundle's ONNX:
    a bare .onnx is ONNX Runtime's)."""
    return {b.suffix: b for b in map(BACKENDS.get, BACKENDS) if b.runs_bare_files}


def for_file(path: Path) -> Backend:
    """The back end that runs a bare model file, by its suffix."""
    from ..errors import InputError

    backend = bare_file_backends().get(Path(path).suffix)
    if backend is None:
        raise InputError(f"{path}: no runtime loads {Path(path).suffix or 'a file without a suffix'} models",
                         hint="pass a bundle folder or zip, an .onnx or a .tflite file")
    return backend


from . import litert, onnxruntime, tensorrt  # noqa: E402,F401  (each registers itself; none imports anything heavy)
