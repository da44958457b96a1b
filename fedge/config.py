"""The typed run configuration shared by ``fedge simulate``, the ServerApp and the ClientApp.

A :class:`RunConfig` is validated when built: a bad value raises
:class:`~fedge.errors.ConfigError` naming the CLI option and the value. It can be read from a
TOML file (keys are the CLI option names, with dashes or underscores) and round-trips through
Flower's flat ``run_config`` so that ``flwr run .`` builds the same app.
"""

import dataclasses
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedge.errors import ConfigError

__all__ = ["PRECISIONS", "RUNTIMES", "RunConfig", "config_from_layers", "load_config_file"]

RUNTIMES = ("local", "ray", "grpc")
PRECISIONS = ("fp32", "bf16")


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
    # Differential privacy (fedge.privacy). Central, client-level DP is on when dp_noise or
    # dp_target_epsilon is set (then ``fraction`` is the Poisson sampling rate q); local,
    # record-level DP-SGD is on when local_dp_noise or local_dp_epsilon is set.
    dp_noise: float | None = None
    dp_clip: float = 1.0
    dp_adaptive_clip: bool = False
    dp_delta: float = 1e-5
    dp_max_epsilon: float | None = None
    dp_target_epsilon: float | None = None
    dp_accountant: str = "rdp"
    dp_seed: int | None = None
    local_dp_noise: float | None = None
    local_dp_clip: float = 1.0
    local_dp_epsilon: float | None = None
    device_state_root: str = ".fedge/devices"
    runtime: str = "local"
    seed: int = 0
    min_clients: int = 1
    round_timeout: float = 600.0
    keep_checkpoints: int = 2
    # Release pipeline (fedge.compress): build release/ beside results.json after the run, and
    # release-round-K/ every ``release_every`` rounds when > 0. ``student`` None picks by
    # dataset: student-cnn for images, student-mlp otherwise.
    release: bool = True
    student: str | None = None
    release_every: int = 0

    def __post_init__(self) -> None:
        self._validate()

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def to_run_config(self) -> dict[str, bool | float | int | str]:
        """Flower's flat ``run_config`` (dash-separated keys, no ``None`` values)."""
        flat: dict[str, bool | float | int | str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            flat[f.name.replace("_", "-")] = value
        return flat

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> "RunConfig":
        """Build from Flower's run config (``flwr run``), which may also name an ``out`` dir."""
        return cls.from_mapping({k: v for k, v in run_config.items() if k != "out"})

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "RunConfig":
        """Build from a mapping with dashed or underscored keys; unknown keys are an error."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(
                    key, value, f"is not a known option; valid: {', '.join(_option_names())}"
                )
            kwargs[name] = _coerce(name, value, known[name].type)
        return cls(**kwargs)

    def _validate(self) -> None:
        from fedge.data import list_datasets, parse_partition
        from fedge.models import list_models

        _one_of("--dataset", self.dataset, list_datasets())
        _one_of("--model", self.model, list_models())
        _one_of("--runtime", self.runtime, list(RUNTIMES))
        _one_of("--precision", self.precision, list(PRECISIONS))
        from fedge.app.strategies import list_strategies

        _one_of("--strategy", self.strategy, list_strategies())
        parse_partition(self.partition)
        _at_least("--clients", self.clients, 1)
        _at_least("--rounds", self.rounds, 1)
        _at_least("--local-epochs", self.local_epochs, 1)
        _at_least("--batch-size", self.batch_size, 1)
        _at_least("--min-clients", self.min_clients, 1)
        _at_least("--keep-checkpoints", self.keep_checkpoints, 1)
        _at_least("--release-every", self.release_every, 0)
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
        from fedge.privacy.settings import validate_privacy

        validate_privacy(self)


def config_from_layers(config_file: Path | None, *layers: dict[str, Any]) -> RunConfig:
    """Defaults, then the TOML ``config_file``, then each layer in order (``None`` skipped).

    This is how every command that takes run options resolves them: flags win over the file.
    """
    values = load_config_file(config_file) if config_file is not None else {}
    for layer in layers:
        values.update({k: v for k, v in layer.items() if v is not None})
    return RunConfig.from_mapping(values)


def load_config_file(path: Path | str) -> dict[str, Any]:
    """Read a TOML config file into a mapping; :meth:`RunConfig.from_mapping` validates it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", str(path), "is not a file")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("--config", str(path), f"is not valid TOML: {err}") from err
    # A [simulate] table is accepted so one file can hold several command sections.
    table = data.get("simulate", data)
    if not isinstance(table, dict):
        raise ConfigError("--config", str(path), "must hold a table of options")
    return dict(table)


def _option_names() -> list[str]:
    return [f.name.replace("_", "-") for f in fields(RunConfig)]


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
