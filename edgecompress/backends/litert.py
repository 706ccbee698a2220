"""LiteRT (Android phones): the PyTorch student converted by litert-torch straight to .tflite
(full-integer INT8 calibrated on the data, or FP32, which the GPU delegate runs in FP16), the
original to an FP32 .tflite as the baseline, each checked against PyTorch. No ONNX on the way: a
model that litert-torch converts needs no ONNX exporter. The .tflite tools are in tflite.py."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from .. import bench, keep_float, prune, qat, verify
from ..console import log
from ..errors import InputError
from ..records import Deployed
from . import BACKENDS, common


class LiteRT(common.Defaults):
    runtime = "litert"
    model_file = "model.tflite"
    suffix = ".tflite"
    example = "tflite_example.py"
    takes_onnx = False  # litert-torch converts PyTorch modules
    sparse_2_4 = False  # whether 2:4 sparsity runs faster (sparse tensor cores)
    bare_file_profile = "android-arm64"  # the profile `bench` uses for a bare file without a device
    runs_bare_files = True
    host_kernels = "LiteRT's INT8 kernels on an x86 CPU are not a phone's"

    def convert(self, compressed, run) -> Deployed:
        from . import tflite

        c, q, held, nhwc = compressed, run.prof.quantize, run.held, run.prof.export.channels_last
        log(f"export: converting to .tflite with litert-torch; the converter's own messages wait in "
            f"{tflite.converter_log(run.work / self.model_file)} and are shown if it fails")
        original = tflite.export_tflite(c.original, c.example, run.work / "original.tflite", channels_last=nhwc,
                                        layer_of_failure=prune.failing_layer)
        checks = [verify.check(verify.compare("original.tflite vs PyTorch original", tflite.tflite_outputs(original, held.x),
                                              c.reference_original, c.output_names, held.y, task=run.prof.task,
                                              score_threshold=run.prof.verify.score_threshold), False, run.prof.verify)]
        model, out, choice = self._student(c, run)
        if q.precision == "fp16":
            checks.append(common.check_fp16(c, run))
        what = ("model.tflite (an FP32 file the GPU delegate runs in FP16; here run in FP32)" if q.precision == "fp16"
                else f"model.tflite ({q.precision})")
        parity = common.check_deployed(f"{what} vs PyTorch student", out, c, run, quantized=q.precision == "int8")
        return Deployed(model=model, outputs=out, original_file=original, parity=parity, checks=tuple(checks),
                        parity_samples=common.parity_samples(c, held, out),
                        bench_models={"original": self._timed(original, run), "compressed": self._timed(model, run)},
                        io=tflite.io_spec(model), keep_float=choice)  # quantization per tensor, from the file itself

    def _student(self, c, run) -> tuple:
        """(model.tflite, its outputs on the held-out samples, keep_float.FloatChoice or None)."""
        from . import tflite

        q, calib, final = run.prof.quantize, run.train.x[: run.prof.quantize.calibration_samples], run.work / self.model_file
        if q.precision != "int8":
            model = self._converted(c.student, c.example, calib, final, run)
            return model, tflite.tflite_outputs(model, run.held.x), None
        log(f"quantize: full-integer INT8 for LiteRT, {min(len(run.train), q.calibration_samples)} calibration samples")

        def make(layers, path):
            made = self._converted(c.student, c.example, calib, path, run, layers)
            return made, tflite.tflite_outputs(made, run.held.x)

        return keep_float.decide(q.keep_float, make, common.judge("INT8 candidate", c, run),
                                 lambda: prune.output_layers(c.student, c.example),
                                 lambda names: keep_float.modules_checked(c.student, names), final, run.prof.verify)

    def _converted(self, module, example, calibration_x, path: Path, run, keep_float=()) -> Path:
        """`module` as the profile's .tflite: full-integer INT8 calibrated on `calibration_x` (the layers
        `keep_float` names left in float), or a float file for fp32 and fp16 (the GPU delegate computes
        in FP16 from the float model)."""
        from . import tflite

        q, nhwc = run.prof.quantize, run.prof.export.channels_last
        if q.precision == "int8":
            return tflite.quantize_tflite_int8(module, example, calibration_x, path, channels_last=nhwc,
                                               per_channel=q.per_channel, layer_of_failure=prune.failing_layer,
                                               keep_float=keep_float, ranges=qat.pt2e_ranges_of(module))
        return tflite.export_tflite(module, example, path, channels_last=nhwc, layer_of_failure=prune.failing_layer)

    def _timed(self, path: Path, run):
        # the GPU delegate exists on the phone; this host measures with XNNPACK as the stand-in
        options = {"threads": bench.settings_here(run.prof.bench, run.device, quiet=True).threads,
                   "delegate": run.prof.bench.delegate if run.device else "xnnpack"}
        return bench.Model(path, self.runtime, options)

    def qat_scheme(self, q):
        """QAT's fake quantization of LiteRT's full-integer INT8 (PT2E's symmetric config)."""
        from ..qat import Scheme

        return Scheme("litert", -128, 127, False, 127, q.per_channel,
                      "trained input ranges of every Conv/Linear (their PT2E observers replaced after calibration); "
                      "weight scales by construction")

    def ptq_outputs(self, student, example, calib, x, prof, work: Path, kept: list) -> list:
        """The held-out outputs of the full-integer .tflite PTQ makes of `student` now."""
        from . import tflite

        path = tflite.quantize_tflite_int8(student, example, calib, work / "qat-ptq.tflite",
                                           channels_last=prof.export.channels_last,
                                           per_channel=prof.quantize.per_channel, keep_float=kept)
        return tflite.tflite_outputs(path, x)

    def for_timing(self, module, run, name: str):
        import torch

        calibration_x = run.train.x[: min(32, run.prof.quantize.calibration_samples)]  # the speed does not depend on it
        return self._timed(self._converted(module, torch.from_numpy(run.train.x[:1]), calibration_x,
                                           run.work / f"{name}.tflite", run), run)

    def bundle_texts(self, manifest: dict) -> Dict[str, str]:
        """ModelRunner.kt: the Kotlin runner for this model's input, every output and its task."""
        from . import kotlin

        return kotlin.bundle_texts(manifest)

    def run_section(self, manifest: dict) -> str:
        return ("    pip install numpy ai-edge-litert\n    python example.py            # the first stored held-out sample\n\n"
                "On Android: `ModelRunner.kt` (LiteRT Interpreter, XNNPACK) with `model.tflite`"
                f"{' and `labels.txt`' if manifest.get('labels') else ''}\n"
                "in the app's assets; its output buffers, quantization constants and task code are this model's.")

    def outputs(self, model_file: Path, x, manifest: dict) -> list:
        from . import tflite

        return tflite.tflite_outputs(model_file, x)

    def bare_file(self, path: Path, tmp: Path) -> Path:
        if not path.is_file():
            raise InputError(f"model file {path} does not exist", hint="check the path")
        with open(path, "rb") as f:
            if f.read(8)[4:8] != b"TFL3":  # the FlatBuffer file identifier of every .tflite model
                raise InputError(f"{path} is not a TFLite model (no TFL3 identifier)",
                                 hint="pass a .tflite written by a TFLite converter, or a bundle folder")
        return path

    def file_facts(self, path: Path) -> dict:
        from . import tflite

        return {**tflite.io_spec(path), "parameters": tflite.parameters(path)}

    def converter_versions(self) -> dict:
        """The host packages that wrote and checked the .tflite, for a bundle that has to be rebuilt later."""
        from importlib.metadata import PackageNotFoundError, version

        found = {}
        for package in ("litert-torch", "ai-edge-litert"):
            try:
                found[package.replace("-", "_") + "_version"] = version(package)
            except PackageNotFoundError:
                found[package.replace("-", "_") + "_version"] = None
        return found


BACKENDS.register("litert")(LiteRT())
