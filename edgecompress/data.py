"""Data input: an `.npz` with `x` (and optionally `y`, `labels`), or a folder of images in class
sub-folders. Everything becomes float32 NCHW arrays plus integer labels when known."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_SEED = 0


@dataclass
class Dataset:
    x: np.ndarray  # float32, (N, C, H, W) or (N, features)
    y: Optional[np.ndarray]  # int64 (N,) or None
    source: str
    labels: Optional[List[str]] = None
    preprocessing: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, idx: np.ndarray) -> "Dataset":
        return replace(self, x=self.x[idx], y=None if self.y is None else self.y[idx])

    @property
    def sample_shape(self) -> Tuple[int, ...]:
        return tuple(self.x.shape[1:])


def split_indices(n: int, held_out_fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded split: the same data always gives the same held-out set, so the demo teacher
    and every later run agree on which samples are never trained on."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_held = max(1, int(round(n * held_out_fraction)))
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def split(data: Dataset, held_out_fraction: float) -> Tuple[Dataset, Dataset]:
    train_idx, held_idx = split_indices(len(data), held_out_fraction)
    return data.subset(train_idx), data.subset(held_idx)


def load_npz(path: Path) -> Dataset:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # a zip error, a pickle refusal, a truncated file
        raise InputError(f"data file {path} could not be read as .npz: {exc}",
                         hint="save it with numpy.savez(path, x=inputs, y=labels)") from None
    if "x" not in archive.files:
        raise InputError(f"data file {path} has no array 'x' (it has: {', '.join(archive.files) or 'nothing'})",
                         hint="save inputs as x (N, C, H, W) and optional integer labels as y (N,)")
    try:
        x = archive["x"]
    except ValueError as exc:  # object arrays need pickle, which is refused for safety
        raise InputError(f"data file {path}: 'x' could not be read: {exc}",
                         hint="store x as a numeric float32 array, not Python objects") from None
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"data file {path}: 'x' has dtype {x.dtype}, expected floating point",
                         hint="store preprocessed float32 inputs (scaled and normalised as the model expects)")
    if x.ndim < 2 or len(x) == 0:
        raise InputError(f"data file {path}: 'x' has shape {x.shape}; expected (N, ...) with N >= 1 samples")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(1).sum())
        raise InputError(f"data file {path}: 'x' has NaN or infinite values in {bad} sample(s)",
                         hint="clean or drop those samples before compressing")
    y = _labels_array(archive, path, len(x))
    labels = [str(v) for v in archive["labels"]] if "labels" in archive.files else None
    # The arrays are already preprocessed, by steps this tool never saw: say so, in the keys an app reads.
    prep = {"layout": "as given (npz)", "size": None, "scale": None, "mean": None, "std": None,
            "note": f"inputs as in {path.name}: preprocess new inputs exactly as that file's x was made"}
    return Dataset(x.astype(np.float32), y, str(path), labels, prep)


def _labels_array(archive, path: Path, n: int) -> Optional[np.ndarray]:
    if "y" not in archive.files:
        return None
    try:
        y = archive["y"]
    except ValueError as exc:
        raise InputError(f"data file {path}: 'y' could not be read: {exc}",
                         hint="store y as an integer array of class indices, not Python objects") from None
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
        raise InputError(f"data file {path}: 'y' has shape {y.shape} and dtype {y.dtype}; "
                         f"expected integer class indices of shape ({n},)",
                         hint="save y as numpy.asarray(labels, dtype=numpy.int64), one index per sample of x")
    if y.min() < 0:
        raise InputError(f"data file {path}: 'y' has negative class index {int(y.min())}",
                         hint="class indices run from 0 to classes-1; drop or relabel unlabelled samples")
    return y.astype(np.int64)


DEFAULT_SIZE_HW = (224, 224)
OWN_SIZE_MAX_PX = 256  # images up to this size keep it; photos (4000x3000) would not fit in memory as floats


def load_image_folder(path: Path, pre, size_hw: Optional[Tuple[int, int]]) -> Dataset:
    """Images in class sub-folders. `size_hw` None: the images' own size when they all share one
    (a 32x32 data set stays 32x32) and it is at most OWN_SIZE_MAX_PX a side, else DEFAULT_SIZE_HW;
    the manifest's note says which."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"image folder {path} has no class sub-folders",
                         hint="lay it out as DATA/<class name>/<image files>")
    files = [(file, label) for label, name in enumerate(classes) for file in sorted((path / name).iterdir())
             if file.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputError(f"image folder {path} has class folders but no images ({', '.join(sorted(IMAGE_SUFFIXES))})")

    def opened(file):
        try:
            return Image.open(file)  # reads the header only, until the pixels are asked for
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"image {file} could not be read: {exc}") from None

    sizes = set()
    for file, _ in files:
        with opened(file) as img:
            sizes.add(img.size[::-1])  # PIL gives (width, height)
    if size_hw is not None:
        note = f"images resized to {size_hw[0]}x{size_hw[1]} (preprocess.size or --input-shape)"
    elif len(sizes) == 1 and max(next(iter(sizes))) <= OWN_SIZE_MAX_PX:
        size_hw = next(iter(sizes))
        note = (f"images kept at their own size, {size_hw[0]}x{size_hw[1]} (preprocess.size or --input-shape "
                "resizes them)")
    elif len(sizes) == 1:
        (h, w), size_hw = next(iter(sizes)), DEFAULT_SIZE_HW
        note = (f"images resized from {h}x{w} to the default {size_hw[0]}x{size_hw[1]} (preprocess.size or "
                "--input-shape chooses another)")
    else:
        size_hw = DEFAULT_SIZE_HW
        note = (f"images resized to the default {size_hw[0]}x{size_hw[1]}: they come in {len(sizes)} sizes "
                "(preprocess.size or --input-shape chooses another)")
    xs = []
    for file, _ in files:
        with opened(file) as img:
            try:
                xs.append(_preprocess(img.convert("RGB" if pre.channels == 3 else "L").resize((size_hw[1], size_hw[0])),
                                      pre))
            except OSError as exc:  # a header that reads but pixels that do not (a truncated file)
                raise InputError(f"image {file} could not be read: {exc}") from None
    prep = {"layout": "NCHW", "size": list(size_hw), "scale": pre.scale, "mean": pre.mean, "std": pre.std,
            "note": note}
    return Dataset(np.stack(xs), np.array([label for _, label in files], dtype=np.int64), str(path), classes, prep)


