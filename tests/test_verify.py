"""The host-side INT8 check for a non-x86 target computes INT8 products exactly, as ARM does."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from edgecompress import verify

K, N = 64, 8


def saturating_model(path):
    """x (uint8 after Q/DQ) times int8 weights of +-127: pairs of u8 x s8 products reach
    2 x 255 x 127 = 64770, past the int16 range of x86's VPMADDUBSW."""
    w = np.full((K, N), 127, np.int8)
    w[:, 1::2] = -127
    graph = h.make_graph(
        [h.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
         h.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
         h.make_node("DequantizeLinear", ["w", "sw"], ["wd"]),
         h.make_node("MatMul", ["xd", "wd"], ["y"])], "saturating",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])],
        [nh.from_array(np.array(1 / 255, np.float32), "sx"), nh.from_array(np.array(0, np.uint8), "zx"),
         nh.from_array(w, "w"), nh.from_array(np.array(0.01, np.float32), "sw")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w


def test_exact_int8_matches_integer_arithmetic(tmp_path):
    w = saturating_model(tmp_path / "m.onnx")
    x = np.random.default_rng(0).uniform(0.9, 1.0, (16, K)).astype(np.float32)
    exact = (np.round(x * 255).clip(0, 255) / np.float32(255)) @ (w.astype(np.float32) * np.float32(0.01))
    y = verify.onnx_outputs(tmp_path / "m.onnx", x, exact_int8=True)[0]
    np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-3)


def test_without_exact_int8_this_host_saturates(tmp_path):
    """The control: on an x86 CPU without VNNI (this project's machines) the default kernel gets the
    same model badly wrong, so the test above shows the option at work. Elsewhere nothing saturates."""
    import platform

    flags = open("/proc/cpuinfo").read() if platform.system() == "Linux" else ""
    if platform.machine() not in ("x86_64", "AMD64") or "avx2" not in flags or "vnni" in flags:
        pytest.skip("only x86 CPUs with AVX2 and without VNNI saturate u8 x s8 products")
    w = saturating_model(tmp_path / "m.onnx")
    x = np.ones((4, K), np.float32)
    exact = x @ (w.astype(np.float32) * np.float32(0.01))
    y = verify.onnx_outputs(tmp_path / "m.onnx", x)[0]
    assert np.abs(y - exact).max() > 10  # 64 x 255 x 127 x 0.01 / 255 = 81.3 comes out near 41


def test_which_targets_are_checked_exactly():
    assert verify.exact_int8_for("onnxruntime", "arm64") and verify.exact_int8_for("litert", "armv7")
    assert verify.exact_int8_for("tensorrt", "x86_64")  # a GPU does not saturate either
    assert not verify.exact_int8_for("onnxruntime", "x86_64")  # runs ONNX Runtime's x86 kernels, as checked
