"""Datasets: embedded and on-disk loaders, a registry, data files read without code (tables,
sensor series, image folders, npz) with their fitted preprocessing, and client partitioners."""

from fedge.data.base import Dataset
from fedge.data.files import FileData, read_data
from fedge.data.partition import PartitionSpec, parse_partition, partition_indices
from fedge.data.preprocessing import Preprocessing
from fedge.data.registry import get_dataset, list_datasets, register_dataset

__all__ = [
    "Dataset",
    "FileData",
    "PartitionSpec",
    "Preprocessing",
    "get_dataset",
    "list_datasets",
    "parse_partition",
    "partition_indices",
    "read_data",
    "register_dataset",
]
