"""TensorRT on the device with several outputs: every output gets its own device buffer of its own size,
is copied back and returned under its name, ec_bench reports each, and the Jetson bundle's
trt_example.py prints them by task as example.py does. The stand-in is test_trt_api's `tensorrt` and
cudart, with one change: an engine computes its ONNX with ONNX Runtime, reading its inputs from and
writing each output into the fake device memory, so a buffer of the wrong size, a missed copy or
outputs taken in the wrong order show up as wrong numbers."""
import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ec_trt
import test_trt_api

DEPLOY = Path(__file__).resolve().parents[2] / "edgecompress" / "deploy"
MODELS = Path(__file__).resolve().parents[1] / "models"


class OnnxContext:
    """An execution context that runs the engine's ONNX with ONNX Runtime on the fake device memory."""

    def __init__(self, engine, onnx_bytes, cudart):
        import onnxruntime as ort

        self.engine, self.cudart, self.shapes, self.addresses = engine, cudart, {}, {}
        self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])

    def _run(self, feeds):
        return dict(zip([o.name for o in self.session.get_outputs()], self.session.run(None, feeds)))

    def set_input_shape(self, name, shape):
        self.shapes[name] = list(shape)

    def get_tensor_shape(self, name):
        if name in self.shapes:
            return self.shapes[name]
        zeros = {n: np.zeros(s, np.float32) for n, s in self.shapes.items()}
        return list(self._run(zeros)[name].shape)  # an output's shape follows from the inputs'

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer

    def set_binding_shape(self, index, shape):
        self.set_input_shape(self.engine.io[index][0], shape)

    def get_binding_shape(self, index):
        return self.get_tensor_shape(self.engine.io[index][0])

    def _execute(self, pointer_of):
        memory, feeds = self.cudart.memory, {}
        for name in self.engine.inputs:
            nbytes = int(np.prod(self.shapes[name])) * 4
            feeds[name] = np.frombuffer(bytes(memory[pointer_of(name)][:nbytes]), np.float32).reshape(self.shapes[name])
        for name, value in self._run(feeds).items():
            data = np.ascontiguousarray(value, np.float32).tobytes()
            buffer = memory[pointer_of(name)]
            assert len(buffer) == len(data), f"output {name}: a {len(buffer)}-byte buffer for {len(data)} bytes"
            buffer[:] = data
        return True

    def execute_async_v3(self, stream):
        return self._execute(self.addresses.__getitem__)

    def execute_v2(self, bindings):
        names = [n for n, _, _ in self.engine.io]
        return self._execute(lambda name: bindings[names.index(name)])


def install_onnx_backed(monkeypatch, version="10.3.0.30", tensor_api=True, reverse_outputs=False):
    """test_trt_api's stand-ins, engines computed by ONNX Runtime; `reverse_outputs`: the engine lists
    its outputs in the opposite order to the ONNX's, which TensorRT does not promise to keep."""
    trt, cudart = test_trt_api.install(monkeypatch, version, tensor_api)
    parser_cls, builder_cls, runtime_cls = trt.OnnxParser, trt.Builder, trt.Runtime

    class OnnxParser(parser_cls):
        def parse_from_file(self, path):
            self.network.onnx_path = path
            return parser_cls.parse_from_file(self, path)

    class Builder(builder_cls):
        def build_serialized_network(self, network, config):
            data = builder_cls.build_serialized_network(self, network, config)
            if data is None:
                return None
            engine = json.loads(data)
            if reverse_outputs:
                ins = [t for t in engine["io"] if t[2]]
                engine["io"] = ins + [t for t in engine["io"] if not t[2]][::-1]
            with open(network.onnx_path, "rb") as f:  # the engine carries its network, as a real one does
                onnx_bytes = base64.b64encode(f.read()).decode()
            return json.dumps(dict(engine, onnx=onnx_bytes)).encode()

    class Runtime(runtime_cls):
        def deserialize_cuda_engine(self, data):
            engine = runtime_cls.deserialize_cuda_engine(self, data)
            if engine is not None:
                onnx_bytes = base64.b64decode(json.loads(data)["onnx"])
                engine.create_execution_context = lambda: OnnxContext(engine, onnx_bytes, cudart)
            return engine

    trt.OnnxParser, trt.Builder, trt.Runtime = OnnxParser, Builder, Runtime
    return trt, cudart


