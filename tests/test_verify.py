"""The host-side INT8 check for a non-x86 target computes INT8 products exactly, as ARM does."""
import numpy as np
import onnx
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


def test_targets_other_than_x86_are_checked_exactly():
    assert verify.exact_int8_for("arm64") and verify.exact_int8_for("armv7")
    assert not verify.exact_int8_for("x86_64")  # an x86 target runs the same kernel as this host
