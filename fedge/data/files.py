"""Data without code: a CSV or Parquet table, a sensor series, an image folder or an ``.npz``.

:func:`read_data` looks at what a path is and returns the splits ready for training together with
the :class:`~fedge.data.preprocessing.Preprocessing` fitted on the training split only, which is
also what built every split (so a device applying it to raw inputs computes the same features).

- ``.csv`` / ``.parquet``: a table. ``label`` is the class column (ids in sorted order of the
  values), or with ``kind="regression"`` a numeric target, standardised with the training mean
  and std (the spec's ``target``); numeric columns are imputed with the training median and
  standardised with the training mean and std; text and boolean columns are one-hot on the
  training categories; a ``group`` column (a hospital, a machine) is kept out of the features
  and returned per training row. The split is a seeded shuffle.
- The same with ``window``: a sensor series, rows in time order, every other column a numeric
  channel. Windows of ``window`` rows every ``stride`` rows never cross a group; each group's last
  windows are the test split and the ones before them the public split, with the windows that
  would overlap the next block dropped, so no test window shares a row with a training window.
- A folder ``DIR/<class>/*.png|jpg|jpeg|bmp``: images at the first image's size, grayscale if
  every image is, else RGB, in ``[0, 1]``.
- ``.npz`` with ``x``, ``y`` and optionally ``groups``: used as they are.

Every problem is a one-line :class:`~fedge.errors.DataError` naming the file, the column and the
value (a :class:`~fedge.errors.ConfigError` when an option's value is wrong). Nothing is written.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.data.filedata import (
    FileData,
    encode_labels,
    file_data,
    numeric_targets,
    one_line,
    shuffled_split,
    string_groups,
)
from fedge.data.preprocessing import Preprocessing, category_of, is_missing
from fedge.data.series import series_data
from fedge.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas

__all__ = ["FileData", "read_data"]

#: A text column with more distinct values than this (or than half the rows) is not a category.
MAX_CATEGORIES = 50
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TABLES = (".csv", ".parquet")
_GRAY_MODES = {"1", "L", "LA"}


def read_data(
    path: Path | str,
    *,
    label: str = "label",
    group: str | None = None,
    window: int | None = None,
    stride: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    public_fraction: float = 0.1,
    kind: str = "classification",
) -> FileData:
    """Read a table, a sensor series (``window`` given), an image folder or an ``.npz``;
    ``kind="regression"`` reads a table's label column as a numeric target."""
    path = Path(path)
    _check_options(window, stride, test_fraction, public_fraction)
    if kind == "regression" and (window is not None or path.suffix.lower() not in TABLES):
        raise ConfigError(
            "--kind", kind, f"reads a CSV or Parquet table's numeric label column, not {path}"
        )
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    suffix = path.suffix.lower()
    is_table = path.is_file() and suffix in TABLES
    if window is not None and not is_table:
        raise ConfigError("--window", window, f"applies to a CSV or Parquet series, not {path}")
    fractions = (seed, test_fraction, public_fraction)
    if path.is_dir():
        return _read_image_folder(path, *fractions)
    if suffix == ".npz":
        return _read_npz(path, *fractions)
    if not is_table:
        raise DataError(
            f"{path}: cannot read {suffix or 'a file without a suffix'}; expected a .csv or "
            ".parquet table, an .npz with x and y, or a folder with one sub-folder per class"
        )
    if group is not None and group == label:
        raise ConfigError("--group", group, "is also the label column; name another column")
    frame = _read_frame(path)
    if group is not None:
        _require_column(path, frame, group, "group")
    if window is None:
        _require_column(path, frame, label, "label")
        regression = kind == "regression"
        return _table_data(path, frame, label, group, *fractions, regression=regression)
    return series_data(path, frame, label, group, window, stride or window, *fractions[1:])


def _check_options(
    window: int | None, stride: int | None, test_fraction: float, public_fraction: float
) -> None:
    if window is not None and window < 1:
        raise ConfigError("--window", window, "must be at least 1")
    if stride is not None and window is None:
        raise ConfigError("--stride", stride, "needs --window (it cuts a series into windows)")
    if stride is not None and stride < 1:
        raise ConfigError("--stride", stride, "must be at least 1")
    for option, value in (
        ("--test-fraction", test_fraction),
        ("--public-fraction", public_fraction),
    ):
        if not 0 <= value < 1:
            raise ConfigError(option, value, "must be in [0, 1)")
    if test_fraction + public_fraction >= 1:
        raise ConfigError(
            "--test-fraction",
            test_fraction,
            f"plus --public-fraction {public_fraction} leave no training data",
        )


