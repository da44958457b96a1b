"""A device's own training data, read from a local directory: npz, CSV or an image folder.

Raw data never leaves the device; the ClientApp reads it from here when the node config has a
``data-dir``. A data directory holds one of:

- ``data.npz`` with arrays ``x`` (float32, ``N, ...``) and ``y`` (int labels);
- ``data.csv``: a header row, one feature per column and a ``label`` column;
- ``images/<label>/*.png``: one folder per integer class label.

An optional ``fedge-data.json`` gives ``num-classes``, ``input-shape``, the normalization
``mean``/``std`` of images and, for data written from a simulated partition, its
``partition-id`` (so a device can reproduce a simulated client exactly). ``"kind":
"regression"`` says ``y`` (or the ``label`` column) is a number in the target's own units, not
a class: the device's training standardises it as the run's task does.
:func:`write_device_data` creates such a directory from an embedded dataset: the slice a
:class:`~fedge.inference.profiles.DeviceDataSpec` names (a device profile's ``[device]`` table).
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import DataError
from fedge.inference.profiles import DEFAULT_DEVICE_DATASET, DeviceDataSpec

__all__ = [
    "META_FILE",
    "DataSummary",
    "DeviceData",
    "DeviceDataSpec",
    "load_device_data",
    "read_meta",
    "summarize",
    "write_device_data",
]

META_FILE = "fedge-data.json"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class DeviceData:
    """Samples of one device, ready for the ClientApp."""

    x: np.ndarray
    y: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class DataSummary:
    """What a device's data looks like, never the data: what a coordinator may know."""

    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    samples: int

    def describe(self) -> str:
        """E.g. ``mnist-5k 1x28x28, 10 classes, 1666 samples``."""
        shape = "x".join(str(d) for d in self.input_shape)
        name = f"{self.dataset} " if self.dataset else ""
        return f"{name}{shape}, {self.num_classes} classes, {self.samples} samples"


def summarize(data_dir: Path) -> DataSummary:
    """The summary of ``data_dir`` (loading it, so a bad directory fails here, by name)."""
    dataset = str(read_meta(data_dir).get("dataset", ""))
    data = load_device_data(data_dir, dataset=dataset)
    return DataSummary(dataset, data.input_shape, data.num_classes, len(data.y))


_CACHE: dict[tuple[str, float, str], DeviceData] = {}


def read_meta(data_dir: Path) -> dict[str, Any]:
    """The directory's ``fedge-data.json`` (empty if there is none)."""
    path = data_dir / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise DataError(f"{path} must hold a JSON object")
    return meta


def load_device_data(data_dir: Path, *, dataset: str) -> DeviceData:
    """Load ``data_dir`` (cached until it changes); ``dataset`` supplies missing metadata."""
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist")
    key = (str(data_dir.resolve()), data_dir.stat().st_mtime, dataset)
    if key not in _CACHE:
        _CACHE[key] = _load(data_dir, dataset)
    return _CACHE[key]


def _load(data_dir: Path, dataset: str) -> DeviceData:
    meta = read_meta(data_dir)
    if (data_dir / "data.npz").is_file():
        x, y = _load_npz(data_dir / "data.npz")
    elif (data_dir / "data.csv").is_file():
        x, y = _load_csv(data_dir / "data.csv")
    elif (data_dir / "images").is_dir():
        x, y = _load_images(data_dir / "images", meta)
    else:
        raise DataError(f"{data_dir} has no data.npz, data.csv or images/ folder")
    if len(y) == 0:
        raise DataError(f"{data_dir} holds no samples")
    shape = tuple(int(d) for d in meta.get("input-shape", x.shape[1:]))
    if tuple(x.shape[1:]) != shape:
        raise DataError(f"{data_dir}: samples have shape {x.shape[1:]}, expected {shape}")
    if meta.get("kind") == "regression":  # a number in the target's units, no classes
        if not np.isfinite(y).all():
            raise DataError(f"{data_dir}: regression targets must be finite numbers")
        return DeviceData(x, y.astype(np.float32), shape, 1)
    y = y.astype(np.int64)
    # Without metadata or a dataset to ask, the labels say how many classes there are at least.
    num_classes = int(
        meta.get("num-classes") or (_dataset_classes(dataset) if dataset else int(y.max()) + 1)
    )
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(
            f"{data_dir}: labels must be in [0, {num_classes}), got {y.min()}..{y.max()}"
        )
    return DeviceData(x, y, shape, num_classes)


