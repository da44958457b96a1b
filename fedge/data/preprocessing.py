"""How a raw input becomes a model input: a JSON spec fitted on training data, applied with numpy.

:func:`fedge.data.files.read_data` fits a :class:`Preprocessing` on the training split only (a
table's per-column medians, means, standard deviations and categories; a series' window and
per-channel statistics; an image size) and builds every split through its
:meth:`~Preprocessing.transform`, so a device that applies the same spec to a CSV row, a window of
sensor readings or an image computes exactly the model input training saw. The spec travels as
JSON and ``transform`` needs numpy only (Pillow only to decode or resize an image), never pandas.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import DataError

__all__ = ["KINDS", "Preprocessing", "category_of", "is_missing"]

#: The kinds of raw input a spec describes.
KINDS = ("table", "image", "series", "array")


@dataclass(frozen=True)
class Preprocessing:
    """A JSON-serialisable spec of how a raw input becomes a float32 model input.

    ``spec`` by ``kind``:

    - ``table``: ``columns`` in model order, each ``{"name", "type": "numeric", "median", "mean",
      "std"}`` (missing -> median, then ``(v - mean) / std``) or ``{"name", "type":
      "categorical", "categories"}`` (one-hot; missing or unknown -> all zeros); ``label`` and
      ``classes`` (class names, index = label id);
    - ``series``: ``channels`` (column names), ``window``, ``stride``, per-channel ``mean`` and
      ``std``, ``label`` and ``classes``; a raw window is ``window`` rows of the channels;
    - ``image``: ``size`` ``[H, W]``, ``channels`` (1 or 3), ``scale`` (pixel value of 1.0) and
      ``classes``;
    - ``array``: ``shape`` of one sample, used as it is.

    A regression task's spec also has ``target``: the ``mean`` and ``std`` of the training
    targets; the model predicts ``(target - mean) / std`` (:meth:`to_target_units` undoes it).
    """

    kind: str
    spec: dict[str, Any]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"preprocessing kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def to_json(self) -> dict[str, Any]:
        """``{"kind", "spec"}``, plain JSON types only."""
        return {"kind": self.kind, "spec": _plain(self.spec)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Preprocessing":
        """The spec :meth:`to_json` wrote; :class:`DataError` names what is malformed."""
        if not isinstance(data, Mapping) or not isinstance(data.get("spec"), Mapping):
            raise DataError("preprocessing spec: expected an object with 'kind' and 'spec'")
        return cls(str(data.get("kind")), _plain(dict(data["spec"])))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The model input shape of one sample, without the batch axis."""
        spec = self.spec
        if self.kind == "table":
            return (sum(_width(col) for col in spec["columns"]),)
        if self.kind == "series":
            return (len(spec["channels"]), int(spec["window"]))
        if self.kind == "image":
            return (int(spec["channels"]), *(int(d) for d in spec["size"]))
        return tuple(int(d) for d in spec["shape"])

    @property
    def feature_names(self) -> list[str]:
        """One name per model input feature of a table (``age``, ``sex=F``), per channel of a
        series; empty for images and arrays."""
        if self.kind == "series":
            return [str(name) for name in self.spec["channels"]]
        if self.kind != "table":
            return []
        names: list[str] = []
        for col in self.spec["columns"]:
            if col["type"] == "numeric":
                names.append(col["name"])
            else:
                names.extend(f"{col['name']}={cat}" for cat in col["categories"])
        return names

    @property
    def target_scale(self) -> tuple[float, float] | None:
        """A regression target's ``(mean, std)``; ``None`` for a task with classes."""
        target = self.spec.get("target")
        return (float(target["mean"]), float(target["std"])) if target else None

    def to_target_units(self, outputs: np.ndarray) -> np.ndarray:
        """A regression model's (standardised) outputs in the target's units, one per sample."""
        mean, std = self.target_scale or (0.0, 1.0)
        return np.asarray(outputs, dtype=np.float64).reshape(-1) * std + mean

    def transform(self, raw: Any) -> np.ndarray:
        """Raw input -> float32 model input with a batch axis.

        A table takes a row (a dict), a list of rows or a pandas DataFrame; values may be numbers
        or the strings a CSV reader gives. A series takes one window (``window`` rows by the
        channels, as an array or a list of row dicts) or a batch of them. An image takes an
        ``H, W[, C]`` array of 0..255 pixels, a batch of them, a Pillow image or an image file.
        """
        if self.kind == "table":
            return _table(self.spec, raw)
        if self.kind == "series":
            return _series(self.spec, raw)
        if self.kind == "image":
            return _image(self.spec, raw)
        return _array(self.spec, raw)


