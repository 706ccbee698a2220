"""LiteRT export with the real litert-torch and ai-edge-litert: FP32 parity, channels-last I/O,
full-integer INT8 on a trained model, the I/O description, and the .tflite timed by the device side."""
import numpy as np
import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

import torch  # noqa: E402

from edgecompress import demo, verify  # noqa: E402
from edgecompress.backends import tflite as litert  # noqa: E402
from edgecompress.data import split  # noqa: E402
from edgecompress.errors import StageError  # noqa: E402

# Measured on the digits below (5 seeds, 128 calibration samples, 359 held-out digits): INT8 top-1
# agreement with PyTorch 99.7-100 %, accuracy within 0.3 points.
MIN_INT8_AGREEMENT = 0.97
MAX_INT8_ACCURACY_DROP = 0.02


@pytest.fixture(scope="module")
def digits():
    return split(demo.dataset(), 0.2)


@pytest.fixture(scope="module")
def trained(digits):
    """The demo architecture, trained for three epochs (about 2 s): real margins between classes,
    so INT8 agreement measures quantization and not near-tied random logits."""
    import torch.nn.functional as F

    train, _ = digits
    torch.manual_seed(0)
    model = demo.build()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    model.train()
    for _ in range(3):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def reference(trained, digits):
    return verify.torch_outputs(trained, digits[1].x)


