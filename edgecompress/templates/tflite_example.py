"""Run one input through this bundle's .tflite model on a computer and print what its task answers: a
classifier's top classes, a segmenter's class areas and mask.png, a detector's top boxes or raw anchors, an
embedding's first values, a regressor's outputs (needs numpy and ai-edge-litert).

    python example.py                 # the first held-out sample stored in parity.npz
    python example.py input.npy       # one preprocessed NCHW input (batch optional)
    python example.py photo.jpg       # an image, preprocessed as manifest.json says (needs Pillow)

On the phone, ModelRunner.kt does the same with the LiteRT Interpreter.
"""
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # example_tasks.py, beside this file in the bundle

from example_tasks import check_arguments, describe, image_input, print_top_classes, read_manifest  # noqa: E402


def load_input(arg, spec_in):
    """One sample as the .tflite takes it (NHWC where its input is), float: the first stored held-out
    sample, a .npy or an image."""
    if arg is None:
        x = np.load(HERE / "parity.npz")["x"][:1]
    elif not Path(arg).is_file():
        sys.exit("%s: no such file" % arg)
    elif arg.endswith(".npy"):
        x = np.load(arg).astype(np.float32)
    else:
        x = image_input(arg, spec_in)
    if x.ndim == len(spec_in["shape"]) - 1:
        x = x[None]
    n, h, w, c = spec_in["shape"] if len(spec_in["shape"]) == 4 else (None,) * 4
    if spec_in.get("layout") == "NHWC" and tuple(x.shape[1:]) == (c, h, w):
        x = x.transpose(0, 2, 3, 1)  # NCHW samples; the model takes channels last (no transpose inside it)
    want = list(spec_in["shape"][1:])
    if all(isinstance(d, int) for d in want) and list(x.shape[1:]) != want:
        sys.exit("%s has shape %s; this model takes one sample of shape %s%s (a batch dimension in front is optional)"
                 % (arg, list(x.shape), want, " or its NCHW twin %s" % [c, h, w] if spec_in.get("layout") == "NHWC"
                    else ""))
    return x


def invoke(interpreter, x, spec_in):
    detail_in = interpreter.get_input_details()[0]
    q_in = spec_in.get("quantization")
    if q_in:  # full-integer model: quantize with the input tensor's scale and zero point
        x = np.clip(np.round(x / q_in["scale"] + q_in["zero_point"]), -128, 127)
    interpreter.set_tensor(detail_in["index"], x.astype(detail_in["dtype"]))
    interpreter.invoke()


def outputs_of(interpreter, manifest):
    """Every output in the manifest's (the model's) order, dequantized where it is INT8."""
    by_name = {d["name"]: d for d in interpreter.get_output_details()}
    outputs = []
    for spec in manifest["outputs"]:
        out = interpreter.get_tensor(by_name[spec["name"]]["index"]).astype(np.float32)
        q = spec.get("quantization")
        outputs.append((out - q["zero_point"]) * q["scale"] if q else out)
    return outputs


def main():
    manifest = read_manifest()
    check_arguments(__doc__, manifest)
    spec_in, spec_out = manifest["inputs"][0], manifest["outputs"][0]
    interpreter = Interpreter(model_path=str(HERE / manifest["model"]["file"]), num_threads=2)
    interpreter.allocate_tensors()
    detail_out = interpreter.get_output_details()[0]
    q_out = spec_out.get("quantization")
    invoke(interpreter, load_input(sys.argv[1] if len(sys.argv) > 1 else None, spec_in), spec_in)
    if manifest.get("task") not in (None, "classification"):
        outputs, other = outputs_of(interpreter, manifest), None
        if manifest.get("task") == "embedding" and len(sys.argv) > 2:  # two inputs: how alike they are
            invoke(interpreter, load_input(sys.argv[2], spec_in), spec_in)
            other = outputs_of(interpreter, manifest)
        return describe(outputs, manifest, other)
    logits = interpreter.get_tensor(detail_out["index"])[0].astype(np.float32)
    if q_out:
        logits = (logits - q_out["zero_point"]) * q_out["scale"]
    print_top_classes(logits)


if __name__ == "__main__":
    main()
