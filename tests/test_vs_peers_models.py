"""benchmarks/models/mobilenet_animals.py: the MobileNetV2-style net for benchmarks/vs_peers.py builds for
1x28x28 input, prunes with edgecompress's prune at the arm ratio and exports to ONNX with the same outputs."""
import importlib.util
from pathlib import Path

import numpy as np
import torch

MODEL_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "models" / "mobilenet_animals.py"


def _module():
    spec = importlib.util.spec_from_file_location("mobilenet_animals", MODEL_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mobilenet_animals_prunes_and_exports(tmp_path):
    import onnxruntime as ort
    from edgecompress import prune
    from edgecompress.profile import Prune

    torch.manual_seed(0)
    model = _module().build().eval()
    x = torch.rand(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    before = sum(p.numel() for p in model.parameters())
    prune.prune_channels_(model, Prune(ratio=0.25, round_to=8), x[:1])
    model.eval()
    after = sum(p.numel() for p in model.parameters())
    assert after < 0.8 * before
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x[:1],), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)
