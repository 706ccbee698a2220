"""Which layers an INT8 file keeps in float (quantize.keep_float), for every runtime alike. Heads are
where INT8 loses most: ONNX Runtime issue 14233's YOLOv5 gave zero confidence until the head's last
Mul/Concat stayed in float. `auto` quantizes everything, and only where that misses the tolerance
quantizes again with each output's head in float (its last conv/linear and the operations after it)
and keeps whichever does better, with both figures recorded. Each back end says how its runtime
leaves a layer in float (ONNX Runtime: QDQ nodes_to_exclude; LiteRT: PT2E annotation skipped;
TensorRT: layer precision, or a Q/DQ ONNX without those nodes). A layer kept in float keeps the
parameter-free operations after it (activations, reshapes, concatenations) in float too, up to the
next conv or linear layer: re-quantizing its output at once would throw away what float kept."""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

from . import verify
from .console import log
from .errors import InputError
from .registry import closest
from .report import figure_text
from .summary import metric_words

PARAMETRIC_ONNX = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # a head ends at the last of these
WRAPPERS = ("inner", "wrapped")  # outputs.flat's attribute, litert-torch's channels-last wrapper's: in front of names


@dataclass
class FloatChoice:
    """What quantize.keep_float made of the file: the manifest's compression.quantization.keep_float."""

    setting: Union[str, List[str]]  # the profile's value
    layers: List[str] = field(default_factory=list)  # kept in float in the deployed file (none: INT8 everywhere)
    metric: Optional[str] = None  # the figure both files were judged by (verify.figure)
    int8_everywhere: Optional[float] = None  # that figure with every layer in INT8 (None: not measured)
    kept_in_float: Optional[float] = None  # ... with the heads (auto) or the named layers in float (None: not measured)
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def in_module(path: str, names) -> bool:
    """Whether a layer path (dots) lies in one of the modules `names`, with or without the wrappers
    the conversion put around the model in front (a user's own module may be called 'inner' too)."""
    candidates, parts = [path], path.split(".")
    while len(parts) > 1 and parts[0] in WRAPPERS:
        parts = parts[1:]
        candidates.append(".".join(parts))
    return any(c == n or c.startswith(n + ".") for c in candidates for n in names)


def onnx_module_path(node_name: str) -> str:
    """The module path of a node the TorchScript exporter named '/head/box/Conv': 'head.box'. Its
    scopes give a Sequential's child as 'stem.0' under 'stem' ('/stem/stem.0/Conv' is stem.0)."""
    name: List[str] = []
    for seg in (p for p in node_name.split("/")[:-1] if p):
        if name and seg.startswith(name[-1] + "."):
            name[-1] = seg
        else:
            name.append(seg)
    return ".".join(name)


def layer_names(layers: List[str]) -> str:
    """Layers as the user's model names them: '/inner/hm/Conv' (an ONNX node under the export's wrapper) is
    'hm (Conv)', so the log reads in the names quantize.keep_float takes."""
    shown = []
    for layer in layers:
        path, op = (onnx_module_path(layer), layer.rsplit("/", 1)[-1]) if layer.startswith("/") else (layer, "")
        parts = [p for p in path.split(".") if p]
        while parts and parts[0] in WRAPPERS:
            parts = parts[1:]
        if not op:
            shown.append(".".join(parts) or layer)
        else:  # an operation of the model's own forward, outside any submodule, has no module to name
            shown.append(f"{'.'.join(parts)} ({op})" if parts else f"{op} (in forward)")
    unique = list(dict.fromkeys(shown))
    return ", ".join(unique[:4]) + (" ..." if len(unique) > 4 else "")


def onnx_heads(model) -> List[str]:
    """Node names of each output's head in an ONNX graph: walking back from every graph output to the
    first Conv/Gemm/MatMul on each path, then those layers with the parameter-free operations after
    them (Mul, Concat, Reshape, Sigmoid, Resize...) up to the outputs."""
    producer = {o: n for n in model.graph.node for o in n.output}
    anchors, stack, seen = [], [o.name for o in model.graph.output], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in PARAMETRIC_ONNX:
            anchors.append(node)
        else:
            stack.extend(node.input)
    return _with_tail(model, anchors)


def _with_tail(model, anchors) -> List[str]:
    consumers: dict = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    kept, stack = {}, list(anchors)
    while stack:
        node = stack.pop()
        if node.name in kept:
            continue
        kept[node.name] = True
        stack += [c for o in node.output for c in consumers.get(o, []) if c.op_type not in PARAMETRIC_ONNX]
    order = [n.name for n in model.graph.node]
    return sorted(kept, key=order.index)


def _full_path(node_name: str, modules) -> str:
    """A node's module path as model.named_modules() names it: the exporter's scopes name a child
    called from outside its parent by its own name ('/conv1/Conv' for block.conv1), so a path that is
    no module of the model is taken as the one module whose name ends with it, where only one does."""
    path = onnx_module_path(node_name)
    if not modules or not path:
        return path
    parts = path.split(".")
    for start in range(len(parts)):
        tail = ".".join(parts[start:])
        if tail in modules:
            return tail
        ends = [m for m in modules if m.endswith("." + tail)]
        if len(ends) == 1:
            return ends[0]
    return path


