"""The bundle's example programs (example.py from onnx_example.py or tflite_example.py, and a Jetson
bundle's trt_example.py) once each kept a copy of describe() and write_png(), and a change made to one
was left out of another (a segmenter's class names). They now import the one in example_tasks.py,
which every bundle ships beside them."""
import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

TEMPLATES = Path(__file__).resolve().parents[1] / "edgecompress" / "templates"
SHARED = ("describe", "write_png", "read_manifest", "image_input", "print_top_classes")
PROGRAMS = ("onnx_example.py", "tflite_example.py", "trt_example.py")


def _functions(path: Path) -> set:
    return {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}


def _imported(path: Path) -> set:
    return {a.name for n in ast.parse(path.read_text()).body
            if isinstance(n, ast.ImportFrom) and n.module == "example_tasks" for a in n.names}


def test_the_shared_code_has_one_home_and_no_example_program_keeps_a_copy():
    assert set(SHARED) <= _functions(TEMPLATES / "example_tasks.py")
    for name in PROGRAMS:
        assert not _functions(TEMPLATES / name) & set(SHARED), f"{name} defines its own copy"
        assert {"describe", "read_manifest", "print_top_classes"} <= _imported(TEMPLATES / name), name


def test_the_check_sees_a_copy_put_back(tmp_path):
    """Not vacuous: a program that defines describe() again is caught."""
    text = (TEMPLATES / "tflite_example.py").read_text()
    copied = tmp_path / "tflite_example.py"
    copied.write_text(text + "\n\ndef describe(outputs, manifest, other=None):\n    pass\n")
    assert _functions(copied) & set(SHARED) == {"describe"}


@pytest.mark.parametrize("runtime", ["onnxruntime", "litert", "tensorrt"])
def test_every_runtimes_bundle_ships_example_tasks_beside_its_example_programs(runtime, tmp_path):
    from edgecompress import backends

    deployed = SimpleNamespace(model=tmp_path / "model", extra_files={})
    files = backends.get(runtime).bundle_files(deployed, tmp_path)
    assert files["example_tasks.py"] == TEMPLATES / "example_tasks.py" and files["example_tasks.py"].is_file()
    programs = [name for name in files if name in ("example.py", "trt_example.py")]
    assert programs and all(_imported(files[name]) for name in programs)
