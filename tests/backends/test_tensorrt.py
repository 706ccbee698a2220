"""The TensorRT stage on the host: what the device will build, and the bundle without a device."""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgecompress import profile
from edgecompress.backends import tensorrt as engine
from ecutil import fast_sets, run_cli, train_weights


def test_calibration_packing_is_float32_nchw_and_capped():
    x = np.random.default_rng(0).normal(size=(100, 3, 8, 8))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        full = np.load(engine.pack_calibration(x, Path(tmp) / "a.npy"))
        capped = np.load(engine.pack_calibration(x, Path(tmp) / "b.npy", max_bytes=10 * 3 * 8 * 8 * 4))
    assert full.dtype == np.float32 and full.shape == (100, 3, 8, 8) and np.allclose(full, x)
    assert capped.shape == (10, 3, 8, 8) and np.allclose(capped[0], x[0]) and np.allclose(capped[-1], x[-1])


def test_build_options_follow_the_profile():
    prof, _ = profile.load("jetson-orin-nano", ["prune.structure=2:4"])
    opts = engine.build_options(prof, calibration=False, qdq=False)
    assert opts == {"precision": "fp16", "workspace_mb": 1024, "timing": "api", "sparsity": True,
                    "compare_sparse": True}
    prof, _ = profile.load("jetson-orin-nano", ["quantize.precision=int8", "prune.round_to=32"])
    assert engine.build_options(prof, calibration=True, qdq=False)["calibration"] == engine.CALIBRATION_FILE
    assert engine.build_options(prof, calibration=False, qdq=True)["qdq"] is True


@pytest.mark.parametrize("version,expected", [("8.6.2", 8), ("10.3.0.26", 10), ("11.0", 11), (None, None)])
def test_tensorrt_major_version(version, expected):
    assert engine.major(version) == expected


def test_jetson_bundle_without_a_device_carries_onnx_qdq_and_build_settings(tmp_path, model_file, npz_data):
    code, out, err = run_cli("deploy", f"{model_file}:build", "--target", "jetson-orin-nano", "--data", npz_data,
                             "--out", tmp_path, "--json",
                             *fast_sets("quantize.precision=int8", "prune.round_to=8", "prune.ratio=0.5"))
    assert code == 2 and "multiple of 32" in err  # INT8 tensor cores need 32-channel multiples
    x, y = np.load(npz_data)["x"], np.load(npz_data)["y"]
    weights = train_weights(tmp_path / "w.pt", x, y)  # trained: a random net's near-tied logits flip under INT8
    code, out, err = run_cli("deploy", f"{model_file}:build", "--weights", weights, "--target", "jetson-orin-nano",
                             "--data", npz_data, "--out", tmp_path, "--json",
                             *fast_sets("quantize.precision=int8", "prune.round_to=32", "prune.ratio=0.3"))
    assert code == 0, err
    folder = tmp_path / "net-jetson-orin-nano"
    m = json.loads((folder / "manifest.json").read_text())
    assert m["runtime"]["name"] == "tensorrt" and m["runtime"]["version"] is None
    assert "built on the device" in m["runtime"]["note"] and "--device" in m["runtime"]["note"]
    assert m["engine"]["status"].startswith("not built") and m["engine"]["build_settings"]["precision"] == "int8"
    assert m["metrics"]["measured_on"]["proxy"] is True and "no engine was built" in m["metrics"]["measured_on"]["note"]
    assert {"model.onnx", "model_qdq.onnx", "calibration.npy"} <= set(m["files"])
    qdq = onnx.load(str(folder / "model_qdq.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    zero_points = [inits[n.input[2]] for n in qdq.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points), "symmetric INT8 for TensorRT"
    # off the Jetson, the TensorRT example says why it cannot run and what runs instead: no traceback
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(folder / "trt_example.py")], capture_output=True, text=True, timeout=60)
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:  # this project's machines
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "TensorRT is not installed here" in done.stderr and "python example.py" in done.stderr, done.stderr


def test_convert_without_a_device_ships_the_onnx_and_times_it_as_a_stand_in(compressed_for):
    from edgecompress.backends import BACKENDS

    run, compressed = compressed_for("jetson", "quantize.precision=int8", "prune.round_to=32")
    backend = BACKENDS.get("tensorrt")
    deployed = backend.convert(compressed, run)
    assert [c.what for c in deployed.checks] == ["original.onnx vs PyTorch original",
                                                 "student FP32 ONNX vs PyTorch student",
                                                 "model_qdq.onnx (INT8 Q/DQ) vs PyTorch"]
    assert deployed.parity.what == "model.onnx (the engine's source) vs PyTorch"
    assert deployed.plan.proxy is True and "a stand-in: no engine was built or timed" in deployed.stand_in
    assert {k: m.runtime for k, m in deployed.bench_models.items()} == {"original": "onnxruntime",
                                                                       "compressed": "onnxruntime"}
    assert sorted(deployed.extra_files) == ["calibration.npy", "model.onnx", "model_qdq.onnx"]
    files = backend.bundle_files(deployed, run.work)
    assert {"model.onnx", "example.py", "trt_example.py", "example_tasks.py", "device/ec_trt.py", "calibration.npy"} <= set(files)
    assert backend.manifest_sections(deployed, None, run.work)["engine"]["build_settings"]["onnx"] == "model.onnx"
    assert backend.runtime_section(deployed, None) == {
        "name": "tensorrt", "version": None,
        "note": "the engine is built on the device, with the TensorRT there: deploy with --device to record it"}


def test_for_timing_and_bench_here_need_the_jetson(compressed_for, tmp_path):
    from edgecompress.backends import BACKENDS
    from edgecompress.errors import InputError

    run, compressed = compressed_for("jetson")
    backend = BACKENDS.get("tensorrt")
    with pytest.raises(InputError, match="runs only on the Jetson, and this run has no device"):
        backend.for_timing(compressed.original, run, "probe")
    with pytest.raises(InputError, match="TensorRT bundle, and TensorRT runs only on the Jetson"):
        backend.bench_model(tmp_path, {"model": {"file": "model.onnx"}}, here=True, artifact=tmp_path)
    settings = {"onnx": "model_qdq.onnx", "precision": "int8", "qdq": True, "calibration": None}
    model = backend.bench_model(tmp_path, {"model": {"file": "model.onnx"}, "engine": {"build_settings": settings}},
                                here=False, artifact=tmp_path)
    assert model.path == tmp_path / "model_qdq.onnx" and model.options == {"precision": "int8", "qdq": True,
                                                                          "calibration": None}
