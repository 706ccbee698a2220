"""Run one input through this bundle's model with TensorRT, on the Jetson, and print what the model's
task answers (every output, in the manifest's order): a classifier's top classes, a segmenter's class
areas, a detector's top boxes or raw anchors, an embedding's first values, a regressor's outputs.

    python3 trt_example.py            # the first held-out sample stored in parity.npz
    python3 trt_example.py input.npy  # one preprocessed input, shaped like the model's input (batch optional)
    python3 trt_example.py a.npy b.npy  # an embedding net: both embeddings and their cosine similarity

TensorRT engines only run on the GPU and TensorRT version they were built with. When model.engine
was built for this device, it is used as is; otherwise this says why and builds a new engine from
the ONNX with the bundle's build settings (cached under ./engines, so only the first run builds).
Needs TensorRT's Python bindings (JetPack; a venv needs --system-site-packages), numpy and
cuda-python for inference from Python (`pip install cuda-python`); without cuda-python the engine
is still built and trtexec can time it.
"""
import json
import os
import shutil
import sys
from pathlib import Path

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
sys.path.insert(0, str(HERE / "device"))  # the same TensorRT code edgecompress runs on devices

import ec_trt  # noqa: E402


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
    input's outputs, `other`, their cosine similarity), a regressor's outputs. example.py's twin."""
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


def outputs_in_model_order(names, arrays, manifest):
    """The engine's outputs (named by TensorRT, in its own order) in the manifest's order, the model's,
    which describe() and the other example programs read; FP16 ones as float32."""
    import numpy as np

    by_name = dict(zip(names, arrays))
    wanted = [o["name"] for o in manifest["outputs"]]
    missing = [n for n in wanted if n not in by_name]
    if missing:
        sys.exit("the engine has no output named %s (it has %s): rebuild it from this bundle's ONNX"
                 % (", ".join(missing), ", ".join(names)))
    return [by_name[n].astype(np.float32) if by_name[n].dtype == np.float16 else by_name[n] for n in wanted]


def load_input(arg, spec_in):
    """parity.npz's first held-out sample, or a preprocessed .npy of one sample (batch optional)."""
    import numpy as np

    if arg is None:
        return np.load(HERE / "parity.npz")["x"][:1].astype(np.float32)
    if not arg.endswith(".npy") or not Path(arg).is_file():
        sys.exit("%s: pass a preprocessed .npy input (images are read by example.py, which records how)" % arg)
    x = np.load(arg).astype(np.float32)
    return x if x.ndim == len(spec_in["shape"]) else x[None]


def engine_compatible(built, here):
    """(True, "") when an engine described by `built` runs `here`; else (False, why)."""
    problems = []
    if built.get("gpu") != here.get("gpu"):
        problems.append("GPU %r, this device has %r" % (built.get("gpu"), here.get("gpu")))
    if built.get("compute_capability") != here.get("compute_capability"):
        problems.append("compute capability %s, here %s" % (built.get("compute_capability"),
                                                            here.get("compute_capability")))
    if built.get("tensorrt_version") != here.get("tensorrt_version"):
        problems.append("TensorRT %s, here %s" % (built.get("tensorrt_version"), here.get("tensorrt_version")))
    return (not problems), "; ".join(problems)


def build_options(manifest, report):
    settings = dict(manifest["engine"]["build_settings"])
    settings.pop("onnx", None)
    if report and report.get("sparse"):  # the device measured both: build the one it kept
        settings.update(sparsity=report["sparse"]["kept"] == "sparse", compare_sparse=False)
    settings["cache_dir"] = str(HERE / "engines")
    return settings


def seed_cache(report, cache_dir):
    """Put the shipped engine where ec_trt looks for it, under the key it was built with."""
    cache = Path(cache_dir)
    cache.mkdir(exist_ok=True)
    shutil.copyfile(HERE / "model.engine", cache / (report["cache_key"] + ".engine"))
    (cache / (report["cache_key"] + ".json")).write_text(json.dumps(dict(report, build_ms=report.get("build_ms"))))


def main():
    manifest = read_manifest()
    onnx = HERE / manifest["engine"]["build_settings"]["onnx"]
    report_file = HERE / "model.engine.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else None
    options = build_options(manifest, report)
    trt, trt_error = ec_trt._import_tensorrt()
    cuda, _ = ec_trt._import_cuda()
    here = dict(ec_trt.gpu_identity(cuda), tensorrt_version=trt.__version__ if trt else None)
    if report is None:
        print("no engine in this bundle: building one from %s (first run only)" % onnx.name, file=sys.stderr)
    else:
        ok, why = engine_compatible(report, here)
        if ok:
            seed_cache(report, options["cache_dir"])
        else:
            print("model.engine cannot run here: it was built for %s. Building a new engine from %s "
                  "(first run only)." % (why, onnx.name), file=sys.stderr)
    session = ec_trt.load(str(onnx), options)
    if session.run is None:
        print("engine ready; running it from Python needs cuda-python (pip install cuda-python)")
        return
    import numpy as np

    def outputs_for(arg):
        x = load_input(arg, manifest["inputs"][0])
        return outputs_in_model_order(session.outputs, session.run({session.inputs[0]["name"]: x}), manifest)

    outputs = outputs_for(sys.argv[1] if len(sys.argv) > 1 else None)
    if manifest.get("task") not in (None, "classification"):
        other = None
        if manifest.get("task") == "embedding" and len(sys.argv) > 2:  # two inputs: how alike they are
            other = outputs_for(sys.argv[2])
        return describe(outputs, manifest, other)
    logits = outputs[0][0]
    labels_file = HERE / "labels.txt"
    labels = labels_file.read_text().splitlines() if labels_file.exists() else [str(i) for i in range(len(logits))]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    for i in np.argsort(-probs)[:3]:
        print("%12s  %.3f" % (labels[i], probs[i]))


if __name__ == "__main__":
    if ec_trt._import_tensorrt()[0] is None and not shutil.which("trtexec") \
            and not os.path.exists("/usr/src/tensorrt/bin/trtexec"):
        sys.exit("trt_example.py: TensorRT is not installed here (neither its Python bindings nor trtexec): it runs "
                 "on the Jetson. Here, `python example.py` runs model.onnx with ONNX Runtime.")
    main()  # on a Jetson a failure keeps its traceback: it is worth reading there
