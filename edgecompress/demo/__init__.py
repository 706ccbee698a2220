"""The built-in demos (get(name)). digits, the default: scikit-learn's handwritten digits (1,797 real
8x8 scans that ship with the package, so nothing is downloaded) and a small CNN teacher, trained on
first use and cached. animals (animals.py): animal-mnist's 28x28 silhouettes, harder."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np

DEMO_VERSION = 2  # 2: the teacher's initial weights are seeded too, so every machine trains the same one
LABELS = [str(d) for d in range(10)]


def cache_dir() -> Path:
    root = os.environ.get("EDGECOMPRESS_CACHE") or Path.home() / ".cache" / "edgecompress"
    return Path(root) / "demo"


def dataset():
    """Digits as float32 (N, 1, 8, 8) in [0, 1], labels 0-9."""
    from sklearn.datasets import load_digits

    from ..data import Dataset

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]
    # The preprocessing an app applies to an 8-bit image (what example.py and the app templates
    # read): 0-255 divided by 255 gives the 0-1 range the scans were brought to (levels 0-16 / 16)
    prep = {"layout": "NCHW", "size": [8, 8], "scale": 1 / 255, "mean": [0.0], "std": [1.0],
            "note": "8-bit grey image, light digit on a dark background, divided by 255 (the sklearn scans: "
                    "grey levels 0-16 divided by 16, the same 0-1 range)"}
    return Dataset(x, digits.target.astype(np.int64), "sklearn.datasets.load_digits", LABELS, prep)


def build():
    """The demo architecture: four conv blocks, wide enough that pruning half the channels matters."""
    import torch.nn as nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(1, 32), *block(32, 64), nn.MaxPool2d(2),
        *block(64, 128), *block(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(128, 10),
    )


def teacher_seed() -> int:
    """The seed of the teacher's training; $EDGECOMPRESS_DEMO_SEED picks another teacher (the
    benchmarks use it to measure the demo over several teachers)."""
    raw = os.environ.get("EDGECOMPRESS_DEMO_SEED", "0")
    try:
        return int(raw)
    except ValueError:
        from ..errors import InputError

        raise InputError(f"EDGECOMPRESS_DEMO_SEED must be an integer, got {raw!r}", hint="unset it, or set e.g. 1")


def teacher(held_out_fraction: float, log=print):
    """The trained teacher, from the cache or trained now on the training split only."""
    import torch

    from ..data import split_indices

    seed = teacher_seed()
    path = cache_dir() / f"teacher-v{DEMO_VERSION}-seed{seed}-held{held_out_fraction:.3f}.pt"
    torch.manual_seed(seed)
    model = build()
    if load_cached(model, path):
        log(f"demo: the teacher trained earlier, from {path}")
        return model.eval(), path
    train_idx, _ = split_indices(len(dataset()), held_out_fraction)
    # sorted, as every cached teacher was trained: its batches come from this order, so the split's
    # random order would train (and cache under the same name) another teacher
    train = dataset().subset(np.sort(train_idx))
    start = time.perf_counter()
    _train(model, train.x, train.y, seed=seed)
    log(f"demo: trained the teacher on {len(train)} digits in {time.perf_counter() - start:.1f} s, cached at {path}")
    save_cached(model, path)
    return model.eval(), path


def load_cached(model, path: Path) -> bool:
    """Whether a teacher trained earlier was found at `path` (then loaded into `model`, weights only)."""
    import torch

    if not path.is_file():
        return False
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return True


def save_cached(model, path: Path) -> None:
    """The trained teacher at `path`, written whole or not at all (a stopped run leaves no half file)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def _train(model, x: np.ndarray, y: np.ndarray, epochs: int = 20, batch: int = 64, seed: int = 0) -> None:
    import torch
    import torch.nn.functional as F

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * ((len(x) + batch - 1) // batch))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            opt.zero_grad()
            F.cross_entropy(model(_augment(xt[idx], gen)), yt[idx]).backward()
            opt.step()
            sched.step()
    model.eval()


def _augment(x, gen):
    """Shift by up to one pixel: digits are tiny and the teacher should not memorise positions."""
    import torch

    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


@dataclass(frozen=True)
class Demo:
    """One built-in demo: its data, its teacher and the name its bundle carries."""
    name: str
    model_name: str  # the bundle's model name (<model_name>-<profile>)
    dataset: Callable[[], object]  # () -> data.Dataset
    teacher: Callable[..., Tuple[object, Path]]  # (held_out_fraction, log) -> (model, cached file)
    # distill settings that follow from how the demo's teacher was trained (the student is taught on the views
    # its teacher learned from), used unless --set or the user's own profile file names them (inputs.with_demo_defaults)
    distill: Dict[str, object] = field(default_factory=dict)


NAMES = ("digits", "animals")
DEFAULT = "digits"


def get(name: str = DEFAULT) -> Demo:
    """The demo called name; digits (the default) keeps the bundle name 'demo' it always had."""
    if name == "digits":
        return Demo("digits", "demo", dataset, teacher, {"shift_pixels": 1})  # its teacher: rolls of a pixel
    if name == "animals":
        from . import animals

        return Demo("animals", "animals", animals.dataset, animals.teacher, animals.DISTILL)
    from ..errors import InputError

    raise InputError(f"no built-in demo called {name!r}", hint=f"--demo takes one of: {', '.join(NAMES)}")
