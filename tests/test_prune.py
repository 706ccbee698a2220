from pathlib import Path

import pytest
import torch
import torch.nn as nn

from edgecompress import demo, prune, verify
from edgecompress.errors import InputError, ProfileError, StageError
from edgecompress.profile import Prune


def convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def example():
    return torch.randn(1, 1, 8, 8)


@pytest.mark.parametrize("importance", ["l2", "taylor", "bn_scale"])
def test_channel_pruning_keeps_multiples_of_round_to_and_halves_width(importance):
    model = demo.build().eval()
    cfg = Prune(ratio=0.5, round_to=8, importance=importance)

    def grads(m):
        nn.functional.cross_entropy(m(torch.randn(16, 1, 8, 8)), torch.randint(0, 10, (16,))).backward()

    prune.prune_channels_(model, cfg, example(), grad_fn=grads)
    widths = [c.out_channels for c in convs(model)]
    assert widths == [16, 32, 64, 64]
    assert all(w % 8 == 0 for w in widths)
    assert model(example()).shape == (1, 10), "the classifier's outputs (ignored layer) stay intact"


def test_round_to_16_rounds_odd_ratios():
    model = demo.build().eval()
    prune.prune_channels_(model, Prune(ratio=0.3, round_to=16), example())
    assert all(c.out_channels % 16 == 0 for c in convs(model))


def test_iterative_steps_reach_the_same_final_width():
    model = demo.build().eval()
    cfg = Prune(ratio=0.5, round_to=8, iterative_steps=2)
    seen = []
    for step in (1, 2):
        prune.prune_channels_(model, cfg, example(), step=step)
        seen.append([c.out_channels for c in convs(model)])
    assert seen[0] == [24, 48, 96, 96]  # 75 % after the first of two steps
    assert seen[1] == [16, 32, 64, 64]


def test_step_ratio_compounds_to_the_target():
    keep = 1.0
    for step in range(1, 5):
        keep *= 1 - prune.step_ratio(0.6, step, 4)
    assert keep == pytest.approx(0.4)


def test_ignored_layer_keeps_its_width():
    model = demo.build().eval()
    prune.prune_channels_(model, Prune(ratio=0.5, round_to=8, ignore=["3"]), example())
    assert dict(model.named_modules())["3"].out_channels == 64


def test_unknown_ignored_layer_is_named_with_suggestion():
    with pytest.raises(ProfileError, match="'33'"):
        prune.ignored_modules(demo.build(), Prune(ignore=["33"]))


