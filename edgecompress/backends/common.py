"""What every back end does the same way: check a converted model's outputs against the FP32
student, check FP16 arithmetic where the device computes in FP16, and pick the samples stored in
the bundle's parity.npz."""
from __future__ import annotations

from .. import verify
from ..console import log


def check_deployed(what: str, out: list, compressed, run, quantized: bool):
    """The deployed model against the FP32 student (and the original, for the agreement with it),
    over every held-out sample, within the profile's tolerance; the table goes to the log."""
    held = run.held
    parity = verify.check(verify.compare(what, out, compressed.reference, compressed.output_names, held.y,
                                         compressed.reference_original), quantized, run.prof.verify)
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
                                         compressed.output_names, held.y), True, run.prof.verify)
    log("verify: FP16 " + report.table().strip().replace("\n", "\n        "))
    return report


def parity_samples(compressed, held, out: list) -> dict:
    """The samples stored in the bundle's parity.npz (`verify` re-runs them): the first 32 held-out
    inputs with the deployed model's, the FP32 student's and the original's first output."""
    n = min(32, len(held))
    return {"x": held.x[:n], "expected": out[0][:n], "reference": compressed.reference[0][:n],
            "original": compressed.reference_original[0][:n]}
