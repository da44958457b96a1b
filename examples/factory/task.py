"""Flag anomalies in a sensor series: the fedge task of the factory example.

The data is one labelled series of the UCR anomaly archive (KDD-TSAD 135, InternalBleeding16,
see data/NOTICE.md): 7,501 readings of one sensor. ``*_TRAIN.csv`` holds its first 1,200
readings, all normal; ``*_TEST.csv`` holds the whole series with ``is_anomaly`` marking the one
labelled anomaly (12 readings). The test windows are those of the readings after the first
1,200, so no test window shares a reading with training.

Three machines each hold a contiguous stretch of the normal readings (readings 0-366, 367-733,
734-1099). The site keeps a reference recording of normal operation, the public split a
release's int8 ranges are calibrated on: here the whole normal series, since this example has
one sensor's readings only (a stretch short of the series' highest beats would clip them in
int8); it is never scored. ``--partition by:machine`` makes each machine one client. A reading
becomes a model input as a window of 64 readings (every 4 readings in training and testing),
standardised with the normal readings' mean and standard deviation; the dataset carries that
as its preprocessing, so a release takes raw windows (64 rows of a ``value`` column, as in the
CSV files) on a device. A small convolutional autoencoder reconstructs each window; a window
whose error is more than three standard deviations above the mean error of the normal training
windows, on a log scale, is flagged (``threshold_sigmas=3``). A test window is labelled
anomalous when it holds at least one anomalous reading.
"""

import csv
from pathlib import Path

import numpy as np
from torch import nn

from fedge.data import Dataset, Preprocessing
from fedge.errors import DataError
from fedge.tasks import Task

__all__ = [
    "CLASSES",
    "MACHINES",
    "STRIDE",
    "TASK",
    "WINDOW",
    "build_model",
    "load_series",
    "read_series",
]

DATA = Path(__file__).parent / "data"
SERIES = "135_UCR_Anomaly_InternalBleeding16"
WINDOW, STRIDE = 64, 4
#: Each machine's readings (start, end) of the normal training series, and the site's own.
MACHINES = {"machine-1": (0, 367), "machine-2": (367, 734), "machine-3": (734, 1100)}
#: The site's reference recording of normal operation: the whole normal series.
REFERENCE = (0, 1200)
#: A window's flag: 0 normal, 1 anomaly.
CLASSES = ("normal", "anomaly")


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A ``timestamp,value,is_anomaly`` CSV: the values (float32) and labels (int64)."""
    values, labels = [], []
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            try:
                values.append(float(row["value"]))
                labels.append(int(row["is_anomaly"]))
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(f"{path}: row {row}: {err}") from None
    return np.asarray(values, dtype=np.float32), np.asarray(labels, dtype=np.int64)


def windows(
    values: np.ndarray, labels: np.ndarray, start: int, end: int
) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``(N, 1, WINDOW)`` of ``values[start:end]`` every ``STRIDE`` readings, each
    labelled 1 when it holds an anomalous reading."""
    starts = np.arange(start, end - WINDOW + 1, STRIDE)
    x = np.stack([values[s : s + WINDOW] for s in starts])[:, None, :]
    y = np.asarray([labels[s : s + WINDOW].max() for s in starts], dtype=np.int64)
    return x.astype(np.float32), y


def build_model(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A convolutional autoencoder (421 parameters): two convolutions down to 4 channels at
    half the length, two back up; it reconstructs its ``(1, WINDOW)`` input."""
    channels = input_shape[0]
    return nn.Sequential(
        nn.Conv1d(channels, 8, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(8, 4, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.Upsample(scale_factor=2),
        nn.Conv1d(4, 8, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.Conv1d(8, channels, kernel_size=5, padding=2),
    )


def load_series() -> Dataset:
    """The machines' training windows, the site's reference windows and the test windows."""
    normal, normal_labels = read_series(DATA / f"{SERIES}_TRAIN.csv")
    series, labels = read_series(DATA / f"{SERIES}_TEST.csv")
    if normal_labels.any() or not np.array_equal(series[: len(normal)], normal):
        raise DataError(f"{DATA}: the TEST series must start with the normal TRAIN series")
    mean, std = float(normal.mean()), float(normal.std())
    # A raw window on a device: WINDOW rows of the CSV's ``value`` column, standardised alike.
    spec = {"channels": ["value"], "window": WINDOW, "stride": STRIDE, "mean": [mean], "std": [std]}
    series = (series - mean) / std
    parts = {name: windows(series, labels, *span) for name, span in MACHINES.items()}
    x_public, y_public = windows(series, labels, *REFERENCE)
    x_test, y_test = windows(series, labels, len(normal), len(series))
    return Dataset(
        name="internal-bleeding",
        x_train=np.concatenate([x for x, _ in parts.values()]),
        y_train=np.concatenate([y for _, y in parts.values()]),
        x_test=x_test,
        y_test=y_test,
        x_public=x_public,
        y_public=y_public,
        num_classes=2,
        groups_train=np.concatenate([[name] * len(y) for name, (_, y) in parts.items()]),
        preprocessing=Preprocessing(
            "series", {**spec, "label": "is_anomaly", "window_label": "max", "classes": CLASSES}
        ).to_json(),
        label_names=CLASSES,
    )


TASK = Task(
    name="factory-anomaly",
    model=build_model,
    data=load_series,
    kind="anomaly",
    threshold_sigmas=3.0,
)
