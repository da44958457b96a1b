"""read_data on real files written to tmp_path: tables, Parquet, sensor series, images, npz."""

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fedge.data import FileData, Preprocessing, parse_partition, partition_indices, read_data
from fedge.errors import ConfigError, DataError

SITES = ("cleveland", "hungary", "va")


def _patients(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """Records of three sites: numeric and categorical features, missing values, a string label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(55, 9, rows).round(1),
            "chol": rng.normal(240, 40, rows).round(0),
            "sex": rng.choice(["F", "M"], rows),
            "chest": rng.choice(["typical", "atypical", "none"], rows),
            "site": rng.choice(SITES, rows),
        }
    )
    logit = (frame["age"] - 55) / 9 + np.where(frame["chest"] == "typical", 1.5, -0.75)
    frame["diagnosis"] = np.where(logit + rng.normal(0, 0.7, rows) > 0, "disease", "healthy")
    frame.loc[rng.choice(rows, 25, replace=False), "chol"] = np.nan
    frame.loc[rng.choice(rows, 20, replace=False), "sex"] = None
    return frame


def _csv_rows(path: Path) -> list[dict[str, str]]:
    """The file as a device reads it: the csv module, every value a string, no pandas."""
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _row_index(features: np.ndarray) -> dict[bytes, int]:
    return {row.tobytes(): i for i, row in enumerate(features)}


def _rows_of(split: np.ndarray, index: dict[bytes, int]) -> np.ndarray:
    return np.array([index[row.tobytes()] for row in split])


@pytest.fixture
def patients_csv(tmp_path: Path) -> Path:
    path = tmp_path / "patients.csv"
    _patients().to_csv(path, index=False)
    return path


def _column(data: FileData, name: str) -> dict[str, Any]:
    return next(c for c in data.preprocessing.spec["columns"] if c["name"] == name)


def test_a_table_is_encoded_with_statistics_of_its_training_rows_only(patients_csv: Path) -> None:
    data = read_data(patients_csv, label="diagnosis", group="site", seed=3)
    ds, prep = data.dataset, data.preprocessing
    raw = _csv_rows(patients_csv)
    # every raw row, turned into features from strings by the spec alone, is one dataset row
    index = _row_index(prep.transform(raw))
    train, public, test = (_rows_of(x, index) for x in (ds.x_train, ds.x_public, ds.x_test))
    assert sorted([*train, *public, *test]) == list(range(len(raw)))
    assert (len(train), len(public), len(test)) == (168, 24, 48)

    frame = _patients()
    age = _column(data, "age")
    assert age["mean"] == pytest.approx(frame["age"].iloc[train].mean())
    assert age["mean"] != pytest.approx(frame["age"].mean(), abs=1e-9)
    assert age["std"] == pytest.approx(frame["age"].iloc[train].std(ddof=0))
    chol = _column(data, "chol")
    assert chol["median"] == pytest.approx(frame["chol"].iloc[train].median())
    missing = int(
        np.flatnonzero(frame["chol"].isna().to_numpy() & np.isin(np.arange(240), train))[0]
    )
    chol_at = prep.feature_names.index("chol")
    imputed = ds.x_train[list(train).index(missing), chol_at]
    assert imputed == pytest.approx((chol["median"] - chol["mean"]) / chol["std"], rel=1e-5)

    assert prep.feature_names == [
        "age", "chol", "sex=F", "sex=M", "chest=atypical", "chest=none", "chest=typical"
    ]  # fmt: skip
    assert ds.input_shape == (7,)
    sex = ds.x_train[:, 2:4]
    no_sex = frame["sex"].isna().to_numpy()[train]
    assert np.all(sex[no_sex] == 0) and np.all(sex[~no_sex].sum(axis=1) == 1)

    assert data.label_names == ["disease", "healthy"] and ds.num_classes == 2
    expected = (frame["diagnosis"] == "healthy").to_numpy().astype(np.int64)
    assert np.array_equal(ds.y_train, expected[train])
    assert np.array_equal(ds.y_test, expected[test])
    assert data.groups_train is not None
    assert list(data.groups_train) == list(frame["site"].iloc[train])
    assert ds.groups_train is data.groups_train


def test_a_row_from_a_device_needs_no_pandas_and_unknown_categories_are_zeros(
    patients_csv: Path,
) -> None:
    prep = read_data(patients_csv, label="diagnosis", group="site").preprocessing
    row = {"age": "61.5", "chol": "", "sex": "X", "chest": "typical", "site": "new"}
    (features,) = prep.transform(row)
    chol = next(c for c in prep.spec["columns"] if c["name"] == "chol")
    assert features[1] == pytest.approx((chol["median"] - chol["mean"]) / chol["std"], rel=1e-5)
    assert list(features[2:]) == [0, 0, 0, 0, 1]
    with pytest.raises(DataError, match="'age'"):
        prep.transform([{"chol": 200}])
    with pytest.raises(DataError, match="'age': 'old' is not a number"):
        prep.transform([{**row, "age": "old"}])


def test_a_device_without_pandas_or_pillow_applies_the_spec(patients_csv: Path) -> None:
    data = read_data(patients_csv, label="diagnosis", group="site")
    rows = _csv_rows(patients_csv)[:4]
    script = (
        "import json, sys\n"
        "sys.modules['pandas'] = sys.modules['PIL'] = None  # importing either now fails\n"
        "from fedge.data import Preprocessing\n"
        "spec, rows = json.loads(sys.stdin.read())\n"
        "print(json.dumps(Preprocessing.from_json(spec).transform(rows).tolist()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([data.preprocessing.to_json(), rows]),
        capture_output=True,
        text=True,
        check=True,
    )
    device = np.asarray(json.loads(out.stdout), dtype=np.float32)
    assert np.array_equal(device, data.preprocessing.transform(rows))


def test_the_spec_survives_json(patients_csv: Path) -> None:
    data = read_data(patients_csv, label="diagnosis", group="site")
    text = json.dumps(data.preprocessing.to_json())
    again = Preprocessing.from_json(json.loads(text))
    assert again == data.preprocessing
    rows = _csv_rows(patients_csv)[:5]
    assert np.array_equal(again.transform(rows), data.preprocessing.transform(rows))


def test_parquet_reads_like_csv(tmp_path: Path, patients_csv: Path) -> None:
    parquet = tmp_path / "patients.parquet"
    _patients().to_parquet(parquet)
    a = read_data(patients_csv, label="diagnosis", group="site")
    b = read_data(parquet, label="diagnosis", group="site")
    assert a.preprocessing == b.preprocessing and a.label_names == b.label_names
    for name in ("x_train", "y_train", "x_public", "y_public", "x_test", "y_test"):
        assert np.array_equal(getattr(a.dataset, name), getattr(b.dataset, name)), name
    assert b.groups_train is not None and a.groups_train is not None
    assert np.array_equal(a.groups_train, b.groups_train)


def test_by_site_gives_each_client_exactly_one_site(patients_csv: Path) -> None:
    data = read_data(patients_csv, label="diagnosis", group="site")
    spec = parse_partition("by:site")
    parts = partition_indices(data.dataset.y_train, 3, spec, groups=data.groups_train)
    assert data.groups_train is not None
    assert [sorted(set(data.groups_train[p])) for p in parts] == [[s] for s in sorted(SITES)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(data.dataset.y_train)))
    with pytest.raises(ConfigError, match="has 3 groups; run with --clients 3") as err:
        partition_indices(data.dataset.y_train, 4, spec, groups=data.groups_train)
    assert "--partition" in str(err.value)


def test_logistic_regression_on_the_encoded_table_keeps_the_signal(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    rows = 1200
    frame = _patients(rows, seed=7)
    path = tmp_path / "many.csv"
    frame.to_csv(path, index=False)
    data = read_data(path, label="diagnosis", group="site", seed=1)
    ds = data.dataset
    model = LogisticRegression(max_iter=1000).fit(ds.x_train, ds.y_train)
    accuracy = float((model.predict(ds.x_test) == ds.y_test).mean())
    # the noise-free rule that generated the labels, scored on every row: what the signal allows
    logit = (frame["age"] - 55) / 9 + np.where(frame["chest"] == "typical", 1.5, -0.75)
    rule = float(((logit > 0) == (frame["diagnosis"] == "disease")).mean())
    majority = float((frame["diagnosis"] == "disease").mean())
    assert accuracy > rule - 0.06
    assert accuracy > max(majority, 1 - majority) + 0.1


def _sensor_frame(rows_per_machine: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    machines = []
    for m, machine in enumerate(("press", "lathe")):
        t = np.arange(rows_per_machine)
        machines.append(
            pd.DataFrame(
                {
                    # the row's own id: machine * 10000 + row, to check where windows come from
                    "tick": (m + 1) * 10000 + t,
                    "vibration": rng.normal(m * 3.0, 1.0 + m, rows_per_machine),
                    "machine": machine,
                    "anomaly": (t % 40 >= 37).astype(int),
                }
            )
        )
    return pd.concat(machines, ignore_index=True)


def _ticks(data: FileData, x: np.ndarray) -> np.ndarray:
    spec = data.preprocessing.spec
    return np.rint(x[:, 0, :] * spec["std"][0] + spec["mean"][0]).astype(np.int64)


def test_sensor_windows_stay_in_a_group_and_test_windows_never_overlap_training(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sensors.csv"
    frame = _sensor_frame()
    frame.to_csv(path, index=False)
    data = read_data(path, label="anomaly", group="machine", window=20, stride=5)
    ds = data.dataset
    assert ds.x_train.shape[1:] == (2, 20) and ds.input_shape == (2, 20)
    train, public, test = (_ticks(data, x) for x in (ds.x_train, ds.x_public, ds.x_test))
    for ticks in (train, public, test):
        assert np.all(np.diff(ticks, axis=1) == 1)  # consecutive rows
        assert np.all(ticks[:, 0] // 10000 == ticks[:, -1] // 10000)  # of one machine
    assert set(train.ravel()).isdisjoint(test.ravel())
    assert set(train.ravel()).isdisjoint(public.ravel())
    assert set(public.ravel()).isdisjoint(test.ravel())
    for m in (1, 2):  # per machine: test windows are its last ones
        assert train[train[:, 0] // 10000 == m].max() < test[test[:, 0] // 10000 == m].min()
    assert data.groups_train is not None
    machine_of = {1: "press", 2: "lathe"}
    assert list(data.groups_train) == [machine_of[t // 10000] for t in train[:, 0]]

    # channel statistics are those of the training windows, not of the whole series
    by_tick = frame.set_index("tick")
    vibration = by_tick.loc[train.ravel(), "vibration"].to_numpy()
    assert data.preprocessing.spec["mean"][1] == pytest.approx(vibration.mean())
    assert data.preprocessing.spec["std"][1] == pytest.approx(vibration.std())
    assert data.preprocessing.spec["mean"][1] != pytest.approx(frame["vibration"].mean())
    # an anomaly window is one with any anomalous row
    expected = by_tick.loc[train.ravel(), "anomaly"].to_numpy().reshape(train.shape).max(axis=1)
    assert np.array_equal(ds.y_train, expected) and ds.y_train.max() == 1

    # a device's raw window (rows of readings, oldest first) gives the same model input
    window = frame.iloc[test[0, 0] - 20000 + 200 : test[0, -1] - 20000 + 201]
    raw = [{"tick": str(r.tick), "vibration": str(r.vibration)} for r in window.itertuples()]
    assert np.allclose(data.preprocessing.transform(raw)[0], ds.x_test[0], atol=1e-5)


def test_series_label_is_the_last_rows_for_multi_class_labels(tmp_path: Path) -> None:
    t = np.arange(120)
    frame = pd.DataFrame({"x": np.sin(t / 3.0), "activity": np.repeat(["run", "sit", "walk"], 40)})
    path = tmp_path / "motion.csv"
    frame.to_csv(path, index=False)
    data = read_data(path, label="activity", window=10, stride=5)
    assert data.label_names == ["run", "sit", "walk"] and data.groups_train is None
    assert data.preprocessing.spec["window_label"] == "last"
    # train windows are the first ones, starting every 5 rows; a window is labelled by its last row
    y_train = data.dataset.y_train
    assert np.array_equal(y_train, [(5 * i + 9) // 40 for i in range(len(y_train))])
    assert y_train[7] == 1  # rows 35..44: mostly "run", ends in "sit"


def test_a_series_without_labels_is_for_an_autoencoder(tmp_path: Path) -> None:
    path = tmp_path / "pump.csv"
    pd.DataFrame({"pressure": np.sin(np.arange(300) / 4.0)}).to_csv(path, index=False)
    data = read_data(path, window=30, stride=10)
    assert data.label_names == [] and data.preprocessing.spec["label"] is None
    assert data.dataset.num_classes == 1 and not data.dataset.y_train.any()
    assert data.dataset.x_train.shape[1:] == (1, 30) and len(data.dataset.y_test) > 0


def _write_png(path: Path, value: int, size: tuple[int, int], mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, color).save(path)


def test_an_image_folder_with_a_folder_per_class(tmp_path: Path) -> None:
    root = tmp_path / "parts"
    for i in range(10):
        _write_png(root / "good" / f"{i}.png", 200 + i, (8, 6))
        _write_png(root / "scratched" / f"{i}.png", 20 + i, (8, 6) if i else (16, 12))
    (root / "good" / "notes.txt").write_text("not an image")
    data = read_data(root)
    ds = data.dataset
    assert data.label_names == ["good", "scratched"]
    assert ds.x_train.shape[1:] == (1, 6, 8) and ds.x_train.dtype == np.float32
    assert len(ds.y_train) + len(ds.y_public) + len(ds.y_test) == 20
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1
    brightness = ds.x_train.mean(axis=(1, 2, 3))
    assert np.all((brightness > 0.5) == (ds.y_train == 0))
    pixels = np.full((6, 8), 205, dtype=np.uint8)
    assert data.preprocessing.transform(pixels)[0, 0, 0, 0] == pytest.approx(205 / 255)

    _write_png(root / "scratched" / "color.png", 100, (8, 6), mode="RGB")
    assert read_data(root).dataset.x_train.shape[1:] == (3, 6, 8)


def test_npz_is_used_as_it_is(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3, 4))
    y = np.arange(50) % 3
    groups = np.array(["a", "b"] * 25)
    path = tmp_path / "arrays.npz"
    np.savez(path, x=x, y=y, groups=groups)
    data = read_data(path)
    ds = data.dataset
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.input_shape == (3, 4) and ds.num_classes == 3
    assert len(ds.y_train) + len(ds.y_public) + len(ds.y_test) == 50
    index = _row_index(x.astype(np.float32))
    rows = _rows_of(ds.x_train, index)
    assert np.array_equal(ds.y_train, y[rows])
    assert data.groups_train is not None and list(data.groups_train) == list(groups[rows])
    assert data.preprocessing.transform(x[0]).shape == (1, 3, 4)


def _bad(tmp_path: Path, name: str) -> tuple[Path, dict[str, Any], str]:
    """A bad input: the path, read_data's options and what its message must name."""
    frame = _patients(60)
    path = tmp_path / f"{name}.csv"
    options: dict[str, Any] = {"label": "diagnosis"}
    if name == "no-label":
        frame.to_csv(path, index=False)
        return (
            path,
            {"label": "target"},
            "'target' (--label); columns: age, chol, sex, chest, site, diagnosis",
        )
    if name == "free-text":
        frame["notes"] = [f"patient note {i}" for i in range(60)]
        frame.to_csv(path, index=False)
        return path, options, "'notes' is text with 60 distinct values"
    if name == "placeholder":
        frame["chol"] = frame["chol"].astype(object).where(frame["chol"].notna(), "?")
        frame.to_csv(path, index=False)
        return path, options, "'chol' is text with"
    if name == "one-class":
        frame["diagnosis"] = "healthy"
        frame.to_csv(path, index=False)
        return path, options, "'diagnosis' has one class ('healthy')"
    if name == "no-group":
        frame.to_csv(path, index=False)
        return path, {**options, "group": "hospital"}, "no group column 'hospital'"
    if name == "long-window":
        _sensor_frame(45).to_csv(path, index=False)
        opts = {"label": "anomaly", "group": "machine", "window": 50}
        return path, opts, "--window: 50 is longer than the series of group 'lathe'"
    if name == "missing":
        return path, options, "no such file"
    if name == "empty":
        path.write_text("")
        return path, options, "empty"
    if name == "header-only":
        path.write_text("age,diagnosis\n")
        return path, options, "no rows"
    if name == "suffix":
        path = tmp_path / "data.xlsx"
        path.write_text("x")
        return path, options, "cannot read .xlsx"
    if name == "npz-without-y":
        path = tmp_path / "arrays.npz"
        np.savez(path, x=np.zeros((4, 2)), labels=np.zeros(4))
        return path, options, "no array 'y'; arrays: x, labels"
    assert name == "broken-image"
    _write_png(tmp_path / "imgs" / "a" / "0.png", 1, (4, 4))
    (tmp_path / "imgs" / "b").mkdir()
    path = tmp_path / "imgs" / "b" / "0.png"
    path.write_bytes(b"not a png")
    return tmp_path / "imgs", options, "not a readable image"


@pytest.mark.parametrize(
    "name",
    [
        "no-label",
        "free-text",
        "placeholder",
        "one-class",
        "no-group",
        "long-window",
        "missing",
        "empty",
        "header-only",
        "suffix",
        "npz-without-y",
        "broken-image",
    ],
)
def test_a_bad_input_is_one_line_naming_the_file_and_the_value(tmp_path: Path, name: str) -> None:
    path, options, names = _bad(tmp_path, name)
    with pytest.raises((DataError, ConfigError)) as err:
        read_data(path, **options)
    message = str(err.value)
    assert "\n" not in message
    assert names in message
    assert str(path) in message


def test_a_number_column_with_placeholders_says_so(tmp_path: Path) -> None:
    path, options, _ = _bad(tmp_path, "placeholder")
    with pytest.raises(
        DataError, match=r"holds numbers and 1 other value\(s\) such as '\?' in 25 rows"
    ):
        read_data(path, **options)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"window": 0}, "--window"),
        ({"stride": 3}, "--stride"),
        ({"test_fraction": 1.5}, "--test-fraction"),
        ({"test_fraction": 0.6, "public_fraction": 0.4}, "--test-fraction"),
        ({"group": "diagnosis"}, "--group"),
    ],
)
def test_a_bad_option_names_it(patients_csv: Path, options: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError, match=f"^{option}: "):
        read_data(patients_csv, label="diagnosis", **options)
