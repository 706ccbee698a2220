"""The bundle example programs that ship alone keep copies of example.py's describe() and write_png():
tflite_example.py (a phone-side or desktop LiteRT run) must print what onnx_example.py prints for the same
outputs. (trt_example.py's twin test is in tests/device/test_trt_outputs.py.)"""
import ast
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[1] / "edgecompress" / "templates"


def _bodies(path: Path) -> dict:
    """describe() and write_png() as ASTs, bar docstrings and a local numpy import."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name in ("describe", "write_png"):
            kept = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                    and not (isinstance(s, ast.Import) and [a.name for a in s.names] == ["numpy"])]
            found[node.name] = [ast.dump(s) for s in kept]
    return found


def test_tflite_examples_describe_is_example_pys_twin():
    example, tflite = _bodies(TEMPLATES / "onnx_example.py"), _bodies(TEMPLATES / "tflite_example.py")
    assert set(tflite) == {"describe", "write_png"}
    assert tflite == example, "tflite_example.py's describe()/write_png() differ from onnx_example.py's: copy them over"


def test_the_twin_check_sees_a_changed_line(tmp_path):
    """The comparison is not vacuous: one changed print in describe() is a difference."""
    text = (TEMPLATES / "tflite_example.py").read_text()
    changed = tmp_path / "tflite_example.py"
    changed.write_text(text.replace("print(", "print('x', ", 1))
    assert _bodies(changed) != _bodies(TEMPLATES / "onnx_example.py")
