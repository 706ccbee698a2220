"""Pruning that adapts to the model: groups whose pruning breaks the forward pass or the export are
found by trial and left whole, and every output head keeps its width."""
import importlib.util
from pathlib import Path

import pytest
import torch

from edgecompress import prune
from edgecompress.profile import Prune

MODELS = Path(__file__).parent / "models" / "adapt_models.py"


def models():
    spec = importlib.util.spec_from_file_location("adapt_models", MODELS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def conv_linear_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


# factory, the layers whose groups may be left whole (the ones feeding a fixed-size reshape)
CASES = {
    "efficientnet": {"blocks.0.se.fc2", "blocks.1.se.fc2", "blocks.2.se.fc2",
                     "blocks.0.expand.0", "blocks.1.expand.0", "blocks.2.expand.0"},
    "mobilevit": {"vit.to_d", "vit.attention.q", "vit.attention.k", "vit.attention.v", "vit.attention.out"},
    "detector": set(),
    "segmenter": set(),
    "segmenter_aux": set(),
}


@pytest.mark.parametrize("factory", sorted(CASES))
def test_prunes_at_0_3_leaving_only_breaking_groups_whole(factory, capsys):
    torch.manual_seed(0)
    model = getattr(models(), factory)().eval()
    x = torch.randn(2, 3, 64, 64)
    shapes = prune.output_shapes(model, x)
    macs_before, _ = prune.count(model, x)
    left = prune.prune_channels_(model, Prune(ratio=0.3), x)
    assert prune.count(model, x)[0] < 0.8 * macs_before
    assert prune.output_shapes(model, x) == shapes, "every output head keeps its output shape"
    assert prune.onnx_exports(model, x)
    assert left == sorted(set(left))
    assert set(left) <= CASES[factory], f"left whole beyond the breaking layers: {left}"
    assert bool(left) == bool(CASES[factory]), "the breaking groups are found (and only where some break)"
    assert len(left) < len(conv_linear_names(model)) / 2
    if left:
        assert f"prune: left whole (pruning them breaks the forward pass): {', '.join(left)}" in capsys.readouterr().err


def test_plain_torch_pruning_breaks_these_models():
    """The cases above mean something: pruning every group at once breaks these two."""
    for factory in ("efficientnet", "mobilevit"):
        model = getattr(models(), factory)().eval()
        x = torch.randn(2, 3, 64, 64)
        shapes = prune.output_shapes(model, x)
        prune._pruner(model, Prune(ratio=0.3), x, 1, prune.ignored_modules(model, Prune(ratio=0.3), x)).step()
        assert prune.breakage(model, x, shapes) == "forward pass"


def test_every_output_head_is_ignored():
    m = models()
    x = torch.randn(1, 3, 64, 64)
    assert prune.ignored_modules(m.detector(), Prune(), x) == ["box_head", "score_head"]
    assert prune.ignored_modules(m.segmenter_aux(), Prune(), x) == ["classifier", "aux"]
    assert prune.ignored_modules(m.segmenter(), Prune(), x) == ["classifier"]  # the None 'aux' skipped
    assert prune.ignored_modules(m.detector(), Prune(ignore=["box_head"])) == ["box_head", "score_head"]
    assert prune.ignored_modules(m.detector(), Prune()) == ["score_head"], "without an example: the last layer"


def test_a_model_that_prunes_whole_gets_no_search():
    model = models().detector().eval()
    assert prune.prune_channels_(model, Prune(ratio=0.3), torch.randn(1, 3, 64, 64)) == []
    assert model.box_head.in_channels < 48


def test_taylor_importance_survives_the_group_search():
    """The trial copies keep the gradients taylor importance reads (a deepcopy alone drops them)."""
    torch.manual_seed(0)
    model = models().efficientnet().eval()
    x = torch.randn(2, 3, 64, 64)
    macs_before, _ = prune.count(model, x)

    def grads(m):
        m(torch.randn(4, 3, 64, 64)).square().mean().backward()

    left = prune.prune_channels_(model, Prune(ratio=0.3, importance="taylor"), x, grad_fn=grads)
    assert left and set(left) <= CASES["efficientnet"]
    assert prune.count(model, x)[0] < 0.8 * macs_before


def test_a_pixel_shuffle_decoder_that_torch_pruning_cannot_score_is_left_whole_and_the_rest_pruned(capsys):
    """Torch-Pruning maps a conv feeding PixelShuffle to channels that are not there and its scoring raised
    IndexError mid-deploy; those groups are now left whole, named, and the encoder is still pruned."""
    import torch_pruning as tp

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    plain = models().pixel_shuffle_segmenter().eval()
    with pytest.raises(IndexError):  # what a user calling Torch-Pruning gets
        tp.pruner.BasePruner(plain, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.3,
                             ignored_layers=[plain.classifier]).step()
    model = models().pixel_shuffle_segmenter().eval()
    shapes, macs_before = prune.output_shapes(model, x), prune.count(model, x)[0]
    left = prune.prune_channels_(model, Prune(ratio=0.5), x)
    assert left and prune.output_shapes(model, x) == shapes and prune.onnx_exports(model, x)
    assert prune.count(model, x)[0] < 0.9 * macs_before, "the layers Torch-Pruning can score are pruned"
    assert model.enc1[0].out_channels < 16 or model.enc2[0].out_channels < 32
    err = capsys.readouterr().err
    assert "Torch-Pruning cannot score some of them" in err and ", ".join(left) in err


def test_groupnorm_channels_prune_as_far_as_batchnorm_ones(capsys):
    """GroupNorm ties channels in groups: Torch-Pruning rounded each group's share to round_to and pruned
    nothing (a walkthrough's GroupNorm net at ratio 0.5: 1.00x fewer MACs, silently)."""
    x = torch.randn(2, 3, 32, 32)
    pruned = {}
    for factory in ("groupnorm_net", "batchnorm_net"):
        torch.manual_seed(0)
        model = getattr(models(), factory)().eval()
        before = prune.count(model, x)[0]
        prune.prune_channels_(model, Prune(ratio=0.5, round_to=8), x)
        pruned[factory] = [c.out_channels for c in model.convs]
        assert prune.count(model, x)[0] < 0.35 * before and prune.onnx_exports(model, x)
    assert pruned["groupnorm_net"] == pruned["batchnorm_net"] == [16, 32, 32]
    gn = [m for m in getattr(models(), "groupnorm_net")().modules() if isinstance(m, torch.nn.GroupNorm)]
    assert gn and "warning: prune.ratio" not in capsys.readouterr().err


def test_a_ratio_that_removes_little_is_a_warning_naming_the_layers(capsys):
    torch.manual_seed(0)
    model = models().batchnorm_net().eval()
    x = torch.randn(2, 3, 32, 32)
    prune.prune_channels_(model, Prune(ratio=0.2, round_to=32), x)  # 32 of 32: nothing to round down to
    err = capsys.readouterr().err
    assert "warning: prune.ratio 0.2 asked for 20% of the channels and 0% went: 3 of 3 prunable layers kept" in err
    assert "convs.0, convs.1, convs.2" in err and "prune.round_to=32" in err


def test_iterative_pruning_is_judged_at_its_last_round_not_its_first(capsys):
    """A walkthrough's two rounds at ratio 0.5: round 1 (25% asked, round_to rounding it away) warned that the
    layers kept their width, though round 2 halved them; the warning now waits for the last round."""
    torch.manual_seed(0)
    model = models().batchnorm_net().eval()
    x = torch.randn(2, 3, 32, 32)
    cfg = Prune(ratio=0.2, round_to=32, iterative_steps=2)  # a share neither round can round up to 32
    prune.prune_channels_(model, cfg, x, step=1)
    assert "warning:" not in capsys.readouterr().err
    prune.prune_channels_(model, cfg, x, step=2)
    err = capsys.readouterr().err
    assert "warning: in the last of 2 pruning rounds, prune.ratio 0.2 asked for" in err and "of the channels left" in err
