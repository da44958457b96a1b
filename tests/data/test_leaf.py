"""LEAF JSON and Flower Datasets-style parquet directories, written here, run with one device
per writer."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedge.app.client import load_client_data
from fedge.app.config import RunConfig
from fedge.cli.main import app
from fedge.data import get_dataset
from fedge.data.leaf import LETTERS
from fedge.data.population import population_of
from fedge.errors import DataError


def _write_leaf(root: Path, users: dict[str, tuple[list, list]], split: str, name: str) -> None:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "users": list(users),
        "num_samples": [len(y) for _, y in users.values()],
        "user_data": {u: {"x": x, "y": y} for u, (x, y) in users.items()},
    }
    (folder / name).write_text(json.dumps(document))


def _femnist(root: Path, writers: int) -> dict[str, tuple[list, list]]:
    rng = np.random.default_rng(0)
    all_users = {}
    for w in range(writers):
        n = 4 + w % 5
        labels = rng.integers(0, 62, n)
        # Each label lights up its own pixels: learnable, and writers are distinguishable.
        x = rng.random((n, 784)) * 0.1
        x[np.arange(n), labels * 12] = 1.0
        all_users[f"f{w:04d}_{w}"] = (x.round(3).tolist(), labels.tolist())
    half = writers // 2
    names = list(all_users)
    _write_leaf(root, {u: all_users[u] for u in names[:half]}, "train", "a_train.json")
    _write_leaf(root, {u: all_users[u] for u in names[half:]}, "train", "b_train.json")
    _write_leaf(root, {u: all_users[u] for u in names[:10]}, "test", "all_test.json")
    return all_users


def test_a_leaf_directory_of_50_writers_runs_one_device_per_writer(tmp_path: Path) -> None:
    users = _femnist(tmp_path / "femnist", 50)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            *("simulate", "--dataset", "leaf", "--data-dir", str(tmp_path / "femnist")),
            *("--clients", "50", "--rounds", "2", "--fraction", "0.2", "--no-release"),
            *("--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    assert report["config"]["model"] == "cnn-small"  # images: the population's default
    assert [r["sampled"] for r in report["rounds"]] == [10, 10]
    config = RunConfig.from_mapping(
        {"dataset": "leaf", "data_dir": str(tmp_path / "femnist"), "clients": 50}
    )
    for device in (0, 24, 25, 49):  # both train files, in order
        x, y = list(users.values())[device]
        data = load_client_data(config, {"partition-id": device, "num-partitions": 50})
        assert data.y.tolist() == y
        np.testing.assert_allclose(data.x.reshape(len(y), -1).numpy(), np.asarray(x), atol=1e-6)
    too_many = CliRunner().invoke(
        app,
        [
            *("simulate", "--dataset", "leaf", "--data-dir", str(tmp_path / "femnist")),
            *("--clients", "51", "--out", str(tmp_path / "x")),
        ],
    )
    assert too_many.exit_code == 2 and "50 devices of leaf" in too_many.output


def test_shakespeare_and_sent140_samples_become_features(tmp_path: Path) -> None:
    shakespeare = tmp_path / "shakespeare"
    lines = ["to be or not to be, that is the question: whether 'tis nobler in the mind to s"]
    for split in ("train", "test"):
        _write_leaf(shakespeare, {"HAMLET": (lines * 3, ["u", "u", "f"])}, split, "s.json")
    ds = get_dataset("leaf", data_dir=shakespeare)
    population = population_of(ds)
    assert population is not None
    x, y = population.device_data(0)
    assert x.shape == (3, len(lines[0])) and x[0, 0] == LETTERS.find("t")
    assert y.tolist() == [LETTERS.find("u")] * 2 + [LETTERS.find("f")]
    sent = tmp_path / "sent140"
    tweets = [["1", "d", "q", "bob", "happy happy day"], ["2", "d", "q", "bob", "sad"]]
    for split in ("train", "test"):
        _write_leaf(sent, {"bob": (tweets, [1, 0])}, split, "t.json")
    sent_population = population_of(get_dataset("leaf", data_dir=sent))
    assert sent_population is not None
    features, labels = sent_population.device_data(0)
    assert features.shape == (2, 256) and features[0].sum() == 3 and labels.tolist() == [1, 0]


def test_a_malformed_leaf_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "train" / "bad.json").write_text('{"users": ["a"]}')
    with pytest.raises(DataError, match=r"bad\.json is not a LEAF file"):
        get_dataset("leaf", data_dir=tmp_path)


def test_flower_datasets_parquet_partitions_are_devices(tmp_path: Path) -> None:
    import pandas as pd
    from PIL import Image

    def png(value: int) -> dict[str, bytes]:
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue()}

    for split, partitions in (("train", 6), ("test", 1)):
        (tmp_path / split).mkdir()
        for p in range(partitions):
            labels = [(p + i) % 3 for i in range(5)]
            frame = pd.DataFrame({"image": [png(40 * c) for c in labels], "label": labels})
            frame.to_parquet(tmp_path / split / f"partition_{p}.parquet")
    ds = get_dataset("parquet-partitions", data_dir=tmp_path)
    population = population_of(ds)
    assert population is not None and population.max_devices == 6
    x, y = population.device_data(4)
    assert x.shape == (5, 1, 8, 8) and y.tolist() == [1, 2, 0, 1, 2]
    np.testing.assert_allclose(x[:, 0, 0, 0], y * 40 / 255.0, atol=1e-6)
    result = CliRunner().invoke(
        app,
        [
            *("simulate", "--dataset", "parquet-partitions", "--data-dir", str(tmp_path)),
            *("--model", "mlp", "--clients", "6", "--rounds", "1", "--no-release"),
            *("--out", str(tmp_path / "run")),
        ],
    )
    assert result.exit_code == 0, result.output
