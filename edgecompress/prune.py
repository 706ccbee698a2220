"""Pruning with Torch-Pruning's dependency graph: whole channels (`channel`) or single weights
(`unstructured`, a size gain only: dense CPU kernels run zeros as fast as other numbers)."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from .console import log
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


def ignored_modules(model, cfg, example=None) -> List[str]:
    """The profile's `ignore` names, checked, plus the output heads: their widths are the model's
    outputs. Without `example`, the last conv/linear; with it, every conv/linear that directly
    produces one of the outputs (a detector's box and score heads, a segmenter's dict values)."""
    import torch.nn as nn

    names = dict(model.named_modules())
    for name in cfg.ignore:
        if name not in names:
            raise ProfileError(f"prune.ignore names layer '{name}', which the model does not have.{closest(name, names)}",
                               hint="layer names are those of model.named_modules()")
    heads = output_layers(model, example) if example is not None else []
    if not heads:
        heads = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1:]
    return list(dict.fromkeys(list(cfg.ignore) + heads))


def output_tensors(out) -> list:
    """The tensors of a model's output: a tensor, a tuple/list, or a dict (a Hugging Face ModelOutput
    is one), nested; None values are skipped."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in output_tensors(v)]
    return []


def output_layers(model, example) -> List[str]:
    """Names of the conv/linear layers nearest to each output on its autograd path: forward hooks
    note the autograd node each layer's output came from, and a walk back from every output stops
    at the first such node on each path."""
    import torch
    import torch.nn as nn

    produced: dict = {}  # autograd node -> layer name; holding the node keeps it alive (no reuse)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]

    def note(name):
        def hook(module, inputs, out):
            if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                produced[out.grad_fn] = name
        return hook

    hooks = [m.register_forward_hook(note(n)) for n, m in layers]
    modes = [(m, m.training) for m in model.modules()]  # each module's own: a user may freeze some BNs
    x = example.detach().clone()
    if x.is_floating_point():
        x.requires_grad_(True)  # a graph even where the parameters are frozen
    try:
        with torch.enable_grad():
            out = model.eval()(x)
    finally:
        for m, training in modes:
            m.training = training
        for h in hooks:
            h.remove()
    found: List[str] = []
    for t in output_tensors(out):
        stack, seen = [t.grad_fn], set()
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if node in produced:
                found.append(produced[node])
                continue
            stack.extend(n for n, _ in node.next_functions)
    order = {n: i for i, (n, _) in enumerate(layers)}
    return sorted(set(found), key=order.get)


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
            groups = self.__dict__.get("_groups_of", {}).get(id(self.__dict__.get("_asked_about")), 1)
            if groups > 1 and current_channels % groups == 0:
                # channels tied in groups (GroupNorm): Torch-Pruning passes the count to prune in EACH group
                # with the layer's whole width, and the group's share rounded to round_to was always 0
                # (a GroupNorm net at prune.ratio 0.5 kept all its channels); the layer's total stays a
                # multiple of round_to
                size, unit = current_channels // groups, round_to // math.gcd(round_to, groups)
                keep = max(unit, math.floor((size - n_pruned) / unit + 0.5) * unit)
                return max(size - min(keep, size - size % unit or size), 0)
            keep = max(round_to, math.floor((current_channels - n_pruned) / round_to + 0.5) * round_to)
            if keep > current_channels:  # a width that is no multiple itself: the largest multiple under it
                keep = max(round_to, current_channels - current_channels % round_to)
            return max(current_channels - keep, 0)

        def _get_channel_groups(self, group):
            found = super()._get_channel_groups(group)
            self.__dict__.setdefault("_groups_of", {})[id(group[0].dep.target.module)] = found  # (also from __init__)
            return found

        def estimate_importance(self, group):
            """None (the group is left whole) where Torch-Pruning cannot score a group: its dependency graph
            maps a layer it does not model (PixelShuffle folds 4 channels into 1) to channels that are not
            there, and the scoring indexes past a weight's end."""
            try:
                return super().estimate_importance(group)
            except (IndexError, RuntimeError, ValueError) as exc:
                self.unscorable.append((group[0].dep.target.module, f"{type(exc).__name__}: {exc}"))
                return None
    return NearestMultiple


