"""The manifest written from a run's records; the keys are the bundle's contract with apps
(DESIGN.md), defined and checked in manifest.py."""
from __future__ import annotations

from .errors import StageError
from .records import Accuracy


def build(run, compressed, deployed, measurement, backend, accuracy: Accuracy, figures=None,
          budget_outcome=None) -> dict:
    """budget_outcome: budget.outcome, where prune.latency_budget_ms was set (the deployed model's p50 against it)."""
    import onnxruntime
    import torch

    from . import __version__
    from .manifest import SCHEMA_VERSION, Manifest

    prof = run.prof
    io = {side: [dict(t) for t in deployed.io[side]] for side in ("inputs", "outputs")}
    io["inputs"][0]["preprocessing"] = run.dataset.preprocessing
    for tensor, own in zip(io["outputs"], compressed.output_names or []):
        if tensor["name"] != own:  # a .tflite's tensor name: the model's own, which decode() reads, beside it
            tensor["model_name"] = own
    energy = measurement.compressed.get("energy")
    manifest = {
        "schema_version": SCHEMA_VERSION, "name": run.source.name, "target": prof.name,
        "task": prof.task, "task_reason": run.task.reason if run.task else None,
        "postprocess": {"file": "postprocess.py", "function": run.postprocess.name} if run.postprocess else None,
        "runtime": backend.runtime_section(deployed, measurement),
        "model": {"file": deployed.model.name, "format": deployed.model.suffix[1:], "opset": backend.opset(deployed.model)},
        **io,
        "labels": run.dataset.labels,
        "compression": {"pruning": _with_outcome(compressed.pruning.to_dict(deployed.two_four), budget_outcome),
                        "distillation": compressed.distillation.to_dict(),
                        # the INT8 recipe's settings only where INT8 was made: an FP16 bundle listing
                        # "activations uint8" would read as if it were quantized
                        "quantization": {"precision": prof.quantize.precision,
                                         **(prof.quantize.model_dump(exclude={"precision", "keep_float"})
                                            if prof.quantize.precision == "int8" else {}),
                                         **({"keep_float": deployed.keep_float.to_dict()} if deployed.keep_float
                                            else {}),
                                         **_qat(compressed, prof)}},
        "metrics": {"accuracy": accuracy.to_dict(),
                    "latency_ms": measurement.each("latency_ms"),
                    "first_run_ms": measurement.each("first_run_ms"),
                    "load_ms": measurement.each("load_ms"),
                    "peak_rss_mb": measurement.each("peak_rss_mb"),
                    "latency_stability": measurement.each("stability"),
                    "latency_rounds": measurement.each("rounds"),
                    "parity_exact_int8": deployed.exact_int8,
                    "user_figures": figures,  # --metric and --postprocess, for original, FP32 student, deployed
                    "energy_mj_per_inference": None if not energy else energy.get("mj_per_inference_total"),
                    "energy_reason": None if energy else measurement.compressed.get("energy_reason"),
                    "energy": measurement.each("energy"),
                    "parity": [c.to_dict() for c in deployed.checks] + [deployed.parity.to_dict()],
                    "measured_on": measurement.measured_on,
                    "device_state": measurement.compressed.get("device")},
        "provenance": {"edgecompress_version": __version__, "torch_version": torch.__version__,
                       "onnxruntime_version": onnxruntime.__version__,  # the host's, for the ONNX checks
                       **backend.converter_versions(),
                       "source_model_sha256": run.source.sha256, "source_format": run.source.kind,
                       "data": run.dataset.source, "profile": prof.model_dump(mode="json")},
        **backend.manifest_sections(deployed, measurement, run.work),
    }
    # checked against the schema apps rely on before it is written (a wrong type fails here, not in an
    # app); bundle.write adds the files' checksums once they are written
    try:
        Manifest.from_dict({**manifest, "files": {}}, "the manifest being written")
    except StageError as exc:
        raise StageError("bundle", exc.message, hint="this is a bug in edgecompress, not in your model: please "
                                                     "report it with this message; no bundle was written") from None
    return manifest


def _with_outcome(pruning: dict, outcome) -> dict:
    """The latency budget's record with whether the deployed model, measured in full, met it."""
    if outcome and pruning.get("latency_budget"):
        pruning["latency_budget"] = dict(pruning["latency_budget"], p50_ms=outcome["p50_ms"], met=outcome["met"])
    return pruning


def _qat(compressed, prof) -> dict:
    """quantize.method as it was applied: the method the student trained for, why, and the QAT steps."""
    from . import qat

    record = qat.record_of(getattr(compressed, "student", None))
    if record is None or prof.quantize.precision != "int8":
        return {}
    return {"method": record.method, "qat": record.to_dict()}
