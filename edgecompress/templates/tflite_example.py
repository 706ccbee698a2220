"""Run one input through this bundle's .tflite model on a computer and print what its task answers: a
classifier's top classes, a segmenter's class areas and mask.png, a detector's top boxes or raw anchors, an
embedding's first values, a regressor's outputs (needs numpy and ai-edge-litert).

    python example.py                 # the first held-out sample stored in parity.npz
    python example.py input.npy       # one preprocessed NCHW input (batch optional)
    python example.py photo.jpg       # an image, preprocessed as manifest.json says (needs Pillow)

On the phone, ModelRunner.kt does the same with the LiteRT Interpreter.
"""
import json
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

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


def image_input(arg, spec_in):
    """An image to the model's NCHW input, with the preprocessing recorded at build time (the same
    formula the app must apply; the NHWC transpose below follows the model's layout)."""
    from PIL import Image

    pre = spec_in["preprocessing"]
    if not pre.get("size") or pre.get("mean") is None:
        sys.exit("%s: this bundle was built from preprocessed arrays, so how to turn an image into its input is "
                 "not recorded (%s); pass a preprocessed .npy instead" % (arg, pre.get("note", pre.get("layout"))))
    shape = spec_in["shape"]
    channels = shape[3] if spec_in.get("layout") == "NHWC" else shape[1]
    height, width = pre["size"]
    img = Image.open(arg).convert("RGB" if channels == 3 else "L").resize((width, height))
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
    labels_file = HERE / "labels.txt"
    labels = labels_file.read_text().splitlines() if labels_file.exists() else [str(i) for i in range(len(logits))]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    for i in np.argsort(-probs)[:3]:
        print(f"{labels[i]:>12}  {probs[i]:.3f}")


if __name__ == "__main__":
    main()
