"""quantize.keep_float's layer names against the ONNX graph the exporter writes for a user's own
module: a dict output (outputs.flat's wrapper in front of every scope), a Sequential's child (scoped
'stem/stem.0') and a child called from outside its parent (scoped by its own name only)."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from edgecompress import export, keep_float
from edgecompress.errors import InputError
from edgecompress.profile import Export


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        self.block = nn.Module()
        self.block.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        f = self.stem(x)
        f = f + self.block.conv1(f)
        return {"logits": self.fc(f.mean((2, 3)))}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    import onnx

    net = Net().eval()
    path = export.export_onnx(net, torch.randn(1, 3, 16, 16), tmp_path_factory.mktemp("kf") / "m.onnx", Export(), None)
    return onnx.load(str(path)), [n for n, _ in net.named_modules()]


@pytest.mark.parametrize("name, conv", [("fc", "/inner/fc/Gemm"), ("stem.0", "/inner/stem/stem.0/Conv"),
                                        ("block.conv1", "/inner/conv1/Conv"), ("stem", "/inner/stem/stem.0/Conv")])
def test_a_layer_name_finds_its_nodes_whatever_the_exporter_scoped_it_as(graph, name, conv):
    model, modules = graph
    nodes = keep_float.onnx_nodes(model, [name], "the exported model", modules)
    assert nodes[0] == conv
    assert "/inner/fc/Gemm" not in nodes or name == "fc"  # the tail stops at the next conv/linear layer


def test_a_name_the_model_lacks_is_refused_with_a_name_it_has(graph):
    model, modules = graph
    with pytest.raises(InputError, match="Did you mean 'block.conv1'"):
        keep_float.onnx_nodes(model, ["block.conv"], "the exported model", modules)


def test_the_wrappers_in_front_of_a_layer_path_are_looked_past_but_not_partial_names():
    assert keep_float.in_module("wrapped.inner.head.box", ["head"]) and keep_float.in_module("inner.x", ["inner.x"])
    assert not keep_float.in_module("wrapped.header", ["head"])
