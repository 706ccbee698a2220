"""ec_trt's Python-API path. TensorRT cannot run here, so most tests drive it through stand-ins for the
`tensorrt` and `cuda.bindings.runtime` modules that follow the documented API: the fake cudart keeps
device memory in a dict and really copies bytes, and the fake engine computes y = x + x on it, so a
wrong pointer, size or order shows up as wrong numbers. Tests with the real modules skip where they
do not import."""
import ctypes
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import ec_trt

DEPLOY = Path(__file__).resolve().parents[2] / "edgecompress" / "deploy"
FLOAT = "FLOAT"


class FakeCudart(types.ModuleType):
    """cudart as cuda-python exposes it: every call returns (error, result...)."""

    cudaError_t = types.SimpleNamespace(cudaSuccess=0)
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H")

    def __init__(self):
        types.ModuleType.__init__(self, "cuda.bindings.runtime")
        self.memory, self.next, self.calls, self.elapsed = {}, 0x10000, [], 0.25

    def cudaGetDeviceProperties(self, index):
        return 0, types.SimpleNamespace(name=b"Fake Orin\x00\x00", major=8, minor=7)

    def cudaMalloc(self, nbytes):
        pointer, self.next = self.next, self.next + nbytes + 256
        self.memory[pointer] = bytearray(nbytes)
        return 0, pointer

    def cudaFree(self, pointer):
        del self.memory[pointer]
        return (0,)

    def _copy(self, dst, src, nbytes, kind):
        self.calls.append(kind)
        if kind == "H2D":
            self.memory[dst][:nbytes] = ctypes.string_at(src, nbytes)
        else:
            ctypes.memmove(dst, bytes(self.memory[src][:nbytes]), nbytes)

    def cudaMemcpy(self, dst, src, nbytes, kind):
        self._copy(dst, src, nbytes, kind)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        self._copy(dst, src, nbytes, kind)
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaEventCreate(self):
        return 0, object()

    def cudaEventRecord(self, event, stream):
        self.calls.append("record")
        return (0,)

    def cudaStreamSynchronize(self, stream):
        self.calls.append("sync")
        return (0,)

    def cudaEventElapsedTime(self, start, end):
        return 0, self.elapsed


class Severity:
    def __init__(self, name):
        self.name = name


class Tensor:
    def __init__(self, name, shape, dtype=FLOAT):
        self.name, self.shape, self.dtype = name, shape, dtype


def onnx_io(path):
    import onnx

    graph = onnx.load(path).graph

    def tensors(values):
        return [Tensor(v.name, [d.dim_value if d.HasField("dim_value") else -1
                                for d in v.type.tensor_type.shape.dim]) for v in values]
    return tensors(graph.input), tensors(graph.output)


