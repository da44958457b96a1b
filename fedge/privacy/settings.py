"""Privacy settings of a :class:`~fedge.config.RunConfig`: validation and derived values."""

import math
from pathlib import Path
from typing import TYPE_CHECKING

from fedge.errors import ConfigError
from fedge.log import logger

if TYPE_CHECKING:
    from fedge.config import RunConfig

__all__ = [
    "INCOMPATIBLE_STRATEGIES",
    "central_enabled",
    "central_noise_multiplier",
    "local_enabled",
    "validate_privacy",
]

# Robust aggregators select or trim individual clients' updates; under central DP the server
# sees one noised sum, so they have nothing left to be robust against and their selection
# would bypass the clipping bound.
INCOMPATIBLE_STRATEGIES = ("fedmedian", "fedtrimmedavg", "krum")


def central_enabled(config: "RunConfig") -> bool:
    """Whether central, client-level DP is on."""
    return config.dp_noise is not None or config.dp_target_epsilon is not None


def local_enabled(config: "RunConfig") -> bool:
    """Whether local, record-level DP-SGD is on."""
    return config.local_dp_noise is not None or config.local_dp_epsilon is not None


def central_noise_multiplier(config: "RunConfig") -> float:
    """z: ``--dp-noise``, or the smallest z meeting ``--dp-target-epsilon`` in ``--rounds``."""
    if config.dp_noise is not None:
        return float(config.dp_noise)
    if config.dp_target_epsilon is None:
        raise ValueError("central DP is off: neither --dp-noise nor --dp-target-epsilon is set")
    from fedge.privacy.accountant import noise_for_epsilon

    try:
        return noise_for_epsilon(
            target_epsilon=config.dp_target_epsilon,
            delta=config.dp_delta,
            sample_rate=config.fraction,
            steps=config.rounds,
            method=config.dp_accountant,
        )
    except ValueError as err:
        raise ConfigError(
            "--dp-target-epsilon",
            config.dp_target_epsilon,
            f"cannot be met in {config.rounds} rounds at q={config.fraction}, "
            f"delta={config.dp_delta}: {err}",
        ) from None


def validate_privacy(config: "RunConfig") -> None:
    """Raise :class:`ConfigError` naming the first bad privacy option."""
    from fedge.privacy.accountant import ACCOUNTANTS

    for option, value in (
        ("--dp-noise", config.dp_noise),
        ("--dp-clip", config.dp_clip),
        ("--dp-max-epsilon", config.dp_max_epsilon),
        ("--dp-target-epsilon", config.dp_target_epsilon),
        ("--local-dp-noise", config.local_dp_noise),
        ("--local-dp-clip", config.local_dp_clip),
        ("--local-dp-epsilon", config.local_dp_epsilon),
    ):
        _positive(option, value)
    if not 0.0 < config.dp_delta < 1.0:
        raise ConfigError("--dp-delta", config.dp_delta, "is outside (0, 1)")
    if config.dp_accountant not in ACCOUNTANTS:
        raise ConfigError("--dp-accountant", config.dp_accountant, f"is not one of: {ACCOUNTANTS}")
    if config.dp_noise is not None and config.dp_target_epsilon is not None:
        raise ConfigError(
            "--dp-target-epsilon", config.dp_target_epsilon, "conflicts with --dp-noise: give one"
        )
    if not central_enabled(config):
        for option, value, default in (
            ("--dp-max-epsilon", config.dp_max_epsilon, None),
            ("--dp-adaptive-clip", config.dp_adaptive_clip, False),
        ):
            if value != default:
                raise ConfigError(
                    option, value, "needs central DP (--dp-noise or --dp-target-epsilon)"
                )
        _absolute_state_root(config)
        return
    if config.strategy in INCOMPATIBLE_STRATEGIES:
        raise ConfigError(
            "--strategy",
            config.strategy,
            "cannot be combined with central DP (it selects individual updates, which would "
            "bypass clipping); use fedavg, fedprox or fedadam",
        )
    if config.dp_delta >= 1.0 / config.clients:
        logger.warning(
            "--dp-delta %g is not below 1/population (1/%d): the guarantee is weak",
            config.dp_delta,
            config.clients,
        )
    central_noise_multiplier(config)  # a target epsilon that cannot be met fails here
    _absolute_state_root(config)


def _positive(option: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(option, value, "is not a number")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(option, value, "must be a positive finite number")


def _absolute_state_root(config: "RunConfig") -> None:
    # Ray actors do not share the driver's working directory: resolve once, where it was given.
    root = str(Path(config.device_state_root).expanduser().absolute())
    object.__setattr__(config, "device_state_root", root)
