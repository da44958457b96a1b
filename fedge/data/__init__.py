"""Datasets: embedded and on-disk loaders, a registry, and client partitioners."""

from fedge.data.base import Dataset
from fedge.data.partition import PartitionSpec, parse_partition, partition_indices
from fedge.data.registry import get_dataset, list_datasets, register_dataset

__all__ = [
    "Dataset",
    "PartitionSpec",
    "get_dataset",
    "list_datasets",
    "parse_partition",
    "partition_indices",
    "register_dataset",
]
