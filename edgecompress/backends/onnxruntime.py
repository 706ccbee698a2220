"""ONNX Runtime (ARM and x86 CPUs): the student exported to ONNX and quantized to INT8 QDQ (or kept
FP32), checked with the INT8 products computed as the target's CPU computes them."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional, Sequence

from .. import bench, keep_float, qat, quantize, verify
from ..console import log
from ..errors import InputError
from ..records import Deployed
from . import BACKENDS, common, onnx_files


def exact_int8(arch: str) -> bool:
    """x86's u8 x s8 kernel (VPMADDUBSW) saturates without VNNI; an ARM CPU's INT8 dot products do
    not: on an ARM target the checks compute the products exactly, as the device will."""
    return arch != "x86_64"


class OnnxRuntime(common.Defaults):
    runtime = "onnxruntime"
    model_file = "model.onnx"
    suffix = ".onnx"
    example = "onnx_example.py"
    takes_onnx = True
    sparse_2_4 = False  # whether 2:4 sparsity runs faster (sparse tensor cores)
    bare_file_profile = "host"  # the profile `bench` uses for a bare file without a device
    runs_bare_files = True

    def convert(self, compressed, run) -> Deployed:
        exported = onnx_files.export_checked(compressed, run)
        q, held = run.prof.quantize, run.held
        exact = q.precision == "int8" and exact_int8(run.prof.device.arch)
        if exact:
            log(f"verify: INT8 products computed exactly, as the {run.prof.device.arch} target does (not with the "
                "u8 x s8 kernel that saturates on x86 CPUs without VNNI)")
        choice = None
        if q.precision == "int8":
            model, out, choice = self._quantized(exported, compressed, run, exact)
        else:
            model = Path(shutil.copy(exported.student, run.work / self.model_file))
            out = verify.onnx_outputs(model, held.x, exact_int8=exact)
        parity = common.check_deployed(f"deployed {q.precision} model vs the FP32 student", out, compressed, run,
                                       quantized=q.precision != "fp32")
        params = quantize.quantization_params(model) if q.precision == "int8" else {}
        return Deployed(model=model, outputs=out, original_file=exported.original, parity=parity, checks=exported.checks,
                        parity_samples=common.parity_samples(compressed, held, out),
                        bench_models={"original": bench.Model(exported.original, self.runtime),
                                      "compressed": bench.Model(model, self.runtime),
                                      # the accuracy/latency trade-off in report.html: what pruning alone gave
                                      **({"student_fp32": bench.Model(exported.student, self.runtime)}
                                         if q.precision == "int8" and compressed.student is not None else {})},
                        io=onnx_files.io(model, params), exact_int8=exact, two_four=exported.two_four,
                        keep_float=choice)

    def _quantized(self, exported, compressed, run, exact: bool) -> tuple:
        """(model.onnx in INT8 QDQ, its outputs on the held-out samples, keep_float.FloatChoice)."""
        import onnx

        q = run.prof.quantize
        calib = run.train.x[: q.calibration_samples]
        log(f"quantize: INT8 QDQ ({q.activations} activations, {q.weights} per-channel={q.per_channel} weights"
            f"{', 7-bit (reduce_range)' if q.reduce_range else ''}), {len(calib)} calibration samples")
        graph, name = onnx.load(str(exported.student)), onnx_files.input_name(exported.student)

        def make(layers, path):
            made = Path(quantize.quantize_int8(exported.student, path, calib, q, name, keep_fp32=layers,
                                               overrides=qat.overrides_of(compressed.student), float_tail=True))
            return made, verify.onnx_outputs(made, run.held.x, exact_int8=exact)

        return keep_float.decide(q.keep_float, make, common.judge("INT8 candidate", compressed, run),
                                 lambda: keep_float.onnx_heads(graph),
                                 lambda names: keep_float.onnx_nodes(graph, names, "the exported model", keep_float.module_names(compressed)),
                                 run.work / self.model_file, run.prof.verify)

    def qat_scheme(self, q):
        """QAT's fake quantization of this runtime's INT8: quantize.py's QDQ settings."""
        from ..qat import Scheme

        weight_qmax = 64 if q.reduce_range else 127  # ORT's reduced int8 range is [-64, 64]
        lo, hi = (0, 255) if q.activations == "uint8" else (-128, 127)
        return Scheme("onnxruntime", lo, hi, False, weight_qmax, q.per_channel,
                      "trained input ranges of every Conv/Gemm (TensorQuantOverrides); weight scales by construction")

    def ptq_outputs(self, student, example, calib, x, prof, work: Path, kept: list, symmetric: bool = False) -> list:
        """The held-out outputs of the INT8 file PTQ makes of `student` now (QAT's auto judges PTQ by them)."""
        import onnx

        from .. import export

        fp32 = export.export_onnx(student, example, work / "qat-ptq.onnx", prof.export)
        nodes = keep_float.onnx_nodes(onnx.load(str(fp32)), kept, "the exported model",
                                      [n for n, _ in student.named_modules()]) if kept else []
        q = prof.quantize.model_copy(update={"activations": "int8"}) if symmetric else prof.quantize
        path = quantize.quantize_int8(fp32, work / "qat-ptq-int8.onnx", calib, q, export.INPUT_NAME,
                                      symmetric=symmetric, keep_fp32=nodes, float_tail=True)
        return verify.onnx_outputs(path, x, exact_int8=symmetric or exact_int8(prof.device.arch))

    def for_timing(self, module, run, name: str):
        from .. import export, prune

        example = _example(run)
        path = export.export_onnx(module, example, run.work / f"{name}.onnx", run.prof.export, prune.failing_layer)
        if run.prof.quantize.precision == "int8":
            calib = run.train.x[: min(32, run.prof.quantize.calibration_samples)]  # the speed does not depend on it
            path = quantize.quantize_int8(path, run.work / f"{name}-int8.onnx", calib, run.prof.quantize,
                                          export.INPUT_NAME, float_tail=True)
        return bench.Model(Path(path), self.runtime)

    def run_section(self, manifest: dict) -> str:
        return "    pip install numpy onnxruntime\n    python example.py            # the first stored held-out sample"

    def outputs(self, model_file: Path, x, manifest: dict) -> list:
        # bundles from before exact checks stored the host kernel's outputs: re-run them the same way
        return verify.onnx_outputs(model_file, x, exact_int8=manifest["metrics"].get("parity_exact_int8", False))

    def random_inputs(self, model: Path, shape: Optional[Sequence[int]]) -> Optional[List[dict]]:
        """inputs.random for an ONNX model whose height, width or other non-batch dimensions are
        dynamic: the data's shape, else the device side would time it at 1 (a 1x1 image). None when
        only the batch is dynamic."""
        if model.suffix != ".onnx":
            return None
        from ..export import io_spec  # the model's own inputs, read as the manifest reads them

        dynamic = {i["name"]: i["shape"] for i in io_spec(model)["inputs"]
                   if any(not isinstance(d, int) for d in i["shape"][1:])}
        if not dynamic:
            return None
        what = ", ".join(f"'{n}' {d}" for n, d in dynamic.items())
        if len(dynamic) > 1:
            raise InputError(f"{model.name}: inputs {what} have dynamic dimensions besides the batch, and "
                             "--input-shape gives the size of one input only",
                             hint="export the model with fixed sizes for all but one input (or all of them), then "
                                  "bench it")
        name, dims = next(iter(dynamic.items()))
        fixed_ok = shape is not None and len(shape) == len(dims) and all(
            not isinstance(d, int) or d == given for d, given in zip(dims[1:], shape[1:]))
        if not fixed_ok:
            got = "" if shape is None else f" (the shape given, {'x'.join(map(str, shape))}, does not fit it)"
            example = "x".join(["1", *[str(d) if isinstance(d, int) else "224" for d in dims[1:]]])
            raise InputError(f"{model.name}: input {what} has dynamic dimensions besides the batch, so the benchmark "
                             f"cannot tell what size to time{got}",
                             hint=f"pass --input-shape, e.g. --input-shape {example}")
        batch = shape[0] if not isinstance(dims[0], int) else dims[0]  # a dynamic batch takes the one asked for
        return [{"name": name, "shape": [int(batch), *[int(d) for d in shape[1:]]]}]

    def bare_file(self, path: Path, tmp: Path) -> Path:
        from .. import models

        model = models.load_onnx(str(path)).onnx_path
        if models.external_data_files(model):
            model = models.write_single_file(model, tmp / model.name)  # the device gets one file
        return model

    def opset(self, path: Path):
        return onnx_files.opset(path)

    def file_facts(self, path: Path) -> dict:
        return onnx_files.facts(path)



def _example(run):
    import torch

    return torch.from_numpy(run.train.x[:1])


BACKENDS.register("onnxruntime")(OnnxRuntime())
