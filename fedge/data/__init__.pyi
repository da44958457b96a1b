"""The names :mod:`fedge.data` exports, each imported on first use (``lazy_loader``)."""

from .base import Dataset as Dataset
from .files import FileData as FileData, read_data as read_data
from .partition import (
    PartitionSpec as PartitionSpec,
    parse_partition as parse_partition,
    partition_indices as partition_indices,
)
from .preprocessing import Preprocessing as Preprocessing
from .registry import (
    get_dataset as get_dataset,
    list_datasets as list_datasets,
    register_dataset as register_dataset,
)
