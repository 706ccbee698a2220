"""What a finished run says: the summary printed at the end, the manifest written into the bundle
and the bundle's texts (README, report.html, the Kotlin runner), all from one set of facts: the
stages' results and the measurements. No stage runs here."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from . import __version__
from . import bench, bundle, engine, export, quantize, report, report_html
from .console import log


def measured_on(results: dict, prof, device, proxy: bool = False) -> dict:
    """Where the latency (and energy) figures come from, in words and in fields."""
    r = results["compressed"]
    state = r.get("device") or {}
    on_host = device is None or device.transport == "local"  # a local device is this host under a name
    fields = {"device_name": device.name if device else "this host", "where": "host" if on_host else "device",
              "arch": state.get("arch"), "runtime": state.get("runtime") or prof.runtime,
              "runtime_version": state.get("runtime_version"),
              "host": r.get("host"), "governor": state.get("governor"), "throttled": state.get("throttled"),
              "clocks_mhz_before": state.get("clocks_mhz_before"), "clocks_mhz_after": state.get("clocks_mhz_after"),
              "runs": {k: v["latency_ms"]["n"] for k, v in results.items()},
              "threads": (r.get("runtime_options") or {}).get("threads"),
              "inputs": {k: [{"name": i.get("name"), "shape": i.get("shape")} for i in v.get("inputs") or []] or None
                         for k, v in results.items()}}
    if device and on_host:
        fields["note"] = (f"Measured on this host as device {device.name} ({r.get('host')}, {state.get('arch')}, "
                          f"{prof.runtime} {state.get('runtime_version')}), not on a {prof.name} board unless this "
                          "host is one.")
    elif device:
        fields["note"] = (f"Measured on device {device.name} ({r.get('host')}, {state.get('arch')}, "
                          f"{prof.runtime} {state.get('runtime_version')}).")
    else:
        fields["note"] = (f"Measured on the build host ({r.get('host')}, {state.get('arch')}), not on the "
                          f"{prof.name} target: run with --device to measure on the device.")
    if proxy:
        fields["proxy"] = True
        fields["note"] += (f" {prof.runtime} runs only on the device, so these are ONNX Runtime FP32 figures of the "
                           "same ONNX files, a stand-in: no engine was built or timed.")
    return fields


def describe(source, prof, dataset, stages, deployed: Path, results: dict, device=None, trt=None,
             work: Optional[Path] = None) -> tuple:
    """The summary printed at the end and the manifest written into the bundle, from one set of facts."""
    import onnxruntime
    import torch

    acc = _accuracy(stages, dataset)
    if deployed.suffix == ".tflite":
        from . import litert

        io = litert.io_spec(deployed)  # quantization per tensor, from the file itself
    else:
        q = quantize.quantization_params(deployed) if prof.quantize.precision == "int8" and trt is None else {}
        io = export.io_spec(deployed)
        for tensor in io["inputs"] + io["outputs"]:
            tensor["quantization"] = q.get(tensor["name"])
    io["inputs"][0]["preprocessing"] = dataset.preprocessing
    measured = measured_on(results, prof, device, proxy=bool(trt and trt.proxy))
    energy = results["compressed"].get("energy")
    manifest = {
        "schema_version": bundle.SCHEMA_VERSION, "name": source.name, "target": prof.name,
        "runtime": _runtime_section(prof, results, trt),
        "model": {"file": deployed.name, "format": deployed.suffix[1:], "opset": _onnx_opset(deployed)},
        **io,
        "labels": dataset.labels,
        "compression": {"pruning": stages["pruning"] | _counts(stages), "distillation": stages["distillation"],
                        # the INT8 recipe's settings only where INT8 was made: an FP16 bundle listing
                        # "activations uint8" would read as if it were quantized
                        "quantization": {"precision": prof.quantize.precision,
                                         **(prof.quantize.model_dump(exclude={"precision"})
                                            if prof.quantize.precision == "int8" else {})}},
        "metrics": {"accuracy": acc,
                    "latency_ms": {k: v["latency_ms"] for k, v in results.items()},
                    "first_run_ms": {k: v.get("first_run_ms") for k, v in results.items()},
                    "load_ms": {k: v.get("load_ms") for k, v in results.items()},
                    "peak_rss_mb": {k: v.get("peak_rss_mb") for k, v in results.items()},
                    "latency_stability": {k: v.get("stability") for k, v in results.items()},
                    "latency_rounds": {k: v.get("rounds") for k, v in results.items()},
                    "parity_exact_int8": stages.get("exact_int8", False),
                    "energy_mj_per_inference": None if not energy else energy.get("mj_per_inference_total"),
                    "energy_reason": None if energy else results["compressed"].get("energy_reason"),
                    "energy": {k: v.get("energy") for k, v in results.items()},
                    "parity": [c.to_dict() for c in stages["checks"]] + [stages["parity"].to_dict()],
                    "measured_on": measured,
                    "device_state": results["compressed"].get("device")},
        "provenance": {"edgecompress_version": __version__, "torch_version": torch.__version__,
                       "onnxruntime_version": onnxruntime.__version__,  # the host's, for the ONNX checks
                       **_converter_versions(prof.runtime),
                       "source_model_sha256": source.sha256, "source_format": source.kind,
                       "data": dataset.source, "profile": prof.model_dump(mode="json")},
    }
    if trt is not None:
        manifest["engine"] = engine_section(trt, results, device, work)
    summary = _summary(stages, deployed, results, acc, measured, prof.quantize.precision != "fp32")
    summary["name"], summary["target"] = source.name, prof.name
    return summary, manifest


def _onnx_opset(path: Path) -> Optional[int]:
    """The deployed file's own ONNX opset (an .onnx input keeps its own), None for a .tflite."""
    if path.suffix != ".onnx":
        return None
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _runtime_section(prof, results: dict, trt) -> dict:
    if trt is not None:
        if trt.tensorrt_version is None:
            return {"name": prof.runtime, "version": None,
                    "note": "the engine is built on the device, with the TensorRT there: deploy with --device to record it"}
        return {"name": prof.runtime, "version": trt.tensorrt_version}
    return {"name": prof.runtime, "version": (results["compressed"].get("device") or {}).get("runtime_version")}


