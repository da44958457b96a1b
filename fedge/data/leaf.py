"""Federated benchmarks a user already has on disk, with their natural per-writer partitions.

``--dataset leaf --data-dir DIR`` reads LEAF's JSON layout (FEMNIST, Shakespeare, Sent140):
``DIR/train/*.json`` and ``DIR/test/*.json``, each ``{"users": [...], "num_samples": [...],
"user_data": {user: {"x": [...], "y": [...]}}}``. Device ``i`` is the ``i``-th writer of the
train files (files in name order, users in file order). Samples become features as follows:
784 numbers are a 28x28 image (FEMNIST); a string is its characters' indices in LEAF's
80-character alphabet, the label the next character's (Shakespeare); a list whose last item is a
string is that text hashed into a 256-word bag of words (Sent140, labels 0/1); other numbers are
a feature vector.

``--dataset parquet-partitions --data-dir DIR`` reads Flower Datasets-style partitions:
``DIR/train/*.parquet``, one file per partition (a device) in name order, and
``DIR/test/*.parquet``; a ``label`` column, and either an ``image`` column (Hugging Face's
``{"bytes": PNG}`` struct) or numeric feature columns.

The test files form the test set, except a fixed fifth of it (at most 500 rows) that becomes the
server's public split (distillation, calibration): it is disjoint from every writer's training
data. Writers' samples are held in memory once loaded; a device is handed its own only.
"""

import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.data.population import PopulationDataset
from fedge.errors import DataError

__all__ = ["WriterPopulation", "load_leaf", "load_parquet_partitions"]

#: LEAF's Shakespeare alphabet (its ``language_utils.ALL_LETTERS``).
LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
_HASHED_WORDS = 256
_PUBLIC_SHARE, _PUBLIC_MAX = 0.2, 500


