"""A model's outputs as every stage sees them: a flat list of tensors with one name each. A model may
return a tensor, a tuple or list of tensors (nested or not), or a dict of named tensors (Hugging
Face's ModelOutput is a dict); export, conversion, distillation and the checks all take the same
flat order, so output i is the same tensor everywhere. That order is the model's, except that a dict's
embedding (EMBEDDING_KEYS), else its 'logits' of class scores, comes first."""
from __future__ import annotations

from typing import Any, List, Tuple

from .errors import InputError


def named(out: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """[(name, tensor)] in the model's order: dict keys as names (nested ones joined by '_'), else
    output_0, output_1 ...; a single tensor is 'output'. None values (a ModelOutput's unset fields)
    are left out, as ModelOutput.to_tuple leaves them out."""
    import torch

    if isinstance(out, torch.Tensor):
        return [(prefix or "output", out)]
    if isinstance(out, dict):
        pairs = []
        for key, value in _logits_first(out, prefix):
            if value is not None:
                pairs += named(value, f"{prefix}_{key}" if prefix else str(key))
        return pairs
    if isinstance(out, (tuple, list)):
        pairs = []
        for i, value in enumerate(out):
            if value is not None:
                pairs += named(value, f"{prefix or 'output'}_{i}")
        return pairs
    raise InputError(f"the model returns a {type(out).__name__}{' in ' + prefix if prefix else ''}, which is not a "
                     "tensor", hint="return a tensor, a tuple or list of tensors, or a dict of named tensors")


def _logits_first(out: dict, prefix: str) -> list:
    """A dict's items, with a top-level vector per sample (N, D) named as an embedding (EMBEDDING_KEYS) moved
    first, else a top-level 'logits' of class scores (N, K): each task's checks, losses and example programs
    read the first output (a walkthrough's {"aux", "logits"} model was refused: its labels were counted against
    'aux'; a re-identification net's {"embedding", "logits"} was judged by its ID head's scores under
    --task embedding). The order depends on the keys alone, never on the values, so it is the same on
    every input and in every file."""
    items = list(out.items())
    if prefix:
        return items
    lead = next((k for k in EMBEDDING_KEYS if getattr(out.get(k), "ndim", 0) == 2), None)
    if lead is None and getattr(out.get("logits"), "ndim", 0) == 2:
        lead = "logits"
    if lead is not None and items[0][0] != lead:
        items = [(lead, out[lead])] + [(k, v) for k, v in items if k != lead]
    return items


# the dict keys that name a model's embedding (what a re-identification or retrieval net ships; its ID head's
# 'logits' trains it), in the order they are looked for
EMBEDDING_KEYS = ("embedding", "embeddings", "embeds", "descriptor", "descriptors")


def flatten(out: Any) -> list:
    """The output tensors in the model's order."""
    return [t for _, t in named(out)]


def names(out: Any) -> List[str]:
    """The outputs' names (what the ONNX file, the manifest and every check's table call them)."""
    return [_safe(n) for n, _ in named(out)]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def is_flat(out: Any) -> bool:
    """A tensor, or a tuple or list of tensors: what the converters take as they are."""
    import torch

    return isinstance(out, torch.Tensor) or (isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor)
                                                                                   for t in out))


def flat(model, example=None):
    """`model` wrapped so that its forward returns a tuple of tensors in the flat order: what the ONNX
    exporter and litert-torch convert (neither takes a dict output). Given `example`, a model whose
    outputs are already flat is returned as it is, so its graph's node names stay its own."""
    import torch
    import torch.nn as nn

    if example is not None:
        with torch.no_grad():
            if is_flat(model.eval()(example)):
                return model

    class Flat(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return tuple(flatten(self.inner(x)))

    return Flat(model).eval() if not model.training else Flat(model)


def of(model, example) -> List[str]:
    """The names of `model`'s outputs on `example` (one forward pass, no gradients)."""
    import torch

    with torch.no_grad():
        return names(model.eval()(example))
