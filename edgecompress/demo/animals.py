"""The animals demo: animal-mnist's 10,000 28x28 grey silhouettes of ten animals (harder than the 8x8
digits, where every recipe reaches 99-100%), read from the installed package without running its
loader (which imports TensorFlow) or its pickle, and a ~140k-parameter CNN teacher trained on first use."""
from __future__ import annotations

import gzip
import importlib.util
import pickle
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Tuple

import numpy as np

from ..errors import InputError

DEMO_VERSION = 1
# the label order of animal_label_version_3.gz: indices 0-9 are the classes in this (alphabetical)
# order, checked by eye on a grid of each index's first images
LABELS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
INSTALL = "pip install --no-deps animal-mnist"
DATA_FILE, LABEL_FILE = "animal_data_version_3.gz", "animal_label_version_3.gz"
EPOCHS, BATCH, LR = 12, 128, 1e-3


class RefusedPickle(InputError):
    """A data pickle named something other than numpy's array types."""


# Exactly the globals the package's two pickles name (pickletools.dis): numpy's array rebuild
# function, the ndarray type and dtype. numpy 2 writes numpy._core for the same function.
_ADMITTED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
             ("numpy", "ndarray"), ("numpy", "dtype")}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays and nothing else: any other global is refused before it is looked up, so a
    crafted pickle cannot call os.system or build arbitrary objects."""

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _ADMITTED:
            raise RefusedPickle(f"{self.path} names {module}.{name}; the animals demo reads only numpy arrays from "
                                "it and did not run it",
                                hint=f"reinstall the package's own data: {INSTALL} --force-reinstall")
        if name == "ndarray":
            return np.ndarray
        if name == "dtype":
            return np.dtype
        # the rebuild function itself, without importing numpy.core (deprecated in numpy 2)
        return np.empty(0).__reduce__()[0]

    def persistent_load(self, pid):
        raise RefusedPickle(f"{self.path} holds a persistent reference; the animals demo reads only numpy arrays",
                            hint=f"reinstall the package's own data: {INSTALL} --force-reinstall")


def load_array(path: Path) -> np.ndarray:
    """One numpy array from a gzipped pickle, through the restricted unpickler."""
    try:
        with gzip.open(path, "rb") as f:
            value = _ArrayUnpickler(f, path).load()
    except RefusedPickle:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise InputError(f"{path} could not be read as a gzipped numpy array: {exc}",
                         hint=f"reinstall it: {INSTALL} --force-reinstall") from None
    if not isinstance(value, np.ndarray):
        raise InputError(f"{path} holds a {type(value).__name__}, not a numpy array",
                         hint=f"reinstall it: {INSTALL} --force-reinstall")
    return value


def data_files() -> Tuple[Path, Path]:
    """The images and labels inside the installed package, found without importing it (its modules
    import TensorFlow)."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the animals demo reads its images from the animal-mnist package, which is not installed",
                         hint=f"{INSTALL}  (--no-deps: the package's own loader needs TensorFlow, which the demo "
                              "does not use)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"
    paths = folder / DATA_FILE, folder / LABEL_FILE
    for p in paths:
        if not p.is_file():
            raise InputError(f"animal-mnist is installed but has no {p}",
                             hint=f"install version 0.4, which ships it: {INSTALL}==0.4 --force-reinstall")
    return paths


@dataclass(frozen=True)
class Images:
    x: np.ndarray  # uint8 (N, 28, 28), white silhouettes on black, in the file's order
    y: np.ndarray  # int64 (N,), indices into LABELS
    duplicates_removed: int  # exact copies of an earlier image dropped


# How this demo's student is taught, chosen on validation silhouettes carved from the training split at 75% of the
# channels removed (benchmarks/results/animals_recipes.json, 3 teachers): the views the teacher was trained on
# (_augment: shifts of up to 2 pixels, mirrored halves; within 0.1 points either way for distillation: kept as the
# teacher's own views), and a learning rate of 3e-3 (+0.7 to 1.4 points for distillation and cross-entropy alike:
# a 9k-parameter student needs larger steps). Not the profiles' lr for every model: 3e-3 at batch 64 is high for
# a large pretrained network.
DISTILL = {"shift_pixels": 2, "augment": ["flip"], "lr": 3e-3}