def _pruner(model, cfg, example, step: int, ignore: List[str]):
    import torch_pruning as tp

    names = dict(model.named_modules())
    pruner = _nearest_multiple_pruner(tp)(
        model, example, importance=IMPORTANCE.get(cfg.importance)(),
        pruning_ratio=step_ratio(cfg.ratio, step, cfg.iterative_steps), round_to=cfg.round_to,
        ignored_layers=[names[n] for n in ignore],
        output_transform=output_tensors,  # the graph traced through every output; None values skipped
    )
    pruner.unscorable = []  # (root module, why) of the groups estimate_importance could not score
    # _round_to is told a layer's width but not its channel groups: the layer whose width Torch-Pruning
    # asked for just before (it asks right before rounding) names them
    pruner._asked_about = None
    for fn in ("get_out_channels", "get_in_channels"):
        def asked(module, _inner=getattr(pruner.DG, fn)):
            pruner._asked_about = module
            return _inner(module)
        setattr(pruner.DG, fn, asked)
    return pruner


def _unscorable(pruner, model) -> List[str]:
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(m)] for m, _ in pruner.unscorable if id(m) in names]


def output_shapes(model, example) -> list:
    import torch

    with torch.no_grad():
        return [tuple(t.shape) for t in output_tensors(model.eval()(example))]


def onnx_exports(model, example) -> bool:
    """Whether torch.onnx's TorchScript exporter (the one the export stage uses) takes the model."""
    import io
    import warnings

    import torch

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (example,), io.BytesIO(), dynamo=False, opset_version=17)
        return True
    except Exception:
        return False


def breakage(model, example, shapes: list, export: bool = True) -> Optional[str]:
    """Why the pruned model is unusable ('forward pass', 'output shapes', 'export'), or None."""
    try:
        if output_shapes(model, example) != shapes:
            return "output shapes"
    except Exception:
        return "forward pass"
    if export and not onnx_exports(model, example):
        return "export"
    return None


def _restore_(pairs) -> None:
    """Give each module the state (widths, parameters, buffers) of its saved copy, keeping the module
    objects themselves (and their children), which the caller and the dependency graph refer to."""
    for module, saved in pairs:
        module.__dict__.update({k: v for k, v in vars(saved).items() if k != "_modules"})


def _copy(model):
    """A deep copy with the parameters' gradients (which taylor importance reads; deepcopy drops them)."""
    twin = copy.deepcopy(model)
    for p, q in zip(model.parameters(), twin.parameters()):
        q.grad = None if p.grad is None else p.grad.detach().clone()
    return twin


def _restore_model_(model, backup) -> None:
    fresh = dict(_copy(backup).named_modules())
    _restore_([(m, fresh[n]) for n, m in model.named_modules()])


def breaking_groups(backup, cfg, example, step: int, ignore: List[str], shapes: list, export: bool) -> List[str]:
    """Prune a copy group by group, undoing each group whose pruning breaks the copy; the names of
    those groups' root layers."""
    trial = _copy(backup)
    names = {id(m): n for n, m in trial.named_modules()}
    broken: List[str] = []
    for group in _pruner(trial, cfg, example, step, ignore).step(interactive=True):
        root = names.get(id(group[0].dep.target.module))
        touched = list({id(d.target.module): d.target.module for d, _ in group}.values())
        saved = [(m, copy.deepcopy(m)) for m in touched]
        group.prune()
        if breakage(trial, example, shapes, export=export) is not None:
            _restore_(saved)
            if root is not None:
                broken.append(root)
    return broken


