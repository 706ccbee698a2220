"""`devices`, `bench --device` and `deploy --device` through the real CLI, with a real OpenSSH
server on 127.0.0.1 as the device (tests/sshd.py)."""
import json
import sys

import numpy as np
import pytest
import yaml

from ecutil import MODEL_SRC, fast_sets, make_data, run_cli


@pytest.fixture(scope="module")
def inventory(sshd, tmp_path_factory):
    root = tmp_path_factory.mktemp("inv")
    entry = {"target": "host-cpu", "transport": "ssh", "host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
             "key": str(sshd.client_key), "known_hosts": str(sshd.known_hosts), "python": sys.executable}
    devices = {"lab-a": dict(entry, workdir=str(root / "a")), "lab-b": dict(entry, workdir=str(root / "b")),
               "gone": dict(entry, port=1, connect_timeout_s=3)}
    path = root / "devices.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}))
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGECOMPRESS_DEVICES", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def bundle(inventory, tmp_path_factory):
    root = tmp_path_factory.mktemp("b")
    (root / "net.py").write_text(MODEL_SRC)
    x, y = make_data()
    np.savez(root / "d.npz", x=x, y=y)
    code, out, err = run_cli("deploy", f"{root}/net.py:build", "--data", root / "d.npz", "--device", "lab-a",
                             "--out", root / "dist", "--json", *fast_sets())
    assert code == 0, err
    return root / "dist" / "net-host-cpu", json.loads(out), err


def test_devices_list(inventory):
    code, out, _ = run_cli("devices", "list")
    assert code == 0 and "lab-a" in out and "lab-b" in out and "127.0.0.1" in out


def test_devices_check_reports_arch_python_runtimes_and_power(inventory):
    code, out, err = run_cli("devices", "check", "lab-a")
    assert code == 0, err
    assert "reachable" in out and "onnxruntime" in out and "power" in out
    code, out, _ = run_cli("devices", "check", "lab-a", "--json")
    info = json.loads(out)
    assert info["arch"] and info["python"].startswith("3.") and info["runtimes"]["onnxruntime"]


def test_devices_check_unreachable_is_exit_4(inventory):
    code, _, err = run_cli("devices", "check", "gone")
    assert code == 4 and "gone" in err


def test_deploy_on_a_device_records_where_it_was_measured(bundle):
    folder, summary, err = bundle
    assert "on lab-a" in err  # bench progress names the device
    m = json.loads((folder / "manifest.json").read_text())
    where = m["metrics"]["measured_on"]
    assert where["where"] == "device" and where["device_name"] == "lab-a" and where["runtime_version"]
    assert "Measured on device lab-a" in where["note"]
    assert m["metrics"]["latency_ms"]["compressed"]["n"] >= 20


def test_bench_on_two_devices_at_once_gives_one_table(bundle):
    folder, _, _ = bundle
    code, out, err = run_cli("bench", folder, "--device", "lab-a", "--device", "lab-b", "--runs", "20",
                             "--seconds", "0", "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert [r["device_name"] for r in results] == ["lab-a", "lab-b"]
    assert all(r["measured_on"] == "device" and r["latency_ms"]["n"] >= 20 for r in results)
    code, out, err = run_cli("bench", folder, "--device", "lab-a", "--device", "gone", "--runs", "20",
                             "--seconds", "0")
    assert code == 4 and "lab-a" in out and "failed" in out and "gone" in err
