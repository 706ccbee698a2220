"""Pruning with Torch-Pruning's dependency graph: whole channels (`channel`) or single weights
(`unstructured`, a size gain only: dense CPU kernels run zeros as fast as other numbers)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from .errors import InputError, ProfileError, StageError
from .registry import Registry, closest

IMPORTANCE = Registry("pruning importance")


@IMPORTANCE.register("l2")
def _l2():
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=2)


@IMPORTANCE.register("taylor")
def _taylor():
    import torch_pruning as tp

    return tp.importance.GroupTaylorImportance()


@IMPORTANCE.register("bn_scale")
def _bn_scale():
    import torch_pruning as tp

    return tp.importance.BNScaleImportance()


@dataclass
class PruneReport:
    structure: str
    ratio: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    nonzero_params_after: int = 0
    ignored_layers: List[str] = field(default_factory=list)


def count(model, example) -> tuple:
    """(MACs, params) by Torch-Pruning's counter."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def count_nonzero(model) -> int:
    return int(sum(int((p != 0).sum()) for p in model.parameters()))


def ignored_modules(model, cfg) -> List[str]:
    """The profile's `ignore` names, checked, plus the classifier: its outputs are the classes."""
    import torch.nn as nn

    names = dict(model.named_modules())
    for name in cfg.ignore:
        if name not in names:
            raise ProfileError(f"prune.ignore names layer '{name}', which the model does not have.{closest(name, names)}",
                               hint="layer names are those of model.named_modules()")
    heads = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return list(dict.fromkeys(list(cfg.ignore) + heads[-1:]))


def step_ratio(ratio: float, step: int, steps: int) -> float:
    """Ratio to prune at `step` (1-based) of the *current* width so that after `steps` steps the
    model keeps 1 - ratio of its original width. Each step is a fresh one-shot pruning, so a run
    resumed between steps needs no pruner state."""
    keep_before = 1 - ratio * (step - 1) / steps
    keep_after = 1 - ratio * step / steps
    return 1 - keep_after / keep_before


def _nearest_multiple_pruner(tp):
    """Torch-Pruning's BasePruner, keeping the multiple of round_to nearest to what the ratio asks for.
    Its own rounding floors the channels kept: at ratio 0.3 and round_to 8 a 32-channel layer kept 16
    (as at 0.5) instead of 24, so every ratio below 0.5 pruned more than it said."""
    class NearestMultiple(tp.pruner.BasePruner):
        def _round_to(self, n_pruned, current_channels, round_to):
            keep = max(round_to, math.floor((current_channels - n_pruned) / round_to + 0.5) * round_to)
            if keep > current_channels:  # a width that is no multiple itself: the largest multiple under it
                keep = max(round_to, current_channels - current_channels % round_to)
            return max(current_channels - keep, 0)
    return NearestMultiple


def prune_channels_(model, cfg, example, step: int = 1, grad_fn: Optional[Callable] = None) -> None:
    """One step of `cfg.iterative_steps` channel pruning, in place."""
    import torch_pruning as tp

    names = dict(model.named_modules())
    pruner = _nearest_multiple_pruner(tp)(
        model, example, importance=IMPORTANCE.get(cfg.importance)(),
        pruning_ratio=step_ratio(cfg.ratio, step, cfg.iterative_steps), round_to=cfg.round_to,
        ignored_layers=[names[n] for n in ignored_modules(model, cfg)],
    )
    if cfg.importance == "taylor":
        if grad_fn is None:
            raise StageError("prune", "taylor importance needs data to compute gradients")
        model.zero_grad()
        grad_fn(model)  # fills .grad, which GroupTaylorImportance reads
    pruner.step()
    model.zero_grad()
    check_runs(model, example)


def magnitude_masks(model, ratio: float, ignore: List[str]) -> dict:
    """Per-layer masks that zero the `ratio` smallest-magnitude weights of each conv/linear layer."""
    import torch
    import torch.nn as nn

    masks = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name not in ignore:
            w = module.weight.detach().abs().flatten()
            k = int(len(w) * ratio)
            if k:
                threshold = torch.kthvalue(w, k).values
                masks[name] = module.weight.detach().abs() > threshold
    return masks


