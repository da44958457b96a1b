"""Device profiles: what a kind of device is, what it runs, and the budget a model must fit.

A profile is a TOML file. ``[profile]`` says which tier the device belongs to and which
engines it has (in order of preference); ``[budget]`` is what a model must fit on it, measured
at batch 1 on one thread; ``[device]`` holds the ``fedge edge make-data`` keys (the data such a
device holds), so one file serves both the release build and the device's data::

    [profile]
    tier = "device"                       # gateway | device
    engines = ["litert", "onnxruntime"]   # preference order (the old key `runtimes` is read too)
    precisions = ["int8", "fp32"]         # optional, both by default

    [budget]
    max-model-bytes = 16384
    p99-ms = 1.0                          # batch 1, one thread
    peak-memory-mb = 64                   # peak memory of an inference session
    min-accuracy = 0.9

    [device]
    dataset = "mnist-5k"                  # omit: the profile serves models of any dataset
    format = "images"
    partition-id = 0
    num-partitions = 3
    partition = "iid"
    seed = 0

The built-in profiles ship as package data in ``fedge/inference/device_profiles/*.toml`` and
are found by name with :func:`get_profile`. This module is a leaf: standard library only, so
the slim device install (no numpy, no torch) can read profiles and check measurements against a
budget with :meth:`Budget.misses`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fedge.errors import ConfigError
from fedge.options import check_options, option, options_from_table

__all__ = [
    "DEFAULT_DEVICE_DATASET",
    "DEVICE_FORMATS",
    "ENGINES",
    "PRECISIONS",
    "TIERS",
    "Budget",
    "BudgetMiss",
    "DeviceDataSpec",
    "DeviceProfile",
    "get_profile",
    "list_profiles",
    "load_profile",
    "register_engine",
    "register_profile",
    "resolve_profile",
]

TIERS = ("gateway", "device")
PRECISIONS = ("fp32", "int8")
#: Engine names a profile may list; a new target registers its engine with
#: :func:`register_engine` so that profiles naming it load.
ENGINES: list[str] = ["onnxruntime", "openvino", "litert"]
#: The file formats a device data directory can hold.
DEVICE_FORMATS = ("npz", "csv", "images")
#: What :func:`write_device_data` writes when the spec names no dataset.
DEFAULT_DEVICE_DATASET = "mnist-5k"

_PARTITION = re.compile(r"^(iid|dirichlet:\d*\.?\d+([eE][-+]?\d+)?|shards:[1-9]\d*)$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class BudgetMiss:
    """One way a model misses a budget: ``field`` is ``value``, the limit is ``limit``."""

    field: str
    value: float
    limit: float

    @property
    def relative(self) -> float:
        """How far outside the limit, as a fraction of the limit (0.25: 25% over)."""
        if self.field == "min-accuracy":
            return (self.limit - self.value) / max(self.limit, 1e-9)
        return (self.value - self.limit) / max(self.limit, 1e-9)

    def __str__(self) -> str:
        if self.field == "max-model-bytes":
            return (
                f"size by {_kib(self.value - self.limit)} ({_kib(self.value)} > {_kib(self.limit)})"
            )
        if self.field == "p99-ms":
            return f"p99 by {self.value - self.limit:.3f} ms ({self.value:.3f} > {self.limit:g} ms)"
        if self.field == "peak-memory-mb":
            return (
                f"peak memory by {self.value - self.limit:.1f} MB "
                f"({self.value:.1f} > {self.limit:g} MB)"
            )
        return (
            f"accuracy by {100 * (self.limit - self.value):.2f} points "
            f"({100 * self.value:.2f}% < {100 * self.limit:.2f}%)"
        )


@dataclass(frozen=True)
class Budget:
    """What a model must fit on a device: file size, batch-1 p99 on one thread, peak session
    memory and held-out accuracy (the ``[budget]`` table)."""

    max_model_bytes: int = option(help="Largest model file, in bytes.", low=1)
    p99_ms: float = option(help="p99 latency at batch 1 on one thread, ms.", positive=True)
    peak_memory_mb: float = option(help="Peak memory of an inference session, MB.", positive=True)
    min_accuracy: float = option(help="Least held-out accuracy.", low=0.0, high=1.0)

    def misses(
        self, *, size_bytes: int, p99_ms: float, peak_memory_mb: float, accuracy: float
    ) -> list[BudgetMiss]:
        """Every limit the measured figures break (empty: the model fits)."""
        found = []
        if size_bytes > self.max_model_bytes:
            found.append(BudgetMiss("max-model-bytes", size_bytes, self.max_model_bytes))
        if p99_ms > self.p99_ms:
            found.append(BudgetMiss("p99-ms", p99_ms, self.p99_ms))
        if peak_memory_mb > self.peak_memory_mb:
            found.append(BudgetMiss("peak-memory-mb", peak_memory_mb, self.peak_memory_mb))
        if accuracy < self.min_accuracy:
            found.append(BudgetMiss("min-accuracy", accuracy, self.min_accuracy))
        return found

    def describe(self) -> str:
        """``<= 16.0 KiB, p99 <= 1 ms, <= 64 MB, accuracy >= 90.00%``."""
        return (
            f"<= {_kib(self.max_model_bytes)}, p99 <= {self.p99_ms:g} ms, "
            f"<= {self.peak_memory_mb:g} MB, accuracy >= {100 * self.min_accuracy:.2f}%"
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``[budget]`` table, with its TOML key names."""
        return {
            "max-model-bytes": self.max_model_bytes,
            "p99-ms": self.p99_ms,
            "peak-memory-mb": self.peak_memory_mb,
            "min-accuracy": self.min_accuracy,
        }


