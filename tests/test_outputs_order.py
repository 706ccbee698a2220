"""A classifier's class scores first, whatever order its dict lists them in, and which outputs its losses read
as class distributions (edgecompress.outputs, edgecompress.losses)."""
import textwrap

import numpy as np
import torch

from edgecompress import outputs
from edgecompress.losses import Batch, soft_kd

from ecutil import fast_sets, run_cli


def test_a_dicts_logits_come_first_and_other_keys_keep_their_order():
    out = {"aux": torch.zeros(2, 2), "logits": torch.zeros(2, 4), "feat": torch.zeros(2, 8)}
    assert outputs.names(out) == ["logits", "aux", "feat"]
    assert [t.shape[1] for t in outputs.flatten(out)] == [4, 2, 8]
    # a detector's per-anchor 'logits' (N, A, K) is not a classifier's: its order stays the model's
    assert outputs.names({"boxes": torch.zeros(2, 5, 4), "logits": torch.zeros(2, 5, 3)}) == ["boxes", "logits"]
    assert outputs.names({"x": {"aux": torch.zeros(2, 2), "logits": torch.zeros(2, 4)}}) == ["x_aux", "x_logits"]


def test_a_dicts_embedding_comes_before_its_logits():
    """A re-identification net's {"logits", "embedding"}: its embedding is what it ships, and each task reads the
    first output; the order is the keys', whatever the values."""
    out = {"logits": torch.zeros(2, 10), "aux": torch.zeros(2, 3), "embedding": torch.zeros(2, 64)}
    assert outputs.names(out) == ["embedding", "logits", "aux"]
    assert outputs.names({"descriptor": torch.zeros(2, 8), "logits": torch.zeros(2, 4)}) == ["descriptor", "logits"]
    # an embedding key that holds no vector per sample leads nothing
    assert outputs.names({"aux": torch.zeros(2, 2), "embedding": torch.zeros(2, 4, 4), "logits": torch.zeros(2, 4)}) \
        == ["logits", "aux", "embedding"]


def _batch(student, teacher):
    return Batch(student=student, teacher=teacher, labels=None, temperature=4.0, features=[])


def test_only_outputs_as_wide_as_the_class_scores_are_taught_as_distributions():
    """A 2-value 'aux' beside 4 class scores was taught by a softmax KL, blind to a shift of both values."""
    torch.manual_seed(0)
    logits, aux_class, aux = torch.randn(8, 4), torch.randn(8, 4), torch.randn(8, 2)
    b = _batch([logits, aux_class, aux], [logits.clone(), aux_class.clone(), aux.clone()])
    assert [s.shape[1] for s, _ in b.class_outputs()] == [4, 4]
    shifted = _batch([logits, aux_class, aux + 1.0], [logits, aux_class, aux])  # the same softmax, other values
    assert float(soft_kd(shifted)) > 0.1, "a shifted 'aux' costs: it is regressed, not softmaxed"


MODEL = '''
import torch.nn as nn


class AuxFirst(nn.Module):
    """A classifier whose dict lists an auxiliary output before its class scores."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.aux = nn.Linear(16, 2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        f = self.body(x)
        return {"aux": self.aux(f), "logits": self.head(f)}


def build():
    return AuxFirst()
'''


def test_a_dict_listing_aux_before_logits_deploys_as_a_classifier(tmp_path):
    import json

    from ecutil import make_data

    (tmp_path / "net.py").write_text(textwrap.dedent(MODEL))
    x, y = make_data(300)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, _, err = run_cli("deploy", f"{tmp_path / 'net.py'}:build", "--target", "arm", "--data",
                           str(tmp_path / "d.npz"), "--out", str(tmp_path / "out"), *fast_sets())
    assert code == 0, err
    assert "task: classification (auto: an output named 'logits')" in err
    m = json.loads((tmp_path / "out" / "net-raspberry-pi-5" / "manifest.json").read_text())
    assert [o["name"] for o in m["outputs"]] == ["logits", "aux"]
    assert m["metrics"]["accuracy"]["student"] is not None
