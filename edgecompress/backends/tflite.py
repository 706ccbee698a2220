"""PyTorch -> LiteRT (.tflite) with litert-torch: FP32, and full-integer INT8 through PT2E (int8
weights per channel, int8 activations, int8 input and output tensors with a scale and zero point),
plus running a .tflite on NCHW float inputs so verify.compare/check work on it as on ONNX.

Tested with litert-torch 0.10.0, ai-edge-litert 2.3.0, torch 2.13.0 (see benchmarks/litert_int8.py).
Each written file carries its I/O layouts (NHWC or NCHW) in the model's metadata under LAYOUT_KEY,
so the file alone says how to feed it."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..errors import StageError

LAYOUT_KEY = "edgecompress.io_layout"
INSTALL_HINT = "install the LiteRT extra: pip install 'edgecompress[tflite]'"


@contextlib.contextmanager
def _quiet_converter(log: Optional[Path] = None):
    """litert-torch prints a progress tree on stdout (which must stay clean for --json), torch
    export prints deprecation warnings, and the converter's C++ side and torchao write INFO lines
    and "Failed to load ...so" (optional GPU kernels) straight to file descriptor 2. None of it says
    anything the stage does not say itself, and a user reads "Failed" as a failure; so it is held
    back, and shown only when the conversion fails; `log` keeps it in a file meanwhile, so a crash
    of the converter's own process (an abort in C++) leaves its reason there."""
    before = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with warnings.catch_warnings(), _held_back_stderr(log), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        if before is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = before