@dataclass(frozen=True)
class _ProfileTable:
    """The ``[profile]`` table."""

    tier: str = option(help="gateway | device.", choices=lambda: TIERS)
    engines: tuple[str, ...] = option(
        help="Engines in preference order.", choices=lambda: tuple(ENGINES)
    )
    name: str | None = option(None, help="The profile's name (default: the file's stem).")
    precisions: tuple[str, ...] = option(
        PRECISIONS, help="Precisions built for it.", choices=lambda: PRECISIONS
    )
    description: str = option("", help="One line on the kind of device.")

    def __post_init__(self) -> None:
        if self.name is not None and not _NAME.match(self.name):
            raise ConfigError("name", self.name, "must be a lower-case name ([a-z0-9._-])")


@dataclass(frozen=True)
class DeviceDataSpec:
    """Which slice of an embedded dataset a device holds: simulated client ``partition_id`` of
    ``num_partitions``, partitioned as the ``local`` runtime does for ``seed``. A device
    profile's ``[device]`` table, and what ``fedge edge make-data`` writes."""

    dataset: str | None = option(
        None,
        help=f"Embedded dataset; none writes {DEFAULT_DEVICE_DATASET} (a profile without one "
        "serves any).",
    )
    format: str = option(
        "npz",
        help=f"The data's file format: {', '.join(DEVICE_FORMATS)}.",
        choices=lambda: DEVICE_FORMATS,
    )
    partition_id: int = option(0, help="The simulated client whose partition it holds.", low=0)
    num_partitions: int = option(10, help="Simulated clients the dataset is split among.", low=1)
    partition: str = option("iid", help="iid, dirichlet:ALPHA or shards:K.")
    seed: int = option(0, help="Partitioning seed, as in simulate.", low=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "partition", self.partition.strip())
        check_options(self)
        if self.dataset is not None and not self.dataset.strip():
            raise ConfigError("dataset", self.dataset, "must be a dataset name")
        if not _PARTITION.match(self.partition):  # an embedded dataset has no column to split by
            expected = "expected iid, dirichlet:ALPHA, shards:K"
            raise ConfigError("partition", self.partition, f"is not a partition spec; {expected}")
        if self.partition_id >= self.num_partitions:
            raise ConfigError(
                "partition-id",
                self.partition_id,
                f"must be < num-partitions ({self.num_partitions})",
            )


@dataclass(frozen=True)
class DeviceProfile:
    """A kind of device: its tier, its engines in preference order, its budget and the
    ``make-data`` description of the data it holds (``dataset`` ``None``: any dataset)."""

    name: str
    tier: str
    engines: tuple[str, ...]
    budget: Budget
    precisions: tuple[str, ...] = PRECISIONS
    description: str = ""
    #: The ``[device]`` table: the data a device of this kind holds (its ``dataset`` ``None``:
    #: the profile serves models of any dataset).
    data: DeviceDataSpec = field(default_factory=DeviceDataSpec)
    source: str = field(default="<in memory>", compare=False)

    def serves(self, dataset: str) -> bool:
        """Whether models of ``dataset`` are for this kind of device."""
        return self.data.dataset is None or self.data.dataset == dataset

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what a per-profile artifact records; the engines under
        their persisted key ``runtimes``, which existing build outputs use)."""
        return {
            "name": self.name,
            "tier": self.tier,
            "runtimes": list(self.engines),
            "precisions": list(self.precisions),
            "budget": self.budget.to_dict(),
            "dataset": self.data.dataset,
        }


def load_profile(path: Path | str) -> DeviceProfile:
    """Read and validate a profile file; :class:`ConfigError` names the file, field and value."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(str(path), str(path), f"cannot be read: {err.strerror or err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), str(path), f"is not valid TOML: {err}") from err
    return profile_from_mapping(data, source=str(path), default_name=path.stem)


