"""The local runner end to end: a real device-side process, a real ONNX model, real files."""
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from edgecompress.errors import DeviceError, InputError
from edgecompress.runners import RUNNERS, device_side_dir, runner
from edgecompress.runners.local import run_local
from ecutil import processes_inside, tripling_model  # noqa: E402


@pytest.fixture
def model(tmp_path):
    return tripling_model(tmp_path / "triple.onnx")


@pytest.fixture
def job_tmp(tmp_path, monkeypatch):
    """A private temp root, so a test can see that the runner's job folder is gone afterwards."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def job(**changes):
    base = {"protocol_version": 1, "runtime": "onnxruntime", "runtime_options": {"threads": 1},
            "warmup": {"runs": 3}, "runs": {"count": 20}}
    base.update(changes)
    return base


def test_the_local_runner_is_registered_and_ships_the_device_side():
    from edgecompress.runners.local import LocalRunner

    assert RUNNERS.get("local") is LocalRunner
    assert isinstance(runner(None), LocalRunner) and runner(None).device is None
    assert (device_side_dir() / "ec_bench.py").is_file()


def test_a_real_run_returns_a_sound_result(model, job_tmp):
    messages = []
    result = run_local(job(), model, on_progress=messages.append)
    latency = result["latency_ms"]
    assert latency["n"] >= 20
    assert latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert latency["min"] > 0
    assert result["load_ms"] > 0 and result["first_run_ms"] > 0 and result["peak_rss_mb"] > 0
    assert result["device"]["arch"] == platform.machine()
    assert result["device"]["runtime"] == "onnxruntime"
    assert (result["runner"], result["measured_on"]) == ("local", "host")
    assert messages[0] == "loading triple.onnx with onnxruntime"
    assert messages[-1].startswith("timed 20 runs in ")
    assert list(job_tmp.iterdir()) == []


def test_npy_inputs_travel_as_extra_files_and_are_used(model, tmp_path, job_tmp):
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8) + 0.5
    np.save(tmp_path / "batch.npy", x)
    result = run_local(job(inputs={"npy": {"x": "x.npy"}}, report_outputs=True), model,
                       extra_files={"x.npy": tmp_path / "batch.npy"})
    assert result["inputs"] == [{"name": "x", "shape": [2, 8], "dtype": "float32", "source": "npy"}]
    assert result["outputs"][0]["sum"] == pytest.approx(3 * float(x.sum()), rel=1e-6)
    assert list(job_tmp.iterdir()) == []


def test_a_missing_model_is_the_users_input_error(tmp_path, job_tmp):
    with pytest.raises(InputError, match="model file not found: .*nothing.onnx"):
        run_local(job(), tmp_path / "nothing.onnx")
    assert list(job_tmp.iterdir()) == []


def test_a_corrupt_model_is_a_device_error_naming_the_model(tmp_path, job_tmp):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage, not an onnx protobuf")
    with pytest.raises(DeviceError) as caught:
        run_local(job(), corrupt)
    message = str(caught.value)
    assert "the benchmark of corrupt.onnx failed on the local runner (exit code 1)" in message
    assert "loading corrupt.onnx with onnxruntime failed" in message
    assert "last progress: loading corrupt.onnx" in message
    assert list(job_tmp.iterdir()) == []


def test_a_job_the_device_rejects_is_a_device_error_with_its_reason(model, job_tmp):
    with pytest.raises(DeviceError, match="unknown key\\(s\\) in runs: cout"):
        run_local(job(runs={"cout": 5}), model)


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs /proc to see processes")
def test_a_timeout_kills_the_process_and_cleans_up(model, job_tmp):
    started = time.monotonic()
    with pytest.raises(DeviceError) as caught:
        run_local(job(runs={"count": 1, "seconds": 60}, max_runs=10**9), model, timeout_s=2)
    assert time.monotonic() - started < 15
    assert "the benchmark of triple.onnx did not finish within 2 s and was killed" in str(caught.value)
    assert "last progress: timed " in str(caught.value)
    assert processes_inside(job_tmp) == []
    assert list(job_tmp.iterdir()) == []


def test_an_exception_in_the_progress_callback_stops_the_process(model, job_tmp):
    def interrupt(message):
        if message.startswith("timed"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local(job(runs={"count": 1, "seconds": 60}, max_runs=10**9), model, on_progress=interrupt)
    assert processes_inside(job_tmp) == []
    assert list(job_tmp.iterdir()) == []


def test_an_interpreter_that_prints_no_result_is_a_device_error(model, tmp_path, job_tmp):
    fake = tmp_path / "broken-python"
    fake.write_text("#!/bin/sh\necho 'Segmentation fault' >&2\necho 'half a li'\nexit 139\n")
    fake.chmod(0o755)
    with pytest.raises(DeviceError) as caught:
        run_local(job(), model, python=str(fake))
    message = str(caught.value)
    assert "printed no result JSON (exit code 139)" in message
    assert "half a li" in message and "Segmentation fault" in message
    with pytest.raises(DeviceError, match="cannot start the device side with /no/such/python"):
        run_local(job(), model, python="/no/such/python")
    assert list(job_tmp.iterdir()) == []


def test_extra_files_must_not_clash_with_the_job_files(model, tmp_path, job_tmp):
    np.save(tmp_path / "x.npy", np.zeros((1, 8), np.float32))
    # "", "." and "..": the check shared with the ssh runner (runners.check_extra_names) rejects them here too
    for name in ("job.json", "ec_bench.py", "triple.onnx", "sub/x.npy", "", ".", ".."):
        with pytest.raises(InputError, match="clashes with the job's own files"):
            run_local(job(), model, extra_files={name: tmp_path / "x.npy"})
    with pytest.raises(InputError, match="extra file for 'y.npy' not found"):
        run_local(job(), model, extra_files={"y.npy": tmp_path / "y.npy"})
    assert list(job_tmp.iterdir()) == []


def test_the_host_side_imports_nothing_heavy():
    code = ("import sys, edgecompress.runners.local; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# a `transport: local` device from devices.yaml (issue 11 item 5)
# ---------------------------------------------------------------------------------------------

def _local_device(**settings):
    from edgecompress.inventory import Device

    return Device.model_validate(dict({"name": "mylocal", "target": "host-cpu", "transport": "local"}, **settings))


def test_a_local_device_runs_here_under_its_name(model, job_tmp):
    result = run_local(job(), model, device=_local_device())
    assert (result["runner"], result["measured_on"], result["device_name"]) == ("local", "host", "mylocal")
    assert result["latency_ms"]["n"] >= 20 and list(job_tmp.iterdir()) == []


def test_a_local_device_uses_its_python_and_job_timeout(model, tmp_path, job_tmp):
    fake = tmp_path / "their-python"
    fake.write_text("#!/bin/sh\necho 'their python ran' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(DeviceError) as caught:
        run_local(job(), model, device=_local_device(python=str(fake)))
    assert "on device mylocal (this host)" in str(caught.value) and "their python ran" in str(caught.value)
    started = time.monotonic()
    with pytest.raises(DeviceError, match="on device mylocal .this host. did not finish within 2 s"):
        run_local(job(runs={"count": 1, "seconds": 60}, max_runs=10**9), model,
                  device=_local_device(job_timeout_s=2))
    assert time.monotonic() - started < 15 and list(job_tmp.iterdir()) == []


def test_check_local_probes_this_host_with_the_devices_python(job_tmp):
    from edgecompress.runners.local import check_local

    info = check_local(_local_device())
    assert info["device_name"] == "mylocal" and info["arch"] == platform.machine()
    assert info["python_executable"] == sys.executable and info["runtimes"]["onnxruntime"]
    assert {s["name"] for s in info["power_sources"]} >= {"rapl", "nvml"}
    assert list(job_tmp.iterdir()) == []
