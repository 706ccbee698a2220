"""quantize.keep_float on the three runtimes, with the models and data of test_tasks: the INT8 file
keeps the heads it is told to (or auto finds) in float, in a form each runtime runs (QDQ without the
head's nodes, LiteRT float ops, TensorRT layer precisions), and the manifest records the choice with
both figures. auto is tested against the figures the other two settings measure, so that INT8
everywhere misses its tolerance and the heads in float meet it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ecutil import run_cli
from test_tasks import _deploy, _one_thread, data  # noqa: F401  (fixtures: the trained task models and their data)

HEADS = "quantize.keep_float=[centre,area]"


def _float_convs(path) -> dict:
    """{Conv/Gemm node: whether its weight is a float initializer (not a DequantizeLinear output)}."""
    import onnx

    graph = onnx.load(str(path)).graph
    inits = {i.name for i in graph.initializer}
    return {n.name: n.input[1] in inits for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}


def _regressor(folder, weights, tmp_path, name, *sets):
    return _deploy("regressor", "arm", folder / "shapes.npz", tmp_path / name, weights["regressor"],
                   *[a for s in sets for a in ("--set", s)])


def test_keep_float_none_names_and_auto_on_onnx_runtime(data, tmp_path):
    folder, weights = data
    m0, *_ = _regressor(folder, weights, tmp_path, "none", "quantize.keep_float=none")
    k0 = m0["compression"]["quantization"]["keep_float"]
    assert k0["setting"] == "none" and k0["layers"] == []
    everywhere = m0["metrics"]["parity"][-1]["task_agreement"]

    m1, _, err1, b1 = _regressor(folder, weights, tmp_path, "heads", HEADS)
    k1 = m1["compression"]["quantization"]["keep_float"]
    assert k1["setting"] == ["centre", "area"] and k1["metric"] == "r2"
    assert {"/centre/Gemm", "/area/Gemm"} <= set(k1["layers"])
    convs = _float_convs(b1 / "model.onnx")
    assert convs["/centre/Gemm"] and convs["/area/Gemm"]  # the heads are float ...
    assert not any(v for n, v in convs.items() if n not in k1["layers"])  # ... and nothing else
    in_float = k1["kept_in_float"]
    assert in_float > everywhere, (in_float, everywhere)  # output quantization no longer adds its noise

    between = (everywhere + in_float) / 2
    m2, _, err2, b2 = _regressor(folder, weights, tmp_path, "auto", f"verify.min_r2={between}")
    k2 = m2["compression"]["quantization"]["keep_float"]
    assert k2["setting"] == "auto" and k2["int8_everywhere"] == pytest.approx(everywhere, abs=1e-6)
    assert k2["kept_in_float"] == pytest.approx(in_float, abs=1e-6) and "misses the tolerance" in k2["reason"]
    assert set(k2["layers"]) == set(k1["layers"])  # auto found the same heads: each output's last layer
    assert "trying the heads in float" in err2 and "the file keeps the heads in float" in err2
    assert m2["metrics"]["parity"][-1]["task_agreement"] == pytest.approx(in_float, abs=1e-6)
    assert not (b2.parent / "model-head-float.onnx").exists()
    code, _, verify_err = run_cli("verify", str(b2))
    assert code == 0, verify_err


def test_a_name_the_model_lacks_is_refused_with_the_closest(data, tmp_path):
    folder, weights = data
    args = ["deploy", "tests/models/task_models.py:regressor", "--target", "arm", "--data", str(folder / "shapes.npz"),
            "--out", str(tmp_path / "o"), "--set", "quantize.keep_float=[centr]", "--set", "distill.steps=5"]
    code, _, err = run_cli(*args)
    assert code == 2 and "quantize.keep_float names 'centr'" in err and "Did you mean 'centre'" in err, err
    assert "distill:" not in err  # refused before any training
    assert not [p for p in (tmp_path / "o").glob("*") if not p.name.startswith(".")], "no bundle for a refused run"


@pytest.mark.litert
def test_litert_computes_the_detector_heads_in_float(data, tmp_path):
    folder, weights = data
    m, *_, bundle = _deploy("detector", "android", folder / "shapes.npz", tmp_path / "out", weights["detector"],
                            "--set", "quantize.keep_float=[box_head,cls_head]")
    k = m["compression"]["quantization"]["keep_float"]
    assert k["layers"] == ["box_head", "cls_head"] and k["kept_in_float"] is not None
    assert m["inputs"][0]["dtype"] == "int8"  # the backbone stays full-integer
    assert [o["dtype"] for o in m["outputs"]] == ["float32", "float32"]  # the heads computed in float
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(str(bundle / "model.tflite"))
    ops = [(d["op_name"], d["inputs"]) for d in it._get_ops_details()]
    tensors = {d["index"]: d["dtype"] for d in it.get_tensor_details()}
    conv_types = [tensors[i[0]] for op, i in ops if op == "CONV_2D"]
    assert np.float32 in conv_types and np.int8 in conv_types, conv_types


def test_tensorrt_gets_the_float_layers_in_its_build_settings(data, tmp_path):
    folder, weights = data
    m, *_, bundle = _deploy("regressor", "jetson", folder / "shapes.npz", tmp_path / "out", weights["regressor"],
                            "--set", HEADS, "--set", "quantize.precision=int8", "--set", "prune.round_to=32")
    k = m["compression"]["quantization"]["keep_float"]
    settings = m["engine"]["build_settings"]
    assert settings["calibration"] and settings["float_layers"] == k["layers"]  # TensorRT 8/10: layer precision
    convs = _float_convs(bundle / "model_qdq.onnx")  # TensorRT 11's Q/DQ file: the same layers without Q/DQ
    assert convs["/centre/Gemm"] and convs["/area/Gemm"] and not all(convs.values())
    assert json.loads((bundle / "manifest.json").read_text())["engine"]["build_settings"] == settings