def test_unstructured_masks_zero_the_ratio_and_survive_reapplication():
    model = demo.build()
    masks = prune.magnitude_masks(model, 0.5, ignore=["15"])
    prune.apply_masks_(model, masks)
    conv = convs(model)[1]
    assert (conv.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    with torch.no_grad():
        conv.weight.add_(1.0)  # a training step moves zeros ...
    prune.apply_masks_(model, masks)  # ... and the masks put them back
    assert (conv.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_slimming_regularizer_pushes_bn_scales_toward_zero():
    model = demo.build()
    bn = model[1]
    before = bn.weight.detach().abs().sum().item()
    reg = prune.slimming_regularizer(model, 0.05)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(5):
        opt.zero_grad()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        reg()
        opt.step()
    assert bn.weight.detach().abs().sum().item() < before - 0.05 * 5 * 32 * 0.9


class Reshaper(nn.Module):
    """A model that hard-codes a width: pruning conv 0 breaks the view() in forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.head = nn.Linear(16 * 64, 4)

    def forward(self, x):
        return self.head(self.conv(x).view(x.shape[0], 16 * 64))


def test_a_pruned_model_that_no_longer_runs_names_the_layer():
    model = Reshaper().eval()
    with torch.no_grad():
        model.conv.weight = nn.Parameter(model.conv.weight[:8])
        model.conv.bias = nn.Parameter(model.conv.bias[:8])
        model.conv.out_channels = 8
    assert prune.failing_layer(model, example()) == "the model's forward, after 'conv'"
    with pytest.raises(StageError, match="after 'conv'.*\n.*prune.ignore"):
        prune.check_runs(model, example())


def test_failing_layer_names_the_innermost_module():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sequential(nn.Linear(3, 2)))
    assert prune.failing_layer(model, example()) == "1.0"
    assert prune.failing_layer(nn.Sequential(nn.Conv2d(1, 4, 3)), example()) is None


def test_counts_report_fewer_params_and_macs():
    model = demo.build().eval()
    macs0, params0 = prune.count(model, example())
    prune.prune_channels_(model, Prune(ratio=0.5, round_to=8), example())
    macs1, params1 = prune.count(model, example())
    assert 3.5 < params0 / params1 < 4.5 and 3.5 < macs0 / macs1 < 4.5


def test_two_four_masks_keep_two_of_every_four_input_channels():
    model = demo.build()
    masks = prune.two_four_masks(model, ignore=[])
    assert "0" not in masks, "1 input channel: not a multiple of 4, stays dense"
    assert set(masks) == {"3", "7", "10", "15"}
    prune.apply_masks_(model, masks)
    for name in masks:
        w = dict(model.named_modules())[name].weight.detach()
        assert verify.two_four_violations(w.numpy()) == 0
        assert (w == 0).float().mean().item() == pytest.approx(0.5)
    # the pattern runs along the input channels: for one output channel and kernel position,
    # exactly two of each four consecutive input channels are zero
    w = model[3].weight.detach()
    assert ((w[5, 0:4, 1, 2] == 0).sum().item(), (w[5, 4:8, 0, 0] == 0).sum().item()) == (2, 2)


def test_two_four_masks_keep_the_largest_weights():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -3.0, 0.2, 2.0]]))
    masks = prune.two_four_masks(nn.Sequential(layer), ignore=[])
    assert masks["0"].tolist() == [[False, True, False, True]]


def test_two_four_violations_counts_dense_groups():
    w = torch.ones(2, 8)
    assert verify.two_four_violations(w.numpy()) == 4
    w[:, ::2] = 0
    assert verify.two_four_violations(w.numpy()) == 0


@pytest.mark.parametrize("ratio, kept", [(0.3, [24, 48, 88]), (0.4, [16, 40, 80]), (0.5, [16, 32, 64]),
                                         (0.75, [8, 16, 32])])
def test_round_to_keeps_the_multiple_nearest_to_the_ratio(ratio, kept):
    """32/64/128 channels at round_to 8: Torch-Pruning's own rounding floors the channels kept, so 0.3
    and 0.4 pruned as much as 0.5 does in places; the nearest multiple keeps the ratio's meaning."""
    import torch

    from edgecompress import demo, prune
    from edgecompress.profile import Prune

    model = demo.build()
    prune.prune_channels_(model, Prune(ratio=ratio, round_to=8), torch.zeros(1, 1, 8, 8))
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[:3] == kept


MODELS = Path(__file__).parent / "models"


def pruned_user_model(spec: str):
    """A model from a file of its own classes (imported as edgecompress_user_*, not importable by
    name, as a user's file is), pruned to half its channels; and a fresh, unpruned copy."""
    from edgecompress import models

    pruned = models.load_factory(str(MODELS / spec), None).module
    prune.prune_channels_(pruned, Prune(ratio=0.5, round_to=8), torch.randn(1, 3, 16, 16))
    return pruned.eval(), models.load_factory(str(MODELS / spec), None).module.eval()


@pytest.mark.parametrize("spec", ["resnet.py:tiny", "mobilenet.py:build"])
def test_a_pruned_custom_model_is_rebuilt_from_plain_data(tmp_path, spec):
    """Widths and shapes saved as plain data (no module objects) and read back with
    weights_only=True rebuild the pruned model on a fresh copy: same widths, groups, outputs."""
    pruned, fresh = pruned_user_model(spec)
    torch.save({"structure": prune.structure_of(pruned), "weights": pruned.state_dict()}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    prune.rebuild_(fresh, saved["structure"])
    fresh.load_state_dict(saved["weights"])
    shape = [(n, m.in_channels, m.out_channels, m.groups) for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)]
    assert shape == [(n, m.in_channels, m.out_channels, m.groups) for n, m in fresh.named_modules()
                     if isinstance(m, nn.Conv2d)]
    assert any(g > 1 for *_, g in shape) == spec.startswith("mobilenet"), "depthwise convs keep groups == channels"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(pruned(x), fresh(x))


def test_rebuilt_tied_weights_stay_one_tensor():
    """Two layers sharing one weight (tied embeddings, a shared head) share it after the rebuild too."""
    def tied():
        model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
        model[1].weight = model[0].weight
        return model

    small = tied()
    small[0].weight = small[1].weight = nn.Parameter(torch.randn(8, 4))  # as pruning 4 inputs would leave it
    small[0].in_features = small[1].in_features = 4
    fresh = tied()
    prune.rebuild_(fresh, prune.structure_of(small))
    assert fresh[0].weight is fresh[1].weight and fresh[0].weight.shape == (8, 4) and fresh[1].in_features == 4


def test_a_structure_from_another_model_names_the_layers_that_differ():
    pruned, _ = pruned_user_model("resnet.py:tiny")
    with pytest.raises(InputError, match="other layers than the model built now: 0, 1"):
        prune.rebuild_(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), prune.structure_of(pruned))
