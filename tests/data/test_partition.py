"""Partition specs and the flwr-datasets based partitioners."""

import numpy as np
import pytest

from fedge.data import get_dataset, parse_partition, partition_indices
from fedge.errors import ConfigError


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return get_dataset("mnist-5k").y_train


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5", "shards:2"])
def test_partitions_are_disjoint_and_inside_the_train_split(labels: np.ndarray, spec: str) -> None:
    parts = partition_indices(labels, 20, parse_partition(spec), seed=1)
    assert len(parts) == 20
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist()))
    assert joined.min() >= 0 and joined.max() < len(labels)
    assert all(len(p) > 0 for p in parts)


def test_iid_covers_every_sample(labels: np.ndarray) -> None:
    parts = partition_indices(labels, 10, parse_partition("iid"))
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))


@pytest.mark.parametrize(
    ("samples", "clients", "seed"), [(3500, 100, 0), (1001, 7, 3), (10, 10, 42)]
)
def test_iid_is_what_flower_datasets_iid_partitioner_gives(
    samples: int, clients: int, seed: int
) -> None:
    import datasets
    from flwr_datasets.partitioner import IidPartitioner

    partitioner = IidPartitioner(clients)
    partitioner.dataset = datasets.Dataset.from_dict({"idx": np.arange(samples)}).shuffle(seed=seed)
    flower = [np.asarray(partitioner.load_partition(i)["idx"]) for i in range(clients)]
    ours = partition_indices(np.zeros(samples), clients, parse_partition("iid"), seed=seed)
    assert [p.tolist() for p in ours] == [p.tolist() for p in flower]
    assert all(p.dtype == np.int64 for p in ours)


def test_dirichlet_is_label_skewed_and_seeded(labels: np.ndarray) -> None:
    spec = parse_partition("dirichlet:0.1")
    parts = partition_indices(labels, 10, spec, seed=3)
    # with alpha=0.1 most clients are dominated by a few labels; IID clients are not
    top_share = [np.bincount(labels[p], minlength=10).max() / len(p) for p in parts]
    iid = partition_indices(labels, 10, parse_partition("iid"), seed=3)
    iid_share = [np.bincount(labels[p], minlength=10).max() / len(p) for p in iid]
    assert np.mean(top_share) > 2 * np.mean(iid_share)
    again = partition_indices(labels, 10, spec, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_indices(labels, 10, spec, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_shards_give_each_client_few_labels(labels: np.ndarray) -> None:
    parts = partition_indices(labels, 20, parse_partition("shards:2"), seed=0)
    # two sorted shards each span at most two labels (a shard can straddle a label boundary)
    counts = [len(np.unique(labels[p])) for p in parts]
    assert max(counts) <= 4 and np.mean(counts) <= 3


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "iid:3",
        "dirichlet",
        "dirichlet:x",
        "dirichlet:-1",
        "shards:0",
        "shards:a",
        "x",
        "by:",
        "by",
    ],
)
def test_malformed_spec_names_the_option(spec: str) -> None:
    with pytest.raises(ConfigError, match="--partition"):
        parse_partition(spec)


def test_more_clients_than_samples_is_refused(labels: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="--clients"):
        partition_indices(labels, len(labels) + 1, parse_partition("iid"))


def test_spec_round_trips_to_text() -> None:
    for spec in ("iid", "dirichlet:0.5", "shards:2", "by:site"):
        assert str(parse_partition(spec)) == spec


def test_by_column_gives_one_client_per_group_in_sorted_order() -> None:
    groups = np.array(["va", "cleveland", "hungary", "va", "cleveland", "va"])
    spec = parse_partition("by:hospital")
    assert spec.kind == "by" and spec.column == "hospital"
    parts = partition_indices(np.zeros(6), 3, spec, groups=groups)
    assert [p.tolist() for p in parts] == [[1, 4], [2], [0, 3, 5]]


def test_by_column_refuses_a_wrong_client_count_or_data_without_groups() -> None:
    spec = parse_partition("by:site")
    groups = np.array(["a", "b", "c", "d", "a"])
    with pytest.raises(
        ConfigError, match=r"^--partition: 'by:site' has 4 groups; run with --clients 4"
    ):
        partition_indices(np.zeros(5), 3, spec, groups=groups)
    with pytest.raises(ConfigError, match="needs data with a group column"):
        partition_indices(np.zeros(5), 4, spec)
