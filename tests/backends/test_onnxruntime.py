"""The ONNX Runtime back end on a user's residual net: export, INT8 QDQ, the checks in order, and
the INT8 products computed as the target's CPU computes them."""
import onnx
import pytest

from edgecompress import bench
from edgecompress.backends import BACKENDS


@pytest.mark.parametrize("target, exact", [("arm", True), ("host-cpu", False)])
def test_convert_quantizes_checks_and_says_what_bench_times(compressed_for, target, exact):
    run, compressed = compressed_for(target)
    deployed = BACKENDS.get("onnxruntime").convert(compressed, run)
    ops = {n.op_type for n in onnx.load(str(deployed.model)).graph.node}
    assert deployed.model.name == "model.onnx" and {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert [c.what for c in deployed.checks] == ["original.onnx vs PyTorch original",
                                                 "student FP32 ONNX vs PyTorch student"]
    assert all(c.outputs[0].max_abs_diff < 1e-4 for c in deployed.checks)  # FP32 export: equal up to rounding
    assert deployed.exact_int8 is exact  # an ARM target's INT8 dot products do not saturate; x86 without VNNI's do
    assert deployed.parity.what == "deployed int8 model vs the FP32 student" and deployed.parity.samples == 64
    assert deployed.parity.top1_agreement >= run.prof.verify.min_top1_agreement
    assert {k: (m.path.name, m.runtime) for k, m in deployed.bench_models.items()} == {
        "original": ("original.onnx", "onnxruntime"), "compressed": ("model.onnx", "onnxruntime"),
        "student_fp32": ("student_fp32.onnx", "onnxruntime")}  # report.html's trade-off point
    quant = deployed.io["inputs"][0]["quantization"]
    # uint8 activations: the input's zero point is in 0..255 and its scale spans the calibration range
    assert deployed.io["inputs"][0]["name"] == "input" and 0 <= quant["zero_point"] <= 255 and 0 < quant["scale"] < 1
    assert set(deployed.parity_samples) == {"x", "expected", "reference", "original"}
    assert len(deployed.parity_samples["x"]) == 32


def test_fp32_keeps_the_exported_student_and_for_timing_makes_an_int8_probe(compressed_for):
    run, compressed = compressed_for("host-cpu", "quantize.precision=fp32")
    backend = BACKENDS.get("onnxruntime")
    deployed = backend.convert(compressed, run)
    assert deployed.model.read_bytes() == (run.work / "student_fp32.onnx").read_bytes()
    assert deployed.io["inputs"][0]["quantization"] is None and deployed.exact_int8 is False
    run8, _ = compressed_for("host-cpu")
    probe = backend.for_timing(compressed.original, run8, "probe")
    assert isinstance(probe, bench.Model) and probe.path.name == "probe-int8.onnx"
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(probe.path)).graph.node}


def test_bench_and_verify_run_a_bundle_model_file_as_deploy_checked_it(compressed_for):
    run, compressed = compressed_for("arm")
    backend = BACKENDS.get("onnxruntime")
    deployed = backend.convert(compressed, run)
    manifest = {"model": {"file": "model.onnx"}, "metrics": {"parity_exact_int8": True}}
    out = backend.outputs(deployed.model, deployed.parity_samples["x"], manifest)
    assert (out[0] == deployed.parity_samples["expected"]).all()  # the same kernel as at build time
    assert backend.bench_model(run.work, manifest, here=True, artifact=run.work) == run.work / "model.onnx"
    assert backend.bundle_files(deployed, run.work)["model.onnx"] == deployed.model
