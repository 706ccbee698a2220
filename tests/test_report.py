"""The bundle README's header lines (the walkthrough read '(tensorrt None)' and 'model.onnx (fp16)' for
the FP32 ONNX a Jetson builds its FP16 engine from)."""
from edgecompress.report import _model_precision, _runtime_text


def test_a_tensorrt_bundle_says_its_onnx_is_fp32_and_what_the_device_builds():
    m = {"runtime": {"name": "tensorrt", "version": None}, "model": {"file": "model.onnx"},
         "compression": {"quantization": {"precision": "fp16"}},
         "engine": {"build_settings": {"onnx": "model.onnx"}}}
    assert _model_precision(m) == "FP32 ONNX; the device builds a fp16 TensorRT engine from `model.onnx`"
    m["compression"]["quantization"]["precision"] = "int8"
    m["engine"]["build_settings"]["onnx"] = "model_qdq.onnx"
    assert _model_precision(m) == "FP32 ONNX; the device builds a int8 TensorRT engine from `model_qdq.onnx`"
    assert _runtime_text(m["runtime"]) == "tensorrt, version not known until it runs on the device"
    assert "None" not in _runtime_text(m["runtime"])


def test_other_runtimes_keep_their_file_precision_and_version():
    m = {"runtime": {"name": "onnxruntime", "version": "1.32.0"}, "model": {"file": "model.onnx"},
         "compression": {"quantization": {"precision": "int8"}}}
    assert _model_precision(m) == "int8" and _runtime_text(m["runtime"]) == "onnxruntime 1.32.0"
