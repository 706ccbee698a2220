"""What every back end does the same way: check a converted model's outputs against the FP32
student, check FP16 arithmetic where the device computes in FP16, and pick the samples stored in
the bundle's parity.npz."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from .. import verify
from ..console import log


class Defaults:
    """What a back end does unless its runtime does it differently (each back end overrides the
    rest of the Backend protocol): the runtime's version as the device reported it, the model and
    example.py as the bundle's files, no sections or texts of its own, no dynamic inputs."""

    host_kernels = "this host's CPU and runtime build are not the target's"

    def runtime_section(self, deployed, measurement) -> dict:
        return {"name": self.runtime, "version": (measurement.compressed.get("device") or {}).get("runtime_version")}

    def manifest_sections(self, deployed, measurement, work: Path) -> dict:
        return {}

    def bundle_files(self, deployed, work: Path) -> Dict[str, Path]:
        from ..bundle import EXAMPLES

        return {self.model_file: deployed.model, "example.py": EXAMPLES / self.example,
                "example_tasks.py": EXAMPLES / "example_tasks.py"}  # what every example program shares

    def bundle_texts(self, manifest: dict) -> Dict[str, str]:
        return {}

    def precision_text(self, manifest: dict) -> str:
        return manifest["compression"]["quantization"]["precision"]

    def bench_model(self, folder: Path, manifest: dict, here: bool, artifact: Path):
        return folder / manifest["model"]["file"]

    def random_inputs(self, model: Path, shape):
        return None  # the model is timed at the sizes it was converted with

    def opset(self, path: Path):
        return None

    def converter_versions(self) -> dict:
        return {}


def judge(what: str, compressed, run):
    """The parity of a candidate file's outputs against the FP32 student, as check_deployed computes it
    but without raising: what quantize.keep_float compares two INT8 files by."""
    held = run.held
    return lambda out: verify.compare(what, out, compressed.reference, compressed.output_names, held.y,
                                      compressed.reference_original, task=run.prof.task,
                                      score_threshold=run.prof.verify.score_threshold)


def check_deployed(what: str, out: list, compressed, run, quantized: bool):
    """The deployed model against the FP32 student (and the original, for the agreement with it),
    over every held-out sample, within the profile's tolerance; the table goes to the log."""
    held = run.held
    parity = verify.check(verify.compare(what, out, compressed.reference, compressed.output_names, held.y,
                                         compressed.reference_original, task=run.prof.task,
                                         score_threshold=run.prof.verify.score_threshold), quantized, run.prof.verify)
    log("verify: " + parity.table().strip().replace("\n", "\n        "))
    return parity


def check_fp16(compressed, run):
    """FP16 targets (a TensorRT FP16 engine, the LiteRT GPU delegate) compute in half precision, which
    nothing here runs: the student is computed in FP16 by PyTorch on this CPU and must agree with its
    FP32 self as a quantized model must (a walkthrough found FP16 never checked)."""
    held = run.held
    report = verify.check(verify.compare("student in FP16 arithmetic (PyTorch on this CPU, a stand-in for the "
                                         "device's FP16) vs PyTorch student",
                                         verify.fp16_outputs(compressed.student, held.x), compressed.reference,
                                         compressed.output_names, held.y, task=run.prof.task,
                                         score_threshold=run.prof.verify.score_threshold), True, run.prof.verify)
    log("verify: FP16 " + report.table().strip().replace("\n", "\n        "))
    return report


def parity_samples(compressed, held, out: list) -> dict:
    """The samples stored in the bundle's parity.npz (`verify` re-runs them): the first 32 held-out
    inputs with the deployed model's, the FP32 student's and the original's outputs: output 0 as
    expected / reference / original (as bundles have always had them), output i > 0 as expected_i ..."""
    n = min(32, len(held))
    stored = {"x": held.x[:n]}
    for i in range(len(out)):
        tail = "" if i == 0 else f"_{i}"
        stored.update({f"expected{tail}": out[i][:n], f"reference{tail}": compressed.reference[i][:n],
                       f"original{tail}": compressed.reference_original[i][:n]})
    return stored
