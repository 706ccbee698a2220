"""The TensorRT stage, host side. TensorRT runs only on the device (engines are not portable across
GPUs or TensorRT versions), so here the stage decides what the device will build: which ONNX
(FP32, or Q/DQ for TensorRT 11, which dropped the INT8 calibrator), with which options, and which
calibration samples travel with the job. No TensorRT import here; the device side is
edgecompress/deploy/ec_trt.py."""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from .bench import Model

CALIBRATION_FILE = "calibration.npy"
BUNDLE_CALIBRATION_MAX_BYTES = 16 * 1024 * 1024  # enough samples to calibrate on first use, not a data set


@dataclass
class EnginePlan:
    models: Dict[str, Model]  # what bench measures: on the device with TensorRT, or proxies here
    build_settings: dict  # what the device builds (also what an app rebuilds from, on first use)
    bundle_files: Dict[str, Path] = field(default_factory=dict)
    proxy: bool = False  # True: no device, so ONNX Runtime on this host stands in for latency
    tensorrt_version: Optional[str] = None


def major(version: Optional[str]) -> Optional[int]:
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return None


def device_tensorrt_version(device) -> Optional[str]:
    """The TensorRT version the device's Python imports (from the device-side probe), or None when
    only trtexec is there: the device side then builds with trtexec, or says that neither exists."""
    module = importlib.import_module(f"edgecompress.runners.{device.transport}")
    info = getattr(module, f"check_{device.transport}")(device)
    version = (info.get("runtimes") or {}).get("tensorrt")
    if not version:
        print(f"note: {device.python} on {device.name} has no TensorRT Python bindings; the engine will be built "
              "with trtexec (a venv needs --system-site-packages to see JetPack's bindings)", file=sys.stderr)
    return version


def pack_calibration(x: np.ndarray, path: Path, max_bytes: Optional[int] = None) -> Path:
    """Calibration samples as one float32 NCHW .npy (what the device's calibrator reads), evenly
    subsampled when a size cap applies."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if max_bytes is not None and x.nbytes > max_bytes:
        keep = max(1, max_bytes // max(1, x[0].nbytes))
        x = x[np.linspace(0, len(x) - 1, keep).astype(int)]
    np.save(path, x)
    return path


def build_options(prof, *, calibration: bool, qdq: bool) -> dict:
    """ec_trt's runtime_options for the compressed model."""
    options = {"precision": prof.quantize.precision, "workspace_mb": prof.tensorrt.workspace_mb,
               "timing": prof.tensorrt.timing}
    if prof.prune.structure == "2:4":
        options.update(sparsity=True, compare_sparse=prof.tensorrt.compare_sparse)
    if calibration:
        options["calibration"] = CALIBRATION_FILE
    if qdq:
        options["qdq"] = True
    if prof.tensorrt.trtexec:
        options["trtexec"] = prof.tensorrt.trtexec
    return options


def plan(original_onnx: Path, model_onnx: Path, qdq_onnx: Optional[Path], prof, calib_x: np.ndarray,
         work: Path, device=None) -> EnginePlan:
    """What to build and measure. With a device: TensorRT there, the original at FP16 (the usual
    TensorRT baseline) against the compressed model at the profile's precision. Without one: the
    bundle carries the ONNX and the build settings, and ONNX Runtime on this host measures both
    ONNX files as a stand-in that the manifest labels as such."""
    int8 = prof.quantize.precision == "int8"
    version = device_tensorrt_version(device) if device is not None else None
    use_qdq = int8 and major(version) is not None and major(version) >= 11
    calibration = int8 and not use_qdq
    options = build_options(prof, calibration=calibration, qdq=use_qdq)
    files = {"model.onnx": model_onnx}
    if qdq_onnx is not None:
        files["model_qdq.onnx"] = qdq_onnx
    if int8:
        files[CALIBRATION_FILE] = pack_calibration(calib_x, work / "bundle-calibration.npy",
                                                   BUNDLE_CALIBRATION_MAX_BYTES)
    settings = {"onnx": "model_qdq.onnx" if use_qdq else "model.onnx", **options}
    if device is None:
        models = {"original": Model(original_onnx, "onnxruntime"), "compressed": Model(model_onnx, "onnxruntime")}
        return EnginePlan(models, settings, files, proxy=True)
    extra = {CALIBRATION_FILE: pack_calibration(calib_x, work / CALIBRATION_FILE)} if calibration else {}
    baseline = {"precision": "fp16" if prof.quantize.precision != "fp32" else "fp32",
                "workspace_mb": prof.tensorrt.workspace_mb, "timing": prof.tensorrt.timing}
    if prof.tensorrt.trtexec:
        baseline["trtexec"] = prof.tensorrt.trtexec
    models = {"original": Model(original_onnx, "tensorrt", baseline),
              "compressed": Model(qdq_onnx if use_qdq else model_onnx, "tensorrt", options, extra,
                                  fetch_dir=work / "engine")}
    return EnginePlan(models, settings, files, proxy=False, tensorrt_version=version)


def fetched_files(work: Path) -> Dict[str, Path]:
    """The engine, its metadata and the calibration cache the device sent back, named for the
    bundle: model.engine, model.engine.json, model.calib (whichever ONNX it was built from)."""
    folder = work / "engine"
    if not folder.is_dir():
        return {}
    return {"model" + p.name[len(p.name.split(".")[0]):]: p for p in sorted(folder.iterdir())}
