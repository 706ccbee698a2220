"""The ONNX steps the ONNX Runtime and TensorRT back ends share: the original and the student
exported and each checked against PyTorch, the 2:4 pattern checked in the exported weights, and
the manifest's description of an ONNX file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from .. import export, prune, verify
from ..console import log
from ..errors import StageError


@dataclass(frozen=True)
class Exported:
    original: Path  # original.onnx: what "before" is measured on
    student: Path  # student_fp32.onnx: what the runtime's model is made from
    checks: Tuple  # verify.Parity of each file against PyTorch (none for an .onnx input)
    two_four: Optional[dict] = None


def export_checked(compressed, run) -> Exported:
    """Both models to ONNX FP32, each checked against its PyTorch self on the held-out samples; an
    .onnx input is taken as it is (as one file), since nothing was done to it."""
    if compressed.onnx_file is not None:
        return Exported(compressed.onnx_file, compressed.onnx_file, ())
    c, prof, held = compressed, run.prof, run.held
    original = export.export_onnx(c.original, c.example, run.work / "original.onnx", prof.export, prune.failing_layer)
    student = export.export_onnx(c.student, c.example, run.work / "student_fp32.onnx", prof.export,
                                 prune.failing_layer)
    checks = (
        verify.check(verify.compare("original.onnx vs PyTorch original", verify.onnx_outputs(original, held.x),
                                    c.reference_original, c.output_names, held.y, task=run.prof.task,
                                    score_threshold=run.prof.verify.score_threshold), False, prof.verify),
        verify.check(verify.compare("student FP32 ONNX vs PyTorch student", verify.onnx_outputs(student, held.x),
                                    c.reference, c.output_names, held.y, task=run.prof.task,
                                    score_threshold=run.prof.verify.score_threshold), False, prof.verify),
    )
    log("export: ONNX FP32 matches PyTorch (max |diff| " + _diffs(checks) + ")")
    two_four = check_two_four(student, c.pruning.masked_layers or []) if prof.prune.structure == "2:4" else None
    return Exported(original, student, checks, two_four)


def _diffs(checks) -> str:
    """'4.8e-06, 3.8e-06' (original, student) for one output; per model, each output named, for several
    (a walkthrough read six unlabelled numbers)."""
    if all(len(c.outputs) == 1 for c in checks):
        return ", ".join(f"{c.outputs[0].max_abs_diff:.2g}" for c in checks)
    return "; ".join(f"{who}: " + ", ".join(f"{o.name} {o.max_abs_diff:.2g}" for o in c.outputs)
                     for who, c in zip(("original", "student"), checks))


def check_two_four(onnx_path: Path, masked_layers) -> dict:
    """Every masked layer must still hold the 2:4 pattern in the exported ONNX (BatchNorm folding
    scales whole output channels, so zeros stay zeros; anything else that breaks it fails here)."""
    layers = verify.two_four_layers(onnx_path)
    sparse = [name for name, bad in layers.items() if bad == 0]
    if len(sparse) < len(masked_layers):
        broken = {name: bad for name, bad in layers.items() if bad}
        raise StageError("export", f"{len(masked_layers)} layers were pruned 2:4 but only {len(sparse)} weights in "
                         f"{onnx_path.name} keep the pattern; groups of four with fewer than two zeros: {broken}",
                         hint="set prune.structure=channel, or report the model: an export step rewrote the weights")
    log(f"export: 2:4 pattern intact in {len(sparse)} ONNX weights ({len(masked_layers)} layers masked)")
    return {"sparse_onnx_weights": sparse, "masked_layers": len(masked_layers)}


def io(path: Path, quantization: Optional[dict] = None) -> dict:
    """inputs and outputs of an ONNX file as the manifest gives them, with each tensor's
    quantization (scale, zero point) where the file is a quantized one."""
    spec = export.io_spec(path)
    for tensor in spec["inputs"] + spec["outputs"]:
        tensor["quantization"] = (quantization or {}).get(tensor["name"])
    return spec


def input_name(path: Path) -> str:
    return export.io_spec(path)["inputs"][0]["name"]


def opset(path: Path) -> Optional[int]:
    """The file's own ONNX opset (an .onnx input keeps its own)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def parameters(path: Path) -> int:
    """The number of stored weight values: the initializers' elements (a sparse one's values)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    count = 0
    for init in graph.initializer:
        size = 1
        for d in init.dims:
            size *= d
        count += size
    for sparse in graph.sparse_initializer:
        count += sparse.values.dims[0] if sparse.values.dims else 0
    return count


def facts(path: Path) -> dict:
    """inputs, outputs and the parameter count of an ONNX file, as `verify` compares them."""
    return {**export.io_spec(path), "parameters": parameters(path)}
