"""TensorRT (Jetson), host side. TensorRT runs only on the device (engines are not portable across
GPUs or TensorRT versions), so here the stage decides what the device will build: which ONNX
(FP32, or Q/DQ for TensorRT 11, which dropped the INT8 calibrator), with which options, and which
calibration samples travel with the job. No TensorRT import here; the device side is
edgecompress/deploy/ec_trt.py."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from .. import keep_float, qat, quantize, verify
from ..bench import Model
from ..console import log
from ..errors import InputError
from ..records import Deployed
from . import BACKENDS, common, onnx_files

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
    from .. import runners

    version = (runners.check(device).get("runtimes") or {}).get("tensorrt")
    if not version:
        log(f"note: {device.python} on {device.name} has no TensorRT Python bindings; the engine will be built "
            "with trtexec (a venv needs --system-site-packages to see JetPack's bindings)")
    return version


def pack_calibration(x, path: Path, max_bytes: Optional[int] = None) -> Path:
    """Calibration samples as one float32 NCHW .npy (what the device's calibrator reads), evenly
    subsampled when a size cap applies."""
    import numpy as np

    x = np.ascontiguousarray(x, dtype=np.float32)
    if max_bytes is not None and x.nbytes > max_bytes:
        keep = max(1, max_bytes // max(1, x[0].nbytes))
        x = x[np.linspace(0, len(x) - 1, keep).astype(int)]
    np.save(path, x)
    return path


def build_options(prof, *, calibration: bool, qdq: bool, float_layers=()) -> dict:
    """ec_trt's runtime_options for the compressed model. float_layers: ONNX node names the INT8
    engine computes in FP32 (layer precision, obeyed); a Q/DQ ONNX carries them as nodes without Q/DQ."""
    options = {"precision": prof.quantize.precision, "workspace_mb": prof.tensorrt.workspace_mb,
               "timing": prof.tensorrt.timing}
    if prof.prune.structure == "2:4":
        options.update(sparsity=True, compare_sparse=prof.tensorrt.compare_sparse)
    if calibration:
        options["calibration"] = CALIBRATION_FILE
        if float_layers:
            options["float_layers"] = list(float_layers)
    if qdq:
        options["qdq"] = True
    if prof.tensorrt.trtexec:
        options["trtexec"] = prof.tensorrt.trtexec
    return options


def plan(original_onnx: Path, model_onnx: Path, qdq_onnx: Optional[Path], prof, calib_x,
         work: Path, device=None, float_layers=()) -> EnginePlan:
    """What to build and measure. With a device: TensorRT there, the original at FP16 (the usual
    TensorRT baseline) against the compressed model at the profile's precision. Without one: the
    bundle carries the ONNX and the build settings, and ONNX Runtime on this host measures both
    ONNX files as a stand-in that the manifest labels as such."""
    int8 = prof.quantize.precision == "int8"
    version = device_tensorrt_version(device) if device is not None else None
    use_qdq = int8 and major(version) is not None and major(version) >= 11
    calibration = int8 and not use_qdq
    options = build_options(prof, calibration=calibration, qdq=use_qdq, float_layers=float_layers)
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


DEVICE_FILES = ("ec_trt.py", "ec_trt_cache.py", "ec_trt_cuda.py", "ec_trtexec.py", "ec_runtimes.py")  # trt_example's


class TensorRT(common.Defaults):
    """The engine is built on the device, from model.onnx (FP32; the device applies FP16 or INT8 with
    the calibration samples) or, for INT8 on TensorRT 11, from a Q/DQ ONNX made here."""

    runtime = "tensorrt"
    model_file = "model.onnx"
    suffix = ".onnx"
    example = "onnx_example.py"  # any computer runs the ONNX; trt_example.py runs the engine on the Jetson
    takes_onnx = True
    sparse_2_4 = True  # whether 2:4 sparsity runs faster (sparse tensor cores)
    bare_file_profile = None  # the profile `bench` uses for a bare file without a device
    runs_bare_files = False  # engines come from a bundle's ONNX and build settings

    def convert(self, compressed, run) -> Deployed:
        exported = onnx_files.export_checked(compressed, run)
        c, q, held = compressed, run.prof.quantize, run.held
        model = Path(shutil.copy(exported.student, run.work / self.model_file))
        out = verify.onnx_outputs(model, held.x)
        parity = verify.check(verify.compare("model.onnx (the engine's source) vs PyTorch", out, c.reference,
                                             c.output_names, held.y, c.reference_original, task=run.prof.task,
                                             score_threshold=run.prof.verify.score_threshold), False, run.prof.verify)
        checks = list(exported.checks)
        if q.precision == "fp16" and c.student is not None:  # an .onnx input has no PyTorch student to run in FP16
            checks.append(common.check_fp16(c, run))
        calib, qdq, choice = run.train.x[: q.calibration_samples], None, None
        if q.precision == "int8":
            qdq, check, choice = self._qdq(model, calib, c, run)
            checks.append(check)
        trt = plan(exported.original, model, qdq, run.prof, calib, run.work, run.device,
                   float_layers=choice.layers if choice else ())
        log(f"engine: {'built on ' + run.device.name if run.device else 'to be built on the device on first use'}, "
            f"{q.precision}{', from the Q/DQ ONNX' if trt.build_settings['onnx'] == 'model_qdq.onnx' else ''}")
        stand_in = None if not trt.proxy else (f"{self.runtime} runs only on the device, so these are ONNX Runtime FP32 "
                                               "figures of the same ONNX files, a stand-in: no engine was built or timed.")
        return Deployed(model=model, outputs=out, original_file=exported.original, parity=parity, checks=tuple(checks),
                        parity_samples=common.parity_samples(c, held, out), bench_models=trt.models,
                        io=onnx_files.io(model), two_four=exported.two_four, plan=trt, stand_in=stand_in,
                        extra_files=dict(trt.bundle_files), keep_float=choice)

    def _qdq(self, model: Path, calib, c, run) -> tuple:
        """(model_qdq.onnx, its check, keep_float.FloatChoice): the INT8 the engine computes, with the
        layers kept in float left without Q/DQ (TensorRT 11 builds it; TensorRT 8/10 builds model.onnx
        with those layers' precision set to FP32, and this file stands in for it in the checks)."""
        import onnx

        # TensorRT takes symmetric INT8 only: int8 activations with zero point 0
        q, held, graph = run.prof.quantize, run.held, onnx.load(str(model))
        sym = q.model_copy(update={"activations": "int8"})

        def make(layers, path):
            made = quantize.quantize_int8(model, path, calib, sym, onnx_files.input_name(model), symmetric=True,
                                          keep_fp32=layers, overrides=qat.overrides_of(c.student))
            return made, verify.onnx_outputs(made, held.x, exact_int8=True)  # the GPU's INT8 products do not saturate

        qdq, out, choice = keep_float.decide(q.keep_float, make, common.judge("INT8 candidate", c, run),
                                             lambda: keep_float.onnx_heads(graph),
                                             lambda names: keep_float.onnx_nodes(graph, names, "the exported model", keep_float.module_names(c)),
                                             run.work / "model_qdq.onnx", run.prof.verify)
        check = verify.check(verify.compare("model_qdq.onnx (INT8 Q/DQ) vs PyTorch", out, c.reference,
                                            c.output_names, held.y, task=run.prof.task,
                                            score_threshold=run.prof.verify.score_threshold), True, run.prof.verify)
        return qdq, check, choice

    def qat_scheme(self, q):
        """QAT's fake quantization of TensorRT's INT8: symmetric int8 activations (zero point 0)."""
        from ..qat import Scheme

        return Scheme("tensorrt", -127, 127, True, 64 if q.reduce_range else 127, q.per_channel,
                      "trained input ranges of every Conv/Gemm (TensorQuantOverrides); weight scales by construction")

    def ptq_outputs(self, student, example, calib, x, prof, work: Path, kept: list) -> list:
        """The held-out outputs of the symmetric Q/DQ file PTQ makes of `student` now (as _qdq makes it)."""
        from .onnxruntime import OnnxRuntime

        return OnnxRuntime().ptq_outputs(student, example, calib, x, prof, work, kept, symmetric=True)

    def for_timing(self, module, run, name: str):
        from .. import export, prune

        if run.device is None:
            raise InputError("prune.latency_budget_ms times each pruned model with TensorRT, which runs only on the "
                             "Jetson, and this run has no device", hint="deploy with --device NAME (a Jetson from "
                                                                       "devices.yaml), or set prune.ratio yourself")
        import torch

        example = torch.from_numpy(run.train.x[:1])
        path = export.export_onnx(module, example, run.work / f"{name}.onnx", run.prof.export, prune.failing_layer)
        calibration = run.prof.quantize.precision == "int8"
        extra = {CALIBRATION_FILE: pack_calibration(run.train.x[:32], run.work / f"{name}-{CALIBRATION_FILE}")} \
            if calibration else {}
        return Model(Path(path), self.runtime, build_options(run.prof, calibration=calibration, qdq=False), extra)

    def runtime_section(self, deployed, measurement) -> dict:
        version = deployed.plan.tensorrt_version
        if version is None:
            return {"name": self.runtime, "version": None,
                    "note": "the engine is built on the device, with the TensorRT there: deploy with --device to record it"}
        return {"name": self.runtime, "version": version}

    def manifest_sections(self, deployed, measurement, work: Path) -> dict:
        """What a Jetson app needs to know about the engine: where it was built, for what, from what."""
        trt = deployed.plan
        if trt.proxy:
            return {"engine": {"status": "not built: TensorRT engines are built on the device; the example builds one "
                                         "from the ONNX on first use", "build_settings": trt.build_settings}}
        r = measurement.compressed
        return {"engine": {"status": f"built on device {measurement.device.name}", "build_settings": trt.build_settings,
                           "engine": r.get("engine"), "build_ms": r.get("build_ms"),
                           "tensorrt_version": trt.tensorrt_version, "files": sorted(fetched_files(work)),
                           "valid_for": (r.get("engine") or {}).get("valid_for")}}

    def bundle_files(self, deployed, work: Path) -> Dict[str, Path]:
        from ..bundle import EXAMPLES

        files = {**super().bundle_files(deployed, work), **deployed.extra_files, **fetched_files(work),
                 "trt_example.py": EXAMPLES / "trt_example.py"}
        files.update({f"device/{name}": EXAMPLES.parent / "deploy" / name for name in DEVICE_FILES})
        return files

    def run_section(self, manifest: dict) -> str:
        status = (manifest.get("engine") or {}).get("status", "")
        return (f"TensorRT engine: {status}.\n\n    python3 trt_example.py       # on the Jetson: uses the engine if it "
                "was built for this GPU and TensorRT version, else builds one from the ONNX\n\n"
                "On any computer, `python example.py` runs `model.onnx` with ONNX Runtime.")

    def precision_text(self, manifest: dict) -> str:
        """The bundle ships an FP32 ONNX from which the device builds its FP16 or INT8 engine: the file's
        own precision is not the engine's (a walkthrough read 'model.onnx (fp16)' for an FP32 file)."""
        precision = manifest["compression"]["quantization"]["precision"]
        built = ((manifest.get("engine") or {}).get("build_settings") or {}).get("onnx") or manifest["model"]["file"]
        return f"FP32 ONNX; the device builds an {precision.upper()} TensorRT engine from `{built}`"

    def outputs(self, model_file: Path, x, manifest: dict) -> list:
        return verify.onnx_outputs(model_file, x)  # the engine's FP32 source, run with ONNX Runtime

    def bench_model(self, folder: Path, manifest: dict, here: bool, artifact: Path):
        """The ONNX the engine is built from, with the build settings deploy chose (and the calibration
        samples when they are needed)."""
        if here:
            onnx_file = artifact / "model.onnx" if artifact.is_dir() else "FOLDER/model.onnx (unzipped)"
            raise InputError(f"{artifact} is a TensorRT bundle, and TensorRT runs only on the Jetson: its engines are "
                             "built there", hint="bench it on a device (--device NAME from devices.yaml), or time its "
                                                 f"ONNX here with ONNX Runtime: edgecompress bench {onnx_file}")
        settings = dict((manifest.get("engine") or {}).get("build_settings") or {})
        source = folder / settings.pop("onnx", manifest["model"]["file"])
        extra = {settings["calibration"]: folder / settings["calibration"]} if settings.get("calibration") else {}
        return Model(source, self.runtime, settings, extra)

    def bare_file(self, path: Path, tmp: Path) -> Path:
        raise InputError(f"{path}: a TensorRT engine is built from a bundle's ONNX and build settings",
                         hint="bench the bundle, or time the .onnx with ONNX Runtime")

    def opset(self, path: Path):
        return onnx_files.opset(path)

    def file_facts(self, path: Path) -> dict:
        return onnx_files.facts(path)



BACKENDS.register("tensorrt")(TensorRT())