def _converter_versions(runtime: str) -> dict:
    """The host packages that wrote and checked a .tflite, for a bundle that has to be rebuilt later."""
    if runtime != "litert":
        return {}
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("litert-torch", "ai-edge-litert"):
        try:
            found[package.replace("-", "_") + "_version"] = version(package)
        except PackageNotFoundError:
            found[package.replace("-", "_") + "_version"] = None
    return found


def engine_section(trt, results: dict, device, work: Path) -> dict:
    """What a Jetson app needs to know about the engine: where it was built, for what, from what."""
    if trt.proxy:
        return {"status": "not built: TensorRT engines are built on the device; the example builds one from the "
                          "ONNX on first use", "build_settings": trt.build_settings}
    r = results["compressed"]
    return {"status": f"built on device {device.name}", "build_settings": trt.build_settings,
            "engine": r.get("engine"), "build_ms": r.get("build_ms"), "tensorrt_version": trt.tensorrt_version,
            "files": sorted(engine.fetched_files(work)), "valid_for": (r.get("engine") or {}).get("valid_for")}


def _counts(stages) -> dict:
    (pb, mb), (pa, ma) = stages["counts_before"], stages["counts_after"]
    return {"params_before": pb, "params_after": pa, "macs_before": mb, "macs_after": ma}


def _accuracy(stages, dataset) -> dict:
    """Top-1 accuracy on held-out labels; without labels, the deployed model's top-1 agreement with the
    original model (the teacher, unless --teacher named another), the same figure the parity check
    reports beside its agreement with the FP32 student (one computation, shown in both places)."""
    parity, y = stages["parity"], stages["held_y"]
    original = stages["reference_original"][0]
    teacher_top1 = original.argmax(1)
    if y is not None:
        return {"metric": "accuracy", "teacher": float((teacher_top1 == y).mean()), "student": parity.accuracy,
                "student_fp32": parity.reference_accuracy, "samples": parity.samples}
    fp32 = float((stages["reference"][0].argmax(1) == teacher_top1).mean())
    return {"metric": "agreement", "teacher": 1.0, "student": parity.original_agreement, "student_fp32": fp32,
            "samples": parity.samples, "original_margin": _median_margin(original)}


