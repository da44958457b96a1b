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

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from fedge.errors import ConfigError

__all__ = [
    "DEVICE_FORMATS",
    "ENGINES",
    "PRECISIONS",
    "TIERS",
    "Budget",
    "BudgetMiss",
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
DEVICE_FORMATS = ("npz", "csv", "images")
#: Engine names a profile may list; a new target registers its engine with
#: :func:`register_engine` so that profiles naming it load.
ENGINES: list[str] = ["onnxruntime", "openvino", "litert"]

_PARTITION = re.compile(r"^(iid|dirichlet:\d*\.?\d+([eE][-+]?\d+)?|shards:[1-9]\d*)$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_TABLES = {
    "profile": {"name", "tier", "engines", "runtimes", "precisions", "description"},
    "budget": {"max-model-bytes", "p99-ms", "peak-memory-mb", "min-accuracy"},
    "device": {"dataset", "format", "partition-id", "num-partitions", "partition", "seed"},
}


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
    memory and held-out accuracy."""

    max_model_bytes: int
    p99_ms: float
    peak_memory_mb: float
    min_accuracy: float

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
class DeviceProfile:
    """A kind of device: its tier, its engines in preference order, its budget and the
    ``make-data`` description of the data it holds (``dataset`` ``None``: any dataset)."""

    name: str
    tier: str
    engines: tuple[str, ...]
    budget: Budget
    precisions: tuple[str, ...] = PRECISIONS
    description: str = ""
    dataset: str | None = None
    format: str = "npz"
    partition_id: int = 0
    num_partitions: int = 10
    partition: str = "iid"
    seed: int = 0
    source: str = field(default="<in memory>", compare=False)

    def serves(self, dataset: str) -> bool:
        """Whether models of ``dataset`` are for this kind of device."""
        return self.dataset is None or self.dataset == dataset

    def make_data_options(self) -> dict[str, Any]:
        """The ``[device]`` keys, as ``fedge edge make-data`` reads them."""
        options: dict[str, Any] = {
            "format": self.format,
            "partition-id": self.partition_id,
            "num-partitions": self.num_partitions,
            "partition": self.partition,
            "seed": self.seed,
        }
        if self.dataset is not None:
            options["dataset"] = self.dataset
        return options

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what a per-profile artifact records; the engines under
        their persisted key ``runtimes``, which existing build outputs use)."""
        return {
            "name": self.name,
            "tier": self.tier,
            "runtimes": list(self.engines),
            "precisions": list(self.precisions),
            "budget": self.budget.to_dict(),
            "dataset": self.dataset,
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
    check = _Checker(source)
    for table in data:
        if table not in _TABLES:
            check.fail(table, data[table], f"is not a profile table; expected {_names(_TABLES)}")
    tables = {}
    for table, keys in _TABLES.items():
        value = data.get(table, {})
        if not isinstance(value, dict):
            check.fail(table, value, "must be a table")
        for key in value:
            if key not in keys:
                check.fail(f"[{table}] {key}", value[key], f"is not a key; expected {_names(keys)}")
        tables[table] = value
    prof, bud, dev = tables["profile"], tables["budget"], tables["device"]
    if "budget" not in data:
        check.fail("[budget]", None, "is missing; a profile needs a budget")
    name = check.name("[profile] name", prof.get("name", default_name))
    engines_key = _engines_key(check, prof)
    budget = Budget(
        max_model_bytes=check.integer("[budget] max-model-bytes", bud, minimum=1),
        p99_ms=check.positive("[budget] p99-ms", bud),
        peak_memory_mb=check.positive("[budget] peak-memory-mb", bud),
        min_accuracy=check.fraction("[budget] min-accuracy", bud),
    )
    num_partitions = check.integer("[device] num-partitions", dev, minimum=1, default=10)
    partition_id = check.integer("[device] partition-id", dev, minimum=0, default=0)
    if partition_id >= num_partitions:
        check.fail(
            "[device] partition-id", partition_id, f"must be < num-partitions ({num_partitions})"
        )
    return DeviceProfile(
        name=name,
        tier=check.choice("[profile] tier", prof.get("tier"), TIERS),
        engines=check.choices(f"[profile] {engines_key}", prof.get(engines_key), tuple(ENGINES)),
        precisions=check.choices(
            "[profile] precisions", prof.get("precisions", list(PRECISIONS)), PRECISIONS
        ),
        description=check.text("[profile] description", prof.get("description", "")),
        budget=budget,
        dataset=check.optional_name("[device] dataset", dev.get("dataset")),
        format=check.choice("[device] format", dev.get("format", "npz"), DEVICE_FORMATS),
        partition_id=partition_id,
        num_partitions=num_partitions,
        partition=check.partition("[device] partition", dev.get("partition", "iid")),
        seed=check.integer("[device] seed", dev, minimum=0, default=0),
        source=source,
    )


class _Checker:
    """Field checks that raise :class:`ConfigError` naming ``source``, the field and value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field_name: str, value: object, reason: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {field_name}", value, reason)

    def name(self, field_name: str, value: object) -> str:
        if not isinstance(value, str) or not _NAME.match(value):
            self.fail(field_name, value, "must be a lower-case name ([a-z0-9._-])")
        return str(value)

    def optional_name(self, field_name: str, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(field_name, value, "must be a dataset name")
        return str(value)

    def text(self, field_name: str, value: object) -> str:
        if not isinstance(value, str):
            self.fail(field_name, value, "must be a string")
        return str(value)

    def choice(self, field_name: str, value: object, valid: tuple[str, ...]) -> str:
        if value not in valid:
            self.fail(field_name, value, f"is not one of: {', '.join(valid)}")
        return str(value)

    def choices(self, field_name: str, value: object, valid: tuple[str, ...]) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            self.fail(field_name, value, f"must be a non-empty list of: {', '.join(valid)}")
        items = list(value)
        for item in items:
            if item not in valid:
                self.fail(field_name, item, f"is not one of: {', '.join(valid)}")
        if len(set(items)) != len(items):
            self.fail(field_name, items, "lists a name twice")
        return tuple(str(item) for item in items)

    def integer(
        self, field_name: str, table: dict[str, Any], *, minimum: int, default: int | None = None
    ) -> int:
        value = self._given(field_name, table, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(field_name, value, f"must be an integer >= {minimum}")
        return int(value)

    def positive(self, field_name: str, table: dict[str, Any]) -> float:
        return self._number(
            field_name, table, lambda x: x > 0 and math.isfinite(x), "a positive number"
        )

    def fraction(self, field_name: str, table: dict[str, Any]) -> float:
        return self._number(field_name, table, lambda x: 0.0 <= x <= 1.0, "a number in [0, 1]")

    def _number(
        self, field_name: str, table: dict[str, Any], fits: Callable[[float], bool], what: str
    ) -> float:
        value = self._given(field_name, table)
        if isinstance(value, bool) or not isinstance(value, int | float) or not fits(float(value)):
            self.fail(field_name, value, f"must be {what}")
        return float(value)

    def _given(self, field_name: str, table: dict[str, Any], default: object = None) -> object:
        """The value of ``[table] key`` (``field_name``); missing is an error."""
        value = table.get(field_name.split("] ")[-1], default)
        if value is None:
            self.fail(field_name, None, "is missing")
        return value

    def partition(self, field_name: str, value: object) -> str:
        if not isinstance(value, str) or not _PARTITION.match(value.strip()):
            expected = "expected iid, dirichlet:ALPHA, shards:K"
            self.fail(field_name, value, f"is not a partition spec; {expected}")
        return str(value).strip()


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


def _engines_key(check: _Checker, prof: dict[str, Any]) -> str:
    """``engines``, or ``runtimes``, the key profiles written before the rename use."""
    if "engines" in prof and "runtimes" in prof:
        check.fail("[profile] runtimes", prof["runtimes"], "is the old name of engines; give one")
    return "runtimes" if "runtimes" in prof else "engines"


def _names(keys: dict[str, Any] | set[str]) -> str:
    return ", ".join(sorted(keys))


def _kib(size: float) -> str:
    return f"{size / 1024:.1f} KiB"
