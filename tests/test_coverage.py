"""Every registry entry has what it needs, so nothing is half added: each back end has a shipped
profile, a template, a device-side loader and a test module; each transport a runner with run and
check; each shipped profile validates; every copy of the runner protocol's version agrees."""
import ast
import inspect
import re
from pathlib import Path
from typing import get_args

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgecompress"


def _runtimes():
    from edgecompress import profile

    return get_args(profile.Profile.model_fields["runtime"].annotation)


def _transports():
    from edgecompress import inventory

    return get_args(inventory.Device.model_fields["transport"].annotation)


def test_the_profile_schema_and_the_back_ends_name_the_same_runtimes():
    from edgecompress.backends import BACKENDS

    assert sorted(_runtimes()) == BACKENDS.names() == ["litert", "onnxruntime", "tensorrt"]


@pytest.mark.parametrize("runtime", ["onnxruntime", "litert", "tensorrt"])
def test_each_back_end_has_a_profile_a_template_a_device_loader_and_a_test(runtime):
    from edgecompress import bundle, profile
    from edgecompress.backends import BACKENDS
    from edgecompress.deploy import ec_runtimes

    backend = BACKENDS.get(runtime)
    assert backend.runtime == runtime and backend.model_file.endswith(backend.suffix)
    shipped = [name for name, path in profile.available().items()
               if profile.validate(profile.read_profile_yaml(path), str(path)).runtime == runtime]
    assert shipped, f"no shipped target profile uses runtime {runtime}"
    assert (bundle.EXAMPLES / backend.example).is_file()
    assert runtime in ec_runtimes.RUNTIMES, "the device side cannot load this runtime's models"
    assert (ROOT / "tests" / "backends" / f"test_{runtime}.py").is_file()
    protocol = [name for name in dir(backend) if callable(getattr(backend, name)) and not name.startswith("_")]
    from edgecompress.backends import Backend

    wanted = [name for name in vars(Backend) if not name.startswith("_") and callable(getattr(Backend, name))]
    assert sorted(set(wanted) - set(protocol)) == [], "the back end lacks methods of the Backend protocol"


def test_no_module_outside_the_back_ends_branches_on_a_runtime_name():
    """A runtime's special cases live in its back end: elsewhere a `prof.runtime == "litert"` (or an
    `else:` that treats any other runtime as ONNX Runtime) would be missed by the next runtime."""
    allowed = {"profile.py", "bench.py"}  # the schema's own cross-checks; bench passes the name to the job
    pattern = re.compile(r"""runtime\s*(==|!=|in)\s*\(?["'](onnxruntime|litert|tensorrt)|suffix\s*(==|!=|in)\s*\(?["']\.(onnx|tflite)""")
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert found == []


@pytest.mark.parametrize("transport", ["local", "ssh", "adb"])
def test_each_transport_has_a_runner_with_run_and_check(transport):
    from edgecompress import inventory, runners

    assert transport in _transports()
    fields = {"name": f"a-{transport}", "target": "host-cpu", "transport": transport}
    fields.update({"ssh": {"host": "127.0.0.1"}, "adb": {"serial": "emulator-5554"}}.get(transport, {}))
    device = inventory.Device(**fields)
    runner = runners.runner(device)
    assert callable(runner.run) and callable(runner.check)
    keywords = set(inspect.signature(runner.run).parameters)
    assert {"extra_files", "fetch_dir", "on_progress", "stop"} <= keywords


def test_the_schema_lists_no_transport_without_a_runner():
    from edgecompress import runners

    assert sorted(_transports()) == ["adb", "local", "ssh"]
    for transport in _transports():
        assert transport in runners.RUNNERS or runners.runner  # resolved on demand by runners.runner


@pytest.mark.parametrize("path", sorted((PACKAGE / "targets").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_profile_validates(path):
    from edgecompress import profile

    prof = profile.validate(profile.read_profile_yaml(path), str(path))
    assert prof.name == path.stem


def _constant(path: Path, name: str):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def test_every_copy_of_the_protocol_version_agrees():
    """The device side never imports edgecompress, so it keeps its own copies; the host has one."""
    from edgecompress import runners

    host = [p for p in PACKAGE.rglob("*.py") if "deploy" not in p.parts and _constant(p, "PROTOCOL_VERSION") is not None]
    assert [p.relative_to(PACKAGE).as_posix() for p in host] == ["runners/__init__.py"]
    device = {p.name: _constant(p, "PROTOCOL_VERSION") for p in (PACKAGE / "deploy").glob("*.py")
              if _constant(p, "PROTOCOL_VERSION") is not None}
    assert set(device) >= {"ec_job.py", "ec_probe.py"}
    assert set(device.values()) == {runners.PROTOCOL_VERSION}


def test_every_example_program_reads_the_manifest_version_edgecompress_writes():
    """The bundle's programs stand alone (they never import edgecompress): example_tasks.py, shipped beside
    them, keeps the copy of the version, and each program reads the manifest through it."""
    from edgecompress import bundle, manifest

    assert _constant(bundle.EXAMPLES / "example_tasks.py", "SCHEMA_VERSION") == manifest.SCHEMA_VERSION
    for template in sorted(bundle.EXAMPLES.glob("*.py")):
        assert "read_manifest()" in template.read_text(), template.name


def test_no_two_test_modules_share_a_basename():
    """pytest imports test modules by basename (no packages here): two test_qat.py, or two
    test_keep_float.py, stopped the whole run's collection twice in one session."""
    from collections import Counter
    from pathlib import Path

    names = Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
