"""Raw inputs on a device: a CSV row, a window of sensor readings, an image file, made model
inputs by the preprocessing spec the release's signed manifest carries.

A release of a task whose data fedge read (a table, a sensor series, an image folder) carries
its :class:`~fedge.data.preprocessing.Preprocessing` in the manifest's report; a device applies
it with numpy alone, so it needs neither torch, pandas nor the task's code. Without a spec,
inputs are model inputs already (``.npy``, ``.npz`` with ``x``, ``.json`` numbers).
"""

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from fedge.data.preprocessing import Preprocessing
from fedge.errors import DataError, FedgeError

__all__ = ["IMAGE_SUFFIXES", "raw_model_input", "read_input", "read_model_input"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_model_input(path: Path) -> np.ndarray:
    """An input that is a model input already, as float32; a clear error names a bad file."""
    try:
        if path.suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return np.asarray(data["x"], dtype=np.float32)
        if path.suffix == ".json":
            return np.asarray(json.loads(path.read_text()), dtype=np.float32)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FedgeError(f"input {path}: cannot read it: {err}") from err
    raise FedgeError(f"input {path}: use a .npy, .npz (with 'x') or .json file")


def read_input(path: Path, spec: dict[str, Any] | None) -> np.ndarray:
    """``path`` as a batch of model inputs: raw (a ``.csv`` of rows or of a window's readings,
    an image file, a ``.json`` row) through ``spec`` when the release has one."""
    if spec is None or path.suffix in (".npy", ".npz"):
        return read_model_input(path)
    preprocessing = Preprocessing.from_json(spec)
    try:
        if path.suffix == ".csv":
            return _csv_rows(preprocessing, path.read_text())
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return preprocessing.transform(path)
        if path.suffix == ".json":
            return preprocessing.transform(json.loads(path.read_text()))
    except DataError as err:
        raise DataError(f"input {path}: {err}") from None
    except (OSError, ValueError) as err:
        raise FedgeError(f"input {path}: cannot read it: {err}") from err
    kinds = {
        "table": "a .csv of rows or .json",
        "series": "a .csv window of readings",
        "image": "an image file",
        "array": ".npy",
    }
    raise FedgeError(f"input {path}: this model takes {kinds[preprocessing.kind]}")


def raw_model_input(raw: bytes, fmt: str, spec: dict[str, Any] | None) -> np.ndarray:
    """Raw bytes of a request (``csv`` text or an ``image`` file) as a batch of model inputs."""
    if spec is None:
        raise DataError("this release carries no preprocessing: send model inputs as a tensor")
    preprocessing = Preprocessing.from_json(spec)
    try:
        if fmt == "csv":
            return _csv_rows(preprocessing, raw.decode("utf-8"))
        if fmt == "image":
            from PIL import Image

            with Image.open(io.BytesIO(raw)) as image:
                image.load()
                return preprocessing.transform(image)
    except (OSError, ValueError) as err:
        raise DataError(f"raw input: cannot read it as {fmt}: {err}") from err
    raise DataError("raw input: give its format (csv or image)")


def _csv_rows(preprocessing: Preprocessing, text: str) -> np.ndarray:
    """CSV text (a header, then rows) through ``preprocessing``."""
    rows: list[dict[str, Any]] = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise DataError("holds no rows")
    return preprocessing.transform(rows)
