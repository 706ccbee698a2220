"""Olive's user script for benchmarks/vs_peers.py: the animals rows Olive calibrates and scores on, read from a
plain .npz (arrays only: np.load refuses pickled objects by default). Runs inside Olive's own venv."""
import numpy as np
from olive.data.registry import Registry


class Rows:
    def __init__(self, path: str):
        with np.load(path) as d:
            self.x, self.y = d["x"].astype(np.float32), d["y"].astype(np.int64)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}, int(self.y[i])  # the fp32 .onnx's input is named x


@Registry.register_dataset()
def animals_rows(data_dir=None, rows=None, **kwargs):
    return Rows(rows)