def profile_from_mapping(
    data: dict[str, Any], *, source: str, default_name: str | None = None
) -> DeviceProfile:
    """Validate a parsed profile document (see the module docstring for its tables)."""
    tables = {"profile": _ProfileTable, "budget": Budget, "device": DeviceDataSpec}
    for table, value in data.items():
        if table not in tables:
            expected = ", ".join(tables)
            raise ConfigError(f"{source}: {table}", value, f"is not a profile table; {expected}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {table}", value, "must be a table")
    if "budget" not in data:
        raise ConfigError(f"{source}: [budget]", None, "is missing; a profile needs a budget")
    head = _engines_renamed(dict(data.get("profile", {})), source)
    try:
        prof = options_from_table(
            _ProfileTable, head, prefix=f"{source}: [profile] ", table="profile"
        )
    except ConfigError as err:
        if "runtimes" in data.get("profile", {}) and err.option.endswith("engines"):
            raise ConfigError(
                err.option[: -len("engines")] + "runtimes", err.value, err.reason
            ) from None
        raise
    budget = options_from_table(
        Budget, data["budget"], prefix=f"{source}: [budget] ", table="budget"
    )
    dev = options_from_table(
        DeviceDataSpec, data.get("device", {}), prefix=f"{source}: [device] ", table="device"
    )
    name = prof.name if prof.name is not None else default_name
    if name is None or not _NAME.match(name):
        raise ConfigError(
            f"{source}: [profile] name", name, "must be a lower-case name ([a-z0-9._-])"
        )
    return DeviceProfile(
        name=name,
        tier=prof.tier,
        engines=prof.engines,
        precisions=prof.precisions,
        description=prof.description,
        budget=budget,
        data=dev,
        source=source,
    )


_PROFILES: dict[str, DeviceProfile] = {}
_BUILTIN_LOADED = False


def _builtin() -> dict[str, DeviceProfile]:
    """The registry, with the package's own profiles loaded on first use."""
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        folder = resources.files("fedge.inference") / "device_profiles"
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".toml"):
                data = tomllib.loads(entry.read_text())
                profile = profile_from_mapping(
                    data,
                    source=f"fedge/inference/device_profiles/{entry.name}",
                    default_name=entry.name[:-5],
                )
                _PROFILES.setdefault(profile.name, profile)
    return _PROFILES


def register_profile(profile: DeviceProfile, *, replace: bool = False) -> None:
    """Add ``profile`` to the registry (``ValueError`` if its name is taken, unless ``replace``)."""
    profiles = _builtin()
    if profile.name in profiles and not replace:
        raise ValueError(f"device profile {profile.name!r} is already registered")
    profiles[profile.name] = profile


def list_profiles() -> list[str]:
    """Registered device profile names, sorted."""
    return sorted(_builtin())


def get_profile(name: str) -> DeviceProfile:
    """The registered profile ``name``; ``ValueError`` listing the valid names if unknown."""
    profiles = _builtin()
    if name not in profiles:
        raise ValueError(
            f"unknown device profile {name!r}; valid choices: {', '.join(list_profiles())}"
        )
    return profiles[name]


def resolve_profile(name_or_path: str) -> DeviceProfile:
    """A registered profile by name, or a profile file when given a ``.toml`` path."""
    if name_or_path.endswith(".toml"):
        return load_profile(name_or_path)
    return get_profile(name_or_path)


def register_engine(name: str) -> None:
    """Let profiles name engine ``name`` (called when a target for it is registered)."""
    if not _NAME.match(name):
        raise ValueError(f"engine name {name!r} must be lower-case ([a-z0-9._-])")
    if name not in ENGINES:
        ENGINES.append(name)


def _engines_renamed(table: dict[str, Any], source: str) -> dict[str, Any]:
    """The ``[profile]`` table with ``runtimes``, the key profiles written before the rename
    use, read as ``engines``."""
    if "runtimes" not in table:
        return table
    if "engines" in table:
        raise ConfigError(
            f"{source}: [profile] runtimes",
            table["runtimes"],
            "is the old name of engines; give one",
        )
    table["engines"] = table.pop("runtimes")
    return table


def _kib(size: float) -> str:
    return f"{size / 1024:.1f} KiB"
