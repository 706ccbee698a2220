"""What every example program in this bundle shares (example.py, and trt_example.py on a Jetson): reading
manifest.json, an image turned into the model's input as the build recorded, and printing what the model's
task answers. Keep it beside them; it needs numpy (and Pillow for images)."""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 1  # the manifest major version these examples read (edgecompress.manifest.SCHEMA_VERSION)


def read_manifest() -> dict:
    """manifest.json, refused when a newer edgecompress wrote it (its keys may have changed)."""
    manifest = json.loads((HERE / "manifest.json").read_text())
    version = str(manifest.get("schema_version", 0))
    if int(version.split(".")[0]) > SCHEMA_VERSION:
        sys.exit(f"manifest.json has schema_version {version}, newer than the {SCHEMA_VERSION} this example reads: "
                 "use the example program shipped in the same bundle")
    return manifest


def check_arguments(doc, manifest=None):
    """-h or --help prints the program's usage (`doc`) and ends it; inputs beyond what the task reads (two for an
    embedding's similarity, else one) are said to be left out, not dropped silently."""
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(doc.strip())
        sys.exit(0)
    takes = 2 if manifest and manifest.get("task") == "embedding" else 1
    if manifest is not None and len(sys.argv) - 1 > takes:
        print("note: this %s reads %s; left out: %s (run once per input)"
              % (manifest.get("task") or "classification", "two inputs" if takes == 2 else "one input",
                 " ".join(sys.argv[1 + takes:])), file=sys.stderr)


def image_input(arg, spec_in):
    """An image to the model's NCHW input, with the preprocessing recorded at build time (the same
    formula the app must apply; the .tflite example transposes it where the model takes NHWC)."""
    import numpy as np
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


def print_top_classes(logits, k=3):
    """A classifier's k most likely classes with their softmax probabilities, named from labels.txt."""
    import numpy as np

    labels_file = HERE / "labels.txt"
    labels = labels_file.read_text().splitlines() if labels_file.exists() else [str(i) for i in range(len(logits))]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    for i in np.argsort(-probs)[:k]:
        print(f"{labels[i]:>12}  {probs[i]:.3f}")


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
    import numpy as np

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
