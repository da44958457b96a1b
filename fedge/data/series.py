"""A sensor time series in a table, cut into windows for a 1D-CNN, an LSTM or an autoencoder.

Rows are readings in time order; every column but the label and the group is a numeric channel.
Each group (a machine, a recording) is cut on its own, so no window crosses two groups, and in
time order: its last windows are the test split, the ones before them the public split, and the
windows that would share a row with the next block are dropped, so no test window overlaps a
training window. A window's label is its last row's, or for 0/1 anomaly labels the largest in it.
Channels are normalised with the mean and std of the training windows only.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.data.filedata import FileData, block_size, encode_labels, file_data, string_groups
from fedge.data.preprocessing import Preprocessing
from fedge.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas

__all__ = ["series_data"]


def series_data(
    path: Path,
    frame: "pandas.DataFrame",
    label: str,
    group: str | None,
    window: int,
    stride: int,
    test_fraction: float,
    public_fraction: float,
) -> FileData:
    """Windows of ``window`` rows every ``stride`` rows of ``frame`` (read from ``path``)."""
    channels = [c for c in frame.columns if c not in (label, group)]
    if not channels:
        raise DataError(f"{path}: no sensor channel columns besides {label!r} and {group!r}")
    values = np.stack([_channel(path, frame[name]) for name in channels], axis=1)
    labelled = label in frame.columns
    row_labels, classes = (
        encode_labels(path, frame[label])
        if labelled
        else (np.zeros(len(frame), dtype=np.int64), [])
    )
    anomaly = labelled and all(_is_number(c) and c in (0, 1) for c in classes)
    groups = string_groups(path, frame[group]) if group is not None else None
    names = np.unique(groups) if groups is not None else np.array([""])
    parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[], [], []]
    for name in map(str, names):
        rows = np.arange(len(frame)) if groups is None else np.flatnonzero(groups == name)
        where = f"the series of group {name!r}" if groups is not None else "the series"
        if len(rows) < window:
            raise ConfigError(
                "--window", window, f"is longer than {where} in {path} ({len(rows)} rows)"
            )
        starts = np.arange(0, len(rows) - window + 1, stride)
        blocks = _time_blocks(starts, window, test_fraction, public_fraction)
        if len(blocks[0]) == 0:
            raise DataError(
                f"{path}: {where} gives {len(starts)} windows of {window} rows, too few for "
                "separate train, public and test blocks; use a shorter --window"
            )
        for split, picked in zip(parts, blocks, strict=True):
            cut = rows[starts[picked][:, None] + np.arange(window)]  # (windows, window) row ids
            window_labels = row_labels[cut].max(axis=1) if anomaly else row_labels[cut[:, -1]]
            split.append((values[cut], window_labels, np.full(len(cut), name)))
    pieces = [piece for split in parts for piece in split]  # train, then public, then test
    raw, y, window_groups = (np.concatenate([p[i] for p in pieces]) for i in range(3))
    sizes = [sum(len(piece[1]) for piece in split) for split in parts]
    train_raw = raw[: sizes[0]].astype(np.float64)
    std = train_raw.std(axis=(0, 1))
    spec = {
        "channels": channels,
        "window": window,
        "stride": stride,
        "mean": train_raw.mean(axis=(0, 1)).tolist(),
        "std": np.where(std > 0, std, 1.0).tolist(),
        "label": label if labelled else None,
        "window_label": "max" if anomaly else "last",
        "classes": [str(c) for c in classes],
    }
    prep = Preprocessing("series", spec)
    bounds = np.cumsum([0, *sizes])
    train, public, test = (np.arange(bounds[i], bounds[i + 1]) for i in range(3))
    return file_data(
        path.stem,
        prep.transform(raw),
        y,
        (train, public, test),
        prep,
        None if groups is None else window_groups,
        spec["classes"],
    )


def _channel(path: Path, column: "pandas.Series") -> np.ndarray:
    import pandas as pd

    if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
        example = column.dropna().iloc[0] if column.notna().any() else None
        raise DataError(
            f"{path}: column {column.name!r} is not numeric (e.g. {example!r}); every column "
            "of a series but the label and the group is a sensor channel"
        )
    values = column.to_numpy(dtype=np.float32, na_value=np.nan)
    missing = np.isnan(values)
    if missing.any():
        first = int(np.flatnonzero(missing)[0]) + 1
        raise DataError(
            f"{path}: channel {column.name!r} has no value in {int(missing.sum())} rows "
            f"(first: data row {first}); fill or drop them"
        )
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number)


def _time_blocks(
    starts: np.ndarray, window: int, test_fraction: float, public_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window indices of (train, public, test): test last, public before it, train first; a
    window that would share a row with the block after it is left out."""
    count = len(starts)
    test = np.arange(count - block_size(count, test_fraction), count)
    end = starts[test[0]] if len(test) else np.inf
    before_test = np.flatnonzero(starts + window <= end)
    public_size = block_size(count, public_fraction)
    public = before_test[len(before_test) - public_size :] if public_size else before_test[:0]
    end = starts[public[0]] if len(public) else end
    train = np.flatnonzero(starts + window <= end)
    return train, public, test
