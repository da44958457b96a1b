"""What reading a data file gives (:class:`FileData`) and the helpers its readers share."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.data.base import Dataset, split_public_test
from fedge.data.preprocessing import Preprocessing
from fedge.errors import DataError

if TYPE_CHECKING:
    import pandas

__all__ = [
    "FileData",
    "block_size",
    "encode_labels",
    "file_data",
    "numeric_targets",
    "one_line",
    "shuffled_split",
    "string_groups",
]


@dataclass(frozen=True)
class FileData:
    """What :func:`read_data` read: the splits, how a raw input becomes a model input, the
    natural group of each training sample (``None`` without a group column) and class names."""

    dataset: Dataset
    preprocessing: Preprocessing
    groups_train: np.ndarray | None
    label_names: list[str]


def one_line(err: BaseException) -> str:
    """An exception's message on one line (pandas and Pillow messages span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def _require_values(path: Path, column: "pandas.Series", role: str) -> None:
    """:class:`DataError` naming the first row where ``column`` (the ``role`` column) is empty."""
    missing = column.isna().to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0]) + 1
        raise DataError(
            f"{path}: {role} column {column.name!r} is empty in {int(missing.sum())} rows "
            f"(first: data row {first})"
        )


def encode_labels(path: Path, column: "pandas.Series") -> tuple[np.ndarray, list[Any]]:
    """Class ids (in sorted order of the values) and the sorted class values of ``column``."""
    _require_values(path, column, "label")
    values = column.unique().tolist()
    try:
        classes = sorted(values)
    except TypeError:  # numbers and text mixed in one column: order by the text
        classes = sorted(values, key=str)
    if len(classes) < 2:
        raise DataError(
            f"{path}: label column {column.name!r} has one class ({classes[0]!r}); "
            "a classifier needs at least two"
        )
    index = {value: i for i, value in enumerate(classes)}
    return np.array([index[v] for v in column.tolist()], dtype=np.int64), classes


def numeric_targets(
    path: Path, column: "pandas.Series", train: np.ndarray
) -> tuple[np.ndarray, dict[str, float]]:
    """A regression target column standardised with its training rows' (``train``) mean and
    std: float32 targets, and ``{"mean", "std"}`` that turn predictions back into its units."""
    import pandas as pd

    _require_values(path, column, "label")
    numbers = pd.to_numeric(column, errors="coerce")
    bad = numbers.isna().to_numpy() | ~np.isfinite(numbers.to_numpy(dtype=np.float64))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: label column {column.name!r} must hold numbers for regression; data row "
            f"{first + 1} has {column.iloc[first]!r}"
        )
    values = numbers.to_numpy(dtype=np.float64)
    mean, std = float(values[train].mean()), float(values[train].std())
    std = std if std > 0 else 1.0
    return ((values - mean) / std).astype(np.float32), {"mean": mean, "std": std}


def string_groups(path: Path, column: "pandas.Series") -> np.ndarray:
    """The group column as strings; a row without a group is an error."""
    _require_values(path, column, "group")
    return np.array([str(v) for v in column.tolist()], dtype=str)


def shuffled_split(
    path: Path, samples: int, seed: int, test_fraction: float, public_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, public, test) sample indices from one seeded shuffle."""
    test_size = block_size(samples, test_fraction)
    public_size = block_size(samples, public_fraction)
    if samples - test_size - public_size < 2:
        raise DataError(
            f"{path}: {samples} samples are too few to split into train, public and test"
        )
    index = np.arange(samples)
    (train, _), (public, _), (test, _) = split_public_test(
        index, index, test_size=test_size, public_size=public_size, split_seed=seed
    )
    return train, public, test


def block_size(samples: int, fraction: float) -> int:
    """How many of ``samples`` a split of ``fraction`` takes: at least one unless it is 0."""
    return max(1, round(samples * fraction)) if fraction > 0 else 0


def file_data(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    prep: Preprocessing,
    groups: np.ndarray | None,
    label_names: list[str],
) -> FileData:
    """The :class:`FileData` of samples ``x, y`` cut by index arrays ``(train, public, test)``."""
    train, public, test = splits
    groups_train = None if groups is None else groups[train]
    dataset = Dataset(
        name,
        x[train],
        y[train],
        x[test],
        y[test],
        x[public],
        y[public],
        max(len(label_names), 1),
        groups_train=groups_train,
    )
    return FileData(dataset, prep, groups_train, list(label_names))
