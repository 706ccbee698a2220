"""Run one input through this bundle's model and print what its task answers: a classifier's top classes, a
segmenter's class areas and mask.png, a detector's top boxes or raw anchors, an embedding's first values, a
regressor's outputs (needs numpy and onnxruntime only).

    python example.py                 # the first held-out sample stored in parity.npz
    python example.py input.npy       # one preprocessed input, shaped like the model's input (batch optional)
    python example.py photo.jpg       # an image, preprocessed as manifest.json says (needs Pillow)
"""
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # example_tasks.py, beside this file in the bundle

from example_tasks import check_arguments, describe, image_input, print_top_classes, read_manifest  # noqa: E402


def as_one_sample(x, sample, arg):
    """x as a batch of one `sample`-shaped input. A batch dimension in front is optional, and so is any of the
    sample's size-1 dimensions (8x8 for a 1x8x8 input: the same numbers in the same order); any other shape is
    refused, never reshaped: a 64x64x3 array holds as many numbers as a 3x64x64 input and reshaped it scrambles
    the picture."""
    if [d for d in x.shape if d != 1] == [d for d in sample if d != 1]:
        return x.reshape([1] + list(sample))
    hint = ""
    if len(sample) == 3 and list(x.shape[-3:]) == [sample[1], sample[2], sample[0]]:
        hint = "; it looks channels-last (H, W, C): save np.moveaxis(x, -1, -3) instead"
    sys.exit("%s has shape %s; this model takes one sample of shape %s (a batch dimension in front is optional)%s"
             % (arg, list(x.shape), list(sample), hint))


def load_input(arg, manifest):
    if arg is None:
        return np.load(HERE / "parity.npz")["x"][:1]
    path = Path(arg)
    if not path.is_file():
        sys.exit("%s: no such file" % arg)
    if path.suffix == ".npy":
        x = np.load(path).astype(np.float32)
        sample = manifest["inputs"][0]["shape"][1:]
        if not all(isinstance(d, int) for d in sample):  # a size the model leaves open: take the array as given
            return x if x.ndim == len(sample) + 1 else x[None]
        return as_one_sample(x, sample, arg)
    return image_input(arg, manifest["inputs"][0])


def main():
    manifest = read_manifest()
    check_arguments(__doc__, manifest)
    options = ort.SessionOptions()
    if manifest["metrics"].get("parity_exact_int8"):
        # Built for an ARM board or a GPU, whose INT8 products are exact. An x86 CPU without VNNI
        # would sum them in saturating int16 and could answer differently; this option makes it
        # compute as the target does (slower, and without effect on other CPUs).
        options.add_session_config_entry("session.x64quantprecision", "1")
        options.log_severity_level = 4  # a failure here is handled below: not ONNX Runtime's red log line
    model = str(HERE / manifest["model"]["file"])
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001  (ONNX Runtime raises its own Fail/RuntimeException types)
        if not manifest["metrics"].get("parity_exact_int8"):
            raise
        # ONNX Runtime's exact-INT8 rewrite cannot load some files (a weight that several layers read, among
        # others): run it as this CPU runs INT8; on a CPU with VNNI, or on the target, the answers are the same
        why = str(exc).split("FAIL : ")[-1].strip().splitlines()[0]
        print(f"note: ONNX Runtime's exact INT8 mode cannot load this model here ({why}); running it with this "
              "CPU's own INT8 kernels, which on x86 CPUs without VNNI may round a few products differently",
              file=sys.stderr)
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = load_input(sys.argv[1] if len(sys.argv) > 1 else None, manifest)
    outputs = session.run(None, {session.get_inputs()[0].name: x})
    if manifest.get("task") not in (None, "classification"):
        other = None
        if manifest.get("task") == "embedding" and len(sys.argv) > 2:  # two inputs: how alike they are
            other = session.run(None, {session.get_inputs()[0].name: load_input(sys.argv[2], manifest)})
        return describe(outputs, manifest, other)
    print_top_classes(outputs[0][0])


if __name__ == "__main__":
    main()
