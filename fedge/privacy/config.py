"""The privacy part of a run's configuration: validated when built, by itself.

:class:`PrivacyConfig` checks its own fields; what depends on the rest of the run (the
strategy, the population, the sampling rate, the number of rounds) is checked by
:meth:`PrivacyConfig.check_run`, which the run configuration calls with those values, so no
check reaches up the layers. Field names are the run options' (``dp_noise`` is ``--dp-noise``).
"""

from dataclasses import dataclass, fields

from fedge.errors import ConfigError
from fedge.log import logger
from fedge.options import BOTH, check_options, option
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

    dp_noise: float | None = option(
        None, help="Central DP: noise multiplier z (client level).", positive=True, commands=BOTH
    )
    dp_clip: float = option(1.0, help="Central DP: clip norm C.", positive=True, commands=BOTH)
    dp_adaptive_clip: bool = option(
        False, help="Central DP: adapt C to the median update norm.", commands=BOTH
    )
    dp_delta: float = option(
        1e-5, help="DP delta.", low=0.0, high=1.0, low_open=True, high_open=True, commands=BOTH
    )
    dp_max_epsilon: float | None = option(
        None,
        help="Central DP: stop before a round crosses this epsilon.",
        positive=True,
        commands=BOTH,
    )
    dp_target_epsilon: float | None = option(
        None,
        help="Central DP: choose z to end the rounds at this epsilon.",
        positive=True,
        commands=BOTH,
    )
    dp_accountant: str = option(
        "rdp", help="Central DP accountant.", choices=lambda: list(ACCOUNTANTS), commands=BOTH
    )
    dp_seed: int | None = option(
        None, help="Seed DP noise (reproducible; default: OS randomness).", commands=BOTH
    )
    dp_participations: int | None = option(
        None,
        help="Central DP under --mode async: each device contributes to at most K "
        "aggregations (the guarantee rests on this bound, not on sampling).",
        low=1,
        commands=BOTH,
    )
    local_dp_noise: float | None = option(
        None, help="Local DP-SGD: noise multiplier on each device.", positive=True, commands=BOTH
    )
    local_dp_clip: float = option(
        1.0, help="Local DP-SGD: per-sample gradient clip norm.", positive=True, commands=BOTH
    )
    local_dp_epsilon: float | None = option(
        None, help="Local DP-SGD: each device's epsilon budget.", positive=True, commands=BOTH
    )

    def __post_init__(self) -> None:
        check_options(self, prefix="--")
        if self.dp_noise is not None and self.dp_target_epsilon is not None:
            raise ConfigError(
                "--dp-target-epsilon", self.dp_target_epsilon, "conflicts with --dp-noise: give one"
            )
        if not self.central:
            for name, default in (
                ("dp_max_epsilon", None),
                ("dp_adaptive_clip", False),
                ("dp_participations", None),
            ):
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

    def check_run(
        self, *, strategy: str, clients: int, fraction: float, rounds: int, mode: str = "sync"
    ) -> None:
        """Raise :class:`ConfigError` when the rest of the run cannot have this privacy."""
        if not self.central:
            return
        if mode == "async":
            self._check_async()
        elif self.dp_participations is not None:
            raise ConfigError(
                "--dp-participations",
                self.dp_participations,
                "applies to --mode async (sync rounds are accounted by Poisson sampling)",
            )
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
        if mode != "async":
            self.noise_multiplier(fraction=fraction, rounds=rounds)  # an unmeetable target fails

    def _check_async(self) -> None:
        """Central DP under async: no sampling to amplify, so the participations are bounded."""
        if self.dp_participations is None:
            raise ConfigError(
                "--mode",
                "async",
                "with central DP needs --dp-participations K: devices choose when to train, so "
                "Poisson-sampling amplification does not hold and the guarantee rests on a bound "
                "on each device's contributions",
            )
        if self.dp_adaptive_clip:
            raise ConfigError(
                "--dp-adaptive-clip",
                True,
                "is not accounted for under --mode async (its noised count assumes sampling)",
            )
        if self.dp_max_epsilon is not None:
            bound = self.async_epsilon_bound()
            if bound > self.dp_max_epsilon:
                raise ConfigError(
                    "--dp-participations",
                    self.dp_participations,
                    f"gives epsilon {bound:.4g} > --dp-max-epsilon {self.dp_max_epsilon:g}: "
                    "lower it or raise the noise",
                )
        self.async_noise_multiplier()  # an unmeetable target fails here

    def async_noise_multiplier(self) -> float:
        """z under async: ``--dp-noise``, or the smallest z whose ε after
        ``--dp-participations`` unsampled Gaussian releases meets ``--dp-target-epsilon``."""
        participations = self.dp_participations or 1
        try:
            return self.noise_multiplier(fraction=1.0, rounds=participations)
        except ConfigError as err:
            raise ConfigError(
                err.option, err.value, err.reason.replace("rounds at q=1.0", "participations")
            ) from None

    def async_epsilon_bound(self) -> float:
        """ε of a device that contributes its ``--dp-participations`` updates under async."""
        from fedge.privacy.participation import participation_epsilon

        return participation_epsilon(
            noise_multiplier=self.async_noise_multiplier(),
            participations=self.dp_participations or 1,
            delta=self.dp_delta,
            method=self.dp_accountant,
        )

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
