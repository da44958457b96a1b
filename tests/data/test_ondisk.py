"""On-disk loaders in torchvision's layout, on small files the tests write."""

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from fedge.data.ondisk import load_cifar10, load_fashion_mnist, load_mnist
from fedge.errors import DataError


def _write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x0803, n, h, w) + images.astype(np.uint8).tobytes())


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, n_train: int = 40, n_test: int = 10) -> np.ndarray:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, size=(n_train, 28, 28))
    _write_idx_images(raw / "train-images-idx3-ubyte", train_images)
    _write_idx_labels(raw / "train-labels-idx1-ubyte", np.arange(n_train) % 10)
    _write_idx_images(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, size=(n_test, 28, 28)))
    _write_idx_labels(raw / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10)
    return train_images


def test_mnist_reads_idx_files(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    ds = load_mnist(tmp_path)
    assert ds.x_test.shape == (10, 1, 28, 28)
    assert len(ds.y_train) + len(ds.y_public) == 40
    assert ds.y_test.tolist() == list(range(10))


def test_fashion_mnist_reads_its_own_folder(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "FashionMNIST")
    assert load_fashion_mnist(tmp_path).x_train.shape[1:] == (1, 28, 28)
    with pytest.raises(DataError, match="MNIST"):
        load_mnist(tmp_path)


def test_missing_file_is_named_with_where_to_put_it(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing file t10k-labels-idx1-ubyte; put it at .*raw"):
        load_mnist(tmp_path)


def test_corrupt_idx_file_is_reported(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="not a valid idx file"):
        load_mnist(tmp_path)


def test_missing_data_dir_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir"):
        load_mnist(None)
    with pytest.raises(DataError, match="--data-dir"):
        load_mnist(tmp_path / "nope")


def _write_cifar(root: Path, n: int = 20) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "labels": (np.arange(n) % 10).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(entry))


def test_cifar10_reads_python_batches(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    ds = load_cifar10(tmp_path)
    assert ds.x_test.shape == (20, 3, 32, 32)
    assert len(ds.y_train) + len(ds.y_public) == 100
    assert ds.num_classes == 10


def test_cifar10_missing_batch_is_named(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(tmp_path)