def onnx_nodes(model, names: List[str], source: str, modules=None) -> List[str]:
    """The ONNX nodes of the layers `names` (PyTorch module names, or the file's own node names);
    `modules`: the PyTorch model's module names, where there is one, to read the exporter's scopes by."""
    nodes = [n.name for n in model.graph.node]
    modules = set(modules or ())
    found, missing = [], []
    for name in names:
        hits = [n for n in model.graph.node if n.name == name or in_module(_full_path(n.name, modules), [name])]
        (found.extend(hits) if hits else missing.append(name))
    if missing:
        modules = sorted(modules or ({onnx_module_path(n) for n in nodes} - {""}))
        raise InputError(f"quantize.keep_float names {', '.join(map(repr, missing))}, which {source} does not have."
                         f"{closest(missing[0], modules + nodes)}",
                         hint="name layers as model.named_modules() does (e.g. head.box), or ONNX node names for an "
                              ".onnx input; or use quantize.keep_float=auto")
    return _with_tail(model, found)


PARAMETRIC_ATEN = ("conv", "linear", "matmul", "addmm", "bmm")  # torch.export's names of the same layers


def fx_nodes(graph, modules: List[str]) -> set:
    """Names of the torch.export graph's nodes that lie in `modules`, with their parameter-free tail:
    the nodes PT2E quantization leaves unannotated, so the .tflite computes them in float."""
    def parametric(node) -> bool:
        return node.op == "call_function" and any(k in str(node.target) for k in PARAMETRIC_ATEN)

    def inside(node) -> bool:
        paths = [v[0] for v in (node.meta.get("nn_module_stack") or {}).values()]
        return bool(paths) and in_module(paths[-1], modules)

    kept, stack = set(), [n for n in graph.nodes if n.op == "call_function" and inside(n)]
    while stack:
        node = stack.pop()
        if node.name in kept or node.op == "output":
            continue
        kept.add(node.name)
        stack += [u for u in node.users if not parametric(u)]
    return kept


def module_names(compressed) -> list:
    """The student's module names (none for an .onnx input)."""
    student = getattr(compressed, "student", None)
    return [n for n, _ in student.named_modules()] if student is not None else []


def modules_checked(model, names: List[str]) -> List[str]:
    """`names` as they are, once each is a layer of the PyTorch `model`."""
    have = dict(model.named_modules())
    missing = [n for n in names if n not in have]
    if missing:
        raise InputError(f"quantize.keep_float names {', '.join(map(repr, missing))}, which the model does not have."
                         f"{closest(missing[0], have)}",
                         hint="layer names are those of model.named_modules(); or use quantize.keep_float=auto")
    return list(names)


Make = Callable[[List[str], Path], Tuple[Path, list]]  # (layers in float, where) -> (file, its outputs)


def decide(setting, make: Make, judge: Callable[[list], "verify.Parity"], heads: Callable[[], List[str]],
           named: Callable[[List[str]], List[str]], final: Path, cfg) -> Tuple[Path, list, FloatChoice]:
    """The INT8 file at `final` with its outputs and the FloatChoice. `judge` gives the parity of a
    file's outputs (not raising); `heads` the layers auto keeps in float; `named` resolves the
    profile's list; `cfg` is the profile's verify section."""
    if setting == "none":
        path, out = make([], final)
        return path, out, FloatChoice("none", reason="quantize.keep_float none: every layer in INT8")
    if setting != "auto":
        layers = named(list(setting))
        log(f"quantize: {_operations(len(layers))} left in float (quantize.keep_float {', '.join(setting)})")
        path, out = make(layers, final)
        metric, value = verify.figure(judge(out))
        return path, out, FloatChoice(list(setting), layers, metric, kept_in_float=value,
                                      reason="the layers quantize.keep_float names")
    return _auto(make, judge, heads, final, cfg)


def _auto(make, judge, heads, final: Path, cfg):
    path, out = make([], final)
    report = judge(out)
    metric, everywhere = verify.figure(report)
    missed = verify.problems(report, True, cfg)
    if not missed and everywhere is None:  # a detector with no confident anchor: nothing to judge the heads by
        return path, out, FloatChoice("auto", [], metric, everywhere,
                                      reason=f"INT8 everywhere kept: its {metric_words(metric)} compared nothing, so "
                                             "keeping the heads in float could not be judged")
    if not missed:
        return path, out, FloatChoice("auto", [], metric, everywhere,
                                      reason=f"INT8 everywhere meets the tolerance ({metric_words(metric)} {figure_text(metric, everywhere)})")
    layers = heads()
    if not layers:
        return path, out, FloatChoice("auto", [], metric, everywhere, reason="INT8 everywhere misses the tolerance "
                                      "and the model has no conv/linear head to keep in float")
    log(f"quantize: INT8 everywhere misses the tolerance ({'; '.join(missed)}); trying the heads in float "
        f"({_operations(len(layers))}: {layer_names(layers)})")
    trial = final.with_name(final.stem + "-head-float" + final.suffix)
    trial_path, trial_out = make(layers, trial)
    _, in_float = verify.figure(judge(trial_out))
    better = in_float is not None and (everywhere is None or in_float > everywhere)
    verdict = "keeps the heads in float" if better else "keeps INT8 everywhere (the heads in float did no better)"
    words = verify.METRIC_WORDS.get(metric, "top-1 agreement")
    log(f"quantize: {words} {figure_text(metric, everywhere)} with INT8 everywhere, {figure_text(metric, in_float)} with the heads in float: "
        f"the file {verdict}")
    if better:
        shutil.move(str(trial_path), str(final))
        path, out = final, trial_out
    else:
        Path(trial_path).unlink(missing_ok=True)
    return path, out, FloatChoice("auto", layers if better else [], metric, everywhere, in_float,
                                  reason=f"INT8 everywhere misses the tolerance: {'; '.join(missed)}; {verdict}")


def _operations(n: int) -> str:
    return f"{n} operation{'s' if n != 1 else ''}"
