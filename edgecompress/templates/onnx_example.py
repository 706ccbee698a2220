"""Run one input through this bundle's model and print what its task answers: a classifier's top classes, a
segmenter's class areas and mask.png, a detector's top boxes or raw anchors, an embedding's first values, a
regressor's outputs (needs numpy and onnxruntime only).

    python example.py                 # the first held-out sample stored in parity.npz
    python example.py input.npy       # one preprocessed input, shaped like the model's input (batch optional)
    python example.py photo.jpg       # an image, preprocessed as manifest.json says (needs Pillow)
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 1  # the manifest major version this example reads (edgecompress.manifest.SCHEMA_VERSION)


def read_manifest() -> dict:
    """manifest.json, refused when a newer edgecompress wrote it (its keys may have changed)."""
    manifest = json.loads((HERE / "manifest.json").read_text())
    version = str(manifest.get("schema_version", 0))
    if int(version.split(".")[0]) > SCHEMA_VERSION:
        sys.exit(f"manifest.json has schema_version {version}, newer than the {SCHEMA_VERSION} this example reads: "
                 "use the example program shipped in the same bundle")
    return manifest


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
    from PIL import Image

    pre = manifest["inputs"][0]["preprocessing"]
    if not pre.get("size") or pre.get("mean") is None:
        sys.exit(f"{arg}: this bundle was built from preprocessed arrays, so how to turn an image into its input is "
                 f"not recorded ({pre.get('note', pre.get('layout'))}); pass a preprocessed .npy instead")
    channels = manifest["inputs"][0]["shape"][1]
    height, width = pre["size"]
    img = Image.open(path).convert("RGB" if channels == 3 else "L").resize((width, height))
    arr = np.asarray(img, dtype=np.float32) * pre["scale"]
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    mean = np.array(pre["mean"][:channels], np.float32)[:, None, None]
    std = np.array(pre["std"][:channels], np.float32)[:, None, None]
    return ((arr - mean) / std)[None]


def write_png(path, gray):
    """An 8-bit greyscale PNG of a 2-D uint8 array, with the standard library only."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = gray.shape
    rows = b"".join(b"\x00" + gray[r].tobytes() for r in range(h))  # filter type 0 per row
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def describe(outputs, manifest, other=None):
    """What a model that is not a classifier answered (manifest task): segmentation's class areas
    (and mask.png), a detector's top anchors, an embedding's first values (and, given a second
    input's outputs, `other`, their cosine similarity), a regressor's outputs."""
    task = manifest.get("task")
    # the model's own names (a .tflite's tensors are serving_default_output_0_output ...), and the file's layout
    names = [(o.get("model_name") or o["name"]) + (" (NHWC)" if o.get("layout") == "NHWC" else "")
             for o in manifest["outputs"]]
    first = outputs[0][0]
    if task == "segmentation":
        classes = first.argmax(-1 if manifest["outputs"][0].get("layout") == "NHWC" else 0)
        values, counts = np.unique(classes, return_counts=True)
        labels = manifest.get("labels") or []  # the data's class names (labels.txt), where it had them
        name_width = max((len(label) for label in labels), default=0)
        for v, c in zip(values, counts):
            # padded to the longest name, so that the shares line up
            name = labels[int(v)] if int(v) < len(labels) else ""
            named = f" {name:<{name_width}}" if labels else ""
            print(f"class {int(v):>3}{named}  {c / classes.size:6.1%} of the pixels")
        n_classes = first.shape[-1 if manifest["outputs"][0].get("layout") == "NHWC" else 0]
        level = 255 // max(1, n_classes - 1)  # class k drawn at grey level k * level, so the mask can be seen
        write_png("mask.png", (classes * level).astype(np.uint8))
        print(f"mask: mask.png ({classes.shape[0]} x {classes.shape[1]}; class k at grey level {level} * k)")
    elif task == "detection" and manifest.get("postprocess"):  # your decode function, shipped in the bundle
        import importlib.util

        spec = importlib.util.spec_from_file_location("postprocess", HERE / manifest["postprocess"]["file"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        own = [o.get("model_name") or o["name"] for o in manifest["outputs"]]  # the names decode() was written for
        boxes, scores, classes = getattr(module, manifest["postprocess"]["function"])(dict(zip(own, outputs)))[0]
        if len(scores) == 0:
            print(f"no boxes: {manifest['postprocess']['function']}() in postprocess.py found none in this input")
        for i in np.argsort(-np.asarray(scores))[:5]:
            print(f"class {int(classes[i])}  score {float(scores[i]):.3f}  box " + " ".join(f"{v:.3f}" for v in boxes[i]))
    elif task == "detection":
        shapes = [o.shape for o in outputs]
        boxes = next(i for i, s in enumerate(shapes) if len(s) == 3 and s[2] == 4)
        beside = [i for i, s in enumerate(shapes) if i != boxes and len(s) == 3 and s[1] == shapes[boxes][1]]
        scores = next((i for i in beside if shapes[i][2] > 1), beside[0])  # class scores before a 1-value objectness
        details = ((manifest.get("metrics") or {}).get("parity") or [{}])[-1].get("task_details") or {}
        raw = np.asarray(outputs[scores][0], np.float64)  # logits, unless the model ends in its own sigmoid
        prob = 1 / (1 + np.exp(-raw)) if details.get("scores_are_logits", True) else raw
        objectness = [i for i in beside if i != scores and shapes[i][2] == 1]  # multiplied in, as the checks do
        kinds = [o.get("are_logits", True) for o in details.get("objectness", [])]
        for i, logits in zip(objectness, kinds + [True] * len(objectness)):
            o = np.asarray(outputs[i][0], np.float64)
            prob = prob * (1 / (1 + np.exp(-o)) if logits else o)
        best = prob.max(-1)
        for a in np.argsort(-best)[:5]:  # the raw top-scoring anchors (no decoding, no NMS)
            print(f"anchor {int(a):>5}  class {int(prob[a].argmax())}  score {best[a]:.3f}  box "
                  + " ".join(f"{v:.3f}" for v in outputs[boxes][0][a]))
    elif task == "embedding":
        print(f"{names[0]}: {first.size} values, |v| {np.linalg.norm(first):.3f}; first: "
              + " ".join(f"{v:.4f}" for v in first.reshape(-1)[:8]))
        if other is not None:
            a, b = first.reshape(-1), other[0][0].reshape(-1)
            print(f"cosine similarity of the two inputs: {float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))):.4f}")
    else:
        for name, out in zip(names, outputs):
            print(f"{name}: " + " ".join(f"{v:.4f}" for v in out[0].reshape(-1)[:8]))


def main():
    manifest = read_manifest()
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
    logits = outputs[0][0]
    labels_file = HERE / "labels.txt"
    labels = labels_file.read_text().splitlines() if labels_file.exists() else [str(i) for i in range(len(logits))]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    for i in np.argsort(-probs)[:3]:
        print(f"{labels[i]:>12}  {probs[i]:.3f}")


if __name__ == "__main__":
    main()