def _dataset_classes(dataset: str) -> int:
    from fedge.data import get_dataset

    return get_dataset(dataset).num_classes


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            x, y = data["x"], data["y"]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path} must be an npz with arrays 'x' and 'y': {err}") from err
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} samples but {len(y)} labels")
    return x.astype(np.float32), y.astype(np.float64)


def _load_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or "label" not in rows[0]:
        raise DataError(f"{path} needs a header row with a 'label' column")
    label_col = rows[0].index("label")
    try:
        values = np.array([[float(v) for v in row] for row in rows[1:]], dtype=np.float64)
    except ValueError as err:
        raise DataError(f"{path} has a non-numeric value: {err}") from err
    if values.ndim != 2 or values.shape[1] != len(rows[0]):
        raise DataError(f"{path}: every row must have {len(rows[0])} values")
    y = values[:, label_col]
    x = np.delete(values, label_col, axis=1).astype(np.float32)
    return x, y


def _load_images(folder: Path, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    mean = float(meta.get("mean", 0.0))
    std = float(meta.get("std", 1.0))
    expected = tuple(int(d) for d in meta["input-shape"]) if "input-shape" in meta else None
    xs, ys = [], []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not label_dir.name.isdigit():
            raise DataError(f"{label_dir}: class folders must be named by integer label")
        for path in sorted(label_dir.iterdir()):
            if path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            pixels = _read_image(path)
            if expected is None:
                expected = pixels.shape
            if pixels.shape != expected:
                raise DataError(
                    f"{path}: image is {_shape_text(pixels.shape)}, expected "
                    f"{_shape_text(expected)} like the others"
                )
            xs.append((pixels - mean) / std)
            ys.append(int(label_dir.name))
    if not xs:
        raise DataError(f"{folder} has no images")
    return np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64)


def _read_image(path: Path) -> np.ndarray:
    """An image as float32 channels x height x width in [0, 1]; DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            pixels = np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _shape_text(shape: tuple[int, ...]) -> str:
    if len(shape) != 3:
        return "x".join(str(d) for d in shape)
    channels, height, width = shape
    return f"{width}x{height} pixels with {channels} channel{'s' if channels != 1 else ''}"


def write_device_data(out: Path, spec: DeviceDataSpec) -> Path:
    """Write the slice ``spec`` names as a device data directory ``out``.

    The partition is exactly the one the ``local`` runtime gives that client for its seed.
    """
    from fedge.data import get_dataset, parse_partition, partition_indices

    dataset = spec.dataset or DEFAULT_DEVICE_DATASET
    data = get_dataset(dataset)
    if spec.format == "images" and not data.is_image:
        raise DataError(f"{dataset} is not an image dataset")
    indices = partition_indices(
        data.y_train, spec.num_partitions, parse_partition(spec.partition), seed=spec.seed
    )[spec.partition_id]
    x, y = data.x_train[indices], data.y_train[indices]
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "dataset": dataset,
        "num-classes": data.num_classes,
        "input-shape": list(data.input_shape),
        "partition-id": spec.partition_id,
        "num-partitions": spec.num_partitions,
    }
    if spec.format == "npz":
        np.savez(out / "data.npz", x=x, y=y)
    elif spec.format == "csv":
        _write_csv(out / "data.csv", x, y)
    else:
        meta.update(_write_images(out / "images", dataset, x, y))
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    flat = x.reshape(len(x), -1)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([f"f{i}" for i in range(flat.shape[1])] + ["label"])
        for row, label in zip(flat, y, strict=True):
            writer.writerow([repr(float(v)) for v in row] + [int(label)])


def _write_images(folder: Path, dataset: str, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from PIL import Image

    from fedge.data.embedded import MNIST_MEAN, MNIST_STD

    mean, std = (MNIST_MEAN, MNIST_STD) if "mnist" in dataset else (0.0, 1.0)
    lo, hi = float(x.min()), float(x.max())
    if "mnist" not in dataset:  # rescale to [0, 1] pixels and record how to undo it
        mean, std = -lo / (hi - lo), 1.0 / (hi - lo)
    for i, (sample, label) in enumerate(zip(x, y, strict=True)):
        pixels = np.clip(np.rint((sample * std + mean) * 255.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        image.save(target / f"{i:05d}.png")
    return {"mean": mean, "std": std}
