"""Client partitioners: ``iid``, ``dirichlet:ALPHA`` and ``shards:K`` as flwr-datasets splits
them, and ``by:COLUMN``, the data's own natural partition (one client per hospital, per machine).

A partition spec is parsed once (:func:`parse_partition`) and turned into one index array per
client (:func:`partition_indices`). Indices point into the dataset's train split only; the public
and test splits are never handed to a client.
"""

from dataclasses import dataclass

import numpy as np

from fedge.errors import ConfigError

__all__ = ["PartitionSpec", "parse_partition", "partition_indices"]

_KINDS = ("iid", "dirichlet:ALPHA", "shards:K", "by:COLUMN")


@dataclass(frozen=True)
class PartitionSpec:
    """A parsed partition spec: ``kind`` is ``iid``, ``dirichlet``, ``shards`` or ``by``."""

    kind: str
    alpha: float = 0.0
    shards_per_client: int = 0
    column: str = ""

    def __str__(self) -> str:
        if self.kind == "dirichlet":
            return f"dirichlet:{self.alpha:g}"
        if self.kind == "shards":
            return f"shards:{self.shards_per_client}"
        if self.kind == "by":
            return f"by:{self.column}"
        return "iid"


def parse_partition(spec: str) -> PartitionSpec:
    """Parse ``iid``, ``dirichlet:0.5``, ``shards:2`` or ``by:site``; else :class:`ConfigError`."""
    kind, _, arg = spec.strip().partition(":")
    if kind == "iid" and not arg:
        return PartitionSpec("iid")
    if kind == "by" and arg.strip():
        return PartitionSpec("by", column=arg.strip())
    try:
        if kind == "dirichlet":
            alpha = float(arg)
            if alpha > 0 and np.isfinite(alpha):
                return PartitionSpec("dirichlet", alpha=alpha)
        elif kind == "shards":
            shards = int(arg)
            if shards >= 1:
                return PartitionSpec("shards", shards_per_client=shards)
    except ValueError:
        pass
    raise ConfigError("--partition", spec, f"is not a partition spec; expected {', '.join(_KINDS)}")


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    spec: PartitionSpec,
    *,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``num_partitions`` client index arrays.

    ``groups`` (one value per sample) is what ``by:COLUMN`` splits on: partition ``i`` holds the
    samples of the ``i``-th group value in sorted order.
    """
    if num_partitions < 1:
        raise ConfigError("--clients", num_partitions, "must be at least 1")
    if spec.kind == "by":
        return _natural_partitions(len(labels), num_partitions, spec, groups)
    if num_partitions > len(labels):
        raise ConfigError(
            "--clients", num_partitions, f"is more than the {len(labels)} training samples"
        )
    if spec.kind == "iid":
        return _iid_partitions(len(labels), num_partitions, seed)
    return _label_partitions(labels, num_partitions, spec, seed)


def _iid_partitions(num_samples: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    # What flwr-datasets' IidPartitioner gives on a table shuffled with ``seed`` (the table's
    # seeded permutation, cut into contiguous shards; tests/data/test_partition.py holds the
    # two equal), without building an Arrow table: milliseconds instead of a tenth of a
    # second, and no import of datasets' plotting and SciPy dependencies.
    permutation = np.random.default_rng(seed).permutation(num_samples)
    return [part.astype(np.int64) for part in np.array_split(permutation, num_partitions)]


def _label_partitions(
    labels: np.ndarray, num_partitions: int, spec: PartitionSpec, seed: int
) -> list[np.ndarray]:
    import datasets
    from flwr_datasets.partitioner import DirichletPartitioner, ShardPartitioner

    table = datasets.Dataset.from_dict(
        {"idx": np.arange(len(labels)), "label": np.asarray(labels, dtype=np.int64)}
    )
    partitioner: DirichletPartitioner | ShardPartitioner
    if spec.kind == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions,
            partition_by="label",
            alpha=spec.alpha,
            min_partition_size=min(10, len(labels) // num_partitions // 2),
            self_balancing=True,
            seed=seed,
        )
    else:
        partitioner = ShardPartitioner(
            num_partitions,
            partition_by="label",
            num_shards_per_partition=spec.shards_per_client,
            seed=seed,
        )
    partitioner.dataset = table
    try:
        return [
            np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64)
            for i in range(num_partitions)
        ]
    except ValueError as err:
        raise ConfigError("--partition", str(spec), f"cannot split the data: {err}") from err


def _natural_partitions(
    num_samples: int, num_partitions: int, spec: PartitionSpec, groups: np.ndarray | None
) -> list[np.ndarray]:
    # flwr-datasets' NaturalIdPartitioner does the same but draws a tqdm bar on every call.
    if groups is None:
        raise ConfigError(
            "--partition", str(spec), f"needs data with a group column ({spec.column!r})"
        )
    values = np.asarray(groups).astype(str)
    if len(values) != num_samples:
        raise ConfigError(
            "--partition", str(spec), f"has {len(values)} group values for {num_samples} samples"
        )
    names = np.unique(values)
    if len(names) != num_partitions:
        raise ConfigError(
            "--partition",
            str(spec),
            f"has {len(names)} groups; run with --clients {len(names)} (not {num_partitions})",
        )
    return [np.flatnonzero(values == name).astype(np.int64) for name in names]
