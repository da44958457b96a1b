"""The strategy registry: Flower's own strategies, built from a :class:`~fedge.config.RunConfig`.

fedge does not re-write aggregation: each entry maps a name to a Flower
``flwr.serverapp.strategy`` class and the config fields it needs.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)

if TYPE_CHECKING:
    from fedge.config import RunConfig

__all__ = ["build_strategy", "list_strategies", "register_strategy"]

StrategyBuilder = Callable[[dict[str, Any], "RunConfig"], Strategy]

_STRATEGIES: dict[str, StrategyBuilder] = {}


def register_strategy(name: str, builder: StrategyBuilder) -> None:
    """Register ``builder(common_kwargs, config) -> Strategy`` under ``name``."""
    if name in _STRATEGIES:
        raise ValueError(f"strategy {name!r} is already registered")
    _STRATEGIES[name] = builder


def list_strategies() -> list[str]:
    """Registered strategy names, sorted."""
    return sorted(_STRATEGIES)


def build_strategy(config: "RunConfig") -> Strategy:
    """Build the strategy named by ``config.strategy`` with its sampling settings."""
    if config.strategy not in _STRATEGIES:
        raise ValueError(
            f"unknown strategy {config.strategy!r}; valid choices: {', '.join(list_strategies())}"
        )
    common: dict[str, Any] = {
        "fraction_train": config.fraction,
        "fraction_evaluate": config.fraction_evaluate,
        "min_train_nodes": config.min_clients,
        "min_evaluate_nodes": 1 if config.fraction_evaluate > 0 else 0,
        "min_available_nodes": config.min_clients,
    }
    return _STRATEGIES[config.strategy](common, config)


register_strategy("fedavg", lambda common, cfg: FedAvg(**common))
register_strategy("fedprox", lambda common, cfg: FedProx(**common, proximal_mu=cfg.proximal_mu))
register_strategy("fedadam", lambda common, cfg: FedAdam(**common, eta=cfg.server_lr))
register_strategy("fedmedian", lambda common, cfg: FedMedian(**common))
register_strategy(
    "fedtrimmedavg", lambda common, cfg: FedTrimmedAvg(**common, beta=cfg.trimmed_beta)
)
register_strategy(
    "krum", lambda common, cfg: Krum(**common, num_malicious_nodes=cfg.krum_malicious)
)
