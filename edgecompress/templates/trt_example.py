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
sys.path.insert(0, str(HERE / "device"))  # the same TensorRT code edgecompress runs on devices
sys.path.insert(0, str(HERE))  # example_tasks.py, beside this file in the bundle

import ec_trt  # noqa: E402
from example_tasks import check_arguments, describe, print_top_classes, read_manifest  # noqa: E402


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
    check_arguments(__doc__, manifest)
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

    def outputs_for(arg):
        x = load_input(arg, manifest["inputs"][0])
        return outputs_in_model_order(session.outputs, session.run({session.inputs[0]["name"]: x}), manifest)

    outputs = outputs_for(sys.argv[1] if len(sys.argv) > 1 else None)
    if manifest.get("task") not in (None, "classification"):
        other = None
        if manifest.get("task") == "embedding" and len(sys.argv) > 2:  # two inputs: how alike they are
            other = outputs_for(sys.argv[2])
        return describe(outputs, manifest, other)
    print_top_classes(outputs[0][0])


if __name__ == "__main__":
    check_arguments(__doc__)
    if ec_trt._import_tensorrt()[0] is None and not shutil.which("trtexec") \
            and not os.path.exists("/usr/src/tensorrt/bin/trtexec"):
        sys.exit("trt_example.py: TensorRT is not installed here (neither its Python bindings nor trtexec): it runs "
                 "on the Jetson. Here, `python example.py` runs model.onnx with ONNX Runtime.")
    main()  # on a Jetson a failure keeps its traceback: it is worth reading there
