"""The dataset registry: ``register_dataset`` / ``get_dataset`` / ``list_datasets``."""

from collections.abc import Callable
from pathlib import Path

from fedge.data import embedded, ondisk
from fedge.data.base import Dataset

__all__ = ["DatasetLoader", "get_dataset", "list_datasets", "register_dataset"]


#: Builds a :class:`Dataset`; ``data_dir`` is ignored by embedded datasets.
DatasetLoader = Callable[[Path | None], Dataset]

_DATASETS: dict[str, DatasetLoader] = {}
_CACHE: dict[tuple[str, str | None], Dataset] = {}


def register_dataset(name: str, loader: DatasetLoader, *, replace: bool = False) -> None:
    """Register ``loader`` under ``name``; a name can be registered once unless ``replace``
    (a task's data, entered again after its file changed)."""
    if name in _DATASETS and not replace:
        raise ValueError(f"dataset {name!r} is already registered")
    _DATASETS[name] = loader
    for key in [k for k in _CACHE if k[0] == name]:
        del _CACHE[key]


def list_datasets() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(_DATASETS)


def get_dataset(name: str, *, data_dir: Path | str | None = None) -> Dataset:
    """Load the dataset ``name`` (cached per process: clients of one simulation share it)."""
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(list_datasets())}")
    path = Path(data_dir) if data_dir is not None else None
    key = (name, str(path.resolve()) if path else None)
    if key not in _CACHE:
        _CACHE[key] = _DATASETS[name](path)
    return _CACHE[key]


register_dataset("mnist-5k", embedded.load_mnist_5k)
register_dataset("digits", embedded.load_digits)
register_dataset("breast-cancer", embedded.load_breast_cancer)
register_dataset("mnist", ondisk.load_mnist)
register_dataset("fashion-mnist", ondisk.load_fashion_mnist)
register_dataset("cifar10", ondisk.load_cifar10)
