"""`deploy --device` for a phone, through the real CLI: the .tflite is converted for real, then
measured by the adb runner against the stand-in adb server (tests/adb_standin.py), which plays the
phone and its benchmark_model with the real output formats."""
import json

import numpy as np
import pytest
import yaml

from ecutil import MODEL_SRC, fast_sets, make_data, run_cli

pytest.importorskip("adbutils", reason="the adb runner needs adbutils: pip install 'edgecompress[android]'")
pytest.importorskip("litert_torch", reason="the [tflite] extra is not installed")

from adb_standin import AdbStandIn, Phone, PowerProfile, write_fake_benchmark_model  # noqa: E402

SERIAL = "EC-PIXEL-9"


@pytest.fixture
def phone_inventory(tmp_path, monkeypatch):
    phone = Phone(tmp_path / "phone", SERIAL, PowerProfile(idle_mw=900, run_mw=2500))
    with AdbStandIn({SERIAL: phone}) as server:
        monkeypatch.delenv("ADB_SERVER_SOCKET", raising=False)
        monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(server.port))
        inv = tmp_path / "devices.yaml"
        inv.write_text(yaml.safe_dump({"devices": {"pixel": {
            "target": "android-arm64", "transport": "adb", "serial": SERIAL,
            "benchmark_model": str(write_fake_benchmark_model(tmp_path / "benchmark_model"))}}}))
        monkeypatch.setenv("EDGECOMPRESS_DEVICES", str(inv))
        yield phone


def test_deploy_to_a_phone_measures_there_and_restores_charging(phone_inventory, tmp_path):
    (tmp_path / "net.py").write_text(MODEL_SRC)
    x, y = make_data()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, out, err = run_cli("deploy", f"{tmp_path}/net.py:build", "--data", tmp_path / "d.npz", "--device", "pixel",
                             "--out", tmp_path / "dist", "--json",
                             *fast_sets("bench.energy=battery", "bench.idle_seconds=0.3", "bench.seconds=0.5"))
    assert code == 0, err
    m = json.loads((tmp_path / "dist" / "net-android-arm64" / "manifest.json").read_text())
    where = m["metrics"]["measured_on"]
    assert where["where"] == "device" and where["device_name"] == "pixel"
    assert m["metrics"]["latency_ms"]["compressed"]["method"] == "benchmark_model (us)"
    assert m["metrics"]["energy"]["compressed"]["source"] == "battery"
    calls = phone_inventory.calls("dumpsys battery")
    assert calls[-1] == "dumpsys battery reset" and calls.count("dumpsys battery unplug") == 2  # two jobs
    code, out, _ = run_cli("devices", "check", "pixel")
    assert code == 0 and "reachable" in out and "benchmark_model configured" in out
