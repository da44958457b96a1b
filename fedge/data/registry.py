"""The dataset registry: ``register_dataset`` / ``get_dataset`` / ``list_datasets``.

A dataset family (``register_dataset_family``) is a name with arguments, ``PREFIX:ARGUMENTS``
(``synthetic:1,1``): its loader is given the arguments.
"""

from collections.abc import Callable
from pathlib import Path

from fedge.data import embedded, leaf, ondisk, synthetic
from fedge.data.base import Dataset

__all__ = [
    "DatasetLoader",
    "FamilyLoader",
    "dataset_choices",
    "dataset_problem",
    "get_dataset",
    "list_datasets",
    "population_model",
    "register_dataset",
    "register_dataset_family",
]


#: Builds a :class:`Dataset`; ``data_dir`` is ignored by embedded datasets.
DatasetLoader = Callable[[Path | None], Dataset]

#: Builds a family's :class:`Dataset` from the ``ARGUMENTS`` of ``PREFIX:ARGUMENTS``.
FamilyLoader = Callable[[str, Path | None], Dataset]

_DATASETS: dict[str, DatasetLoader] = {}
_FAMILIES: dict[str, tuple[FamilyLoader, str]] = {}
# Datasets whose clients are devices (fedge.data.population); every family is one.
_POPULATIONS: set[str] = set()
_CACHE: dict[tuple[str, str | None], Dataset] = {}


def register_dataset(
    name: str, loader: DatasetLoader, *, replace: bool = False, population: bool = False
) -> None:
    """Register ``loader`` under ``name``; a name can be registered once unless ``replace``
    (a task's data, entered again after its file changed). ``population``: the loader returns
    a :class:`~fedge.data.population.PopulationDataset`."""
    if name in _DATASETS and not replace:
        raise ValueError(f"dataset {name!r} is already registered")
    _DATASETS[name] = loader
    if population:
        _POPULATIONS.add(name)
    for key in [k for k in _CACHE if k[0] == name]:
        del _CACHE[key]


def register_dataset_family(prefix: str, loader: FamilyLoader, *, syntax: str) -> None:
    """Register the datasets ``PREFIX:ARGUMENTS``, built by ``loader(arguments, data_dir)``;
    ``syntax`` (``synthetic:ALPHA,BETA``) is how error messages and help show the family."""
    if prefix in _FAMILIES or prefix in _DATASETS:
        raise ValueError(f"dataset family {prefix!r} is already registered")
    _FAMILIES[prefix] = (loader, syntax)


def list_datasets() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(_DATASETS)


def dataset_choices() -> list[str]:
    """Every valid ``--dataset``: the names, then each family's syntax."""
    return list_datasets() + sorted(syntax for _, syntax in _FAMILIES.values())


def dataset_problem(name: str) -> str | None:
    """Why ``name`` is not a dataset, or ``None`` (a family's arguments are checked on load)."""
    prefix, sep, _ = name.partition(":")
    if name in _DATASETS or (sep and prefix in _FAMILIES):
        return None
    return f"is not one of: {', '.join(dataset_choices())}"


def population_model(name: str, data_dir: Path | str | None = None) -> str | None:
    """The model a device population trains by default, or ``None`` for other datasets
    (only a population's dataset is loaded to answer)."""
    from fedge.data.population import population_of

    prefix, sep, _ = name.partition(":")
    if name not in _POPULATIONS and not (sep and prefix in _FAMILIES):
        return None
    population = population_of(get_dataset(name, data_dir=data_dir))
    return population.default_model if population is not None else None


def get_dataset(name: str, *, data_dir: Path | str | None = None) -> Dataset:
    """Load the dataset ``name`` (cached per process: clients of one simulation share it)."""
    prefix, sep, arguments = name.partition(":")
    family = _FAMILIES.get(prefix) if sep else None
    if name not in _DATASETS and family is None:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(dataset_choices())}")
    path = Path(data_dir) if data_dir is not None else None
    key = (name, str(path.resolve()) if path else None)
    if key not in _CACHE:
        _CACHE[key] = family[0](arguments, path) if family else _DATASETS[name](path)
    return _CACHE[key]


register_dataset("mnist-5k", embedded.load_mnist_5k)
register_dataset("digits", embedded.load_digits)
register_dataset("breast-cancer", embedded.load_breast_cancer)
register_dataset("mnist", ondisk.load_mnist)
register_dataset("fashion-mnist", ondisk.load_fashion_mnist)
register_dataset("cifar10", ondisk.load_cifar10)
register_dataset("leaf", leaf.load_leaf, population=True)
register_dataset("parquet-partitions", leaf.load_parquet_partitions, population=True)
register_dataset_family("synthetic", synthetic.load_synthetic, syntax=synthetic.SYNTAX)