@pytest.fixture(scope="module")
def files(trained, digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("litert")
    train, _ = digits
    example = torch.from_numpy(train.x[:1])
    return {
        "nchw": litert.export_tflite(trained, example, folder / "fp32_nchw.tflite", channels_last=False),
        "nhwc": litert.export_tflite(trained, example, folder / "fp32_nhwc.tflite", channels_last=True),
        "int8": litert.quantize_tflite_int8(trained, example, train.x[:128], folder / "int8.tflite",
                                            channels_last=True),
    }


def test_fp32_export_matches_pytorch(files, reference, digits):
    parity = verify.compare("fp32", litert.tflite_outputs(files["nchw"], digits[1].x), reference, ["logits"], None)
    assert parity.outputs[0].max_abs_diff < 1e-4
    assert parity.top1_agreement == 1.0
    spec = litert.io_spec(files["nchw"])
    assert spec["inputs"][0]["shape"] == [1, 1, 8, 8] and spec["inputs"][0]["layout"] == "NCHW"
    assert spec["inputs"][0]["dtype"] == "float32" and spec["inputs"][0]["quantization"] is None
    assert spec["outputs"][0]["shape"] == [1, 10] and spec["outputs"][0]["layout"] is None


def test_channels_last_takes_nhwc_and_matches(files, reference, digits):
    spec = litert.io_spec(files["nhwc"])
    assert spec["inputs"][0]["shape"] == [1, 8, 8, 1] and spec["inputs"][0]["layout"] == "NHWC"
    assert litert.input_is_nhwc(files["nhwc"], digits[1].x.shape)
    out = litert.tflite_outputs(files["nhwc"], digits[1].x)
    assert np.abs(out[0] - reference[0]).max() < 1e-4


def test_int8_is_full_integer_with_its_quantization_in_the_spec(files):
    from ai_edge_litert.interpreter import Interpreter

    spec = litert.io_spec(files["int8"])
    for tensor in spec["inputs"] + spec["outputs"]:
        assert tensor["dtype"] == "int8"
        q = tensor["quantization"]
        assert q["scale"] > 0 and -128 <= q["zero_point"] <= 127
    assert spec["inputs"][0]["shape"] == [1, 8, 8, 1] and spec["inputs"][0]["layout"] == "NHWC"
    # no float tensor anywhere: weights int8, biases int32, activations int8
    kinds = {np.dtype(t["dtype"]).kind for t in Interpreter(model_path=str(files["int8"])).get_tensor_details()}
    assert "f" not in kinds
    assert files["int8"].stat().st_size < files["nhwc"].stat().st_size / 2.5


def test_int8_agrees_with_the_trained_model(files, reference, digits):
    _, held = digits
    parity = verify.compare("int8", litert.tflite_outputs(files["int8"], held.x), reference, ["logits"], held.y)
    assert parity.top1_agreement >= MIN_INT8_AGREEMENT, parity.table()
    assert parity.accuracy >= parity.reference_accuracy - MAX_INT8_ACCURACY_DROP, parity.table()
    assert parity.outputs[0].max_abs_diff < 0.2 * np.abs(reference[0]).max()


def test_outputs_come_back_in_pytorch_order_and_layout(tmp_path, capfd):
    """Three outputs (2-D, 4-D, 3-D) of a channels-last model: the 4-D one is NHWC in the file and
    NCHW again from tflite_outputs; the converter's progress never reaches stdout."""
    class ThreeHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Linear(4, 5)

        def forward(self, x):
            f = torch.relu(self.conv(x))
            return self.fc(f.mean((2, 3))), f, f.sum(1)

    model = ThreeHeads().eval()
    x = np.random.default_rng(0).normal(size=(3, 3, 6, 7)).astype(np.float32)
    path = litert.export_tflite(model, torch.from_numpy(x[:1]), tmp_path / "heads.tflite", channels_last=True)
    assert capfd.readouterr().out == ""
    spec = litert.io_spec(path)
    assert [o["shape"] for o in spec["outputs"]] == [[1, 5], [1, 6, 7, 4], [1, 6, 7]]
    assert [o["layout"] for o in spec["outputs"]] == [None, "NHWC", None]
    for got, want in zip(litert.tflite_outputs(path, x), verify.torch_outputs(model, x)):
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-5


def test_a_model_torch_export_cannot_trace_fails_with_the_stage_and_a_remedy(tmp_path):
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(StageError) as err:
        litert.export_tflite(DataDependent(), torch.ones(1, 1, 4, 4), tmp_path / "m.tflite", channels_last=False,
                             layer_of_failure=lambda model, example: "gate")
    assert err.value.stage == "export"
    assert str(err.value).startswith("[export] LiteRT export failed in layer 'gate': ")
    assert "export.format=onnx" in err.value.hint
    assert not (tmp_path / "m.tflite").exists()


def test_channels_last_needs_an_image_input(tmp_path):
    with pytest.raises(StageError, match="channels-last .* needs a 4-D"):
        litert.export_tflite(torch.nn.Linear(4, 2), torch.ones(1, 4), tmp_path / "m.tflite", channels_last=True)


def test_the_int8_file_is_timed_by_the_device_side(files):
    """The real runner path: ec_bench.py in its own process, runtime litert, through the local runner."""
    from edgecompress.runners.local import run_local

    job = {"protocol_version": 1, "runtime": "litert", "runtime_options": {"threads": 2},
           "warmup": {"runs": 3}, "runs": {"count": 20}, "energy": "none"}
    result = run_local(job, files["int8"])
    assert result["latency_ms"]["n"] == 20 and result["latency_ms"]["p50"] > 0
    assert result["inputs"] == [{"name": "serving_default_args_0", "shape": [1, 8, 8, 1], "dtype": "int8",
                                 "source": "random-from-model"}]
    assert result["runtime_options"]["delegate"] == "xnnpack"
    assert result["runtime_options"]["delegated_partitions"] >= 1


def test_converter_chatter_on_fd2_is_held_back_and_shown_when_the_conversion_fails(capfd):
    import os

    from edgecompress.backends import tflite as litert

    with litert._held_back_stderr():
        os.write(2, b"I0000 flatbuffer_export.cc: Estimated count of arithmetic ops\n")
    assert "Estimated count" not in capfd.readouterr().err
    with pytest.raises(RuntimeError), litert._held_back_stderr():
        os.write(2, b"E0000 converter: the op that failed\n")
        raise RuntimeError("conversion failed")
    assert "the op that failed" in capfd.readouterr().err


def test_a_converter_that_dies_leaves_its_messages_in_the_log_file(tmp_path):
    """An abort in the converter's C++ takes the process with it: the reason must survive on disk."""
    import subprocess
    import sys

    log = tmp_path / "model.tflite.converter.log"
    code = ("import os, pathlib\nfrom edgecompress.backends import tflite as litert\n"
            f"with litert._held_back_stderr(pathlib.Path({str(log)!r})):\n"
            "    os.write(2, b'F0000 converter.cc: Check failed: the reason\\n')\n    os.abort()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "the reason" in log.read_text()
    with litert._held_back_stderr(log):
        pass
    assert not log.exists(), "removed once the block is over"


def test_the_litert_back_end_converts_from_pytorch_with_no_onnx_on_the_way(compressed_for):
    """A LiteRT deploy exported and checked two ONNX files it never shipped; litert-torch converts
    the PyTorch modules, so no ONNX exporter is needed and none is run."""
    from edgecompress.backends import BACKENDS

    run, compressed = compressed_for("android")
    deployed = BACKENDS.get("litert").convert(compressed, run)
    assert sorted(p.name for p in run.work.glob("*.onnx")) == []
    assert deployed.model.name == "model.tflite" and deployed.original_file.name == "original.tflite"
    assert [c.what for c in deployed.checks] == ["original.tflite vs PyTorch original"]
    assert deployed.parity.what == "model.tflite (int8) vs PyTorch student"
    assert deployed.parity.top1_agreement >= run.prof.verify.min_top1_agreement
    assert deployed.io["inputs"][0]["dtype"] == "int8" and deployed.io["inputs"][0]["quantization"]["scale"] > 0
    assert {k: (m.runtime, m.options["delegate"]) for k, m in deployed.bench_models.items()} == {
        "original": ("litert", "xnnpack"), "compressed": ("litert", "xnnpack")}  # no phone: XNNPACK here
    texts = BACKENDS.get("litert").bundle_texts({"inputs": deployed.io["inputs"], "outputs": deployed.io["outputs"]})
    scale = deployed.io["inputs"][0]["quantization"]["scale"]
    assert repr(float(scale)) in texts["ModelRunner.kt"] and "@INPUT_SCALE@" not in texts["ModelRunner.kt"]


def test_an_onnx_model_is_refused_for_litert_before_any_work(tmp_path, npz_data):
    import torch

    from ecutil import run_cli

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 4))
    torch.onnx.export(net.eval(), (torch.zeros(1, 1, 8, 8),), str(tmp_path / "m.onnx"), dynamo=False)
    code, _, err = run_cli("deploy", str(tmp_path / "m.onnx"), "--target", "android", "--data", npz_data,
                           "--out", tmp_path / "o")
    assert code == 2 and "the android-arm64 target converts from PyTorch, and" in err and "m.onnx is an ONNX file" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
