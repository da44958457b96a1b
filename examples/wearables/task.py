"""Activities from a smartwatch: the fedge task of the wearables example.

The data is BasicMotions (see data/NOTICE.md): 10-second recordings of a smartwatch's 3-axis
accelerometer and 3-axis gyroscope at 10 Hz (6 channels x 100 steps), each labelled with the
activity: Standing, Running, Walking or Badminton. Its own split is kept: 40 recordings to
train on, 40 to test on.

BasicMotions does not say who wore the watch, so the training recordings are dealt out to four
wearers by activity: each wearer did three of the four activities (wearer-1 never played
badminton, wearer-2 never walked, wearer-3 never ran, wearer-4 never stood still), three
recordings each. One recording per activity stays with the server as the public split the
release is distilled and calibrated on. ``--partition by:wearer`` makes each wearer a client.
"""

from pathlib import Path

import numpy as np
from torch import Tensor, nn

from fedge.data import Dataset
from fedge.errors import DataError
from fedge.tasks import Task

__all__ = ["ACTIVITIES", "TASK", "WEARERS", "ActivityCNN", "build_model", "load_motions", "read_ts"]

DATA = Path(__file__).parent / "data"
ACTIVITIES = ("Standing", "Running", "Walking", "Badminton")
#: The activity each wearer never did (index into ACTIVITIES).
WEARERS = {"wearer-1": 3, "wearer-2": 2, "wearer-3": 1, "wearer-4": 0}
PUBLIC_PER_ACTIVITY = 1


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A ``.ts`` file of equal-length series: ``x`` (N, channels, length) float32, ``y`` the
    class names. Header lines start with ``#`` or ``@``; then one series per line, channels
    separated by ``:``, each a comma-separated list of values, the class label last."""
    series, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("#", "@")):
            continue
        *channels, label = line.split(":")
        try:
            series.append([[float(v) for v in channel.split(",")] for channel in channels])
        except ValueError as err:
            raise DataError(f"{path}:{number}: not a series of numbers: {err}") from None
        labels.append(label.strip())
    return np.asarray(series, dtype=np.float32), np.asarray(labels)


class ActivityCNN(nn.Module):
    """A 1D-CNN: two convolutions over time (16, 32 filters of width 5) with pooling, global
    average pooling, a linear head. About 3 k parameters: a few KiB at int8."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(channels, 16, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(16, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.head(self.features(x).flatten(1))
        return logits


def build_model(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The task's model for windows of ``input_shape`` (channels, steps)."""
    return ActivityCNN(input_shape[0], num_classes)


def load_motions() -> Dataset:
    """BasicMotions' train and test recordings, the train ones dealt out to the wearers;
    channels standardised with the training recordings' per-channel mean and std."""
    x_train, names_train = read_ts(DATA / "BasicMotions_TRAIN.ts")
    x_test, names_test = read_ts(DATA / "BasicMotions_TEST.ts")
    y_train, y_test = _class_ids(names_train), _class_ids(names_test)
    mean = x_train.mean(axis=(0, 2), keepdims=True)
    std = x_train.std(axis=(0, 2), keepdims=True)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    public, wearer = _deal(y_train)
    own = wearer != ""
    return Dataset(
        name="basic-motions",
        x_train=x_train[own],
        y_train=y_train[own],
        x_test=x_test,
        y_test=y_test,
        x_public=x_train[public],
        y_public=y_train[public],
        num_classes=len(ACTIVITIES),
        groups_train=wearer[own],
    )


def _class_ids(names: np.ndarray) -> np.ndarray:
    unknown = sorted(set(names) - set(ACTIVITIES))
    if unknown:
        raise DataError(f"BasicMotions: unknown activities {unknown}")
    return np.asarray([ACTIVITIES.index(n) for n in names], dtype=np.int64)


def _deal(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The public recordings (the first of each activity, in file order) and each other
    recording's wearer, round robin over the wearers who did that activity."""
    public = np.zeros(len(labels), dtype=bool)
    wearer = np.full(len(labels), "", dtype=object)
    for activity in range(len(ACTIVITIES)):
        rows = np.flatnonzero(labels == activity)
        public[rows[:PUBLIC_PER_ACTIVITY]] = True
        doers = [name for name, never in WEARERS.items() if never != activity]
        for i, row in enumerate(rows[PUBLIC_PER_ACTIVITY:]):
            wearer[row] = doers[i % len(doers)]
    return public, wearer.astype(str)


TASK = Task(name="basic-motions", model=build_model, data=load_motions)