NEAR_TIE_MARGIN = 0.01  # softmax top-1 minus top-2 below this: the original's classes are near ties


def _median_margin(logits) -> Optional[float]:
    """The median gap between the original's two most likely classes (softmax), which tells whether
    its top-1 means anything: a random-weight model's classes are near ties, so no student can agree."""
    import numpy as np

    if logits.ndim != 2 or logits.shape[1] < 2:
        return None
    z = logits.astype(np.float64) - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    top2 = np.sort(p, 1)[:, -2:]
    return float(np.median(top2[:, 1] - top2[:, 0]))


def _summary(stages, deployed: Path, results: dict, acc: dict, measured: dict, quantized: bool) -> dict:
    (pb, mb), (pa, ma) = stages["counts_before"], stages["counts_after"]
    lat = {k: v["latency_ms"] for k, v in results.items()}
    rounds = {k: v["rounds"] for k, v in results.items() if v.get("rounds")}
    paired = bench.round_speedups(results["original"], results["compressed"])
    original_file = stages.get("original_model_file", stages["original_onnx"])
    return {
        "before": {"bytes": original_file.stat().st_size, "params": pb, "macs": mb,
                   "deflated_bytes": _deflated_bytes(original_file),
                   "accuracy": acc["teacher"], "p50_ms": lat["original"]["p50"]},
        "after": {"bytes": deployed.stat().st_size, "deflated_bytes": _deflated_bytes(deployed),
                  "params": pa, "macs": ma, "nonzero_params":
                  stages["pruning"].get("nonzero_params_after"), "accuracy": acc["student"],
                  "p50_ms": lat["compressed"]["p50"]},
        "speedup_p50": bench.speedup(results["original"], results["compressed"]),
        "accuracy_metric": acc["metric"],
        "accuracy_samples": acc["samples"],
        "latency_ms": lat,
        "measured_on": measured,
        "measured_on_text": f"{measured['note']} Timed runs: {lat['original']['n']} original, "
                            f"{lat['compressed']['n']} compressed." + _rounds_note(rounds, paired) + _drift_note(results),
        "accuracy_note": _accuracy_warning(acc, quantized),
        "rounds": rounds or None,
        "speedup_per_round": paired,
        "energy_reason": results["compressed"].get("energy_reason"),
    }


WARN_DROP_POINTS = 2.0  # an accuracy cost past this is said under the table, with what to change


def _accuracy_warning(acc: dict, quantized: bool) -> Optional[str]:
    """The run passed its checks (the deployed model matches the student it came from), but the
    student may have learned too little, or quantization cost more than it should: say so, with the
    knob that helps. Which one, the FP32 student's accuracy tells (without it: the student's)."""
    before, after = acc["teacher"], acc["student"]
    if before is None or after is None or (before - after) * 100 <= WARN_DROP_POINTS:
        return None
    what = "accuracy" if acc["metric"] == "accuracy" else "agreement with the original"
    fp32 = acc.get("student_fp32")
    if quantized and fp32 is not None and (before - fp32) * 100 <= WARN_DROP_POINTS:
        remedy = ("quantization lost it (the FP32 student kept it): try more calibration samples "
                  "(--set quantize.calibration_samples=N), another calibration_method, or keep FP32 "
                  "(--set quantize.precision=fp32)")
    else:
        remedy = ("the compressed model learned too little: distill longer (--set distill.steps=N) or prune less "
                  "(--set prune.ratio=R); the distillation loss curve in report.html shows whether the loss was "
                  "still falling")
    margin = acc.get("original_margin")
    if margin is not None and margin < NEAR_TIE_MARGIN:
        remedy = (f"the original model's top-1 is a near tie (median gap between its two likeliest classes "
                  f"{margin:.2g}, as with random or untrained weights), so its classes say little and agreement "
                  f"with them is mostly chance: pass the trained weights (--weights), or data with labels")
    return (f"warning: {what} fell {(before - after) * 100:.2f} points ({before:.2%} -> {after:.2%}) on "
            f"{acc['samples']} held-out samples: {remedy}")


