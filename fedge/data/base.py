"""The in-memory dataset type every loader returns."""

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Dataset", "split_public_test"]


@dataclass(frozen=True)
class Dataset:
    """A dataset ready for federated training.

    ``x_train``/``y_train`` are what the partitioner hands to clients. ``x_public``/``y_public``
    is the server-held public split, disjoint from every client, used for distillation and
    calibration. ``x_test``/``y_test`` is the held-out test set for centralized evaluation.
    Features are float32 (``N, C, H, W`` for images, ``N, F`` for tables, ``N, C, T`` for sensor
    windows); labels are int64. ``groups_train``, when the data has a natural partition (a
    hospital, a machine), holds each training sample's group as a string; ``by:COLUMN``
    partitioning splits on it.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_public: np.ndarray
    y_public: np.ndarray
    num_classes: int
    groups_train: np.ndarray | None = None
    #: How a raw input (a CSV row, a window of readings, an image) becomes a sample, as the
    #: JSON of a :class:`~fedge.data.preprocessing.Preprocessing`; ``None``: samples are raw.
    preprocessing: dict[str, Any] | None = None
    #: Class names, index = label id (empty: the ids are the names).
    label_names: tuple[str, ...] = ()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch axis."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        """Whether samples are images (``C, H, W``) rather than feature vectors."""
        return len(self.input_shape) == 3


def split_public_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    test_size: int,
    public_size: int,
    split_seed: int = 0,
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Shuffle once with a fixed seed and cut (train, public, test) splits.

    The split seed is fixed and independent of the run seed so that the held-out test set is
    the same for every run of a dataset.
    """
    order = np.random.default_rng(split_seed).permutation(len(y))
    test_idx = order[:test_size]
    public_idx = order[test_size : test_size + public_size]
    train_idx = order[test_size + public_size :]
    return (
        (x[train_idx], y[train_idx]),
        (x[public_idx], y[public_idx]),
        (x[test_idx], y[test_idx]),
    )
