"""An android-arm64 bundle through the real CLI: a full-integer .tflite converted by litert-torch,
timed by LiteRT on this host, its Kotlin runner and example program."""
import json
import subprocess
import sys

import numpy as np
import pytest

from e2eutil import deploy
from ecutil import fast_sets, run_cli


def test_android_bundle_with_full_integer_tflite(tmp_path, model_file, npz_data):
    pytest.importorskip("litert_torch", reason="the [tflite] extra is not installed")
    out, err = deploy(f"{model_file}:build", "--target", "android-arm64", "--data", npz_data, "--out", tmp_path,
                      "--json", *fast_sets())
    folder = tmp_path / "net-android-arm64"
    m = json.loads((folder / "manifest.json").read_text())
    assert m["runtime"]["name"] == "litert" and {k: m["model"][k] for k in ("file", "format", "opset")} == {
        "file": "model.tflite", "format": "tflite", "opset": None}
    assert m["compression"]["pruning"]["params_after"] == 1364
    # the BNs' 2 x (8 + 16) fold into the convs: 80 + 1168 + 68 weights and biases, and the reshape's 2-value shape
    assert m["model"]["parameters"] == 1364 - 48 + 2
    inp, outp = m["inputs"][0], m["outputs"][0]
    assert inp["layout"] == "NHWC" and inp["shape"] == [1, 8, 8, 1] and inp["dtype"] == "int8"
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(folder / "model.tflite"))  # the constants the app will read
    for told, details in ((inp, it.get_input_details()[0]), (outp, it.get_output_details()[0])):
        assert (told["quantization"]["scale"], told["quantization"]["zero_point"]) == details["quantization"]
    x = np.load(npz_data)["x"]
    whole = (max(float(x.max()), 0) - min(float(x.min()), 0)) / 255  # int8 over the whole data's range
    assert 0.5 * whole < inp["quantization"]["scale"] <= whole and -128 <= inp["quantization"]["zero_point"] <= 127
    kotlin = (folder / "ModelRunner.kt").read_text()
    assert f"inputZeroPoint = {inp['quantization']['zero_point']}" in kotlin and "@" not in kotlin.split("package")[1]
    assert m["metrics"]["latency_ms"]["compressed"]["n"] == 20  # bench.runs=20 with bench.seconds=0: no more
    assert m["metrics"]["device_state"]["runtime"] == "litert"
    from importlib.metadata import version

    assert m["provenance"]["litert_torch_version"] == version("litert-torch")
    assert m["provenance"]["ai_edge_litert_version"] == version("ai-edge-litert")
    run = subprocess.run([sys.executable, str(folder / "example.py")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (tmp_path / "photo.png").write_bytes(b"not read")
    run = subprocess.run([sys.executable, str(folder / "example.py"), str(tmp_path / "photo.png")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1 and ".npy" in run.stderr and "Traceback" not in run.stderr, run.stderr
    code, _, err = run_cli("verify", folder)
    assert code == 0, err
    # the bare .tflite, as a user who has one from elsewhere would bench it: LiteRT, android-arm64's settings
    code, out, err = run_cli("bench", folder / "model.tflite", "--runs", "5", "--seconds", "0.1", "--json")
    assert code == 0, err
    result = json.loads(out)["results"][0]
    assert result["device"]["runtime"] == "litert" and result["latency_ms"]["n"] >= 5
    (tmp_path / "fake.tflite").write_bytes(b"\0" * 64)
    code, _, err = run_cli("bench", tmp_path / "fake.tflite")
    assert code == 2 and "is not a TFLite model" in err