def _rounds_note(rounds: dict, paired: Optional[List[float]]) -> str:
    """Every round's p50, so the reader sees how far the rounds agreed, not only the median one."""
    if not rounds:
        return ""
    count = next(iter(rounds.values()))["count"]
    each = "; ".join(f"{k} " + " / ".join("-" if p is None else f"{p:.3g}" for p in r["p50_ms"])
                     for k, r in rounds.items())
    pairs = f"; speed-up per round: {' / '.join(f'{s:.2f}x' for s in paired)}" if paired else ""
    return (f" The models took turns in {count} rounds; each figure is its model's median round "
            f"(p50 per round, ms: {each}{pairs}).")


def _drift_note(results: dict) -> str:
    """A warning line when the p50 moved within a timed window, or between the rounds: the speed-up is
    then no more exact than that."""
    note = ""
    for key, what, modes in (("stability", "the p50 drifted within the timed window", " (or the latency has two modes)"),
                             ("rounds", f"the rounds' p50s spread by more than {bench.NOISY_SPREAD_PCT:.0f}%", "")):
        spreads = {k: (v.get(key) or {}).get("spread_pct") for k, v in results.items()}
        noisy = {k: s for k, s in spreads.items() if s is not None and s > bench.NOISY_SPREAD_PCT}
        if noisy:
            parts = ", ".join(f"{k} {s:.0f}%" for k, s in noisy.items())
            note += (f"\nwarning: {what} ({parts}): the machine was busy or throttling{modes}, so these latencies "
                     "will not repeat to better than that; run bench again on a quiet device")
    return note


def _deflated_bytes(path: Path) -> int:
    """The model's size once zipped: where unstructured pruning's zeros pay off."""
    import zlib

    return len(zlib.compress(path.read_bytes(), 9))


def bundle_files(deployed: Path, trt=None, work: Optional[Path] = None) -> dict:
    if deployed.suffix == ".tflite":
        return {"model.tflite": deployed, "example.py": bundle.EXAMPLES / "tflite_example.py"}
    files = {"model.onnx": deployed, "example.py": bundle.EXAMPLES / "onnx_example.py"}
    if trt is not None:
        files.update(trt.bundle_files)
        files.update(engine.fetched_files(work))
        files["trt_example.py"] = bundle.EXAMPLES / "trt_example.py"
        # what trt_example.py imports
        for name in ("ec_trt.py", "ec_trt_cache.py", "ec_trt_cuda.py", "ec_trtexec.py", "ec_runtimes.py"):
            files[f"device/{name}"] = bundle.EXAMPLES.parent / "deploy" / name
    return files


def kotlin_runner(manifest: dict) -> str:
    """The Kotlin example with this model's input and output quantization filled in."""
    text = (bundle.EXAMPLES / "ModelRunner.kt").read_text()
    for side, tensor in (("INPUT", manifest["inputs"][0]), ("OUTPUT", manifest["outputs"][0])):
        q = tensor.get("quantization") or {"scale": 0.0, "zero_point": 0}
        text = text.replace(f"@{side}_SCALE@", repr(float(q["scale"]))).replace(f"@{side}_ZERO_POINT@",
                                                                                 str(int(q["zero_point"])))
    return text


def _report_page(manifest: dict, summary: dict) -> str:
    """report.html; a page that cannot be drawn must not cost the finished run its bundle."""
    try:
        return report_html.page(manifest, summary)
    except Exception as exc:  # noqa: BLE001 - any figure the page did not foresee
        log(f"report: warning: report.html could not be drawn ({type(exc).__name__}: {exc}); manifest.json holds "
            "every figure")
        from html import escape

        return (f"<!doctype html><meta charset=utf-8><title>{escape(manifest['name'])}</title><p>This report could "
                f"not be drawn ({escape(type(exc).__name__)}: {escape(str(exc))}); manifest.json holds every figure.")


def bundle_texts(dataset, manifest: dict, summary: dict) -> dict:
    texts = {"README.md": report.bundle_readme(manifest, summary), "report.html": _report_page(manifest, summary)}
    if manifest["model"]["format"] == "tflite":
        texts["ModelRunner.kt"] = kotlin_runner(manifest)
    if dataset.labels:
        texts["labels.txt"] = "\n".join(dataset.labels) + "\n"
    return texts
