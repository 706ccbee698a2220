"""The bundle's example.py takes a .npy of one sample: a batch dimension and size-1 dimensions optional, any
other shape refused. A walkthrough's channels-last 64x64x3 array was reshaped to 3x64x64 (as many numbers) and
answered 'class 0 100.0% of the pixels' with no error."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

TEMPLATES = Path(__file__).resolve().parents[1] / "edgecompress" / "templates"


def _template(name: str):
    spec = importlib.util.spec_from_file_location(name, TEMPLATES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_onnx_example_takes_one_sample_with_optional_unit_dims_and_refuses_another_layout():
    example = _template("onnx_example")
    x = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    assert example.as_one_sample(x, [3, 4, 5], "a.npy").shape == (1, 3, 4, 5)
    assert np.array_equal(example.as_one_sample(x[None], [3, 4, 5], "a.npy")[0], x)
    grey = np.zeros((8, 8), np.float32)
    assert example.as_one_sample(grey, [1, 8, 8], "g.npy").shape == (1, 1, 8, 8)  # 8x8 for 1x8x8
    with pytest.raises(SystemExit) as refused:
        example.as_one_sample(np.moveaxis(x, 0, -1), [3, 4, 5], "nhwc.npy")  # (4, 5, 3): as many numbers
    assert "nhwc.npy has shape [4, 5, 3]" in str(refused.value) and "channels-last" in str(refused.value)
    with pytest.raises(SystemExit) as refused:
        example.as_one_sample(np.zeros((5, 12), np.float32), [3, 4, 5], "flat.npy")
    assert "takes one sample of shape [3, 4, 5]" in str(refused.value) and "channels-last" not in str(refused.value)


def test_tflite_example_refuses_a_shape_its_model_does_not_take(tmp_path):
    pytest.importorskip("ai_edge_litert")
    example = _template("tflite_example")
    spec = {"shape": [1, 4, 5, 3], "layout": "NHWC"}
    nchw = np.zeros((3, 4, 5), np.float32)
    np.save(tmp_path / "nchw.npy", nchw)
    assert example.load_input(str(tmp_path / "nchw.npy"), spec).shape == (1, 4, 5, 3)  # transposed for it
    np.save(tmp_path / "wrong.npy", np.zeros((5, 4, 3), np.float32))
    with pytest.raises(SystemExit) as refused:
        example.load_input(str(tmp_path / "wrong.npy"), spec)
    assert "wrong.npy has shape [1, 5, 4, 3]" in str(refused.value) and "NCHW twin [3, 4, 5]" in str(refused.value)


def test_a_segmenters_example_names_its_classes_from_the_labels(tmp_path, capsys, monkeypatch):
    """A walkthrough's segmenter example printed 'class   2    7.6% of the pixels' beside its labels.txt."""
    example = _template("onnx_example")
    monkeypatch.chdir(tmp_path)  # mask.png is written to the working folder
    logits = np.zeros((1, 3, 4, 4), np.float32)
    logits[0, 0] = 1.0
    logits[0, 2, :2, :2] = 2.0  # a quarter of the pixels are class 2
    manifest = {"task": "segmentation", "outputs": [{"name": "masks"}], "labels": ["background", "rectangle", "disc"]}
    example.describe([logits], manifest)
    out = capsys.readouterr().out
    assert "class   0 background   75.0% of the pixels" in out and "class   2 disc         25.0% of the pixels" in out
    shares = [line.index("%") for line in out.splitlines() if line.startswith("class")]
    assert len(shares) == 2 and len(set(shares)) == 1  # names of different lengths, the shares lined up
    example.describe([logits], dict(manifest, labels=None))
    assert "class   2   25.0% of the pixels" in capsys.readouterr().out  # no names: the index alone


def test_an_example_prints_its_usage_for_help_and_names_the_inputs_it_leaves_out(capsys, monkeypatch):
    """A walkthrough: `example.py --help` answered '--help: no such file', and a classifier's example given two
    files used the first one without a word."""
    shared = _template("example_tasks")
    monkeypatch.setattr(sys, "argv", ["example.py", "--help"])
    with pytest.raises(SystemExit) as done:
        shared.check_arguments("Run one input.\n\n    python example.py input.npy\n", {"task": "classification"})
    assert done.value.code == 0 and "python example.py input.npy" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["example.py", "a.npy", "b.npy"])
    shared.check_arguments("doc", {"task": "classification"})
    assert "reads one input; left out: b.npy" in capsys.readouterr().err
    shared.check_arguments("doc", {"task": "embedding"})  # two inputs: their similarity
    assert capsys.readouterr().err == ""
