"""Device populations: datasets whose clients are devices, each holding its own samples.

A :class:`PopulationDataset` is a :class:`~fedge.data.base.Dataset` whose training split is not
held in memory: client ``i`` (a device) gets ``population.device_data(i)``, built when the
device is sampled (generated from a seed, or read from its writer's records). Its test and
public splits are ordinary arrays. A simulation of 100,000 devices therefore costs the memory
of the devices sampled in a round, not of the population.
"""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from fedge.data.base import Dataset

__all__ = ["DevicePopulation", "PopulationDataset", "population_of"]


@runtime_checkable
class DevicePopulation(Protocol):
    """Devices, each with its own samples, built on demand."""

    @property
    def max_devices(self) -> int | None:
        """How many devices exist (``None``: any number, generated)."""
        ...

    @property
    def default_model(self) -> str:
        """The model a run trains on this population when it names none."""
        ...

    def device_data(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        """Device ``device``'s samples ``(x, y)``: float32 features, int64 labels."""
        ...


@dataclass(frozen=True)
class PopulationDataset(Dataset):
    """A dataset partitioned by device: ``x_train`` is empty, clients read ``population``."""

    population: DevicePopulation | None = None


def population_of(dataset: Dataset) -> DevicePopulation | None:
    """The device population behind ``dataset``, or ``None`` for an in-memory dataset."""
    return dataset.population if isinstance(dataset, PopulationDataset) else None