def is_missing(value: Any) -> bool:
    """Whether a raw value means "no value": None, NaN or an empty string."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(value != value)  # NaN of any float type
    except (TypeError, ValueError):
        return False


def category_of(value: Any) -> str:
    """The category a raw categorical value stands for (``True`` and ``"True"`` alike)."""
    return str(value)


def _width(col: Mapping[str, Any]) -> int:
    return 1 if col["type"] == "numeric" else len(col["categories"])


def _table(spec: Mapping[str, Any], raw: Any) -> np.ndarray:
    column = _column_reader(raw)
    blocks = []
    for col in spec["columns"]:
        values = column(col["name"])
        if col["type"] == "numeric":
            numbers = _as_float(values, col["name"])
            numbers = np.where(np.isnan(numbers), float(col["median"]), numbers)
            blocks.append(((numbers - float(col["mean"])) / float(col["std"]))[:, None])
        else:
            blocks.append(_one_hot(values, col["categories"]))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def _column_reader(raw: Any) -> Callable[[str], Sequence[Any]]:
    if isinstance(raw, Mapping):
        raw = [raw]
    if hasattr(raw, "columns") and hasattr(raw, "to_numpy"):  # a pandas DataFrame
        frame = raw

        def from_frame(name: str) -> Sequence[Any]:
            if name not in frame.columns:
                raise DataError(f"input has no column {name!r}; columns: {_names(frame.columns)}")
            return list(frame[name].to_numpy(dtype=object, na_value=None))

        return from_frame
    if isinstance(raw, Sequence) and all(isinstance(row, Mapping) for row in raw):
        rows = raw

        def from_rows(name: str) -> Sequence[Any]:
            if rows and not any(name in row for row in rows):
                raise DataError(f"input has no column {name!r}; columns: {_names(rows[0])}")
            return [row.get(name) for row in rows]

        return from_rows
    raise DataError(
        f"a table input is a dict, a list of dicts or a DataFrame, not {type(raw).__name__}"
    )


def _names(columns: Any) -> str:
    return ", ".join(str(c) for c in columns)


def _as_float(values: Sequence[Any], name: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64).reshape(len(values))
    except (TypeError, ValueError):
        pass
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if is_missing(value):
            out[i] = math.nan
            continue
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            raise DataError(f"column {name!r}: {value!r} is not a number") from None
    return out


def _one_hot(values: Sequence[Any], categories: Sequence[str]) -> np.ndarray:
    index = {category: i for i, category in enumerate(categories)}
    out = np.zeros((len(values), len(categories)), dtype=np.float32)
    for row, value in enumerate(values):
        if not is_missing(value):
            column = index.get(category_of(value))
            if column is not None:
                out[row, column] = 1.0
    return out


def _series(spec: Mapping[str, Any], raw: Any) -> np.ndarray:
    channels, window = list(spec["channels"]), int(spec["window"])
    if isinstance(raw, Sequence) and raw and all(isinstance(row, Mapping) for row in raw):
        raw = np.stack([_as_float([row.get(c) for row in raw], c) for c in channels], axis=1)
    x = np.asarray(raw, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (window, len(channels)):
        raise DataError(
            f"a series input is {window} rows of {len(channels)} channels "
            f"({_names(channels)}); got shape {x.shape}"
        )
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(0, 2, 1), dtype=np.float32)


def _image(spec: Mapping[str, Any], raw: Any) -> np.ndarray:
    height, width = (int(d) for d in spec["size"])
    channels = int(spec["channels"])
    if isinstance(raw, str | Path):
        from PIL import Image

        with Image.open(raw) as opened:
            raw = opened.convert("L" if channels == 1 else "RGB")
    if hasattr(raw, "convert") and hasattr(raw, "resize"):  # a Pillow image
        raw = np.asarray(raw.convert("L" if channels == 1 else "RGB").resize((width, height)))
    x = np.asarray(raw, dtype=np.float32)
    if x.shape[-2:] == (height, width):
        x = x[..., None]  # H, W or N, H, W: one channel
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1:3] != (height, width):
        raise DataError(f"an image input is {height}x{width} pixels; got shape {x.shape}")
    x = x[..., :3]  # drop an alpha channel
    if channels == 1 and x.shape[-1] == 3:
        x = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None]  # Pillow's "L"
    elif channels == 3 and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    x = x / float(spec["scale"])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def _array(spec: Mapping[str, Any], raw: Any) -> np.ndarray:
    shape = tuple(int(d) for d in spec["shape"])
    x = np.asarray(raw, dtype=np.float32)
    if x.shape == shape:
        return x[None]
    if x.shape[1:] != shape:
        raise DataError(f"an input sample has shape {shape}; got shape {x.shape}")
    return x


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and tuples turned into JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