def two_output_model(path: Path) -> Path:
    """x (batch, 4) -> double = x + x (batch, 4) and total = the sum of x's row (batch, 1)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    double = helper.make_tensor_value_info("double", TensorProto.FLOAT, ["batch", 4])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["double"]),
                               helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=1)],
                              "two", [x], [double, total], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("version, tensor_api", [("10.3.0.30", True), ("8.2.1.8", False)])
def test_each_output_has_its_own_buffer_and_comes_back_under_its_name(monkeypatch, tmp_path, version, tensor_api):
    _, cudart = install_onnx_backed(monkeypatch, version, tensor_api)
    path = two_output_model(tmp_path / "two.onnx")
    session = ec_trt.load(str(path), {"cache_dir": str(tmp_path / "engines")})
    assert session.outputs == ["double", "total"]
    assert sorted(len(cudart.memory[p]) for p in cudart.memory) == [4, 16, 16], "x, double and total: their sizes"
    x = np.array([[1.0, 2.0, 3.0, 4.5]], np.float32)
    cudart.calls.clear()
    double, total = session.run({"x": x})
    np.testing.assert_array_equal(double, x + x)
    np.testing.assert_array_equal(total, [[10.5]])
    assert cudart.calls == ["H2D", "record", "record", "D2H", "D2H", "sync"], "both copies before the one sync"
    assert session.extra["execute_ms"]["n"] == 1


def test_an_output_whose_size_depends_on_the_data_is_refused_with_the_remedy(monkeypatch, tmp_path):
    install_onnx_backed(monkeypatch)
    path = two_output_model(tmp_path / "two.onnx")
    shape_of = OnnxContext.get_tensor_shape
    monkeypatch.setattr(OnnxContext, "get_tensor_shape",
                        lambda self, name: [-1, 1] if name == "total" else shape_of(self, name))
    with pytest.raises(ec_trt.TrtError, match=r"output 'total' has shape \[-1, 1\], which depends on the data.*"
                                              r"fixed-size outputs"):
        ec_trt.load(str(path), {"cache_dir": str(tmp_path / "engines")})


BENCH_DRIVER = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import pytest
import ec_bench
import test_trt_outputs
test_trt_outputs.install_onnx_backed(pytest.MonkeyPatch(), reverse_outputs=True)
sys.exit(ec_bench.main(["ec_bench.py", "job.json"]))
"""