def _preprocess(img, pre) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float32) * pre.scale
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    mean = np.array(pre.mean[: arr.shape[0]], dtype=np.float32)[:, None, None]
    std = np.array(pre.std[: arr.shape[0]], dtype=np.float32)[:, None, None]
    return (arr - mean) / std


def load(spec: str, pre, input_shape: Optional[Tuple[int, ...]]) -> Dataset:
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"data path {spec} does not exist",
                         hint="pass an .npz file with x (and y) or a folder of images in class sub-folders")
    if path.is_dir():
        size = tuple(pre.size) if pre.size else (tuple(input_shape[-2:]) if input_shape else None)
        data = load_image_folder(path, pre, size)
    elif path.suffix == ".npz":
        data = load_npz(path)
    else:
        raise InputError(f"data path {spec} is neither an .npz file nor a folder",
                         hint="pass an .npz with x [and y], or a folder with one sub-folder of images per class")
    if input_shape is not None and data.sample_shape != tuple(input_shape[1:]):
        batch_left_out = data.sample_shape == tuple(input_shape)
        raise InputError(f"data {spec}: samples have shape {data.sample_shape} but --input-shape says "
                         f"{tuple(input_shape[1:])} (after the batch dimension)",
                         hint="--input-shape starts with the batch, then the sample's shape: "
                              f"--input-shape {'x'.join(map(str, (1, *data.sample_shape)))}"
                         if batch_left_out or len(input_shape) != len(data.sample_shape) + 1
                         else "fix --input-shape or the data")
    return data


def parse_shape(text: str) -> Tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) < 2 or min(shape) < 1:
        raise InputError(f"--input-shape {text!r} is not a shape like 1x3x224x224")
    return shape


def require_samples(data: Dataset, needed: int, what: str, key: str) -> None:
    if len(data) < needed:
        raise InputError(f"data {data.source} has {len(data)} samples for {what}, which needs {needed}",
                         hint=f"give more data, or lower it with --set {key}={len(data)}")