def make_fake_trt(version, cudart, tensor_api=True):
    """A `tensorrt` module for `version`; `trt.builds` records what each build was asked for."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    trt.builds, trt.fail_build, trt.calibration_sums = [], False, []
    trt.float32 = FLOAT
    trt.nptype = lambda dtype: np.float32
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    flags = {"SPARSE_WEIGHTS": "SPARSE_WEIGHTS", "OBEY_PRECISION_CONSTRAINTS": "OBEY_PRECISION_CONSTRAINTS"}
    if major < 11:  # TensorRT 11 removed them
        flags.update(FP16="FP16", INT8="INT8")
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    trt.NetworkDefinitionCreationFlag = (types.SimpleNamespace(EXPLICIT_BATCH=0) if major < 10
                                         else types.SimpleNamespace(STRONGLY_TYPED=1))

    class ILogger:
        Severity = types.SimpleNamespace(ERROR=Severity("ERROR"), WARNING=Severity("WARNING"),
                                         INFO=Severity("INFO"), VERBOSE=Severity("VERBOSE"))

        def __init__(self):
            pass

    class IInt8EntropyCalibrator2:
        def __init__(self):
            pass

    class Layer:  # the parser names each layer after its ONNX node
        def __init__(self, name, outputs):
            self.name, self.precision, self.num_outputs, self.output_types = name, None, outputs, {}

        def set_output_type(self, index, dtype):
            self.output_types[index] = dtype

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.outputs, self.layers = flags, [], [], []
            self.num_inputs = 0

        @property
        def num_layers(self):
            return len(self.layers)

        def get_input(self, i):
            return self.inputs[i]

        def get_layer(self, i):
            return self.layers[i]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            import onnx

            self.network.inputs, self.network.outputs = onnx_io(path)
            self.network.num_inputs = len(self.network.inputs)
            self.network.layers = [Layer(n.name, len(n.output)) for n in onnx.load(path).graph.node]
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, best, high):
            self.shapes[name] = (list(low), list(best), list(high))

    class Config:
        def __init__(self):
            self.flags, self.pool, self.profiles = [], {}, []
            self.int8_calibrator = self.calibration_profile = None

        def set_flag(self, flag):
            self.flags.append(flag)

        def set_memory_pool_limit(self, pool, nbytes):
            self.pool[pool] = nbytes

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

    def calibrate(calibrator, network):
        if calibrator.read_calibration_cache():
            return
        sums = []
        while True:
            pointers = calibrator.get_batch([t.name for t in network.inputs])
            if pointers is None:
                break
            shape = [calibrator.get_batch_size()] + network.inputs[0].shape[1:]
            nbytes = int(np.prod(shape)) * 4
            sums.append(float(np.frombuffer(bytes(cudart.memory[pointers[0]][:nbytes]), np.float32).sum()))
        trt.calibration_sums.append(sums)
        calibrator.write_calibration_cache(b"TRT-fake-EntropyCalibration2\n")

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.builds.append({"network_flags": network.flags, "flags": list(config.flags), "pool": dict(config.pool),
                               "profiles": [p.shapes for p in config.profiles],
                               "calibrator": config.int8_calibrator is not None,
                               "fp32_layers": {la.name: sorted(la.output_types.values()) for la in network.layers
                                               if la.precision == FLOAT}})
            self.logger.log(ILogger.Severity.VERBOSE, "tactic noise")
            self.logger.log(ILogger.Severity.INFO, "building")
            if config.int8_calibrator is not None:
                calibrate(config.int8_calibrator, network)
            if trt.fail_build:
                self.logger.log(ILogger.Severity.ERROR, "fake: no implementation for node Add_0")
                return None
            return json.dumps({"io": [[t.name, t.shape, True] for t in network.inputs]
                               + [[t.name, t.shape, False] for t in network.outputs],
                               "sparse": "SPARSE_WEIGHTS" in config.flags}).encode()

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = list(shape)

        def get_tensor_shape(self, name):
            return self.shapes[self.engine.inputs[0]]  # y = x + x: outputs take the input's shape

        def set_tensor_address(self, name, pointer):
            self.addresses[name] = pointer

        def set_binding_shape(self, index, shape):
            self.set_input_shape(self.engine.io[index][0], shape)

        def get_binding_shape(self, index):
            return self.get_tensor_shape(self.engine.io[index][0])

        def _double(self, pointer_of):
            cudart.elapsed = 0.5 if self.engine.sparse else 1.0
            x_name, y_name = self.engine.inputs[0], self.engine.outputs[0]
            nbytes = int(np.prod(self.shapes[x_name])) * 4
            x = np.frombuffer(bytes(cudart.memory[pointer_of(x_name)][:nbytes]), np.float32)
            cudart.memory[pointer_of(y_name)][:nbytes] = (x + x).tobytes()
            return True

        def execute_v2(self, bindings):
            names = [n for n, _, _ in self.engine.io]
            return self._double(lambda name: bindings[names.index(name)])

    class TensorContext(Context):  # TensorRT >= 8.5
        def execute_async_v3(self, stream):
            assert stream == 7
            return self._double(self.addresses.__getitem__)

    class Engine:
        def __init__(self, data):
            self.io, self.sparse = data["io"], data["sparse"]
            self.inputs = [n for n, _, is_input in self.io if is_input]
            self.outputs = [n for n, _, is_input in self.io if not is_input]
            if tensor_api:
                self.num_io_tensors = len(self.io)
            else:
                self.num_bindings = len(self.io)

        def get_tensor_name(self, i):
            return self.io[i][0]

        def get_tensor_mode(self, name):
            return "INPUT" if name in self.inputs else "OUTPUT"

        def get_tensor_dtype(self, name):
            return FLOAT

        def get_tensor_shape(self, name):
            return [shape for n, shape, _ in self.io if n == name][0]

        def get_binding_name(self, i):
            return self.io[i][0]

        def binding_is_input(self, i):
            return self.io[i][2]

        def get_binding_dtype(self, i):
            return FLOAT

        def get_binding_shape(self, i):
            return self.io[i][1]

        def create_execution_context(self):
            return TensorContext(self) if tensor_api else Context(self)  # old 8.x: bindings, execute_v2

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            try:
                return Engine(json.loads(data))
            except ValueError:
                return None

    trt.ILogger, trt.IInt8EntropyCalibrator2, trt.Builder, trt.OnnxParser, trt.Runtime = (
        ILogger, IInt8EntropyCalibrator2, Builder, OnnxParser, Runtime)
    return trt


def install(monkeypatch, version, tensor_api=True):
    cudart = FakeCudart()
    trt = make_fake_trt(version, cudart, tensor_api)
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, cudart
    for name, module in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", cudart)):
        monkeypatch.setitem(sys.modules, name, module)
    return trt, cudart


@pytest.fixture
def model(job_dir, tmp_path):
    return str(job_dir / "model.onnx"), {"cache_dir": str(tmp_path / "engines")}


@pytest.mark.parametrize("version, network_flags", [("10.3.0.30", 0), ("8.6.1.6", 1)])
def test_a_fp16_build_runs_end_to_end_through_device_memory(monkeypatch, model, version, network_flags):
    trt, cudart = install(monkeypatch, version)
    path, options = model
    session = ec_trt.load(path, dict(options, precision="fp16", workspace_mb=64))
    build = trt.builds[0]
    assert build["network_flags"] == network_flags and build["flags"] == ["FP16"]
    assert build["pool"] == {"WORKSPACE": 64 << 20}
    assert build["profiles"] == [{"x": ([1, 4], [1, 4], [1, 4])}]  # the dynamic batch fixed to 1
    assert session.inputs == [{"name": "x", "shape": [1, 4], "dtype": "float32"}] and session.outputs == ["y"]
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    cudart.calls.clear()
    (y,) = session.run({"x": x})
    np.testing.assert_array_equal(y, x + x)
    assert cudart.calls == ["H2D", "record", "record", "D2H", "sync"]
    assert session.extra["execute_ms"]["n"] == 1 and session.extra["execute_ms"]["mean"] == 1.0
    assert "execute_async_v3" in session.extra["execute_ms"]["method"]
    assert session.options["timing"] == "api" and session.options["builder"] == "api"
    engine = session.extra["engine"]
    assert (engine["gpu"], engine["compute_capability"], engine["identity_source"]) == ("Fake Orin", "8.7", "cudart")
    assert engine["tensorrt_version"] == version and session.version == version
    assert session.extra["artifacts"] == ["model.engine", "model.engine.json"]


def test_old_tensorrt_8_runs_with_bindings_and_execute_v2(monkeypatch, model):
    install(monkeypatch, "8.2.1.8", tensor_api=False)
    path, options = model
    session = ec_trt.load(path, options)
    x = np.full((1, 4), 1.5, np.float32)
    np.testing.assert_array_equal(session.run({"x": x})[0], x + x)
    assert "execute_v2" in session.extra["execute_ms"]["method"]


def test_tensorrt_11_fp16_touches_no_fp16_flag_and_builds_strongly_typed(monkeypatch, model):
    trt, _ = install(monkeypatch, "11.1.0.106")
    path, options = model
    session = ec_trt.load(path, dict(options, precision="fp16"))
    assert trt.builds[0]["flags"] == [] and trt.builds[0]["network_flags"] == 1 << 1
    assert any("no FP16 builder flag" in w for w in session.extra["warnings"])


def test_int8_calibration_feeds_every_sample_and_keeps_the_cache(monkeypatch, model):
    trt, _ = install(monkeypatch, "10.3.0.30")
    path, options = model
    samples = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    np.save(os.path.join(os.path.dirname(path), "calib.npy"), samples)
    options = dict(options, precision="int8", calibration="calib.npy")
    session = ec_trt.load(path, options)
    assert trt.builds[0]["flags"] == ["INT8"] and trt.builds[0]["calibrator"]
    np.testing.assert_allclose(trt.calibration_sums[0], samples.sum(axis=1), rtol=1e-6)
    assert session.extra["artifacts"] == ["model.engine", "model.engine.json", "model.calib"]
    calib = Path(os.path.dirname(path)) / "model.calib"
    assert calib.read_bytes() == b"TRT-fake-EntropyCalibration2\n"
    assert session.extra["engine"]["build_options"]["calibration_sha256"] is not None
    ec_trt.load(path, dict(options, sparsity=True))  # another engine, same data: the cache is read, no batches
    assert len(trt.builds) == 2 and len(trt.calibration_sums) == 1


def test_float_layers_are_computed_and_output_in_fp32_under_obeyed_constraints(monkeypatch, model):
    import onnx

    trt, _ = install(monkeypatch, "10.3.0.30")
    path, options = model
    np.save(os.path.join(os.path.dirname(path), "calib.npy"), np.ones((2, 4), np.float32))
    graph = onnx.load(path)
    node = graph.graph.node[-1].name = "/double/Add"  # as the TorchScript exporter names a module's node
    onnx.save(graph, path)
    options = dict(options, precision="int8", calibration="calib.npy", float_layers=[node, "/no/such/Conv"])
    session = ec_trt.load(path, options)
    build = trt.builds[0]
    assert build["flags"] == ["OBEY_PRECISION_CONSTRAINTS", "INT8"] and build["fp32_layers"] == {node: [FLOAT]}
    assert any("no layer named /no/such/Conv" in w for w in session.extra["warnings"])
    assert session.options["float_layers"] == [node, "/no/such/Conv"]
    assert session.extra["engine"]["build_options"]["float_layers"] == sorted([node, "/no/such/Conv"])
    ec_trt.load(path, dict(options, float_layers=[]))  # INT8 everywhere is another engine, not the cached one
    assert len(trt.builds) == 2 and trt.builds[1]["fp32_layers"] == {}
    with pytest.raises(ValueError, match="float_layers goes with precision int8 and calibration"):
        ec_trt.load(path, dict(options, precision="fp16", calibration=None))


def test_calibration_samples_must_match_the_input(monkeypatch, model):
    install(monkeypatch, "10.3.0.30")
    path, options = model
    np.save(os.path.join(os.path.dirname(path), "calib.npy"), np.zeros((6, 3), np.float32))
    with pytest.raises(ValueError, match=r"calibration samples have shape \[6, 3\]; input 'x' needs N x 4"):
        ec_trt.load(path, dict(options, precision="int8", calibration="calib.npy"))


def test_a_failed_build_carries_the_builder_log(monkeypatch, model):
    trt, _ = install(monkeypatch, "10.3.0.30")
    trt.fail_build = True
    path, options = model
    with pytest.raises(ec_trt.TrtError) as e:
        ec_trt.load(path, options)
    message = str(e.value)
    assert "TensorRT could not build the engine" in message
    assert "[ERROR] fake: no implementation for node Add_0" in message and "[INFO] building" in message
    assert "tactic noise" not in message


def test_a_cached_engine_is_not_rebuilt(monkeypatch, model):
    trt, _ = install(monkeypatch, "10.3.0.30")
    path, options = model
    first = ec_trt.load(path, options)
    second = ec_trt.load(path, options)
    assert len(trt.builds) == 1
    assert (second.extra["build_ms"], second.extra["engine_cached"]) == (0, True)
    assert second.extra["engine"]["cache_key"] == first.extra["engine"]["cache_key"]
    np.testing.assert_array_equal(second.run({"x": np.ones((1, 4), np.float32)})[0], np.full((1, 4), 2, np.float32))


def test_compare_sparse_times_both_engines_with_cuda_events(monkeypatch, model):
    trt, _ = install(monkeypatch, "10.3.0.30")  # the fake executes sparse in 0.5 ms, dense in 1.0 ms
    path, options = model
    session = ec_trt.load(path, dict(options, compare_sparse=True))
    assert [b["flags"] for b in trt.builds] == [[], ["SPARSE_WEIGHTS"]]
    report = session.extra["engine"]["sparse"]
    assert (report["dense_p50_ms"], report["sparse_p50_ms"], report["kept"]) == (1.0, 0.5, "sparse")
    assert "CUDA-event" in report["method"] and session.options["sparsity"] is True


def test_run_refuses_inputs_the_engine_was_not_built_for(monkeypatch, model):
    install(monkeypatch, "10.3.0.30")
    path, options = model
    session = ec_trt.load(path, options)
    with pytest.raises(ValueError, match=r"input 'x' must be float32 \[1, 4\] for this engine, got float64 \[1, 4\]"):
        session.run({"x": np.zeros((1, 4))})
    with pytest.raises(ValueError, match=r"got float32 \[2, 4\]"):
        session.run({"x": np.zeros((2, 4), np.float32)})


DRIVER = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import pytest
import ec_bench
import test_trt_api
monkeypatch = pytest.MonkeyPatch()
test_trt_api.install(monkeypatch, "10.3.0.30")
sys.exit(ec_bench.main(["ec_bench.py", "job.json"]))
"""


