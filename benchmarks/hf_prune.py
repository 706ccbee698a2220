"""Prune five Hugging Face image classifiers, built from their configs with random weights (nothing
downloaded), at prune.ratio=0.3 with edgecompress.prune.prune_channels_: forward and ONNX export
after pruning, MACs before/after, the groups left whole and the seconds it took.

    .venv/bin/python benchmarks/hf_prune.py [name ...]   # needs `pip install transformers`
Writes benchmarks/results/hf_prune.json."""
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "hf_prune.json"


def configs():
    """The published architectures' configs (1000 classes); transformers' EfficientNetConfig()
    defaults to B7's sizes, so B0's are given."""
    import transformers as tf

    classes = {"num_labels": 1000}
    return {
        "MobileNetV2": lambda: tf.MobileNetV2ForImageClassification(tf.MobileNetV2Config(**classes)),
        "ResNet-50": lambda: tf.ResNetForImageClassification(tf.ResNetConfig(**classes)),
        "ConvNeXt-T": lambda: tf.ConvNextForImageClassification(tf.ConvNextConfig(**classes)),
        "EfficientNet-B0": lambda: tf.EfficientNetForImageClassification(tf.EfficientNetConfig(
            width_coefficient=1.0, depth_coefficient=1.0, image_size=224, hidden_dim=1280,
            dropout_rate=0.2, **classes)),
        "MobileViT-S": lambda: tf.MobileViTForImageClassification(tf.MobileViTConfig(**classes)),
    }


def logits_only(model):
    import torch.nn as nn

    class Logits(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(pixel_values=x).logits

    return Logits(model)


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "unknown")


def run_one(name, build) -> dict:
    import torch

    from edgecompress import prune
    from edgecompress.profile import Prune

    torch.manual_seed(0)
    model = logits_only(build()).eval()
    x = torch.randn(1, 3, 224, 224)
    macs_before, params_before = prune.count(model, x)
    shapes = prune.output_shapes(model, x)
    row = {"model": name, "macs_before": macs_before, "params_before": params_before}
    t = time.perf_counter()
    try:
        row["left_whole"] = prune.prune_channels_(model, Prune(ratio=0.3), x)
    except Exception as e:  # recorded: the benchmark reports what fails
        row.update(error=f"{type(e).__name__}: {e}", seconds=round(time.perf_counter() - t, 2), passes=False)
        return row
    row["seconds"] = round(time.perf_counter() - t, 2)
    row["macs_after"], row["params_after"] = prune.count(model, x)
    row["forward_ok"] = prune.breakage(model, x, shapes, export=False) is None
    row["onnx_export_ok"] = prune.onnx_exports(model, x)
    row["passes"] = row["forward_ok"] and row["onnx_export_ok"] and row["macs_after"] < macs_before
    return row


def main(names) -> None:
    import torch

    torch.set_num_threads(2)
    table = configs()
    rows = []
    for name in names or table:
        row = run_one(name, table[name])
        print(json.dumps(row), flush=True)
        rows.append(row)
    RESULTS.write_text(json.dumps({"cpu": cpu_name(), "torch": torch.__version__,
                                   "transformers": __import__("transformers").__version__,
                                   "ratio": 0.3, "input": [1, 3, 224, 224], "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