@contextlib.contextmanager
def _held_back_stderr(log: Optional[Path] = None):
    """File descriptor 2 into a file for the block (`log`, else an unnamed temporary one); its text is
    replayed if the block raises, and `log` is removed once the block is over."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    held = open(log, "w+b") if log is not None else tempfile.TemporaryFile(mode="w+b")
    try:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
    finally:
        os.close(saved)
        held.close()
        if log is not None:
            Path(log).unlink(missing_ok=True)


@contextlib.contextmanager
def _signals_after():
    """Ctrl-C and SIGTERM wait until the block is over: importing litert-torch (TensorFlow, JAX)
    swallows a KeyboardInterrupt raised inside it (measured: SIGTERM 0.5 s and 1.5 s into the 3 s
    import, and the import finished as if nothing happened), so a stop sent then was lost and the
    deploy ran to the end. Meanwhile a signal is only noted; it is raised again, to the handlers the
    run had, once the import returns."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted = []
    kept = {sig: signal.signal(sig, lambda signum, frame: noted.append(signum))
            for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(noted):
            signal.raise_signal(sig)


def _litert_torch(stage: str):
    try:
        with _signals_after(), _quiet_converter():
            import litert_torch
    except ImportError as exc:
        raise StageError(stage, f"litert-torch is not importable: {exc}", hint=INSTALL_HINT) from None
    # litert-torch imports JAX, which warns at every fork that it "will likely lead to a deadlock"; the
    # bench's device-side processes are fork+exec (subprocess), which runs no JAX code in the child
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    return litert_torch


def _outputs(model, example) -> list:
    import torch

    from .. import outputs

    with torch.no_grad():
        return outputs.flatten(model(example))


def _prepared(litert_torch, model, example, channels_last: bool):
    """(module to convert, its example input, layout of each output). Channels-last wraps the model
    so that input 0 and every 4-D output are NHWC; the transposes sit at the graph's edges, where
    the converter folds them into the neighbouring ops."""
    from .. import outputs

    model = outputs.flat(model.eval(), example)  # a tuple in the flat order: litert-torch takes no dict output
    ranks = [o.dim() for o in _outputs(model, example)]
    four_d = [i for i, r in enumerate(ranks) if r == 4]
    if not channels_last:
        return model, example, [_layout(r) for r in ranks]
    if example.dim() != 4:
        raise StageError("export", f"a channels-last (NHWC) .tflite needs a 4-D (N, C, H, W) input; this model's "
                                   f"input has shape {tuple(example.shape)}",
                         hint="export with channels_last=False (the .tflite then takes the input as PyTorch does)")
    net = litert_torch.to_channel_last_io(model, args=[0], outputs=four_d or None).eval()
    return net, example.permute(0, 2, 3, 1).contiguous(), ["NHWC" if r == 4 else None for r in ranks]


def _failure(stage: str, what: str, exc: Exception, model, example, layer_of_failure, hint: str) -> StageError:
    layer = layer_of_failure(model, example) if layer_of_failure else None
    where = f" in layer '{layer}'" if layer else ""
    first = (str(exc).strip().splitlines() or [""])[0]
    return StageError(stage, f"{what} failed{where}: {type(exc).__name__}: {first}", hint=hint)


EXPORT_HINT = ("litert-torch converts what torch.export can trace: replace data-dependent Python control flow "
               "and unsupported ops in that layer, or export to ONNX (export.format=onnx, runtime onnxruntime)")


def converter_log(path: Path) -> Path:
    """Where the converter's own messages wait while it converts `path` (gone once it returns)."""
    return Path(path).with_name(Path(path).name + ".converter.log")


def export_tflite(model, example, path: Path, *, channels_last: bool, layer_of_failure=None) -> Path:
    """FP32 .tflite of `model` for a batch shaped like `example` (NCHW torch tensor); with
    channels_last the file's input (and every 4-D output) is NHWC."""
    litert_torch = _litert_torch("export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net, ex, out_layouts = _prepared(litert_torch, model, example, channels_last)
    try:
        with _quiet_converter(converter_log(path)):
            litert_torch.convert(net, (ex,)).export(str(path))
    except Exception as exc:
        raise _failure("export", "LiteRT export", exc, model.eval(), example, layer_of_failure, EXPORT_HINT) from None
    _write_layouts(path, "NHWC" if channels_last else _layout(example.dim()), out_layouts)
    return path


def quantize_tflite_int8(model, example, calibration_x: np.ndarray, path: Path, *, channels_last: bool,
                         per_channel: bool = True, layer_of_failure=None, keep_float=(), ranges=None) -> Path:
    """Full-integer INT8 .tflite: PT2E static quantization (symmetric int8 weights, per channel by
    default; int8 activations) calibrated on `calibration_x` (NCHW float, as the data comes), one
    batch of the example's size at a time (the exported graph has a static batch). `keep_float`:
    module names left unannotated, so LiteRT computes them (and their parameter-free tail) in float.
    `ranges`: called on the calibrated graph (qat.pt2e_ranges_of: the input ranges QAT trained)."""
    import torch

    litert_torch = _litert_torch("quantize")
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net, ex, out_layouts = _prepared(litert_torch, model, example, channels_last)
    batch = ex.shape[0]
    calib = calibration_x.astype(np.float32)
    calib = calib[: len(calib) // batch * batch]
    if len(calib) == 0:
        raise StageError("quantize", f"INT8 calibration needs at least {batch} samples, got {len(calibration_x)}",
                         hint="give more data, or raise quantize.calibration_samples")
    if channels_last:
        calib = calib.transpose(0, 2, 3, 1)
    quantizer = _quantizer(PT2EQuantizer, list(keep_float)).set_global(
        get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=False))
    try:
        with _quiet_converter(converter_log(path)):
            # strict=True (TorchDynamo) records `source_fn_stack` on each node; the PT2E annotators for
            # add/mul/cat need it, and without it residual adds stay float (DEQUANTIZE-ADD-QUANTIZE islands).
            graph = prepare_pt2e(torch.export.export(net, (ex,), strict=True).module(), quantizer)
            with torch.no_grad():
                for i in range(0, len(calib), batch):
                    graph(torch.from_numpy(np.ascontiguousarray(calib[i: i + batch])))
            if ranges is not None:
                ranges(graph)
            graph = move_exported_model_to_eval(convert_pt2e(graph, fold_quantize=False))
            graph.training = False  # BatchNorm is already folded; silences the converter's training-mode warning
            litert_torch.convert(graph, (ex,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(path))
    except Exception as exc:
        raise _failure("quantize", "INT8 quantization for LiteRT", exc, model.eval(), example, layer_of_failure,
                       "add the layer to prune.ignore if pruning changed it, or use quantize.precision=fp32 "
                       "for this model") from None
    _write_layouts(path, "NHWC" if channels_last else _layout(example.dim()), out_layouts)
    return path


def _quantizer(base, keep_float: list):
    """litert-torch's PT2E quantizer, or with `keep_float` one that annotates every node but those
    layers': its own set_module_name refuses a None config ("not supported yet"), and its module-name
    filter turns the '_' of a layer name into '.'. The annotators it runs are its own."""
    if not keep_float:
        return base()
    from litert_torch.quantize import pt2e_quantizer

    from ..keep_float import fx_nodes

    class KeepFloat(base):
        def annotate(self, graph):
            kept = fx_nodes(graph.graph, keep_float)
            self._annotate_all_static_patterns(graph, self.global_config, lambda n: n.name not in kept)
            pt2e_quantizer.propagate_annotation(graph)
            return graph

    return KeepFloat()


def _layout(ndim: int) -> Optional[str]:
    return "NCHW" if ndim == 4 else None


def _write_layouts(path: Path, input_layout: Optional[str], output_layouts: List[Optional[str]]) -> None:
    """Record {tensor name: layout} in the file's metadata (the TFLite schema's own metadata table,
    as the TFLite Support metadata writer does), written atomically."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    fb = schema.Model.GetRootAsModel(buf, 0)
    model = schema.ModelT.InitFromObj(fb)
    inputs, outputs = _signature_io(fb)
    layouts = {"inputs": {name: input_layout if i == 0 else None for i, name in enumerate(inputs)},
               "outputs": {name: lay for name, lay in zip(outputs, output_layouts)}}
    blob = schema.BufferT()
    blob.data = np.frombuffer(json.dumps(layouts).encode(), dtype=np.uint8)
    model.buffers.append(blob)
    entry = schema.MetadataT()
    entry.name, entry.buffer = LAYOUT_KEY, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (LAYOUT_KEY, LAYOUT_KEY.encode())] + [entry]
    builder = flatbuffers.Builder(len(buf) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(builder.Output())
    os.replace(tmp, path)


def _signature_io(fb) -> tuple:
    """Tensor names of subgraph 0's inputs and outputs, in the signature's order where there is one."""
    graph = fb.Subgraphs(0)
    inputs = [graph.Inputs(i) for i in range(graph.InputsLength())]
    outputs = [graph.Outputs(i) for i in range(graph.OutputsLength())]
    if fb.SignatureDefsLength():
        sig = fb.SignatureDefs(0)
        inputs = [t.TensorIndex() for t in _by_name([sig.Inputs(i) for i in range(sig.InputsLength())])]
        outputs = [t.TensorIndex() for t in _by_name([sig.Outputs(i) for i in range(sig.OutputsLength())])]
    name = lambda index: graph.Tensors(index).Name().decode()  # noqa: E731
    return [name(i) for i in inputs], [name(i) for i in outputs]


def _by_name(entries):
    """Signature entries in argument order: args_2 before args_10, output_2 before output_10."""
    return sorted(entries, key=lambda e: _order_key(e.Name().decode()))


def _order_key(name: str) -> tuple:
    return len(name), name


def read_layouts(path: Path) -> Optional[dict]:
    """{"inputs": {name: layout}, "outputs": {name: layout}} as written at export, or None for a
    .tflite made elsewhere."""
    from ai_edge_litert import schema_py_generated as schema

    fb = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    for i in range(fb.MetadataLength()):
        if fb.Metadata(i).Name().decode() == LAYOUT_KEY:
            return json.loads(fb.Buffers(fb.Metadata(i).Buffer()).DataAsNumpy().tobytes())
    return None


def _interpreter(path: Path, threads: int, delegates: bool = True):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise StageError("verify", f"ai-edge-litert is not importable: {exc}", hint=INSTALL_HINT) from None
    kw = {} if delegates else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    with _held_back_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate" on every load
        it = Interpreter(model_path=str(path), num_threads=threads, **kw)
        it.allocate_tensors()
    return it


def _ordered_details(it) -> tuple:
    """Input and output details in the model signature's order (PyTorch's argument and output
    order), falling back to the subgraph's order."""
    ins, outs = it.get_input_details(), it.get_output_details()
    sigs = it.get_signature_list()
    if len(sigs) != 1:
        return ins, outs
    runner = it.get_signature_runner(next(iter(sigs)))
    by_index = {d["index"]: d for d in ins + outs}
    sig_in, sig_out = runner.get_input_details(), runner.get_output_details()
    return ([by_index[sig_in[n]["index"]] for n in sorted(sig_in, key=_order_key)],
            [by_index[sig_out[n]["index"]] for n in sorted(sig_out, key=_order_key)])


def _quant(detail) -> Optional[dict]:
    scale, zero_point = detail["quantization"]
    if scale == 0 or np.dtype(detail["dtype"]).kind == "f":
        return None
    return {"scale": float(scale), "zero_point": int(zero_point)}


def input_is_nhwc(path: Path, x_shape: tuple) -> bool:
    """Whether NCHW samples of shape (N, C, H, W) must be transposed for this model's input 0: from
    the layout recorded at export, else from the shapes."""
    it = _interpreter(path, 1, delegates=False)
    detail = _ordered_details(it)[0][0]
    recorded = (read_layouts(path) or {}).get("inputs", {}).get(detail["name"])
    if recorded:
        return recorded == "NHWC"
    model = tuple(int(d) for d in detail["shape"][1:])
    as_is, nhwc = tuple(x_shape[1:]), tuple(x_shape[i] for i in (2, 3, 1)) if len(x_shape) == 4 else None
    if model == as_is and model != nhwc:
        return False
    if model == nhwc and model != as_is:
        return True
    if model == as_is:  # C == H == W, and nothing recorded: the file itself cannot say
        raise StageError("verify", f"{Path(path).name} takes {list(detail['shape'])} and records no layout, so NCHW "
                                   f"and NHWC inputs look the same", hint="export it with edgecompress.litert")
    raise StageError("verify", f"{Path(path).name} takes input {list(detail['shape'])}, which samples of shape "
                               f"{list(x_shape[1:])} fit neither as NCHW nor as NHWC",
                     hint="give inputs shaped like the model's input")


def tflite_outputs(path: Path, x: np.ndarray, threads: int = 2) -> List[np.ndarray]:
    """The model's outputs on NCHW float samples `x`, as float arrays in PyTorch's layout: inputs
    are transposed for an NHWC model and quantized for an int8 one; int8 outputs are dequantized
    and NHWC outputs transposed back."""
    path = Path(path)
    nhwc = input_is_nhwc(path, x.shape)
    layouts = (read_layouts(path) or {}).get("outputs", {})
    it = _interpreter(path, threads)
    ins, outs = _ordered_details(it)
    if len(ins) != 1:
        raise StageError("verify", f"{path.name} has {len(ins)} inputs; only single-input models are checked")
    inp = ins[0]
    batch = int(inp["shape"][0])
    if len(x) % batch:
        raise StageError("verify", f"{path.name} takes batches of {batch}; {len(x)} samples do not divide into them",
                         hint=f"check a multiple of {batch} samples")
    feed = x.transpose(0, 2, 3, 1) if nhwc else x
    chunks = []
    for i in range(0, len(feed), batch):
        it.set_tensor(inp["index"], _to_input(feed[i: i + batch], inp))
        it.invoke()
        chunks.append([_from_output(it.get_tensor(o["index"]), o, layouts.get(o["name"])) for o in outs])
    return [np.concatenate(parts) for parts in zip(*chunks)]


def _to_input(x: np.ndarray, detail) -> np.ndarray:
    q = _quant(detail)
    if q is None:
        return np.ascontiguousarray(x, dtype=detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / q["scale"]) + q["zero_point"], info.min, info.max).astype(detail["dtype"])


def _from_output(y: np.ndarray, detail, layout: Optional[str]) -> np.ndarray:
    q = _quant(detail)
    y = y.astype(np.float32) if q is None else (y.astype(np.float32) - q["zero_point"]) * np.float32(q["scale"])
    return y.transpose(0, 3, 1, 2) if layout == "NHWC" and y.ndim == 4 else y


def io_spec(path: Path) -> dict:
    """Name, shape, dtype, layout (NHWC | NCHW | None when not 4-D or not recorded) and quantization
    ({scale, zero_point}, or None for float tensors) of each input and output, for the manifest."""
    layouts = read_layouts(path) or {}
    it = _interpreter(Path(path), 1, delegates=False)
    ins, outs = _ordered_details(it)

    def describe(details, side):
        return [{"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                 "layout": layouts.get(side, {}).get(d["name"]), "quantization": _quant(d)} for d in details]

    return {"inputs": describe(ins, "inputs"), "outputs": describe(outs, "outputs")}


def parameters(path: Path) -> int:
    """The number of stored weight values: the elements of the tensors that have a buffer."""
    from ai_edge_litert import schema_py_generated as schema

    fb = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    count = 0
    for g in range(fb.SubgraphsLength()):
        graph = fb.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            buffer = fb.Buffers(tensor.Buffer()) if tensor.Buffer() < fb.BuffersLength() else None
            if buffer is not None and (buffer.DataLength() or buffer.Size()):
                size = 1
                for d in tensor.ShapeAsNumpy() if tensor.ShapeLength() else []:
                    size *= int(d)
                count += size
    return count
