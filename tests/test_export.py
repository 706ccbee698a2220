"""export.py on models written as users write them: their own nn.Module class with a residual
block and two outputs, exported for real and run by ONNX Runtime at another batch size than the
one traced; io_spec read back from the file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgecompress import export, profile
from edgecompress.errors import StageError


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class TwoHeads(nn.Module):
    """Class scores and a 2-value box regression from one trunk, returned as a tuple."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = Residual(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classes = nn.Linear(8, 5)
        self.box = nn.Linear(8, 2)

    def forward(self, x):
        z = self.pool(self.block(self.stem(x))).flatten(1)
        return self.classes(z), self.box(z)


def _cfg():
    return profile.load("host-cpu")[0].export


def _trained_like(model: nn.Module) -> nn.Module:
    """BatchNorm statistics away from their defaults, so the export must carry real values."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 12, 12) * 2 + 0.5)
    return model.eval()


def test_a_two_output_residual_model_exports_with_a_dynamic_batch_and_matches_torch(tmp_path):
    import onnxruntime as ort

    model = _trained_like(TwoHeads())
    path = export.export_onnx(model, torch.zeros(1, 3, 12, 12), tmp_path / "sub" / "two.onnx", _cfg())
    assert path == tmp_path / "sub" / "two.onnx" and path.is_file(), "the folder is made"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [export.INPUT_NAME] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["output_0", "output_1"]
    x = np.random.default_rng(1).normal(size=(3, 3, 12, 12)).astype(np.float32)  # traced at 1, run at 3
    classes, box = session.run(None, {"input": x})
    with torch.no_grad():
        want_classes, want_box = (t.numpy() for t in model(torch.from_numpy(x)))
    assert classes.shape == (3, 5) and box.shape == (3, 2)
    np.testing.assert_allclose(classes, want_classes, atol=1e-5, rtol=0)
    np.testing.assert_allclose(box, want_box, atol=1e-5, rtol=0)


def test_io_spec_gives_the_names_shapes_and_dtypes_of_the_file(tmp_path):
    path = export.export_onnx(_trained_like(TwoHeads()), torch.zeros(1, 3, 12, 12), tmp_path / "two.onnx", _cfg())
    assert export.io_spec(path) == {
        "inputs": [{"name": "input", "shape": ["batch", 3, 12, 12], "dtype": "float32"}],
        "outputs": [{"name": "output_0", "shape": ["batch", 5], "dtype": "float32"},
                    {"name": "output_1", "shape": ["batch", 2], "dtype": "float32"}]}


def test_one_output_is_named_output_and_the_names_agree_with_the_export(tmp_path):
    one = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = export.export_onnx(one, torch.zeros(2, 3, 8, 8), tmp_path / "one.onnx", _cfg())
    assert [o["name"] for o in export.io_spec(path)["outputs"]] == ["output"]
    assert export.names_of_outputs(TwoHeads(), torch.zeros(1, 3, 12, 12)) == ["output_0", "output_1"]


def test_a_dict_returning_model_exports_with_its_keys_as_output_names(tmp_path):
    """A dict of named tensors (as a segmenter or a Hugging Face model returns): the ONNX outputs take
    the keys, in the dict's order, and give the same numbers as PyTorch."""
    class Segmenter(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Conv2d(3, 6, 3, padding=1)
            self.mask = nn.Conv2d(6, 2, 1)
            self.aux = nn.Linear(6, 3)

        def forward(self, x):
            f = torch.relu(self.trunk(x))
            return {"masks": self.mask(f), "aux": None, "scene": self.aux(f.mean((2, 3)))}

    model, x = Segmenter().eval(), torch.randn(2, 3, 8, 8)
    path = export.export_onnx(model, x[:1], tmp_path / "d.onnx", _cfg())
    assert [o["name"] for o in export.io_spec(path)["outputs"]] == ["masks", "scene"]
    assert export.names_of_outputs(model, x[:1]) == ["masks", "scene"]
    import onnxruntime as ort

    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = model(x)
    assert np.abs(got[0] - want["masks"].numpy()).max() < 1e-5 and got[1].shape == (2, 3)


def test_a_failed_export_is_a_stage_error_naming_the_operator_the_layer_and_the_remedy(tmp_path):
    class Spectrum(nn.Module):
        def forward(self, x):
            return torch.fft.fft(x).real  # runs in PyTorch; no ONNX opset 17 symbolic for aten::fft_fft

    with pytest.raises(StageError) as exc:
        export.export_onnx(Spectrum(), torch.zeros(1, 3), tmp_path / "u.onnx", _cfg())
    assert exc.value.message == ("[export] ONNX export failed: UnsupportedOperatorError: Exporting the operator "
                                 "'aten::fft_fft' to ONNX opset version 17 is not supported")
    assert exc.value.hint == "add the layer to prune.ignore, or try another export.opset"
    with pytest.raises(StageError) as named:  # the pipeline passes prune.failing_layer here
        export.export_onnx(Spectrum(), torch.zeros(1, 3), tmp_path / "u.onnx", _cfg(),
                           layer_of_failure=lambda model, example: "body.7")
    assert named.value.message.startswith("[export] ONNX export failed in layer 'body.7': UnsupportedOperatorError")
