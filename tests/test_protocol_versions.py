"""The runner contract: one host-side PROTOCOL_VERSION equal to every device-side copy, and every
transport the inventory accepts resolving to a Runner with run and check (review P5, P7)."""
import ast
import inspect
import typing
from pathlib import Path

import pytest

from edgecompress import inventory, runners
from ecutil import tripling_model

PACKAGE = Path(runners.__file__).resolve().parent.parent


def _constant(path: Path, name: str):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def test_the_host_has_one_protocol_version_and_every_device_copy_equals_it():
    host = [p.relative_to(PACKAGE).as_posix() for p in sorted(PACKAGE.rglob("*.py"))
            if "deploy" not in p.parts and _constant(p, "PROTOCOL_VERSION") is not None]
    assert host == ["runners/__init__.py"]
    device = {p.name: _constant(p, "PROTOCOL_VERSION") for p in sorted((PACKAGE / "deploy").glob("*.py"))}
    device = {name: value for name, value in device.items() if value is not None}
    assert {"ec_job.py", "ec_probe.py"} <= set(device)
    assert device == {name: runners.PROTOCOL_VERSION for name in device}
    from edgecompress import bench

    assert bench.PROTOCOL_VERSION is runners.PROTOCOL_VERSION  # imported, not a second copy


def _transports() -> list:
    return list(typing.get_args(inventory.Device.model_fields["transport"].annotation))


def _device(transport: str) -> inventory.Device:
    where = {"ssh": {"host": "127.0.0.1"}, "adb": {"serial": "emulator-5554"}}.get(transport, {})
    return inventory.Device(name=f"a-{transport}", target="host-cpu", transport=transport, **where)


@pytest.mark.parametrize("transport", _transports())
def test_every_transport_resolves_to_a_runner_with_run_and_check(transport):
    one = runners.runner(_device(transport))
    assert one.device.transport == transport
    assert callable(one.run) and callable(one.check) and isinstance(one.stoppable, bool)
    params = inspect.signature(one.run).parameters
    for keyword in ("extra_files", "fetch_dir", "on_progress", "stop"):
        assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY and params[keyword].default is None
    assert list(params)[:2] == ["job", "model"]


def test_this_host_is_the_local_transport():
    assert runners.runner(None).device is None
    assert type(runners.runner(None)) is type(runners.runner(_device("local")))


def test_an_unknown_transport_is_an_input_error_naming_the_valid_ones():
    from edgecompress.errors import InputError

    device = _device("local").model_copy(update={"transport": "sshh"})
    with pytest.raises(InputError, match="unknown transport 'sshh'. Did you mean 'ssh'") as caught:
        runners.runner(device)
    assert "adb, local, ssh" in caught.value.hint


def test_a_local_device_runs_a_tiny_onnx_job_end_to_end(tmp_path):
    model = tripling_model(tmp_path / "triple.onnx")
    job = {"protocol_version": runners.PROTOCOL_VERSION, "runtime": "onnxruntime",
           "runtime_options": {"threads": 1}, "warmup": {"runs": 2}, "runs": {"count": 10}}
    seen = []
    result = runners.runner(_device("local")).run(job, model, on_progress=seen.append)
    assert (result["runner"], result["measured_on"], result["device_name"]) == ("local", "host", "a-local")
    assert result["protocol_version"] == runners.PROTOCOL_VERSION
    assert result["latency_ms"]["n"] >= 10 and result["latency_ms"]["p50"] > 0
    assert seen  # the device side's progress lines reached the caller


def test_check_of_a_local_device_probes_this_host():
    info = runners.check(_device("local"))
    assert info["device_name"] == "a-local" and info["protocol_version"] == runners.PROTOCOL_VERSION
    assert "onnxruntime" in info["runtimes"]