def test_ec_bench_measures_the_engine_run_by_run(job_dir, small_job, tmp_path):
    job = small_job(runtime="tensorrt", runtime_options={"cache_dir": str(tmp_path / "engines")},
                    report_outputs=True, inputs={"random": [{"name": "x", "shape": [1, 4], "dtype": "float32"}]})
    (job_dir / "job.json").write_text(json.dumps(job))
    done = subprocess.run([sys.executable, "-c", DRIVER, str(DEPLOY), str(Path(__file__).parent)], cwd=job_dir,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["latency_ms"]["n"] == 5 and result["latency_ms"]["method"] == "perf_counter_ns around session.run"
    assert result["execute_ms"]["n"] == 1 + 2 + 5  # first run, warm-up, timed runs
    assert result["outputs"][0]["shape"] == [1, 4] and result["inputs"][0]["source"] == "random"
    assert result["device"]["runtime_version"] == "10.3.0.30" and result["build_ms"] > 0
    assert result["artifacts"] == ["model.engine", "model.engine.json"]
    assert any("p99 from only 5 runs" in w for w in result["warnings"])  # ec_bench's warnings are kept


# ---- with the real modules, where they import ---------------------------------------------------------

def real_tensorrt():
    try:
        import tensorrt  # noqa: F401
        ec_trt.import_cudart()
    except (ImportError, OSError):
        return False
    return True


def real_cudart():
    try:
        cuda = ec_trt.Cuda(ec_trt.import_cudart())
        cuda.device()
    except (ImportError, OSError, ec_trt.TrtError):
        return False
    return True


@pytest.mark.skipif(not real_tensorrt(), reason="tensorrt (with cuda-python) does not import here")
def test_real_tensorrt_builds_and_runs_the_doubling_model(model):
    path, options = model
    session = ec_trt.load(path, dict(options, timing="api"))
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    np.testing.assert_allclose(session.run({"x": x})[0], x + x)
    again = ec_trt.load(path, dict(options, timing="api"))
    assert again.extra["engine_cached"] is True


@pytest.mark.skipif(not real_cudart(), reason="cuda-python does not import here, or sees no GPU")
def test_real_cudart_copies_round_trip_and_events_time():
    cuda = ec_trt.Cuda(ec_trt.import_cudart())
    name, capability = cuda.device()
    assert name and capability.count(".") == 1
    x = np.arange(1024, dtype=np.float32)
    pointer = cuda.malloc(x.nbytes)
    stream, start, end = cuda.stream(), cuda.event(), cuda.event()
    assert cuda.copy_in(pointer, x) == pointer
    back = np.empty_like(x)
    cuda.record(start, stream)
    cuda.d2h(back, pointer, stream)
    cuda.record(end, stream)
    cuda.synchronize(stream)
    np.testing.assert_array_equal(back, x)
    assert cuda.elapsed_ms(start, end) >= 0
    cuda.h2d(pointer, x * 3, stream)
    cuda.d2h(back, pointer, stream)
    cuda.synchronize(stream)
    np.testing.assert_array_equal(back, x * 3)
    cuda.free(pointer)