def prune_channels_(model, cfg, example, step: int = 1, grad_fn: Optional[Callable] = None) -> List[str]:
    """One step of `cfg.iterative_steps` channel pruning, in place. Groups whose pruning breaks the
    forward pass, an output's shape or the ONNX export are found by trial and left whole; returns
    their root layers' names (sorted). The common case costs one check: groups are tried one by one
    only when pruning them all at once broke the model."""
    ignore = ignored_modules(model, cfg, example)
    shapes = output_shapes(model, example)
    if cfg.importance == "taylor":
        if grad_fn is None:
            raise StageError("prune", "taylor importance needs data to compute gradients")
        model.zero_grad()
        grad_fn(model)  # fills .grad, which GroupTaylorImportance reads
    backup = _copy(model)
    widths = _widths(model)
    left: List[str] = []
    why = set()
    for searches in range(4):  # a group left whole can make another one the breaking one; bounded
        pruner = _pruner(model, cfg, example, step, ignore + left)
        pruner.step()
        unscored = [n for n in _unscorable(pruner, model) if n not in left]
        if unscored:
            why.add("importance scoring")
            left += unscored
        failure = breakage(model, example, shapes)
        if failure is None or searches == 3:  # the last try is pruned, not undone: check_runs judges it
            break
        found = breaking_groups(backup, cfg, example, step, ignore + left, shapes, export=False)
        if not found and failure == "export":
            found = breaking_groups(backup, cfg, example, step, ignore + left, shapes, export=True)
        found = [n for n in found if n not in left]
        if not found:
            break  # nothing to blame on one group: check_runs reports what fails
        why.add("export" if failure == "export" else "forward pass")
        left += found
        _restore_model_(model, backup)
    model.zero_grad()
    check_runs(model, example)
    left = sorted(set(left))
    if left:
        reasons = [w for w in ("forward pass", "export") if w in why]
        because = ([f"pruning them breaks the {'/'.join(reasons)}"] if reasons else []) + \
            (["Torch-Pruning cannot score some of them: its graph does not model a layer such as PixelShuffle"]
             if "importance scoring" in why else [])
        log(f"prune: left whole ({'; '.join(because)}): {', '.join(left)}")
    _warn_if_short(model, cfg, widths, step, set(ignore) | set(left))
    return left


def _widths(model) -> dict:
    """{name: output channels} of the conv and linear layers."""
    import torch.nn as nn

    return {n: (m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}


def _warn_if_short(model, cfg, before: dict, step: int, whole: set) -> None:
    """A warning where pruning removed less than half of the channels the ratio asks for from the layers
    it was free to prune, naming those that kept their width and the likely cause: a ratio that quietly
    did nothing reads as a compressed model in the summary."""
    import torch.nn as nn

    if step < cfg.iterative_steps:
        return  # a round's shortfall (round_to rounding a small share away) is made up by the next: judged at the last
    after = _widths(model)
    free = [n for n in before if n not in whole and n in after]
    if not free:
        return
    asked = step_ratio(cfg.ratio, step, cfg.iterative_steps)
    removed = 1 - sum(after[n] for n in free) / sum(before[n] for n in free)
    if asked <= 0 or removed >= asked / 2:
        return
    kept = [n for n in free if after[n] == before[n]]
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.GroupNorm) and m.num_groups > 1]
    if norms and cfg.round_to and cfg.round_to > 1:
        cause = (f"GroupNorm ({', '.join(norms[:4])}{', ...' if len(norms) > 4 else ''}) ties channels into groups "
                 f"that Torch-Pruning prunes evenly, and prune.round_to={cfg.round_to} rounds each group's share "
                 "away: try --set prune.round_to=1, or a multiple of the GroupNorm's number of groups")
    else:
        cause = ("their channels are tied to layers left whole (an output head, a skip or concatenation into one, "
                 f"prune.ignore){f', or prune.round_to={cfg.round_to} is more than the ratio removes' if cfg.round_to else ''}")
    shown = ", ".join(kept[:8]) + (f" and {len(kept) - 8} more" if len(kept) > 8 else "")
    which = (f"in the last of {cfg.iterative_steps} pruning rounds, prune.ratio {cfg.ratio:g} asked for {asked:.0%} of "
             "the channels left" if cfg.iterative_steps > 1 else f"prune.ratio {cfg.ratio:g} asked for {asked:.0%} of the channels")
    log(f"warning: {which} and {removed:.0%} went: "
        f"{len(kept)} of {len(free)} prunable layers kept their width ({shown}); {cause}")


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
