"""Classify one input with this bundle's .tflite model on a computer (needs numpy and ai-edge-litert).

    python example.py                 # the first held-out sample stored in parity.npz
    python example.py input.npy       # one preprocessed NCHW input (batch optional)

On the phone, ModelRunner.kt does the same with the LiteRT Interpreter.
"""
import json
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

HERE = Path(__file__).resolve().parent


def main():
    manifest = json.loads((HERE / "manifest.json").read_text())
    if len(sys.argv) > 1 and not sys.argv[1].endswith(".npy"):
        sys.exit("%s: this example takes a preprocessed input as .npy (NCHW, as the model's data was made); "
                 "turn an image into one as your app will" % sys.argv[1])
    x = np.load(HERE / "parity.npz")["x"][:1] if len(sys.argv) < 2 else np.load(sys.argv[1]).astype(np.float32)
    spec_in, spec_out = manifest["inputs"][0], manifest["outputs"][0]
    if x.ndim == len(spec_in["shape"]) - 1:
        x = x[None]
    n, h, w, c = spec_in["shape"] if len(spec_in["shape"]) == 4 else (None,) * 4
    if spec_in.get("layout") == "NHWC" and tuple(x.shape[1:]) == (c, h, w):
        x = x.transpose(0, 2, 3, 1)  # NCHW samples; the model takes channels last (no transpose inside it)
    interpreter = Interpreter(model_path=str(HERE / manifest["model"]["file"]), num_threads=2)
    interpreter.allocate_tensors()
    detail_in, detail_out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    q_in, q_out = spec_in.get("quantization"), spec_out.get("quantization")
    if q_in:  # full-integer model: quantize with the input tensor's scale and zero point
        x = np.clip(np.round(x / q_in["scale"] + q_in["zero_point"]), -128, 127)
    interpreter.set_tensor(detail_in["index"], x.astype(detail_in["dtype"]))
    interpreter.invoke()
    logits = interpreter.get_tensor(detail_out["index"])[0].astype(np.float32)
    if q_out:
        logits = (logits - q_out["zero_point"]) * q_out["scale"]
    labels_file = HERE / "labels.txt"
    labels = labels_file.read_text().splitlines() if labels_file.exists() else [str(i) for i in range(len(logits))]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    for i in np.argsort(-probs)[:3]:
        print(f"{labels[i]:>12}  {probs[i]:.3f}")


if __name__ == "__main__":
    main()
