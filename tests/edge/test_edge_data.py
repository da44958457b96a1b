"""A device's local data: npz, CSV and image folders, written from and equal to a partition."""

from pathlib import Path

import numpy as np
import pytest

from fedge.data import get_dataset, parse_partition, partition_indices
from fedge.data.device import DeviceDataSpec, load_device_data, write_device_data
from fedge.errors import DataError


def _partition(dataset: str, pid: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    data = get_dataset(dataset)
    idx = partition_indices(data.y_train, n, parse_partition("iid"), seed=0)[pid]
    return data.x_train[idx], data.y_train[idx]


@pytest.mark.parametrize(
    ("dataset", "fmt", "atol"),
    [
        ("mnist-5k", "npz", 0.0),
        ("breast-cancer", "csv", 0.0),  # the clinic profile
        ("mnist-5k", "images", 1e-5),  # the camera profile: PNGs of the original pixels
    ],
)
def test_written_device_data_equals_the_simulated_partition(
    tmp_path: Path, dataset: str, fmt: str, atol: float
) -> None:
    out = write_device_data(
        tmp_path / "d",
        DeviceDataSpec(dataset=dataset, partition_id=1, num_partitions=8, format=fmt),
    )
    loaded = load_device_data(out, dataset=dataset)
    x, y = _partition(dataset, 1, 8)
    if fmt == "images":  # image folders are read class by class
        order = np.argsort(y, kind="stable")
        x, y = x[order], y[order]
    np.testing.assert_array_equal(loaded.y, y)
    np.testing.assert_allclose(loaded.x, x, atol=atol, rtol=0)
    assert loaded.input_shape == tuple(x.shape[1:])
    assert loaded.num_classes == get_dataset(dataset).num_classes


def test_bad_data_dirs_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_device_data(tmp_path / "missing", dataset="digits")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no data\.npz, data\.csv or images"):
        load_device_data(empty, dataset="digits")
    bad_csv = tmp_path / "csv"
    bad_csv.mkdir()
    (bad_csv / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="'label' column"):
        load_device_data(bad_csv, dataset="digits")
    labels = tmp_path / "labels"
    labels.mkdir()
    np.savez(labels / "data.npz", x=np.zeros((2, 64), np.float32), y=np.array([0, 99]))
    with pytest.raises(DataError, match=r"labels must be in \[0, 10\)"):
        load_device_data(labels, dataset="digits")