@dataclass(frozen=True)
class WriterPopulation:
    """Devices that are a benchmark's writers: device ``i`` holds writer ``i``'s samples."""

    writers: tuple[str, ...]
    samples: tuple[tuple[np.ndarray, np.ndarray], ...]
    images: bool

    @property
    def max_devices(self) -> int | None:
        """One device per writer."""
        return len(self.writers)

    @property
    def default_model(self) -> str:
        """The small CNN for images, an MLP otherwise."""
        return "cnn-small" if self.images else "mlp"

    def device_data(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        """Writer ``device``'s samples."""
        if not 0 <= device < len(self.writers):
            raise DataError(f"device {device} is not one of the {len(self.writers)} writers")
        return self.samples[device]


def load_leaf(data_dir: Path | None) -> PopulationDataset:
    """A LEAF directory (``train/``, ``test/`` of JSON files) as a population of writers."""
    root = _root(data_dir, "leaf")
    train = [_leaf_users(path) for path in _files(root / "train", "json")]
    test = [_leaf_users(path) for path in _files(root / "test", "json")]
    writers = [(user, x, y) for users in train for user, x, y in users]
    test_x = np.concatenate([x for users in test for _, x, _ in users])
    test_y = np.concatenate([y for users in test for _, _, y in users])
    return _population_dataset("leaf", writers, test_x, test_y)


def load_parquet_partitions(data_dir: Path | None) -> PopulationDataset:
    """Flower Datasets-style parquet partitions (``train/``, ``test/``) as a population."""
    root = _root(data_dir, "parquet-partitions")
    writers = [(path.stem, *_parquet_table(path)) for path in _files(root / "train", "parquet")]
    tests = [_parquet_table(path) for path in _files(root / "test", "parquet")]
    test_x = np.concatenate([x for x, _ in tests])
    test_y = np.concatenate([y for _, y in tests])
    return _population_dataset("parquet-partitions", writers, test_x, test_y)


def _root(data_dir: Path | None, name: str) -> Path:
    if data_dir is None:
        raise DataError(f"dataset {name} needs --data-dir DIR (with train/ and test/ in it)")
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory")
    return data_dir


def _files(folder: Path, suffix: str) -> list[Path]:
    files = sorted(folder.glob(f"*.{suffix}"))
    if not files:
        raise DataError(f"{folder} holds no .{suffix} files")
    return files


def _leaf_users(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    try:
        document = json.loads(path.read_text())
        users, data = document["users"], document["user_data"]
        return [(str(u), *_leaf_samples(data[u]["x"], data[u]["y"])) for u in users]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path} is not a LEAF file: {type(err).__name__}: {err}") from err


def _leaf_samples(xs: list[Any], ys: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} samples but {len(ys)} labels")
    first = xs[0] if xs else []
    if isinstance(first, str):  # Shakespeare: the next character after 80 characters
        x = np.array([[LETTERS.find(c) for c in s] for s in xs], dtype=np.float32)
        y = np.array([LETTERS.find(str(c)) for c in ys], dtype=np.int64)
        return x, y
    if isinstance(first, list) and first and isinstance(first[-1], str):  # Sent140: a tweet
        return np.stack([_bag_of_words(str(r[-1])) for r in xs]), _labels(ys)
    x = np.asarray(xs, dtype=np.float32)
    if x.ndim == 2 and x.shape[1] == 28 * 28:  # FEMNIST
        x = x.reshape(-1, 1, 28, 28)
    return x, _labels(ys)


def _labels(ys: list[Any]) -> np.ndarray:
    return np.asarray([int(float(v)) for v in ys], dtype=np.int64)


def _bag_of_words(text: str) -> np.ndarray:
    counts = np.zeros(_HASHED_WORDS, dtype=np.float32)
    for word in text.lower().split():
        counts[zlib.crc32(word.encode()) % _HASHED_WORDS] += 1.0
    return counts


def _parquet_table(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path).to_pandas()
    except Exception as err:  # pyarrow raises several types for a bad file
        raise DataError(f"{path} is not a parquet file: {err}") from err
    if "label" not in table.columns:
        raise DataError(f"{path} has no 'label' column (columns: {', '.join(table.columns)})")
    y = table["label"].to_numpy().astype(np.int64)
    if "image" in table.columns:
        return np.stack([_image(cell) for cell in table["image"]]), y
    numeric = table.drop(columns=["label"]).select_dtypes("number")
    if numeric.shape[1] == 0:
        raise DataError(f"{path} has no image column and no numeric feature columns")
    return numeric.to_numpy(dtype=np.float32), y


def _image(cell: Any) -> np.ndarray:
    from PIL import Image

    raw = cell["bytes"] if isinstance(cell, dict) else cell
    pixels = np.asarray(Image.open(io.BytesIO(raw)), dtype=np.float32) / 255.0
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _population_dataset(
    name: str,
    writers: list[tuple[str, np.ndarray, np.ndarray]],
    test_x: np.ndarray,
    test_y: np.ndarray,
) -> PopulationDataset:
    if not writers:
        raise DataError(f"dataset {name}: the train files name no writers")
    classes = int(max(max(int(y.max(initial=0)) for _, _, y in writers), test_y.max(initial=0)))
    order = np.random.default_rng(0).permutation(len(test_y))
    public = order[: min(_PUBLIC_MAX, int(len(order) * _PUBLIC_SHARE))]
    held = order[len(public) :]
    feature_shape = writers[0][1].shape[1:]
    population = WriterPopulation(
        writers=tuple(w for w, _, _ in writers),
        samples=tuple((x, y) for _, x, y in writers),
        images=len(feature_shape) == 3,
    )
    return PopulationDataset(
        name=name,
        x_train=np.zeros((0, *feature_shape), dtype=np.float32),
        y_train=np.zeros(0, dtype=np.int64),
        x_test=test_x[np.sort(held)],
        y_test=test_y[np.sort(held)],
        x_public=test_x[np.sort(public)],
        y_public=test_y[np.sort(public)],
        num_classes=classes + 1,
        population=population,
    )
