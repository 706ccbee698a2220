"""TensorRT on the device, the parts that touch CUDA and TensorRT objects directly: INT8 calibration
batches and the calibrator, the few CUDA runtime calls (cuda-python), the build logger, and the
engine runner that ec_bench times. Standard library plus numpy, TensorRT and cuda-python, each
imported inside the function that needs it; Python >= 3.8. Split from ec_trt.py, which re-exports
these names."""
import os

COMPARE_WARMUP_RUNS, COMPARE_RUNS = 10, 50
LOG_LINES = 40


class TrtError(RuntimeError):
    """A build or run failed; the message says which step and carries TensorRT's own words."""


# ---- INT8 calibration ---------------------------------------------------------------------------

def pack_batches(samples, batch):
    """Contiguous float32 batches of `batch` samples each (N x C x H x W -> [batch x C x H x W]);
    (batches, samples left over because N is not a multiple of batch)."""
    import numpy as np

    samples = np.asarray(samples)
    if samples.dtype != np.float32:
        raise ValueError("calibration samples must be float32, got %s" % samples.dtype)
    if samples.ndim < 2 or len(samples) < batch:
        raise ValueError("calibration needs at least %d sample(s) N x ..., got shape %s" % (batch, samples.shape))
    count = len(samples) // batch
    batches = [np.ascontiguousarray(samples[i * batch:(i + 1) * batch]) for i in range(count)]
    return batches, len(samples) - count * batch


class CalibrationFeeder(object):
    """The calibrator's logic without TensorRT: hands out batches through `copy_to_device(array) ->
    device pointer`, reads and writes the calibration cache file. An exception inside a callback
    (which TensorRT would swallow) is kept in `error` and ends the batches."""

    def __init__(self, batches, copy_to_device, cache_path):
        self.batches, self.copy_to_device, self.cache_path = batches, copy_to_device, cache_path
        self.index, self.error = 0, None

    def get_batch_size(self):
        return len(self.batches[0]) if self.batches else 1

    def get_batch(self, names):
        if self.index >= len(self.batches) or self.error:
            return None
        try:
            if len(names) != 1:
                raise ValueError("calibration feeds one input; the network has %d: %s" % (len(names), names))
            pointer = self.copy_to_device(self.batches[self.index])
        except Exception as e:  # raised into TensorRT's C++ it would be lost
            self.error = e
            return None
        self.index += 1
        return [int(pointer)]

    def read_calibration_cache(self):
        if self.cache_path and os.path.isfile(self.cache_path):
            with open(self.cache_path, "rb") as f:
                return f.read()
        return None

    def write_calibration_cache(self, cache):
        tmp = self.cache_path + ".partial-%d" % os.getpid()
        with open(tmp, "wb") as f:
            f.write(bytes(cache))
        os.replace(tmp, self.cache_path)


def make_calibrator(trt, feeder):
    """An IInt8EntropyCalibrator2 (TensorRT 8/10) that delegates to a CalibrationFeeder."""
    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # the binding's trampoline must be initialised

        def get_batch_size(self):
            return feeder.get_batch_size()

        def get_batch(self, names):
            return feeder.get_batch(names)

        def read_calibration_cache(self):
            return feeder.read_calibration_cache()

        def write_calibration_cache(self, cache):
            feeder.write_calibration_cache(cache)

    return Calibrator()


# ---- CUDA through cuda-python --------------------------------------------------------------------

def import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6; the only name in 13
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


