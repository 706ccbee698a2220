"""PyTorch -> ONNX. The legacy TorchScript exporter is used because it is an order of magnitude
faster than the dynamo exporter on these models and handles pruned graphs the same way."""
from __future__ import annotations

import warnings
from pathlib import Path

from .errors import StageError

INPUT_NAME = "input"


def export_onnx(model, example, path: Path, cfg, layer_of_failure=None) -> Path:
    """Write `model` to `path` with a dynamic batch dimension; a failure names the layer."""
    import torch

    from . import outputs

    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    names = outputs.of(model, example)  # dict keys, else output_0 ...: the exporter takes a tuple, so it gets one
    axes = {name: {0: "batch"} for name in [INPUT_NAME] + names}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(outputs.flat(model, example), (example,), str(path), input_names=[INPUT_NAME], output_names=names,
                              dynamic_axes=axes, opset_version=cfg.opset, dynamo=False, do_constant_folding=True)
    except Exception as exc:
        layer = layer_of_failure(model, example) if layer_of_failure else None
        where = f" in layer '{layer}'" if layer else ""
        raise StageError("export", f"ONNX export failed{where}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                         hint="add the layer to prune.ignore, or try another export.opset") from None
    _static_output_dims(path, outputs.flat(model, example), example)
    return path


def _static_output_dims(path: Path, flat, example) -> None:
    """Give the graph's outputs the sizes PyTorch gives them where the exporter left a name instead
    ("Concatboxes_dim_1": its shape inference loses sizes through flatten/transpose/cat with a dynamic
    batch), so the manifest and an app's buffers know every output's size. A size is written only
    where two different inputs agree on it (a model that keeps a variable number of detections keeps
    its named dimension); the batch dimension stays dynamic."""
    import onnx
    import torch

    with torch.no_grad():
        a = [tuple(t.shape) for t in flat(example)]
        other = torch.flip(example, [0])
        b = [tuple(t.shape) for t in flat(other * 0.5 + 0.25 if other.is_floating_point() else other)]
    model = onnx.load(str(path), load_external_data=False)
    changed = False
    for value, shape, other in zip(model.graph.output, a, b):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        for i, dim in enumerate(dims):
            if i > 0 and not dim.HasField("dim_value") and shape[i] == other[i]:
                dim.dim_value = int(shape[i])
                changed = True
    if changed:
        onnx.save(model, str(path))


def io_spec(path: Path) -> dict:
    """Names, shapes and dtypes of an ONNX model's inputs and outputs, for the manifest."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
            out.append({"name": v.name, "shape": dims,
                        "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return out

    inits = {i.name for i in model.graph.initializer}
    return {"inputs": describe([v for v in model.graph.input if v.name not in inits]),
            "outputs": describe(model.graph.output)}


def names_of_outputs(model, example) -> list:
    """The names export_onnx gives a model's outputs (and every check's table uses, whatever the runtime)."""
    from . import outputs

    return outputs.of(model, example)
