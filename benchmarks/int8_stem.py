"""Where the pruned INT8 ResNet-18's time goes on this CPU, and whether a wider stem input helps.

ResNet-18 (224x224, random weights) at 50% channels + INT8 (the default variant), run by ONNX
Runtime with 2 threads and its per-node profiler: the share of each operator type and of the
slowest nodes. The 7x7 stem sees only 3 input channels, so its inner products are short; the same
model with the input padded to 4 or 8 channels (zero weights for the new ones, so the outputs are
unchanged) is timed beside it. Writes benchmarks/results/int8_stem.json (or --out)."""
import argparse
import collections
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "models"))
sys.path.insert(0, str(HERE))
from int8_variants import p50_ms  # noqa: E402  (the same timing as the quantization variants)
from machine import describe_cpu, measured_on  # noqa: E402

RUNS, ROUNDS = 60, 3


def padded(model, channels: int):
    """The model with its input zero-padded to `channels` and a stem that ignores the padding."""
    import torch
    import torch.nn.functional as F

    stem = model.conv1
    wide = torch.nn.Conv2d(channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, :stem.in_channels] = stem.weight
    inner = copy.deepcopy(model)
    inner.conv1 = wide

    class Padded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1])))

    return Padded().eval()


def profile_nodes(path: Path, x: np.ndarray, folder: Path) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.enable_profiling = 2, True
    options.profile_file_prefix = str(folder / "profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(RUNS):
        session.run(None, {name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op, by_node = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"] / RUNS / 1000
            by_node[e["name"][:-len("_kernel_time")]] += e["dur"] / RUNS / 1000
    total = sum(by_op.values())
    return {"kernel_ms_per_run": round(total, 3),
            "by_op_ms": {k: round(v, 3) for k, v in by_op.most_common()},
            "slowest_nodes_ms": {k: round(v, 3) for k, v in by_node.most_common(6)},
            "stem_share_pct": round(100 * sum(v for k, v in by_node.items() if k.startswith("/conv1/")) / total, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "int8_stem.json")
    args = parser.parse_args()
    import torch
    from resnet import resnet18

    from edgecompress import export, prune, quantize
    from edgecompress.profile import Export, Prune, Quantize

    calib = np.random.default_rng(0).normal(0, 1, (32, 3, 224, 224)).astype(np.float32)
    example = torch.from_numpy(calib[:1])
    student = resnet18().eval()
    prune.prune_channels_(student, Prune(ratio=0.5, round_to=8), example)
    variants = {"3 input channels (as exported)": student, "padded to 4": padded(student, 4),
                "padded to 8": padded(student, 8)}
    with tempfile.TemporaryDirectory(prefix="ec-stem-") as tmp:
        folder = Path(tmp)
        paths = {}
        for i, (label, model) in enumerate(variants.items()):
            assert torch.allclose(model(example), student(example), atol=1e-5), label  # padding changes nothing
            fp32 = export.export_onnx(model, example, folder / f"v{i}.onnx", Export())
            paths[label] = quantize.quantize_int8(fp32, folder / f"v{i}-int8.onnx", calib, Quantize(), "input")
        profile = profile_nodes(paths["3 input channels (as exported)"], calib[:1], folder)
        rounds = {label: [] for label in paths}
        for _ in range(ROUNDS):  # in turns, so a burst of noise hits one round of each
            for label, path in paths.items():
                rounds[label].append(round(p50_ms(path, calib[:1], RUNS), 3))
    result = {"benchmark": "int8_stem", "measured_on": measured_on("ONNX Runtime", 2), "cpu": describe_cpu(),
              "model": "ResNet-18 50% channels, INT8 QDQ (uint8 activations, int8 per-channel weights)",
              "profile_of_the_exported_model": profile,
              "p50_ms": {k: {"median": float(np.median(v)), "rounds": v} for k, v in rounds.items()},
              "method": f"{RUNS} timed runs per round, {ROUNDS} rounds in turns; figure: median of the rounds' p50s"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"stem_share_pct": profile["stem_share_pct"], "kernel_ms": profile["kernel_ms_per_run"],
                      "p50_ms": {k: v["median"] for k, v in result["p50_ms"].items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