def _grouped_by_four(weight):
    """View of a conv (K, C, R, S) or linear (out, in) weight as (..., C/4, 4) along the input
    channels, which is the axis TensorRT's 2:4 sparse kernels need the pattern on."""
    w = weight.permute(0, 2, 3, 1) if weight.dim() == 4 else weight
    return w.reshape(*w.shape[:-1], w.shape[-1] // 4, 4)


def _ungroup(grouped, like):
    if like.dim() == 4:
        k, c, r, s = like.shape
        return grouped.reshape(k, r, s, c).permute(0, 3, 1, 2)
    return grouped.reshape(like.shape)


def two_four_eligible(module) -> bool:
    """Layers TensorRT can run 2:4-sparse: dense convs and linears whose input width is a multiple
    of 4 (grouped and depthwise convs stay dense)."""
    import torch.nn as nn

    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.in_channels % 4 == 0
    return isinstance(module, nn.Linear) and module.in_features % 4 == 0


def two_four_masks(model, ignore: List[str]) -> dict:
    """Keep the two largest-magnitude weights of every group of four consecutive input channels."""
    import torch

    masks = {}
    for name, module in model.named_modules():
        if name in ignore or not two_four_eligible(module):
            continue
        grouped = _grouped_by_four(module.weight.detach().abs())
        keep = torch.zeros_like(grouped, dtype=torch.bool)
        keep.scatter_(-1, grouped.topk(2, dim=-1).indices, True)
        masks[name] = _ungroup(keep, module.weight)
    return masks


def apply_masks_(model, masks: dict) -> None:
    import torch

    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            modules[name].weight.mul_(mask)


def failing_layer(model, example) -> Optional[str]:
    """The innermost layer whose forward raised (or the model's own forward code right after the
    last layer that finished), or None when the model runs."""
    import torch

    entered: List[str] = []
    done: List[str] = []

    def leave(n):
        if n in entered:
            entered.remove(n)
        done.append(n)

    named = [(n, m) for n, m in model.named_modules() if n]
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: entered.append(n)) for n, m in named]
    hooks += [m.register_forward_hook(lambda mod, inp, out, n=n: leave(n)) for n, m in named]
    try:
        with torch.no_grad():
            model(example)
        return None
    except Exception:
        if entered:
            return entered[-1]
        return f"the model's forward, after '{done[-1]}'" if done else "the model's forward"
    finally:
        for h in hooks:
            h.remove()


def check_runs(model, example) -> None:
    layer = failing_layer(model.eval(), example)
    if layer is not None:
        raise StageError("prune", f"the pruned model fails in layer '{layer}'",
                         hint=f"add '{layer}' to prune.ignore (e.g. --set 'prune.ignore=[{layer}]') or lower prune.ratio")


def slimming_regularizer(model, reg: float) -> Callable[[], None]:
    """Network slimming: an L1 subgradient on every BatchNorm scale, applied after backward, so
    that unimportant channels' scales go to zero before bn_scale importance ranks them."""
    import torch
    import torch.nn as nn

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]

    def regularize() -> None:
        for bn in bns:
            if bn.weight.grad is not None:
                bn.weight.grad.add_(reg * torch.sign(bn.weight.detach()))

    return regularize


# A pruned model's structure as plain data (for checkpoints that load with weights_only=True): per
# module, its public attributes of plain types (widths, groups, ...) and the shape and dtype of each
# parameter and buffer it holds directly. Torch-Pruning's own `tp.state_dict` keeps module objects,
# which cannot be pickled from a user's model file and would need an unsafe load to read back.
_PLAIN_TYPES = (bool, int, float, str, type(None))


def _plain(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return type(value) in _PLAIN_TYPES  # exact types: an enum or a numpy scalar is not plain data


def _as_plain(value):
    """Tuple subclasses (torch.Size) as plain tuples, which weights_only loading reads back."""
    if isinstance(value, (tuple, list)):
        return (list if isinstance(value, list) else tuple)(_as_plain(v) for v in value)
    return value


def structure_of(model) -> dict:
    """{module name: {"attributes", "parameters", "buffers", "values"}}, tensors only in "values"
    (non-persistent buffers, which a state_dict leaves out)."""
    out = {}
    for name, module in model.named_modules():
        attributes = {k: _as_plain(v) for k, v in vars(module).items()
                      if not k.startswith("_") and k != "training" and _plain(v)}
        shapes = {kind: {k: [list(t.shape), str(t.dtype).replace("torch.", "")] for k, t in table.items()
                         if t is not None}
                  for kind, table in (("parameters", module._parameters), ("buffers", module._buffers))}
        values = {k: t.detach().clone() for k, t in module._buffers.items()
                  if t is not None and k in module._non_persistent_buffers_set}
        out[name] = {"attributes": attributes, **shapes, "values": values}
    return out


def rebuild_(model, structure: dict) -> None:
    """Give a fresh copy of the unpruned model the structure `structure_of` recorded: its widths
    and empty tensors of the pruned shapes, for `load_state_dict` to fill. Tied weights stay tied."""
    modules = dict(model.named_modules())
    unknown = sorted(set(structure) ^ set(modules))
    if unknown:
        raise InputError(f"the checkpoint's model has other layers than the model built now: "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}",
                         hint="the factory must build the same model every time; run with --force to start over")
    resized: dict = {}  # id of the fresh tensor -> its replacement, so two names for one tensor stay one
    for name, entry in structure.items():
        module = modules[name]
        for key, value in entry["attributes"].items():
            setattr(module, key, value)
        # setattr, not the tables themselves: a module may watch its own (an LSTM's _flat_weights)
        for kind, table in (("parameters", module._parameters), ("buffers", module._buffers)):
            for key, (shape, dtype) in entry[kind].items():
                setattr(module, key, _resized(table.get(key), shape, dtype, kind == "parameters", resized))
        for key, value in entry["values"].items():
            setattr(module, key, value)


def _resized(old, shape: list, dtype: str, parameter: bool, resized: dict):
    import torch

    if old is not None and list(old.shape) == shape and str(old.dtype).replace("torch.", "") == dtype:
        return old
    if old is not None and id(old) in resized:
        return resized[id(old)]
    new = torch.empty(shape, dtype=getattr(torch, dtype))
    if parameter:
        new = torch.nn.Parameter(new, requires_grad=True if old is None else old.requires_grad)
    if old is not None:
        resized[id(old)] = new
    return new
