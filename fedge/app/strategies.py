"""The strategy registry: Flower's own strategies, by name, and how a run builds its strategy.

fedge does not re-write aggregation: each entry maps a name to a Flower
``flwr.serverapp.strategy`` class and the run options it needs. :func:`build_private_strategy`
wraps the run's strategy in :class:`~fedge.privacy.central.CentralDP` when central DP is on.
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

from fedge.privacy.central import CentralDP

if TYPE_CHECKING:
    from fedge.app.config import RunConfig

__all__ = [
    "build_private_strategy",
    "build_strategy",
    "list_strategies",
    "register_strategy",
]


#: Builds a strategy from the Flower options common to all (``common``) and the run's config.
StrategyBuilder = Callable[[dict[str, Any], "RunConfig"], Strategy]

_STRATEGIES: dict[str, StrategyBuilder] = {}


def register_strategy(name: str, builder: StrategyBuilder) -> None:
    """Register ``builder(common_kwargs, options) -> Strategy`` under ``name``."""
    if name in _STRATEGIES:
        raise ValueError(f"strategy {name!r} is already registered")
    _STRATEGIES[name] = builder


def list_strategies() -> list[str]:
    """Registered strategy names, sorted."""
    return sorted(_STRATEGIES)


def build_strategy(
    options: "RunConfig", *, fraction: float | None = None, min_clients: int | None = None
) -> Strategy:
    """Build the strategy named by ``options.strategy`` with its sampling settings."""
    if options.strategy not in _STRATEGIES:
        raise ValueError(
            f"unknown strategy {options.strategy!r}; valid choices: {', '.join(list_strategies())}"
        )
    least = options.min_clients if min_clients is None else min_clients
    common: dict[str, Any] = {
        "fraction_train": options.fraction if fraction is None else fraction,
        "fraction_evaluate": options.fraction_evaluate,
        "min_train_nodes": least,
        "min_evaluate_nodes": 1 if options.fraction_evaluate > 0 else 0,
        "min_available_nodes": least,
    }
    return _STRATEGIES[options.strategy](common, options)


def build_private_strategy(options: "RunConfig") -> Strategy:
    """The run's strategy, wrapped in :class:`CentralDP` when central DP is configured."""
    privacy = options.privacy
    if not privacy.central:
        return build_strategy(options)
    # The inner strategy sends to every node of the Poisson sample, whatever its size.
    inner = build_strategy(options, fraction=1.0, min_clients=1)
    return CentralDP(
        inner,
        noise_multiplier=privacy.noise_multiplier(fraction=options.fraction, rounds=options.rounds),
        clip_norm=privacy.dp_clip,
        sample_rate=options.fraction,
        population=options.clients,
        delta=privacy.dp_delta,
        adaptive=privacy.dp_adaptive_clip,
        accountant=privacy.dp_accountant,
        seed=privacy.dp_seed,
    )


register_strategy("fedavg", lambda common, opts: FedAvg(**common))
register_strategy("fedprox", lambda common, opts: FedProx(**common, proximal_mu=opts.proximal_mu))
register_strategy("fedadam", lambda common, opts: FedAdam(**common, eta=opts.server_lr))
register_strategy("fedmedian", lambda common, opts: FedMedian(**common))
register_strategy(
    "fedtrimmedavg", lambda common, opts: FedTrimmedAvg(**common, beta=opts.trimmed_beta)
)
register_strategy(
    "krum", lambda common, opts: Krum(**common, num_malicious_nodes=opts.krum_malicious)
)
# Personalisation strategies (fedge.app.personalize) average on the server like FedAvg; each
# client trains and predicts with its own copy of the personal layers (FedBN: normalisation
# layers; FedPer: the last linear layer), so what the server averages there is only the
# starting point of a device that has none yet.
register_strategy("fedbn", lambda common, opts: FedAvg(**common))
register_strategy("fedper", lambda common, opts: FedAvg(**common))
