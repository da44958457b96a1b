"""The privacy part of a run's configuration: validated when built, by itself.

:class:`PrivacyConfig` checks its own fields; what depends on the rest of the run (the
strategy, the population, the sampling rate, the number of rounds) is checked by
:meth:`PrivacyConfig.check_run`, which the run configuration calls with those values, so no
check reaches up the layers. Field names are the run options' (``dp_noise`` is ``--dp-noise``).
"""

import math
from dataclasses import dataclass, fields

from fedge.errors import ConfigError
from fedge.log import logger
from fedge.privacy.accountant import ACCOUNTANTS

__all__ = ["INCOMPATIBLE_STRATEGIES", "PrivacyConfig"]

# Robust aggregators select or trim individual clients' updates; under central DP the server
# sees one noised sum, so they have nothing left to be robust against and their selection
# would bypass the clipping bound.
INCOMPATIBLE_STRATEGIES = ("fedmedian", "fedtrimmedavg", "krum")


@dataclass(frozen=True)
class PrivacyConfig:
    """Central, client-level DP is on when ``dp_noise`` or ``dp_target_epsilon`` is set (then
    the run's ``fraction`` is the Poisson sampling rate q); local, record-level DP-SGD is on
    when ``local_dp_noise`` or ``local_dp_epsilon`` is set."""

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

    def __post_init__(self) -> None:
        for name in (
            "dp_noise",
            "dp_clip",
            "dp_max_epsilon",
            "dp_target_epsilon",
            "local_dp_noise",
            "local_dp_clip",
            "local_dp_epsilon",
        ):
            _positive(_option(name), getattr(self, name))
        if isinstance(self.dp_delta, bool) or not 0.0 < self.dp_delta < 1.0:
            raise ConfigError("--dp-delta", self.dp_delta, "is outside (0, 1)")
        if self.dp_accountant not in ACCOUNTANTS:
            raise ConfigError(
                "--dp-accountant", self.dp_accountant, f"is not one of: {', '.join(ACCOUNTANTS)}"
            )
        if self.dp_noise is not None and self.dp_target_epsilon is not None:
            raise ConfigError(
                "--dp-target-epsilon", self.dp_target_epsilon, "conflicts with --dp-noise: give one"
            )
        if not self.central:
            for name, default in (("dp_max_epsilon", None), ("dp_adaptive_clip", False)):
                if getattr(self, name) != default:
                    raise ConfigError(
                        _option(name),
                        getattr(self, name),
                        "needs central DP (--dp-noise or --dp-target-epsilon)",
                    )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of the privacy options (as ``RunConfig``'s flat form uses them)."""
        return tuple(f.name for f in fields(cls))

    @property
    def central(self) -> bool:
        """Whether central, client-level DP is on."""
        return self.dp_noise is not None or self.dp_target_epsilon is not None

    @property
    def local(self) -> bool:
        """Whether local, record-level DP-SGD is on."""
        return self.local_dp_noise is not None or self.local_dp_epsilon is not None

    def check_run(self, *, strategy: str, clients: int, fraction: float, rounds: int) -> None:
        """Raise :class:`ConfigError` when the rest of the run cannot have this privacy."""
        if not self.central:
            return
        if strategy in INCOMPATIBLE_STRATEGIES:
            raise ConfigError(
                "--strategy",
                strategy,
                "cannot be combined with central DP (it selects individual updates, which would "
                "bypass clipping); use fedavg, fedprox or fedadam",
            )
        if self.dp_delta >= 1.0 / clients:
            logger.warning(
                "--dp-delta %g is not below 1/population (1/%d): the guarantee is weak",
                self.dp_delta,
                clients,
            )
        self.noise_multiplier(fraction=fraction, rounds=rounds)  # an unmeetable target fails here

    def noise_multiplier(self, *, fraction: float, rounds: int) -> float:
        """z: ``--dp-noise``, or the smallest z meeting ``--dp-target-epsilon`` in ``rounds``."""
        if self.dp_noise is not None:
            return float(self.dp_noise)
        if self.dp_target_epsilon is None:
            raise ValueError("central DP is off: neither --dp-noise nor --dp-target-epsilon is set")
        from fedge.privacy.accountant import noise_for_epsilon

        try:
            return noise_for_epsilon(
                target_epsilon=self.dp_target_epsilon,
                delta=self.dp_delta,
                sample_rate=fraction,
                steps=rounds,
                method=self.dp_accountant,
            )
        except ValueError as err:
            raise ConfigError(
                "--dp-target-epsilon",
                self.dp_target_epsilon,
                f"cannot be met in {rounds} rounds at q={fraction}, delta={self.dp_delta}: {err}",
            ) from None


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _positive(option: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(option, value, "is not a number")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(option, value, "must be a positive finite number")
