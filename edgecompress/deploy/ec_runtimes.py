"""Runtimes the device side can measure: RUNTIMES maps a job's `runtime` to a loader.

A loader is `load(model_path, options) -> Session`. It imports its runtime inside the function (a
device has only the one it uses), rejects options it does not know (never silently ignores them),
and reports the options as applied. LiteRT (`ai_edge_litert`) and TensorRT plug in here with one
loader each; ec_bench.py needs nothing else from them. Python >= 3.8.
"""
import time

# ONNX tensor element types that a numpy array can hold, as numpy dtype names.
ONNX_TO_NUMPY = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64", "tensor(bool)": "bool",
}


class Session(object):
    """What ec_bench needs from a loaded model, whatever the runtime.

    run(feeds) takes {input name: numpy array} and returns the outputs; `inputs` lists
    {"name", "shape", "dtype"} with None for a dynamic dimension and dtype a numpy name (None when
    numpy cannot hold it); `extra` holds runtime-specific result keys (e.g. `build_ms` for engines).
    """

    def __init__(self, run, inputs, outputs, version, options, load_ms, extra=None):
        self.run = run
        self.inputs = inputs
        self.outputs = outputs
        self.version = version
        self.options = options
        self.load_ms = load_ms
        self.extra = extra or {}


def check_options(runtime, options, known):
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError("unknown runtime_options for %s: %s; valid: %s"
                         % (runtime, ", ".join(unknown), ", ".join(sorted(known))))


def _ort_session_options(ort, threads):
    """Pinned settings, so two results differ by the model and not by runtime defaults."""
    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1  # sequential execution uses no inter-op pool; say so explicitly
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def check_threads(options):
    """runtime_options.threads: None (the runtime's default) or an integer >= 1."""
    threads = options.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError("runtime_options.threads must be an integer >= 1, got %r" % (threads,))
    return threads


def _dim(d):
    """A fixed dimension, or None for a named ("batch") or unknown one."""
    return d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else None


def load_onnxruntime(model_path, options):
    import onnxruntime as ort

    check_options("onnxruntime", options, ("threads", "providers"))
    threads = check_threads(options)
    providers = list(options.get("providers", ["CPUExecutionProvider"]))
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise ValueError("onnxruntime %s has no provider %s; available: %s"
                         % (ort.__version__, ", ".join(missing), ", ".join(ort.get_available_providers())))
    start = time.perf_counter_ns()
    session = ort.InferenceSession(model_path, _ort_session_options(ort, threads), providers=providers)
    load_ms = (time.perf_counter_ns() - start) / 1e6
    inputs = [{"name": i.name, "shape": [_dim(d) for d in i.shape],
               "dtype": ONNX_TO_NUMPY.get(i.type)} for i in session.get_inputs()]
    applied = {"threads": threads, "inter_op_threads": 1, "execution_mode": "sequential",
               "graph_optimization": "all", "providers": session.get_providers()}
    return Session(lambda feeds: session.run(None, feeds), inputs,
                   [o.name for o in session.get_outputs()], ort.__version__, applied, load_ms)


def load_tensorrt(model_path, options):
    """TensorRT engines (built here, on the device, from ONNX): all TensorRT calls live in ec_trt."""
    import ec_trt

    return ec_trt.load(model_path, options)


def load_litert(model_path, options):
    """LiteRT (.tflite) with ai-edge-litert's Interpreter: see ec_litert."""
    import ec_litert

    return ec_litert.load(model_path, options)


RUNTIMES = {
    "onnxruntime": load_onnxruntime,
    "tensorrt": load_tensorrt,
    "litert": load_litert,
}