def test_ec_bench_times_the_engine_and_reports_every_output(tmp_path, small_job):
    two_output_model(tmp_path / "model.onnx")
    job = small_job(runtime="tensorrt", runtime_options={"cache_dir": str(tmp_path / "engines")},
                    report_outputs=True, inputs={"random": [{"name": "x", "shape": [1, 4], "dtype": "float32"}]})
    (tmp_path / "job.json").write_text(json.dumps(job))
    done = subprocess.run([sys.executable, "-c", BENCH_DRIVER, str(DEPLOY), str(Path(__file__).parent)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    outputs = {o["name"]: o for o in result["outputs"]}
    assert [o["name"] for o in result["outputs"]] == ["total", "double"]  # the engine's own order
    assert (outputs["double"]["shape"], outputs["total"]["shape"]) == ([1, 4], [1, 1])
    assert outputs["double"]["sum"] == pytest.approx(2 * outputs["total"]["sum"], rel=1e-6), "each from its buffer"
    assert result["latency_ms"]["n"] == 5 and result["execute_ms"]["n"] == 1 + 2 + 5


EXAMPLE_DRIVER = """
import runpy, sys
bundle = sys.argv[1]
sys.path[:0] = [bundle + "/device", sys.argv[2]]  # the bundle's own ec_trt, then the stand-ins
import pytest
import test_trt_outputs
test_trt_outputs.install_onnx_backed(pytest.MonkeyPatch(), reverse_outputs=True)
sys.argv = [bundle + "/trt_example.py"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_jetson_bundles_trt_example_builds_the_engine_and_prints_every_output_as_example_py_does(tmp_path):
    """A two-output regressor deployed for the Jetson without a device: on the stand-in, trt_example.py
    builds the engine from the bundle's ONNX with its build settings and prints what example.py prints
    with ONNX Runtime, though the engine lists its outputs in the other order (a detector's, with an
    engine built on the device, is the next test)."""
    model = "regressor"
    from ecutil import fast_sets, run_cli

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "shapes.npz", x=rng.normal(0, 1, (64, 3, 32, 32)).astype(np.float32))
    code, _, err = run_cli("deploy", f"{MODELS / 'task_models.py'}:{model}", "--target", "jetson", "--data",
                           tmp_path / "shapes.npz", "--out", tmp_path / "out",
                           *fast_sets("distill.steps=5", "verify.min_confident_agreement=0", "verify.min_r2=-1e9"))
    assert code == 0, err
    bundle = next(p for p in (tmp_path / "out").iterdir() if p.is_dir() and not p.name.startswith("."))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [o["name"] for o in manifest["outputs"]] == ["output_0", "output_1"]
    reference = subprocess.run([sys.executable, str(bundle / "example.py")], capture_output=True, text=True, timeout=60)
    assert reference.returncode == 0, reference.stderr
    done = subprocess.run([sys.executable, "-c", EXAMPLE_DRIVER, str(bundle), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no engine in this bundle: building one from model.onnx" in done.stderr
    expected = reference.stdout.splitlines()
    assert done.stdout.splitlines() == expected and [line.split(":")[0] for line in expected] == ["output_0", "output_1"]


SITECUSTOMIZE = """
# The device's python imports this first: TensorRT and cudart stand-ins (engines computed by ONNX
# Runtime), then the repository's device modules are forgotten so that the job's own copies run.
import sys
sys.path[:0] = [{tests!r}, {deploy!r}]
import pytest
import test_trt_outputs
test_trt_outputs.install_onnx_backed(pytest.MonkeyPatch(), reverse_outputs=True)
from importlib.machinery import ModuleSpec
for name in ("tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime"):
    sys.modules[name].__spec__ = ModuleSpec(name, None)  # so that the probe's find_spec finds them
del sys.path[:2]
for name in [n for n in sys.modules if n.startswith("ec_")]:
    del sys.modules[name]
"""


@pytest.fixture
def jetson_stand_in(sshd, tmp_path, monkeypatch):
    """A device named `orin` over a real ssh connection whose python has the stand-ins installed
    (its engine cache under its own HOME)."""
    import yaml

    site = tmp_path / "device-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(tests=str(Path(__file__).parent), deploy=str(DEPLOY)))
    (tmp_path / "device-home").mkdir()
    python = tmp_path / "device-python"
    python.write_text(f"#!/bin/sh\nHOME={tmp_path / 'device-home'} PYTHONPATH={site} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    entry = {"target": "jetson-orin-nano", "transport": "ssh", "host": "127.0.0.1", "port": sshd.port,
             "user": sshd.user, "key": str(sshd.client_key), "known_hosts": str(sshd.known_hosts),
             "python": str(python), "workdir": str(tmp_path / "device-work")}
    (tmp_path / "devices.yaml").write_text(yaml.safe_dump({"devices": {"orin": entry}}))
    monkeypatch.setenv("EDGECOMPRESS_DEVICES", str(tmp_path / "devices.yaml"))
    return "orin"


def test_a_two_output_detector_deployed_with_the_device_builds_times_and_ships_its_engine(jetson_stand_in, tmp_path):
    """deploy --device over ssh: the device builds the engine with the (stand-in) Python API, times
    session.run, which copies both outputs back every run, and sends the engine back; the bundle's
    trt_example.py then runs that very engine and prints what example.py prints."""
    from ecutil import fast_sets, run_cli

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "shapes.npz", x=rng.normal(0, 1, (64, 3, 32, 32)).astype(np.float32))
    code, _, err = run_cli("deploy", f"{MODELS / 'task_models.py'}:detector", "--target", "jetson-orin-nano",
                           "--device", jetson_stand_in, "--data", tmp_path / "shapes.npz", "--out", tmp_path / "out",
                           *fast_sets("distill.steps=5", "verify.min_confident_agreement=0"))
    assert code == 0, err
    bundle = next(p for p in (tmp_path / "out").iterdir() if p.is_dir() and not p.name.startswith("."))
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["engine"]["status"] == "built on device orin" and m["engine"]["tensorrt_version"] == "10.3.0.30"
    assert {"model.engine", "model.engine.json"} <= set(m["files"])
    where, latency = m["metrics"]["measured_on"], m["metrics"]["latency_ms"]["compressed"]
    assert where["where"] == "device" and where["device_name"] == "orin" and latency["n"] >= 20
    assert "perf_counter" in latency["method"] and latency["p50"] > 0
    assert (m["engine"]["engine"]["builder"], m["engine"]["engine"]["gpu"]) == ("api", "Fake Orin")
    assert [o["name"] for o in m["outputs"]] == ["output_0", "output_1"]
    reference = subprocess.run([sys.executable, str(bundle / "example.py")], capture_output=True, text=True, timeout=60)
    assert reference.returncode == 0, reference.stderr
    done = subprocess.run([sys.executable, "-c", EXAMPLE_DRIVER, str(bundle), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "found in the cache" in done.stderr and "building" not in done.stderr, "the shipped engine ran"
    assert done.stdout.splitlines() == reference.stdout.splitlines() and len(reference.stdout.splitlines()) == 5


def _tiny_bundle(folder: Path, task: str) -> Path:
    """A Jetson bundle's files around a one-node ONNX (no deploy: the example programs are what is
    tested): a segmenter whose class scores are its input, or an embedding that L2-normalises it."""
    import shutil

    import onnx
    from onnx import TensorProto, helper

    from edgecompress import manifest as manifest_mod
    from edgecompress.backends.tensorrt import DEVICE_FILES

    shape, out = ([1, 3, 4, 4], "masks") if task == "segmentation" else ([1, 8], "embedding")
    node = (helper.make_node("Identity", ["x"], [out]) if task == "segmentation"
            else helper.make_node("LpNormalization", ["x"], [out], axis=1, p=2))
    graph = helper.make_graph([node], task, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir()
    onnx.save(model, str(folder / "model.onnx"))
    rng = np.random.default_rng(3)
    np.savez(folder / "parity.npz", x=rng.normal(0, 1, [4] + shape[1:]).astype(np.float32))
    manifest = {"schema_version": manifest_mod.SCHEMA_VERSION, "task": task, "model": {"file": "model.onnx"},
                "inputs": [{"name": "x", "shape": shape}], "outputs": [{"name": out, "shape": shape, "layout": None}],
                "metrics": {}, "engine": {"build_settings": {"onnx": "model.onnx", "precision": "fp32"}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    templates = DEPLOY.parent / "templates"
    shutil.copy(templates / "onnx_example.py", folder / "example.py")
    shutil.copy(templates / "trt_example.py", folder / "trt_example.py")
    shutil.copy(templates / "example_tasks.py", folder / "example_tasks.py")
    (folder / "device").mkdir()
    for name in DEVICE_FILES:
        shutil.copy(DEPLOY / name, folder / "device" / name)
    return folder


@pytest.mark.parametrize("task", ["segmentation", "embedding"])
def test_trt_example_writes_the_mask_and_compares_two_embeddings_as_example_py_does(task, tmp_path):
    bundle = _tiny_bundle(tmp_path / "bundle", task)
    args = []
    if task == "embedding":  # two inputs: both embeddings' cosine similarity
        for name in ("a", "b"):
            np.save(tmp_path / f"{name}.npy", np.random.default_rng(ord(name)).normal(0, 1, (1, 8)).astype(np.float32))
            args.append(str(tmp_path / f"{name}.npy"))
    runs = {}
    for program in ("example", "trt"):
        cwd = tmp_path / program
        cwd.mkdir()
        command = ([sys.executable, str(bundle / "example.py")] if program == "example" else
                   [sys.executable, "-c", EXAMPLE_DRIVER.replace('sys.argv = [bundle + "/trt_example.py"]',
                                                                 'sys.argv = [bundle + "/trt_example.py"] + sys.argv[3:]'),
                    str(bundle), str(Path(__file__).parent)])
        done = subprocess.run(command + args, capture_output=True, text=True, timeout=60, cwd=cwd)
        assert done.returncode == 0, done.stderr
        runs[program] = done.stdout.splitlines()
    assert runs["trt"] == runs["example"]
    if task == "segmentation":
        assert runs["trt"][-1] == "mask: mask.png (4 x 4; class k at grey level 127 * k)"
        assert (tmp_path / "trt" / "mask.png").read_bytes() == (tmp_path / "example" / "mask.png").read_bytes()
    else:
        assert runs["trt"][-1].startswith("cosine similarity of the two inputs: ") and len(runs["trt"]) == 2