class Cuda(object):
    """The few CUDA runtime calls the engine needs; a failed call raises TrtError naming it."""

    def __init__(self, cudart):
        self.rt = cudart
        kinds = cudart.cudaMemcpyKind
        self.h2d_kind, self.d2h_kind = kinds.cudaMemcpyHostToDevice, kinds.cudaMemcpyDeviceToHost

    def call(self, what, result):
        err, rest = result[0], result[1:]
        if err != self.rt.cudaError_t.cudaSuccess:
            raise TrtError("CUDA %s failed: %s" % (what, err))
        return rest[0] if len(rest) == 1 else None

    def device(self):
        props = self.call("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(0))
        name = props.name.decode("utf-8", "replace") if isinstance(props.name, bytes) else str(props.name)
        return name.strip("\x00").strip(), "%d.%d" % (props.major, props.minor)

    def malloc(self, nbytes):
        return int(self.call("cudaMalloc", self.rt.cudaMalloc(max(int(nbytes), 1))))

    def free(self, pointer):
        self.call("cudaFree", self.rt.cudaFree(pointer))

    def copy_in(self, pointer, array):
        """Synchronous host-to-device copy; returns the device pointer (the calibrator's copy)."""
        self.call("cudaMemcpy", self.rt.cudaMemcpy(pointer, array.ctypes.data, array.nbytes, self.h2d_kind))
        return pointer

    def h2d(self, pointer, array, stream):
        self.call("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                                             self.h2d_kind, stream))

    def d2h(self, array, pointer, stream):
        self.call("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes,
                                                             self.d2h_kind, stream))

    def stream(self):
        return self.call("cudaStreamCreate", self.rt.cudaStreamCreate())

    def event(self):
        return self.call("cudaEventCreate", self.rt.cudaEventCreate())

    def record(self, event, stream):
        self.call("cudaEventRecord", self.rt.cudaEventRecord(event, stream))

    def synchronize(self, stream):
        self.call("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))

    def elapsed_ms(self, start, end):
        return float(self.call("cudaEventElapsedTime", self.rt.cudaEventElapsedTime(start, end)))


def make_logger(trt):
    """A trt.ILogger that keeps what TensorRT says (VERBOSE left out), for the error of a failed build."""
    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.lines = []

        def log(self, severity, msg):
            name = getattr(severity, "name", str(severity).split(".")[-1])
            if name != "VERBOSE":
                self.lines.append("[%s] %s" % (name, msg))
                del self.lines[:-400]

        def tail(self):
            errors = [line for line in self.lines if line.startswith(("[ERROR]", "[INTERNAL_ERROR]"))]
            rest = [line for line in self.lines[-LOG_LINES:] if line not in errors]
            return "\n".join(errors[-LOG_LINES:] + rest) or "(TensorRT logged nothing)"

    return CollectingLogger()


def fixed_shape(dims):
    return [d if d >= 0 else 1 for d in dims]


# ---- running with the Python API -----------------------------------------------------------------

class EngineRunner(object):
    """A deserialized engine with device buffers: run(feeds) copies in, executes between two CUDA
    events, copies out. `execute_ms` keeps running figures of the event times."""

    def __init__(self, trt, cuda, engine_path):
        self.trt, self.cuda = trt, cuda
        self.logger = make_logger(trt)
        with open(engine_path, "rb") as f:
            self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise TrtError("TensorRT could not load the engine %s:\n%s" % (engine_path, self.logger.tail()))
        self.context = self.engine.create_execution_context()
        self.tensor_api = hasattr(self.engine, "num_io_tensors") and hasattr(self.context, "execute_async_v3")
        self.stream, self.start, self.end = cuda.stream(), cuda.event(), cuda.event()
        self.inputs, self.outputs = self._io()
        self.execute_ms = {"n": 0, "mean": None, "min": None, "max": None,
                           "method": "CUDA events around %s, every run" % (
                               "execute_async_v3" if self.tensor_api else "execute_v2")}

    def _tensors(self):
        """[(name, is_input, numpy dtype, shape, binding index)] in the engine's order."""
        import numpy as np

        e, trt = self.engine, self.trt
        if self.tensor_api:
            names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
            return [(n, e.get_tensor_mode(n) == trt.TensorIOMode.INPUT, np.dtype(trt.nptype(e.get_tensor_dtype(n))),
                     list(e.get_tensor_shape(n)), i) for i, n in enumerate(names)]
        return [(e.get_binding_name(i), e.binding_is_input(i), np.dtype(trt.nptype(e.get_binding_dtype(i))),
                 list(e.get_binding_shape(i)), i) for i in range(e.num_bindings)]

    def _io(self):
        tensors = self._tensors()
        inputs, outputs = [], []
        for name, is_input, dtype, shape, index in tensors:  # input shapes first: outputs follow from them
            if is_input:
                shape = fixed_shape(shape)
                if self.tensor_api:
                    self.context.set_input_shape(name, shape)
                else:
                    self.context.set_binding_shape(index, shape)
                inputs.append({"name": name, "dtype": dtype, "shape": shape, "index": index})
        for name, is_input, dtype, _, index in tensors:
            if not is_input:
                shape = list(self.context.get_tensor_shape(name) if self.tensor_api
                             else self.context.get_binding_shape(index))
                if any(d < 0 for d in shape):  # -1 after every input shape is set: known only once it ran
                    raise TrtError("output '%s' has shape %s, which depends on the data (NonZero, NMS inside the "
                                   "model): this runner gives every output its buffer before the run; export "
                                   "the model with fixed-size outputs (e.g. top-k boxes padded to k) or leave "
                                   "the data-dependent step out of the ONNX" % (name, shape))
                outputs.append({"name": name, "dtype": dtype, "shape": shape, "index": index})
        self.bindings = [0] * len(tensors)
        for tensor in inputs + outputs:
            count = 1
            for d in tensor["shape"]:
                count *= d
            tensor["pointer"] = self.cuda.malloc(count * tensor["dtype"].itemsize)
            self.bindings[tensor["index"]] = tensor["pointer"]
            if self.tensor_api:
                self.context.set_tensor_address(tensor["name"], tensor["pointer"])
        return inputs, outputs

    def close(self):
        """Free the device buffers and drop the engine (before the next one is loaded, in a comparison)."""
        for tensor in self.inputs + self.outputs:
            self.cuda.free(tensor["pointer"])
        self.inputs, self.outputs, self.context, self.engine = [], [], None, None

    def describe_inputs(self):
        return [{"name": t["name"], "shape": list(t["shape"]), "dtype": t["dtype"].name} for t in self.inputs]

    def _execute(self):
        if self.tensor_api:
            return self.context.execute_async_v3(int(self.stream))
        return self.context.execute_v2(self.bindings)

    def run(self, feeds):
        import numpy as np

        cuda, held = self.cuda, []
        for tensor in self.inputs:
            array = np.ascontiguousarray(feeds[tensor["name"]])
            if array.dtype != tensor["dtype"] or list(array.shape) != tensor["shape"]:
                raise ValueError("input '%s' must be %s %s for this engine, got %s %s" % (
                    tensor["name"], tensor["dtype"].name, tensor["shape"], array.dtype, list(array.shape)))
            held.append(array)
            cuda.h2d(tensor["pointer"], array, self.stream)
        cuda.record(self.start, self.stream)
        if not self._execute():
            raise TrtError("TensorRT execute failed:\n%s" % self.logger.tail())
        cuda.record(self.end, self.stream)
        outputs = [np.empty(t["shape"], t["dtype"]) for t in self.outputs]
        for tensor, array in zip(self.outputs, outputs):
            cuda.d2h(array, tensor["pointer"], self.stream)
        cuda.synchronize(self.stream)
        self._count(cuda.elapsed_ms(self.start, self.end))
        return outputs

    def _count(self, ms):
        self.last_ms, s = ms, self.execute_ms
        s["n"] += 1
        s["mean"] = ms if s["n"] == 1 else s["mean"] + (ms - s["mean"]) / s["n"]
        s["min"] = ms if s["min"] is None else min(s["min"], ms)
        s["max"] = ms if s["max"] is None else max(s["max"], ms)

    def median_execute_ms(self, warmup=COMPARE_WARMUP_RUNS, runs=COMPARE_RUNS):
        """Median CUDA-event time of `runs` executes on random inputs, after `warmup` (engine comparison)."""
        import numpy as np

        rng = np.random.default_rng(0)
        feeds = {t["name"]: rng.standard_normal(t["shape"]).astype(t["dtype"]) for t in self.inputs}
        for _ in range(warmup):
            self.run(feeds)
        times = []
        for _ in range(runs):
            self.run(feeds)
            times.append(self.last_ms)
        return float(np.median(times))