def _read_frame(path: Path) -> "pandas.DataFrame":
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            # Python's own float parsing, so a device that reads the same text with the csv
            # module gets bit-identical model inputs.
            frame = pd.read_csv(path, float_precision="round_trip")
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
        raise DataError(f"{path}: not a readable {kind} table: {one_line(err)}") from None
    if len(frame) == 0:
        raise DataError(f"{path}: the table has a header but no rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _require_column(path: Path, frame: "pandas.DataFrame", name: str, role: str) -> None:
    if name not in frame.columns:
        raise DataError(
            f"{path}: no {role} column {name!r} (--{role}); columns: {', '.join(frame.columns)}"
        )


def _table_data(
    path: Path,
    frame: "pandas.DataFrame",
    label: str,
    group: str | None,
    seed: int,
    test_fraction: float,
    public_fraction: float,
    *,
    regression: bool = False,
) -> FileData:
    groups = string_groups(path, frame[group]) if group is not None else None
    features = [c for c in frame.columns if c not in (label, group)]
    if not features:
        raise DataError(f"{path}: no feature columns besides the label {label!r}")
    train, public, test = shuffled_split(path, len(frame), seed, test_fraction, public_fraction)
    fitted = frame.iloc[train]
    columns = [_fit_column(path, frame[name], fitted[name]) for name in features]
    spec: dict[str, Any] = {"columns": columns, "label": label}
    if regression:
        labels, target = numeric_targets(path, frame[label], train)
        names: list[str] = []
        spec.update(classes=names, target=target)
    else:
        labels, classes = encode_labels(path, frame[label])
        names = [str(c) for c in classes]
        spec.update(classes=names)
    prep = Preprocessing("table", spec)
    x = prep.transform(frame[features])
    return file_data(path.stem, x, labels, (train, public, test), prep, groups, names)


def _fit_column(path: Path, column: "pandas.Series", train: "pandas.Series") -> dict[str, Any]:
    import pandas as pd

    name = str(column.name)
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = train.to_numpy(dtype=np.float64, na_value=np.nan)
        seen = values[~np.isnan(values)]
        if len(seen) == 0:
            return {"name": name, "type": "numeric", "median": 0.0, "mean": 0.0, "std": 1.0}
        std = float(seen.std())
        return {
            "name": name,
            "type": "numeric",
            "median": float(np.median(seen)),
            "mean": float(seen.mean()),
            "std": std if std > 0 else 1.0,
        }
    _check_encodable(path, column)
    categories = {category_of(v) for v in train.tolist() if not is_missing(v)}
    return {"name": name, "type": "categorical", "categories": sorted(categories)}


def _check_encodable(path: Path, column: "pandas.Series") -> None:
    import pandas as pd

    distinct = int(column.nunique(dropna=True))
    if distinct <= MAX_CATEGORIES and distinct <= len(column) / 2:
        return
    numbers = pd.to_numeric(column, errors="coerce")
    not_numbers = column[numbers.isna() & column.notna()]
    hint = "drop it or turn it into numbers"
    if numbers.notna().sum() > len(not_numbers):  # numbers with a few placeholders such as "?"
        hint = (
            f"it holds numbers and {not_numbers.nunique()} other value(s) such as "
            f"{not_numbers.iloc[0]!r} in {len(not_numbers)} rows; leave missing values empty"
        )
    raise DataError(
        f"{path}: column {column.name!r} is text with {distinct} distinct values in "
        f"{len(column)} rows, too many to one-hot encode (at most {MAX_CATEGORIES} and at most "
        f"half the rows); {hint}"
    )


def _read_npz(path: Path, seed: int, test_fraction: float, public_fraction: float) -> FileData:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz archive: {one_line(err)}") from None
    for key in ("x", "y"):
        if key not in arrays:
            present = ", ".join(arrays) or "none"
            raise DataError(f"{path}: no array {key!r}; arrays: {present}")
    x, y = arrays["x"], arrays["y"]
    if x.ndim < 1 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: 'x' has shape {x.shape} but 'y' has shape {y.shape}")
    if not (np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.bool_)):
        raise DataError(f"{path}: 'x' must hold numbers; got {x.dtype}")
    if len(y) == 0:
        raise DataError(f"{path}: 'x' and 'y' hold no samples")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataError(f"{path}: 'y' must hold class ids 0, 1, ...; got {y.dtype} from {y.min()}")
    if len(np.unique(y)) < 2:
        raise DataError(f"{path}: 'y' has one class ({int(y[0])}); a classifier needs at least two")
    groups = arrays.get("groups")
    if groups is not None and groups.shape != y.shape:
        raise DataError(f"{path}: 'groups' has shape {groups.shape}, 'y' has {y.shape}")
    splits = shuffled_split(path, len(y), seed, test_fraction, public_fraction)
    prep = Preprocessing("array", {"shape": list(x.shape[1:])})
    names = [str(i) for i in range(int(y.max()) + 1)]
    group_names = None if groups is None else groups.astype(str)
    return file_data(
        path.stem, x.astype(np.float32), y.astype(np.int64), splits, prep, group_names, names
    )


def _read_image_folder(
    path: Path, seed: int, test_fraction: float, public_fraction: float
) -> FileData:
    classes = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        found = f"only {classes[0].name!r}" if classes else "none"
        raise DataError(
            f"{path}: needs one sub-folder of images per class, at least two; found {found}"
        )
    files: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        images = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"{folder}: no {', '.join(IMAGE_SUFFIXES)} images in this class")
        files += images
        labels += [label] * len(images)
    modes = [_image_header(f) for f in files]
    width, height = modes[0][1]
    gray = all(mode in _GRAY_MODES for mode, _ in modes)
    names = [folder.name for folder in classes]
    spec = {"size": [height, width], "channels": 1 if gray else 3, "scale": 255.0}
    prep = Preprocessing("image", {**spec, "classes": names})
    x = np.concatenate([_image_input(prep, f) for f in files])
    splits = shuffled_split(path, len(files), seed, test_fraction, public_fraction)
    y = np.asarray(labels, dtype=np.int64)
    return file_data(path.name, x, y, splits, prep, None, names)


def _image_header(file: Path) -> tuple[str, tuple[int, int]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return image.mode, image.size
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{file}: not a readable image: {one_line(err)}") from None


def _image_input(prep: Preprocessing, file: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(file) as image:
            return prep.transform(image)
    except OSError as err:
        raise DataError(f"{file}: not a readable image: {one_line(err)}") from None