@lru_cache(maxsize=1)
def images() -> Images:
    """The package's images with exact duplicates removed (the first copy kept, file order kept):
    a copy on each side of the split would count memorised training images as held-out accuracy."""
    data_path, label_path = data_files()
    x, y = load_array(data_path), load_array(label_path)
    if x.shape[1:] != (28, 28) or x.dtype != np.uint8 or y.shape != (len(x),):
        raise InputError(f"{data_path}: expected uint8 images (N, 28, 28) with N labels, got {x.dtype} {x.shape} "
                         f"and labels {y.shape}", hint=f"install version 0.4: {INSTALL}==0.4 --force-reinstall")
    _, first = np.unique(x.reshape(len(x), -1), axis=0, return_index=True)
    keep = np.sort(first)
    return Images(x[keep], y[keep].astype(np.int64), len(x) - len(keep))


def dataset():
    """The silhouettes as float32 (N, 1, 28, 28) in [0, 1], labels 0-9 (LABELS)."""
    from ..data import Dataset

    imgs = images()
    x = (imgs.x.astype(np.float32) / 255.0)[:, None]
    prep = {"layout": "NCHW", "size": [28, 28], "scale": 1 / 255, "mean": [0.0], "std": [1.0],
            "note": "8-bit grey image, white animal silhouette on a black background, divided by 255"}
    source = f"animal-mnist {DATA_FILE} ({imgs.duplicates_removed} exact duplicates removed)"
    return Dataset(x, imgs.y, source, list(LABELS), prep)


def build():
    """The teacher: five conv blocks in two pooled stages and a global average, 140k parameters."""
    import torch.nn as nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(1, 32), *block(32, 32), nn.MaxPool2d(2),
        *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
        *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(128, len(LABELS)),
    )


def teacher_path(held_out_fraction: float) -> Path:
    from . import cache_dir, teacher_seed

    return cache_dir() / f"animals-teacher-v{DEMO_VERSION}-seed{teacher_seed()}-held{held_out_fraction:.3f}.pt"


def teacher(held_out_fraction: float, log=print):
    """The trained teacher, from the cache or trained now on the training split only (minutes)."""
    import torch

    from ..data import split_indices
    from . import load_cached, save_cached, teacher_seed

    seed, path = teacher_seed(), teacher_path(held_out_fraction)
    torch.manual_seed(seed)
    model = build()
    if load_cached(model, path):
        log(f"demo animals: the teacher trained earlier, from {path}")
        return model.eval(), path
    data = dataset()
    train_idx, held_idx = split_indices(len(data), held_out_fraction)
    train, held = data.subset(np.sort(train_idx)), data.subset(held_idx)
    log(f"demo animals: training the teacher on {len(train)} silhouettes, {EPOCHS} epochs (minutes on a 2-core "
        "CPU; once: it is cached)")
    start = time.perf_counter()
    _train(model, train.x, train.y, seed=seed, log=log)
    accuracy = _accuracy(model, held.x, held.y)
    log(f"demo animals: trained the teacher in {time.perf_counter() - start:.0f} s: {accuracy:.1%} on the "
        f"{len(held)} held-out silhouettes; cached at {path}")
    save_cached(model, path)
    return model.eval(), path


def _train(model, x: np.ndarray, y: np.ndarray, seed: int, log=print, epochs: int = EPOCHS) -> None:
    import torch
    import torch.nn.functional as F

    # channels_last: convolutions this narrow train 1.7x faster on CPU in it (measured, torch 2.13)
    xt, yt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last), torch.from_numpy(y)
    model.to(memory_format=torch.channels_last)
    steps = epochs * ((len(x) + BATCH - 1) // BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        total, seen = 0.0, 0
        for idx in torch.randperm(len(x), generator=gen).split(BATCH):
            opt.zero_grad()
            loss = F.cross_entropy(model(_augment(xt[idx], gen)), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        if epoch % 3 == 0 or epoch == epochs:  # a line every minute or two: the person sees it move
            log(f"demo animals: teacher epoch {epoch}/{epochs}, loss {total / seen:.3f}, "
                f"{time.perf_counter() - start:.0f} s")
    model.to(memory_format=torch.contiguous_format).eval()


def _augment(x, gen):
    """Shift by up to 2 pixels (zero fill: the silhouettes lie on black) and mirror half the batch:
    an animal facing left is the same animal facing right."""
    import torch
    import torch.nn.functional as F

    dx, dy = (int(v) for v in torch.randint(0, 5, (2,), generator=gen))
    x = F.pad(x, (2, 2, 2, 2))[:, :, dy:dy + 28, dx:dx + 28]
    flip = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        predicted = torch.cat([model(b).argmax(1) for b in torch.from_numpy(x).split(512)])
    return float((predicted.numpy() == y).mean())
