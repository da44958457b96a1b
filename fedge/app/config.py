"""The typed run configuration shared by ``fedge simulate``, the ServerApp and the ClientApp.

A :class:`RunConfig` is validated when built: a bad value raises
:class:`~fedge.errors.ConfigError` naming the CLI option and the value. Its privacy options are a
:class:`~fedge.privacy.config.PrivacyConfig` that validates itself. It can be read from a TOML
file (keys are the CLI option names, with dashes or underscores) and has one flat wire form
(:meth:`RunConfig.to_run_config`, Flower's ``run_config``: dashed keys, privacy options
included), which is what ``flwr run .`` gives and what devices receive with each task.
"""

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedge.app.sites import check_hierarchy
from fedge.app.strategies import list_strategies
from fedge.data import list_datasets, parse_partition
from fedge.errors import ConfigError
from fedge.models import list_models
from fedge.options import layer_options
from fedge.privacy.config import PrivacyConfig

__all__ = [
    "PARTITION_LEVELS",
    "PRECISIONS",
    "RUNTIMES",
    "RunConfig",
    "config_from_layers",
    "option_names",
]

RUNTIMES = ("local", "ray", "grpc")
PRECISIONS = ("fp32", "bf16")
PARTITION_LEVELS = ("device", "site")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a federated run. Field names match CLI options (``_`` → ``-``)."""

    dataset: str = "mnist-5k"
    data_dir: str | None = None
    model: str = "fedavg-cnn"
    clients: int = 10
    rounds: int = 10
    fraction: float = 1.0
    fraction_evaluate: float = 0.0
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    # bf16 runs convolutions and matmuls in bfloat16 (autocast; weights stay fp32): about 1.5x
    # faster training on CPUs with AVX512-BF16 or AMX, at a small cost in exactness.
    precision: str = "fp32"
    partition: str = "iid"
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    trimmed_beta: float = 0.2
    krum_malicious: int = 1
    server_lr: float = 0.01
    # Differential privacy (central and local): see fedge.privacy.config.
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    runtime: str = "local"
    seed: int = 0
    min_clients: int = 1
    round_timeout: float = 600.0
    keep_checkpoints: int = 2
    # Release pipeline (fedge.builder): build release/ beside results.json after the run, and
    # release-round-K/ every ``release_every`` rounds when > 0. ``student`` None picks by
    # dataset: student-cnn for images, student-mlp otherwise.
    release: bool = True
    student: str | None = None
    release_every: int = 0
    # Distillation epochs of a release build (None: the pipeline's default).
    release_epochs: int | None = None
    # Sites (fedge.app.sites): a simulation puts its clients behind ``gateways`` site gateways
    # (0: none) and splits the data by ``partition`` across devices, or across sites first
    # (then evenly among each site's devices). ``site_rounds`` local rounds of FedAvg run at
    # each gateway between two cloud rounds, in simulations and deployments alike.
    gateways: int = 0
    partition_level: str = "device"
    site_rounds: int = 1

    def __post_init__(self) -> None:
        self._validate()

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` applied (and validated); privacy options may be given flat."""
        private = {k: changes.pop(k) for k in list(changes) if k in _PRIVACY}
        if private:
            changes["privacy"] = dataclasses.replace(
                changes.get("privacy", self.privacy), **private
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready flat dict of every option (privacy options included)."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "privacy"}
        flat.update(dataclasses.asdict(self.privacy))
        return flat

    def to_run_config(self) -> dict[str, bool | float | int | str]:
        """The wire form: Flower's flat ``run_config`` (dashed keys, no ``None`` values)."""
        return {
            name.replace("_", "-"): value
            for name, value in self.to_dict().items()
            if value is not None
        }

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> "RunConfig":
        """Build from Flower's run config (``flwr run``), which may also name an ``out`` dir."""
        return cls.from_mapping({k: v for k, v in run_config.items() if k != "out"})

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from a flat mapping with dashed or underscored keys; unknown keys are errors."""
        known = {f.name: f.type for f in fields(cls) if f.name != "privacy"}
        known.update({f.name: f.type for f in fields(PrivacyConfig)})
        kwargs: dict[str, Any] = {}
        private: dict[str, Any] = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ConfigError(
                    str(key), value, f"is not a known option; valid: {', '.join(option_names())}"
                )
            target = private if name in _PRIVACY else kwargs
            target[name] = _coerce(name, value, known[name])
        return cls(privacy=PrivacyConfig(**private), **kwargs)

    def _validate(self) -> None:
        _one_of("--dataset", self.dataset, list_datasets())
        _one_of("--model", self.model, list_models())
        _one_of("--runtime", self.runtime, list(RUNTIMES))
        _one_of("--precision", self.precision, list(PRECISIONS))
        _one_of("--strategy", self.strategy, list_strategies())
        parse_partition(self.partition)
        _at_least("--clients", self.clients, 1)
        _at_least("--rounds", self.rounds, 1)
        _at_least("--local-epochs", self.local_epochs, 1)
        _at_least("--batch-size", self.batch_size, 1)
        _at_least("--min-clients", self.min_clients, 1)
        _at_least("--keep-checkpoints", self.keep_checkpoints, 1)
        _at_least("--release-every", self.release_every, 0)
        _at_least("--gateways", self.gateways, 0)
        _at_least("--site-rounds", self.site_rounds, 1)
        _one_of("--partition-level", self.partition_level, list(PARTITION_LEVELS))
        if self.release_epochs is not None:
            _at_least("--release-epochs", self.release_epochs, 1)
        if self.student is not None:
            _one_of("--student", self.student, list_models(students_only=True))
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError("--fraction", self.fraction, "is outside (0, 1]")
        if not 0.0 <= self.fraction_evaluate <= 1.0:
            raise ConfigError("--fraction-evaluate", self.fraction_evaluate, "is outside [0, 1]")
        for option, value in (("--lr", self.lr), ("--round-timeout", self.round_timeout)):
            if not value > 0:
                raise ConfigError(option, value, "must be positive")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError("--momentum", self.momentum, "is outside [0, 1)")
        if not 0.0 <= self.trimmed_beta < 0.5:
            raise ConfigError("--trimmed-beta", self.trimmed_beta, "is outside [0, 0.5)")
        if self.proximal_mu < 0:
            raise ConfigError("--proximal-mu", self.proximal_mu, "must not be negative")
        if not isinstance(self.privacy, PrivacyConfig):
            raise ConfigError("privacy", self.privacy, "must be a PrivacyConfig")
        self.privacy.check_run(
            strategy=self.strategy, clients=self.clients, fraction=self.fraction, rounds=self.rounds
        )
        self._validate_sites()

    def _validate_sites(self) -> None:
        if self.gateways > self.clients:
            raise ConfigError(
                "--gateways",
                self.gateways,
                f"is above --clients {self.clients}: a site needs a device",
            )
        if self.gateways == 0:
            if self.partition_level != "device":
                raise ConfigError("--partition-level", self.partition_level, "needs --gateways")
            return
        check_hierarchy(
            strategy=self.strategy,
            central_dp=self.privacy.central,
            adaptive_clip=self.privacy.dp_adaptive_clip,
            site_rounds=self.site_rounds,
            why=f"--gateways {self.gateways}",
        )


def config_from_layers(config_file: Path | None, *layers: dict[str, Any]) -> RunConfig:
    """Defaults, then the TOML ``config_file``, then each layer in order (``None`` skipped).

    This is how ``fedge simulate`` resolves its options: flags win over the file.
    """
    return RunConfig.from_mapping(layer_options(config_file, *layers))


_PRIVACY = frozenset(PrivacyConfig.field_names())


def option_names() -> list[str]:
    """Every run option, as written on the command line and in TOML (dashed)."""
    names = [f.name for f in fields(RunConfig) if f.name != "privacy"]
    return [n.replace("_", "-") for n in [*names, *PrivacyConfig.field_names()]]


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    option = "--" + name.replace("_", "-")
    try:
        if annotation is int and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if annotation is float and not isinstance(value, bool):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(option, value, f"is not a valid {annotation.__name__}") from None
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(option, value, f"is not a valid {annotation.__name__}")
    if annotation is str and not isinstance(value, str):
        raise ConfigError(option, value, "is not a string")
    return value


def _one_of(option: str, value: str, choices: list[str]) -> None:
    if value not in choices:
        raise ConfigError(option, value, f"is not one of: {', '.join(choices)}")


def _at_least(option: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ConfigError(option, value, f"must be an integer >= {minimum}")
