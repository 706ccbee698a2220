"""Data input: an `.npz` with `x` (and optionally `y`, `labels`), or a folder of images in class
sub-folders. Everything becomes float32 NCHW arrays plus integer labels when known."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from . import rows
from .errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_SEED = 0
EAGER_BYTES = 512 << 20  # an image folder up to this size decoded is decoded up front (faster epochs); larger: lazily


@dataclass
class Dataset:
    x: np.ndarray  # float32, (N, C, H, W) or (N, features); rows.MappedRows for an uncompressed .npz
    y: Optional[np.ndarray]  # int64 (N,) or None
    source: str
    labels: Optional[List[str]] = None
    preprocessing: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)  # the .npz's other per-sample arrays (what a --metric reads)

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, idx: np.ndarray) -> "Dataset":
        x = self.x.subset(idx) if isinstance(self.x, rows.LAZY) else self.x[idx]
        return replace(self, x=x, y=None if self.y is None else self.y[idx],
                       arrays={k: v[idx] for k, v in self.arrays.items()})

    @property
    def sample_shape(self) -> Tuple[int, ...]:
        return tuple(self.x.shape[1:])


def split_indices(n: int, held_out_fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded split: the same data always gives the same held-out set, so the demo teacher
    and every later run agree on which samples are never trained on. Each part stays in the seeded
    random order (not sorted): calibration, the labels check and the stored parity samples take the
    first N, and an image folder is read class by class, so a sorted prefix held only the first
    classes (a walkthrough's INT8 calibration saw 0 images of 2 of its 5 classes)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_held = max(1, int(round(n * held_out_fraction)))
    return order[n_held:], order[:n_held]


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
                         hint="save inputs as x (N, C, H, W), and optionally integer labels as y: classes (N,) or masks (N, H, W)")
    x = _x_of(archive, path)
    stored = getattr(x, "stored_dtype", x.dtype)
    if not np.issubdtype(stored, np.floating):
        raise InputError(f"data file {path}: 'x' has dtype {stored}, expected floating point",
                         hint="store preprocessed float32 inputs (scaled and normalised as the model expects)")
    if x.ndim < 2 or len(x) == 0:
        raise InputError(f"data file {path}: 'x' has shape {x.shape}; expected (N, ...) with N >= 1 samples")
    bad = sum(int((~np.isfinite(part)).reshape(len(part), -1).any(1).sum()) for part in rows.chunks(x))
    if bad:
        raise InputError(f"data file {path}: 'x' has NaN or infinite values in {bad} sample(s)",
                         hint="clean or drop those samples before compressing")
    y = _labels_array(archive, path, len(x))
    labels = _label_names(archive, path, y)
    # The arrays are already preprocessed, by steps this tool never saw: say so, in the keys an app reads.
    prep = {"layout": "as given (npz)", "size": None, "scale": None, "mean": None, "std": None,
            "note": f"inputs as in {path.name}: preprocess new inputs exactly as that file's x was made"}
    # other arrays with one row per sample travel with their rows (the same held-out split): a --metric reads them
    arrays = {k: archive[k] for k in archive.files if k not in ("x", "y", "labels")
              and archive[k].dtype.kind in "biuf" and archive[k].ndim >= 1 and len(archive[k]) == len(x)}
    if not isinstance(x, rows.MappedRows):
        x = x.astype(np.float32)
    return Dataset(x, y, str(path), labels, prep, arrays)


def _x_of(archive, path: Path):
    """The samples: memory-mapped rows when the file stores x uncompressed (numpy.savez), so a data set larger
    than memory is read a batch at a time; else (numpy.savez_compressed) the array, read whole."""
    try:
        stored = rows.stored_member(path, "x.npy")
    except Exception:  # an unusual zip: numpy's reader below says what is wrong with it
        stored = None
    if stored is not None and np.issubdtype(stored[2], np.number):
        return rows.MappedRows(path, *stored)
    try:
        return archive["x"]
    except ValueError as exc:  # object arrays need pickle, which is refused for safety
        raise InputError(f"data file {path}: 'x' could not be read: {exc}",
                         hint="store x as a numeric float32 array, not Python objects") from None


def _labels_hint(y: np.ndarray, n: int) -> str:
    """What to do about a 'y' that is not labels: the remedy for what is wrong with it."""
    other = ("'y' is only for class indices or masks: store other targets (boxes, keypoints, values) under "
             "another key, such as 'targets'; every array with a row per sample reaches --metric")
    if not np.issubdtype(y.dtype, np.integer):
        return other + "; for labels, numpy.asarray(labels, dtype=numpy.int64)"
    if len(y) != n:
        return (f"y has {len(y)} rows and x {n}: give one label per sample of x, in the same order "
                "(drop the samples without one from both)")
    return other


def _labels_array(archive, path: Path, n: int) -> Optional[np.ndarray]:
    if "y" not in archive.files:
        return None
    try:
        y = archive["y"]
    except ValueError as exc:
        raise InputError(f"data file {path}: 'y' could not be read: {exc}",
                         hint="store y as an integer array of class indices, not Python objects") from None
    # class indices (N,), or a segmentation's masks (N, H, W): a class index per pixel
    if not np.issubdtype(y.dtype, np.integer) or y.ndim not in (1, 3) or len(y) != n:
        raise InputError(f"data file {path}: 'y' has shape {y.shape} and dtype {y.dtype}; "
                         f"expected integer class indices of shape ({n},), or masks of shape ({n}, H, W)",
                         hint=_labels_hint(y, n))
    if y.min() < 0:
        raise InputError(f"data file {path}: 'y' has negative class index {int(y.min())}",
                         hint="class indices run from 0 to classes-1; drop or relabel unlabelled samples")
    return y.astype(np.int64)


def _label_names(archive, path: Path, y: Optional[np.ndarray]) -> Optional[List[str]]:
    if "labels" not in archive.files:
        return None
    try:
        names = [str(v) for v in np.atleast_1d(archive["labels"])]
    except ValueError as exc:
        raise InputError(f"data file {path}: 'labels' could not be read: {exc}",
                         hint="store labels as an array of strings, numpy.array(['cat', 'dog', ...])") from None
    if y is not None and int(y.max()) >= len(names):
        raise InputError(f"data file {path}: 'y' has class index {int(y.max())} but 'labels' has {len(names)} "
                         f"names ({', '.join(names[:5])}{' ...' if len(names) > 5 else ''})",
                         hint="save one name per class, in class-index order")
    return names


DEFAULT_SIZE_HW = (224, 224)
OWN_SIZE_MAX_PX = 256  # images up to this size keep it; photos (4000x3000) would not fit in memory as floats
STRAY_FOLDERS = {"__MACOSX"}  # what unzipping a Mac's archive leaves beside the real folders


def _hidden(entry: Path) -> bool:
    """.ipynb_checkpoints/, .DS_Store, macOS AppleDouble files (._0.png) and __MACOSX/: never data."""
    return entry.name.startswith(".") or entry.name in STRAY_FOLDERS


def _counted(counts: Counter) -> str:
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))


@dataclass
class _Folder:
    """What an image folder holds: the classes with images, their files, and what was left out."""
    classes: List[str] = field(default_factory=list)
    files: List[Tuple[Path, int]] = field(default_factory=list)
    hidden: List[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # suffix -> files that are not images
    empty: List[Tuple[str, Counter, int]] = field(default_factory=list)  # (folder, its files, position)


def _survey(path: Path) -> _Folder:
    found = _Folder()
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        if _hidden(folder):
            found.hidden.append(folder.name + "/")
            continue
        images, other = [], Counter()
        for entry in sorted(folder.iterdir()):
            if _hidden(entry):
                found.hidden.append(f"{folder.name}/{entry.name}")
            elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
                images.append(entry)
            else:
                other["sub-folder" if entry.is_dir() else entry.suffix.lower() or "no suffix"] += 1
        found.skipped.update(other)
        if not images:  # an empty or unreadable folder is not a class: it would add a name to labels.txt
            found.empty.append((folder.name, other, len(found.classes)))
            continue
        found.files += [(file, len(found.classes)) for file in images]
        found.classes.append(folder.name)
    return found


def _say_what_was_left_out(path: Path, found: _Folder) -> None:
    from .console import log

    readable = ", ".join(sorted(IMAGE_SUFFIXES))
    for name, files, position in found.empty:
        what = f"holds {_counted(files)} but no images ({readable})" if files else "is empty"
        after = len(found.classes) - position
        shift = (f"; the {after} class(es) after it are numbered one lower, so if the model has a class for it, "
                 f"convert its files to .png or .jpg" if after and files else "")
        log(f"warning: image folder {path}: {name}/ {what}: it is not a class{shift}")
    if found.hidden:
        shown = ", ".join(found.hidden[:4]) + (" ..." if len(found.hidden) > 4 else "")
        log(f"data: skipped {len(found.hidden)} hidden or macOS entries ({shown})")
    if found.skipped:
        n = sum(found.skipped.values())
        log(f"data: skipped {n} {'entry' if n == 1 else 'entries'} in the class folders that are not images "
            f"({_counted(found.skipped)})")


def _opened(file: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(file)  # reads the header only, until the pixels are asked for
    except Image.DecompressionBombError as exc:
        raise InputError(f"image {file} is too large to decode safely: {exc}",
                         hint="shrink it (e.g. to 1024 px a side), or move it out of the data folder") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"image {file} could not be read: {exc}",
                         hint="replace or delete that file (a truncated download, or not an image)") from None


def _choose_size(sizes: Counter, size_hw: Optional[Tuple[int, int]]) -> Tuple[Tuple[int, int], str]:
    """(height, width) and the data line that says why. The size most images share, when it is more
    than half of them and small enough to be a model's input: one odd image among hundreds must not
    send them all to 224x224 (a walkthrough's model fell to chance that way)."""
    if size_hw is not None:
        asked = tuple(size_hw)
        if set(sizes) == {asked}:  # a walkthrough's 32x32 images were said to be "resized to 32x32"
            return size_hw, f"images at {asked[0]}x{asked[1]}, the size preprocess.size or --input-shape asks for"
        resized = sum(n for hw, n in sizes.items() if hw != asked)
        return size_hw, (f"images resized to {asked[0]}x{asked[1]} (preprocess.size or --input-shape): {resized} of "
                         f"{sum(sizes.values())} had another size")
    (common, count), total = sizes.most_common(1)[0], sum(sizes.values())
    if count * 2 > total and max(common) <= OWN_SIZE_MAX_PX:
        others = total - count
        odd = "" if not others else (f"; the {others} other image(s), in {len(sizes) - 1} other size(s) "
                                     f"({', '.join(f'{h}x{w}' for (h, w), _ in sizes.most_common()[1:4])}"
                                     f"{' ...' if len(sizes) > 4 else ''}), resized to it")
        return common, (f"images kept at their own size, {common[0]}x{common[1]}{odd} (preprocess.size or "
                        "--input-shape resizes them)")
    if len(sizes) == 1:
        return DEFAULT_SIZE_HW, (f"images resized from {common[0]}x{common[1]} to the default "
                                 f"{DEFAULT_SIZE_HW[0]}x{DEFAULT_SIZE_HW[1]} (preprocess.size or --input-shape "
                                 "chooses another)")
    return DEFAULT_SIZE_HW, (f"images resized to the default {DEFAULT_SIZE_HW[0]}x{DEFAULT_SIZE_HW[1]}: they come "
                             f"in {len(sizes)} sizes, none shared by most of them (preprocess.size or --input-shape "
                             "chooses another)")


def load_image_folder(path: Path, pre, size_hw: Optional[Tuple[int, int]]) -> Dataset:
    """Images in class sub-folders. `size_hw` None: the size most images share (see _choose_size),
    else DEFAULT_SIZE_HW; the manifest's note says which. Hidden entries and folders without images
    are left out, and said."""
    if not any(p.is_dir() and not _hidden(p) for p in path.iterdir()):
        raise InputError(f"image folder {path} has no class sub-folders",
                         hint="lay it out as DATA/<class name>/<image files>")
    found = _survey(path)
    _say_what_was_left_out(path, found)
    if not found.files:
        raise InputError(f"image folder {path} has class folders but no images ({', '.join(sorted(IMAGE_SUFFIXES))})",
                         hint="put the images in DATA/<class name>/ as .png or .jpg files")
    sizes: Counter = Counter()
    for file, _ in found.files:
        with _opened(file) as img:
            sizes[img.size[::-1]] += 1  # PIL gives (width, height)
    size_hw, note = _choose_size(sizes, size_hw)
    files = [file for file, _ in found.files]
    decoded_bytes = len(files) * pre.channels * size_hw[0] * size_hw[1] * 4
    if decoded_bytes > EAGER_BYTES:  # decoded as the batches are read (distill.workers decode ahead)
        from .console import log

        log(f"data: {len(files)} images ({decoded_bytes / 2**30:.1f} GiB decoded) are decoded as training reads them, "
            f"not all up front (more than {EAGER_BYTES / 2**30:.1f} GiB); distill.workers decodes ahead in parallel")
        x = rows.FolderRows(files, size_hw, pre)
    else:
        x = np.stack([decode_image(file, size_hw, pre) for file in files])
    prep = {"layout": "NCHW", "size": list(size_hw), "scale": pre.scale, "mean": pre.mean, "std": pre.std,
            "note": note}
    labels = np.array([label for _, label in found.files], dtype=np.int64)
    return Dataset(x, labels, str(path), found.classes, prep)


def decode_image(file: Path, size_hw: Tuple[int, int], pre) -> np.ndarray:
    """One image as the model reads it: RGB or grey, resized to (height, width), scaled and normalised."""
    with _opened(file) as img:
        try:
            return _preprocess(img.convert("RGB" if pre.channels == 3 else "L").resize((size_hw[1], size_hw[0])), pre)
        except OSError as exc:  # a header that reads but pixels that do not (a truncated file)
            raise InputError(f"image {file} could not be read: {exc}",
                             hint="replace or delete that file (a truncated download, or not an image)") from None


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
        if input_shape is not None:  # before the images are resized to a channel count
            _refuse_channels_last(spec, input_shape, pre.channels)
        size = tuple(pre.size) if pre.size else (tuple(input_shape[-2:]) if input_shape else None)
        data = load_image_folder(path, pre, size)
    elif path.suffix == ".npz":
        data = load_npz(path)
    else:
        raise InputError(f"data path {spec} is neither an .npz file nor a folder",
                         hint="pass an .npz with x [and y], or a folder with one sub-folder of images per class")
    if input_shape is not None and data.sample_shape != tuple(input_shape[1:]):
        if len(data.sample_shape) == 3:
            _refuse_channels_last(spec, input_shape, data.sample_shape[0])
        batch_left_out = data.sample_shape == tuple(input_shape)
        raise InputError(f"data {spec}: samples have shape {data.sample_shape} but --input-shape says "
                         f"{tuple(input_shape[1:])} (after the batch dimension)",
                         hint="--input-shape starts with the batch, then the sample's shape: "
                              f"--input-shape {'x'.join(map(str, (1, *data.sample_shape)))}"
                         if batch_left_out or len(input_shape) != len(data.sample_shape) + 1
                         else "fix --input-shape or the data")
    return data


def _refuse_channels_last(spec: str, input_shape: Tuple[int, ...], channels: int) -> None:
    """`--input-shape 1x64x64x3` is the NHWC habit (TensorFlow, PIL): read as NCHW it asks for 64
    channels of 64x3 images. Said as such, with the shape meant."""
    if len(input_shape) == 4 and input_shape[-1] == channels in (1, 3) and input_shape[1] != channels:
        n, h, w, c = input_shape
        raise InputError(f"data {spec}: --input-shape {'x'.join(map(str, input_shape))} puts the {c} channels last "
                         f"(NHWC), but inputs here are NCHW: batch, channels, height, width",
                         hint=f"--input-shape {n}x{c}x{h}x{w}")


def check_label_names(data: Dataset, outputs: int, role: str = "the model") -> None:
    """The class names must name every output: the bundle's labels.txt and example.py index them by
    the model's top class (2 names for a 4-output model crashed example.py with an IndexError)."""
    if data.labels is None or len(data.labels) == outputs:
        return
    folder = Path(data.source).is_dir()
    names = "class folders with images" if folder else "names in 'labels'"
    hint = ("give each of the model's classes its folder, named so they sort in its output order (0_cat, 1_dog, ...)"
            if folder else f"save one name per output, in output order: numpy.savez(..., labels=[...{outputs} names])")
    shown = ", ".join(data.labels[:8]) + (" ..." if len(data.labels) > 8 else "")
    raise InputError(f"data {data.source} has {len(data.labels)} {names} ({shown}) but {role} has {outputs} outputs",
                     hint=hint)


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
