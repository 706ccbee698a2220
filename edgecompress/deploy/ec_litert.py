"""LiteRT (.tflite) for ec_bench: the Interpreter of ai-edge-litert, or of tflite-runtime where a
device has only that. The one place the device side imports either. Python >= 3.8.

Options: threads (the interpreter's num_threads; null = the runtime's default) and delegate:
  "xnnpack"  the default: the interpreter applies XNNPACK to the ops it supports, CPU for the rest
  "none"     the builtin CPU kernels alone (BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  "gpu"      the TFLite GPU delegate library (libtensorflowlite_gpu_delegate.so, found on the
             loader's path; Android and Linux boards with a GPU build it); an error where it is missing
"""
import time

import ec_runtimes

DELEGATES = ("xnnpack", "none", "gpu")
GPU_DELEGATE_LIBRARY = "libtensorflowlite_gpu_delegate.so"


def interpreter_module():
    """(interpreter module, package name, version): ai-edge-litert first, then tflite-runtime."""
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter
        return interpreter, "ai-edge-litert", getattr(ai_edge_litert, "__version__", "unknown")
    except ImportError as first:
        try:
            import tflite_runtime
            from tflite_runtime import interpreter
        except ImportError:
            raise first  # name the package this project installs, not the fallback
        return interpreter, "tflite-runtime", getattr(tflite_runtime, "__version__", "unknown")


def check_delegate(options):
    delegate = options.get("delegate", "xnnpack")
    if delegate not in DELEGATES:
        raise ValueError("runtime_options.delegate must be one of %s, got %r" % (", ".join(DELEGATES), delegate))
    return delegate


def interpreter_kwargs(interpreter, delegate):
    if delegate == "none":
        return {"experimental_op_resolver_type": interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if delegate == "gpu":
        try:
            return {"experimental_delegates": [interpreter.load_delegate(GPU_DELEGATE_LIBRARY)]}
        except (ValueError, OSError) as e:
            raise ValueError("delegate 'gpu' is not available here: loading %s failed (%s); put the TFLite GPU "
                             "delegate library on LD_LIBRARY_PATH, or use delegate 'xnnpack'"
                             % (GPU_DELEGATE_LIBRARY, str(e).strip().splitlines()[0] if str(e).strip() else e))
    return {}


def delegated_partitions(it):
    """How many partitions of the graph a delegate took (None where the runtime cannot say)."""
    try:
        return sum(1 for op in it._get_ops_details() if op.get("op_name") == "DELEGATE")
    except Exception:  # a private API: older or newer runtimes may lack it
        return None


def describe_input(np, detail):
    signature = detail.get("shape_signature")
    dims = list(signature) if signature is not None and len(signature) else list(detail["shape"])
    return {"name": detail["name"], "shape": [int(d) if d >= 0 else None for d in dims],
            "dtype": np.dtype(detail["dtype"]).name}


def load(model_path, options):
    import numpy as np

    ec_runtimes.check_options("litert", options, ("threads", "delegate"))
    threads, delegate = ec_runtimes.check_threads(options), check_delegate(options)
    interpreter, package, version = interpreter_module()
    start = time.perf_counter_ns()
    kwargs = interpreter_kwargs(interpreter, delegate)
    it = interpreter.Interpreter(model_path=model_path, num_threads=threads, **kwargs)
    it.allocate_tensors()
    load_ms = (time.perf_counter_ns() - start) / 1e6
    ins, outs = it.get_input_details(), it.get_output_details()
    shapes = [tuple(int(d) for d in i["shape"]) for i in ins]
    feed_order = [(i["name"], i["index"], n) for n, i in enumerate(ins)]
    out_indices = [o["index"] for o in outs]

    def run(feeds):
        for name, index, n in feed_order:
            array = feeds[name]
            if array.shape != shapes[n]:  # e.g. a job that asks for another batch size
                it.resize_tensor_input(index, list(array.shape))
                it.allocate_tensors()
                shapes[n] = array.shape
            it.set_tensor(index, array)
        it.invoke()
        return [it.get_tensor(i) for i in out_indices]

    applied = {"threads": threads, "delegate": delegate, "delegated_partitions": delegated_partitions(it),
               "package": package}
    return ec_runtimes.Session(run, [describe_input(np, i) for i in ins], [o["name"] for o in outs],
                               version, applied, load_ms)
