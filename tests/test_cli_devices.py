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


FAKE_TRTEXEC = r'''#!{python}
# A stand-in for TensorRT's trtexec (none exists on this machine): the real banner, device and
# summary lines from ../shared/reference/devices.md; it "builds" an engine file.
import sys
args = sys.argv[1:]
print("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec " + " ".join(args))
if args == ["--help"]:
    sys.exit(0)
values = dict(a[2:].split("=", 1) for a in args if "=" in a)
print("[I] === Device Information ===")
print("[I] Selected Device: Orin")
print("[I] Compute Capability: 8.7")
print("[I] TensorRT version: 10.3.0")
if "saveEngine" in values:
    open(values["saveEngine"], "w").write("engine " + " ".join(a for a in args if not a.startswith("--onnx")))
if "loadEngine" in values:
    print("[I] === Performance summary ===")
    print("[I] Throughput: 44.7064 qps")
    print("[I] Latency: min = 22.0549 ms, max = 22.9698 ms, mean = 22.264 ms, median = 22.2416 ms, "
          "percentile(99%) = 22.8967 ms")
    print("[I] GPU Compute Time: min = 21.9 ms, max = 22.8 ms, mean = 22.1 ms, median = 22.08 ms, "
          "percentile(90%) = 22.4 ms, percentile(95%) = 22.6 ms, percentile(99%) = 22.75 ms")
print("&&&& PASSED TensorRT.trtexec")
'''


def test_jetson_deploy_builds_the_engine_on_the_device_and_bundles_it(inventory, tmp_path):
    """TensorRT cannot exist here: a trtexec stand-in on the ssh device builds and times the
    "engine"; everything around it (job, build options, artifacts fetched back, bundle) is real."""
    tool = tmp_path / "trtexec"
    tool.write_text(FAKE_TRTEXEC.replace("{python}", sys.executable))
    tool.chmod(0o755)
    (tmp_path / "net.py").write_text(MODEL_SRC)
    x, y = make_data()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, out, err = run_cli("deploy", f"{tmp_path}/net.py:build", "--target", "jetson-orin-nano", "--data",
                             tmp_path / "d.npz", "--device", "lab-a", "--out", tmp_path / "dist", "--json",
                             *fast_sets(f"tensorrt.trtexec={tool}", "tensorrt.timing=trtexec", "distill.steps=10"))
    assert code == 0, err
    folder = tmp_path / "dist" / "net-jetson-orin-nano"
    m = json.loads((folder / "manifest.json").read_text())
    assert {"model.onnx", "model.engine", "model.engine.json", "trt_example.py", "example_tasks.py", "device/ec_trt.py"} <= set(m["files"])
    assert m["engine"]["status"] == "built on device lab-a" and m["engine"]["tensorrt_version"] is None
    built = json.loads((folder / "model.engine.json").read_text())
    assert built["build_options"]["precision"] == "fp16" and built["trtexec_device"]
    assert "--fp16" in (folder / "model.engine").read_text()
    lat = m["metrics"]["latency_ms"]["compressed"]
    assert lat["p50"] == pytest.approx(22.2416) and m["metrics"]["measured_on"]["where"] == "device"
    # bench the bundle again: on the device, with the build settings deploy chose; here, refused clearly
    code, out, err = run_cli("bench", folder, "--device", "lab-a", "--json")
    assert code == 0, err
    result = json.loads(out)["results"][0]
    assert result["latency_ms"]["p50"] == pytest.approx(22.2416) and result["device"]["runtime"] == "tensorrt"
    assert result["runtime_options"]["precision"] == "fp16"
    assert result["peak_rss_mb"] is None, "trtexec ran the model in its own process: our peak is not the model's"
    code, _, err = run_cli("bench", folder)
    assert code == 2 and "TensorRT runs only on the Jetson" in err and "--device" in err and "model.onnx" in err, err


def test_trt_example_refuses_an_engine_built_elsewhere():
    import importlib.util
    from pathlib import Path

    import edgecompress

    template = Path(edgecompress.__file__).parent / "templates" / "trt_example.py"
    sys.path.insert(0, str(template.parent.parent / "deploy"))
    spec = importlib.util.spec_from_file_location("trt_example", template)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    built = {"gpu": "Orin", "compute_capability": "8.7", "tensorrt_version": "10.3.0"}
    assert example.engine_compatible(built, dict(built)) == (True, "")
    ok, why = example.engine_compatible(built, dict(built, tensorrt_version="8.6.2"))
    assert not ok and "TensorRT 10.3.0, here 8.6.2" in why
    ok, why = example.engine_compatible(built, dict(built, gpu="Xavier", compute_capability="7.2"))
    assert not ok and "Xavier" in why and "7.2" in why


# ---------------------------------------------------------------------------------------------
# a `transport: local` device: this host, named as the device (issue 11 item 5)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def local_inventory(tmp_path, monkeypatch):
    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  mylocal:\n    target: host-cpu\n    transport: local\n")
    monkeypatch.setenv("EDGECOMPRESS_DEVICES", str(path))
    return path


def test_bench_on_a_local_device_runs_here_under_its_name(local_inventory, tmp_path):
    from ecutil import tripling_model

    model = tripling_model(tmp_path / "triple.onnx")
    code, out, err = run_cli("bench", model, "--device", "mylocal", "--runs", "20", "--seconds", "0", "--rounds", "1",
                             "--json")
    assert code == 0, err
    result = json.loads(out)["results"][0]
    assert (result["device_name"], result["runner"]) == ("mylocal", "local") and result["latency_ms"]["n"] >= 20
    code, out, err = run_cli("bench", model, "--device", "mylocal", "--runs", "20", "--seconds", "0", "--rounds", "1")
    assert code == 0 and out.startswith("device ") and "\nmylocal " in out, err


def test_devices_check_of_a_local_device_reports_python_and_runtimes(local_inventory):
    code, out, err = run_cli("devices", "check", "mylocal")
    assert code == 0, err
    assert out.startswith("mylocal: reachable (") and f"Python {sys.version.split()[0]}" in out
    assert "runtime onnxruntime" in out and "power" in out
    code, out, _ = run_cli("devices", "check", "mylocal", "--json")
    info = json.loads(out)
    assert info["runtimes"]["onnxruntime"] and info["python_executable"] == sys.executable


def test_bench_of_a_bundle_on_a_local_pi_times_with_this_hosts_cpus(tmp_path, monkeypatch):
    """A Pi profile's 4 threads on a 2-CPU host time the threads' contention: a local device is this
    host, so bench caps them as it does without --device (a walkthrough saw '4 threads')."""
    import os

    from ecutil import tripling_model

    path = tmp_path / "devices.yaml"
    path.write_text("devices:\n  mylocal:\n    target: raspberry-pi-5\n    transport: local\n")
    monkeypatch.setenv("EDGECOMPRESS_DEVICES", str(path))
    model = tripling_model(tmp_path / "triple.onnx")
    code, out, err = run_cli("bench", model, "--device", "mylocal", "--runs", "20", "--seconds", "0", "--rounds", "1",
                             "--json")
    assert code == 0, err
    threads = json.loads(out)["results"][0]["runtime_options"]["threads"]
    assert threads == min(4, os.cpu_count() or 1)
