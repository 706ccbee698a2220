"""ec_litert through ec_bench.py, as a device runs it: real ai-edge-litert on small .tflite models
written here with the TFLite schema (y = x + x, float32 or int8), so the device side is tested
without the host's converter."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

litert = pytest.importorskip("ai_edge_litert")

DEPLOY = Path(__file__).resolve().parents[2] / "edgecompress" / "deploy"


def doubling_tflite(path: Path, dtype: str = "float32") -> Path:
    """y = x + x on (batch, 4) with a dynamic batch; int8 tensors have scale 0.5, zero point 3."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    def tensor(name):
        t = schema.TensorT()
        t.name, t.shape, t.shapeSignature, t.buffer = name, [1, 4], [-1, 4], 0
        t.type = {"float32": schema.TensorType.FLOAT32, "int8": schema.TensorType.INT8}[dtype]
        if dtype == "int8":
            t.quantization = schema.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [0.5], [3]
        return t

    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 0], [1]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [tensor("x"), tensor("y")], [0], [1], [op]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    code.version = 2 if dtype == "int8" else 1
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [graph], [schema.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
    return path


@pytest.fixture
def litert_job(tmp_path, small_job):
    doubling_tflite(tmp_path / "model.tflite")
    doubling_tflite(tmp_path / "model_int8.tflite", "int8")

    def make(**changes):
        changes.setdefault("model", "model.tflite")
        changes.setdefault("runtime", "litert")
        return small_job(**changes)
    return make


def test_a_tflite_model_is_timed_with_the_options_as_applied(tmp_path, run_bench, litert_job):
    np.save(tmp_path / "x.npy", np.array([[1, 2, 3, 4]], np.float32))
    code, result, out, err = run_bench(tmp_path, litert_job(inputs={"npy": {"x": "x.npy"}}, report_outputs=True))
    assert code == 0, result
    assert len(out) == 1 and "error" not in result
    assert "progress: loading model.tflite with litert" in err
    assert result["latency_ms"]["n"] == 5 and result["latency_ms"]["p50"] > 0
    assert result["device"]["runtime"] == "litert"
    assert result["device"]["runtime_version"] == litert.__version__
    applied = result["runtime_options"]
    assert applied["threads"] == 1 and applied["delegate"] == "xnnpack" and applied["package"] == "ai-edge-litert"
    assert applied["delegated_partitions"] == 1  # XNNPACK took the ADD
    assert result["inputs"] == [{"name": "x", "shape": [1, 4], "dtype": "float32", "source": "npy"}]
    assert result["outputs"] == [{"name": "y", "shape": [1, 4], "dtype": "float32", "sum": 20.0}]


def test_int8_inputs_are_drawn_as_int8_and_run(tmp_path, run_bench, litert_job):
    code, result, _, _ = run_bench(tmp_path, litert_job(model="model_int8.tflite", report_outputs=True))
    assert code == 0, result
    assert result["inputs"] == [{"name": "x", "shape": [1, 4], "dtype": "int8", "source": "random-from-model"}]
    assert result["outputs"][0]["dtype"] == "int8"


def test_no_delegate_runs_on_the_builtin_kernels(tmp_path, run_bench, litert_job):
    code, result, _, _ = run_bench(tmp_path, litert_job(runtime_options={"threads": 2, "delegate": "none"}))
    assert code == 0, result
    assert result["runtime_options"]["delegate"] == "none"
    assert result["runtime_options"]["delegated_partitions"] == 0


def test_a_batch_other_than_the_models_resizes_the_input(tmp_path, run_bench, litert_job):
    job = litert_job(inputs={"random": [{"name": "x", "shape": [3, 4]}]}, report_outputs=True)
    code, result, _, _ = run_bench(tmp_path, job)
    assert code == 0, result
    assert result["inputs"][0]["shape"] == [3, 4]
    assert result["outputs"][0]["shape"] == [3, 4]


@pytest.mark.parametrize("options, message", [
    ({"threads": 1, "thread": 2}, "unknown runtime_options for litert: thread; valid: delegate, threads"),
    ({"delegate": "nnapi"}, "runtime_options.delegate must be one of xnnpack, none, gpu, got 'nnapi'"),
    ({"threads": 0}, "runtime_options.threads must be an integer >= 1, got 0"),
])
def test_bad_options_are_refused_with_the_valid_ones(tmp_path, run_bench, litert_job, options, message):
    code, result, _, _ = run_bench(tmp_path, litert_job(runtime_options=options))
    assert code != 0
    assert message in result["error"]


def test_the_gpu_delegate_is_an_error_where_its_library_is_missing(tmp_path, run_bench, litert_job):
    from ai_edge_litert.interpreter import load_delegate

    try:
        load_delegate("libtensorflowlite_gpu_delegate.so")
        pytest.skip("this machine has the TFLite GPU delegate")
    except (ValueError, OSError):
        pass
    code, result, _, _ = run_bench(tmp_path, litert_job(runtime_options={"delegate": "gpu"}))
    assert code != 0
    assert "delegate 'gpu' is not available here" in result["error"]
    assert "LD_LIBRARY_PATH" in result["error"]


def test_a_device_without_any_litert_package_is_told_which_python_lacks_it(tmp_path, litert_job):
    """Both ai_edge_litert and tflite_runtime made unimportable by stand-ins earlier on the path."""
    blocked = tmp_path / "blocked"
    for name in ("ai_edge_litert", "tflite_runtime"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text('raise ImportError("No module named %s")\n' % name)
    (tmp_path / "job.json").write_text(json.dumps(litert_job()))
    env = dict(os.environ, PYTHONPATH=str(blocked))
    done = subprocess.run([sys.executable, str(DEPLOY / "ec_bench.py"), "job.json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    result = json.loads(done.stdout.splitlines()[-1])
    assert done.returncode != 0
    assert "runtime 'litert' is not importable with python" in result["error"]
    assert "ai_edge_litert" in result["error"]  # the package to install, not the fallback
