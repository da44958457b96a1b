"""Loaders for datasets already on disk in torchvision's layout (nothing is downloaded).

``mnist`` and ``fashion-mnist`` read ``<data-dir>/MNIST/raw/*-idx?-ubyte`` (and
``FashionMNIST``); ``cifar10`` reads ``<data-dir>/cifar-10-batches-py/``. A missing file raises a
:class:`~fedge.errors.DataError` that names the file and where to put it.
"""

import pickle
from pathlib import Path

import numpy as np

from fedge.data.base import Dataset
from fedge.errors import DataError

__all__ = ["load_cifar10", "load_fashion_mnist", "load_mnist"]

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(1, 3, 1, 1)
_CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32).reshape(1, 3, 1, 1)


def load_mnist(data_dir: Path | None, public_size: int = 5000) -> Dataset:
    """MNIST from ``<data-dir>/MNIST/raw``, normalized like the embedded ``mnist-5k``."""
    return _load_idx("mnist", "MNIST", data_dir, public_size, mean=0.1307, std=0.3081)


def load_fashion_mnist(data_dir: Path | None, public_size: int = 5000) -> Dataset:
    """Fashion-MNIST from ``<data-dir>/FashionMNIST/raw``."""
    return _load_idx(
        "fashion-mnist", "FashionMNIST", data_dir, public_size, mean=0.2860, std=0.3530
    )


def load_cifar10(data_dir: Path | None, public_size: int = 5000) -> Dataset:
    """CIFAR-10 from ``<data-dir>/cifar-10-batches-py`` (the python pickle batches)."""
    folder = _require_dir(data_dir, "cifar10") / "cifar-10-batches-py"
    batches = [_read_cifar_batch(folder / name) for name in _CIFAR_TRAIN]
    x_train = np.concatenate([b[0] for b in batches])
    y_train = np.concatenate([b[1] for b in batches])
    x_test, y_test = _read_cifar_batch(folder / "test_batch")

    def norm(x: np.ndarray) -> np.ndarray:
        return ((x.astype(np.float32) / 255.0 - _CIFAR_MEAN) / _CIFAR_STD).astype(np.float32)

    return _with_public("cifar10", norm(x_train), y_train, norm(x_test), y_test, public_size, 10)


def _load_idx(
    name: str, folder_name: str, data_dir: Path | None, public_size: int, *, mean: float, std: float
) -> Dataset:
    # torchvision's idx readers; imported here because torchvision is slow to import.
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = _require_dir(data_dir, name) / folder_name / "raw"
    arrays = {}
    for split, (images_file, labels_file) in _IDX_FILES.items():
        images = _require_file(raw / images_file, name)
        labels = _require_file(raw / labels_file, name)
        try:
            x = read_image_file(str(images)).numpy()
            y = read_label_file(str(labels)).numpy()
        except (AssertionError, RuntimeError, ValueError) as err:
            raise DataError(f"{name}: {images} or {labels} is not a valid idx file: {err}") from err
        if len(x) != len(y):
            raise DataError(
                f"{name}: {images} has {len(x)} images but {labels} has {len(y)} labels"
            )
        x = ((x.astype(np.float32) / 255.0 - mean) / std).reshape(len(x), 1, *x.shape[1:])
        arrays[split] = (x.astype(np.float32), y.astype(np.int64))
    (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
    return _with_public(name, x_tr, y_tr, x_te, y_te, public_size, 10)


def _with_public(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    public_size: int,
    num_classes: int,
) -> Dataset:
    # The public split is carved from the train files with a fixed seed, so it never overlaps a
    # client partition and is the same on every run.
    public_size = min(public_size, len(y_train) // 10)
    order = np.random.default_rng(0).permutation(len(y_train))
    pub, train = order[:public_size], order[public_size:]
    return Dataset(
        name,
        x_train[train],
        y_train[train],
        x_test,
        y_test.astype(np.int64),
        x_train[pub],
        y_train[pub],
        num_classes,
    )


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    _require_file(path, "cifar10")
    try:
        with path.open("rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as err:
        raise DataError(f"cifar10: {path} is not a CIFAR-10 python batch: {err}") from err
    return data, labels


def _require_dir(data_dir: Path | None, name: str) -> Path:
    if data_dir is None:
        raise DataError(
            f"--data-dir: missing; dataset {name!r} is read from disk (torchvision layout)"
        )
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"--data-dir: {str(data_dir)!r} is not a directory")
    return data_dir


def _require_file(path: Path, name: str) -> Path:
    if not path.is_file():
        raise DataError(
            f"{name}: missing file {path.name}; put it at {path} (torchvision's on-disk layout)"
        )
    return path
