"""Privacy accounting for the subsampled Gaussian mechanism, delegated to Opacus.

fedge does not implement the maths: an :class:`Accountant` keeps the history of
``(noise multiplier, sampling rate, steps)`` and asks Opacus' RDP or PRV accountant for ε at a
given δ. The same class serves the server (one step per round, rate q) and each device (one
step per DP-SGD batch, rate batch/records).
"""

import functools
import warnings
from collections.abc import Iterable
from typing import Any

__all__ = ["ACCOUNTANTS", "RDP_ORDERS", "Accountant", "noise_for_epsilon"]

ACCOUNTANTS = ("rdp", "prv")

History = list[tuple[float, float, int]]
MAX_NOISE = 1000.0

# Opacus' default orders plus larger ones: with little noise or no subsampling the best order
# is above 63, and a missing order only loosens (never breaks) the bound.
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 96, 128, 256, 512]


class Accountant:
    """ε of a sequence of Poisson-subsampled Gaussian steps (Opacus RDP or PRV accountant)."""

    def __init__(
        self,
        *,
        delta: float,
        method: str = "rdp",
        history: Iterable[tuple[float, float, int]] = (),
    ) -> None:
        if method not in ACCOUNTANTS:
            raise ValueError(f"unknown accountant {method!r}; valid: {', '.join(ACCOUNTANTS)}")
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta {delta!r} is outside (0, 1)")
        self.delta = delta
        self.method = method
        self._history: History = [(float(z), float(q), int(n)) for z, q, n in history]

    @property
    def history(self) -> History:
        """``(noise multiplier, sampling rate, steps)`` entries, oldest first."""
        return list(self._history)

    @property
    def steps(self) -> int:
        """The number of accounted steps."""
        return sum(n for _, _, n in self._history)

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Account ``steps`` more releases with noise ``noise_multiplier`` at ``sample_rate``."""
        self._history = _merged(self._history, noise_multiplier, sample_rate, steps)

    def epsilon(self) -> float:
        """ε spent so far at :attr:`delta` (0 before any step)."""
        return _epsilon(self._history, self.delta, self.method)

    def epsilon_after(
        self, *, noise_multiplier: float, sample_rate: float, steps: int = 1
    ) -> float:
        """ε that would be spent after ``steps`` more releases; the state is not changed."""
        history = _merged(self._history, noise_multiplier, sample_rate, steps)
        return _epsilon(history, self.delta, self.method)


# Every device of a round plans the same run: search the noise once, not once per device.
@functools.lru_cache(maxsize=256)
def noise_for_epsilon(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, method: str = "rdp"
) -> float:
    """The smallest noise multiplier (to 1%) whose ε after ``steps`` is at most the target.

    Raises ``ValueError`` when no noise multiplier reaches the target.
    """
    from opacus.accountants.utils import get_noise_multiplier

    if target_epsilon <= 0:
        raise ValueError(f"target epsilon {target_epsilon!r} must be positive")
    # Beyond this much noise training is pointless; checking it first also fails fast where
    # Opacus' search would take long to give up.
    ceiling = _epsilon([(MAX_NOISE, sample_rate, steps)], delta, method)
    if ceiling > target_epsilon:
        raise ValueError(f"even noise multiplier {MAX_NOISE:g} gives epsilon {ceiling:.4g}")
    extra: dict[str, Any] = {"alphas": RDP_ORDERS} if method == "rdp" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z = float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=method,
                epsilon_tolerance=0.01,
                **extra,
            )
        )
    # Opacus returns the upper end of its bisection; check it rather than trust it, since the
    # caller will promise this ε.
    reached = _epsilon([(z, sample_rate, steps)], delta, method)
    if reached > target_epsilon:
        raise ValueError(f"noise {z:.4g} gives epsilon {reached:.4g} > {target_epsilon}")
    return z


def _merged(history: History, z: float, q: float, steps: int) -> History:
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if z <= 0:
        raise ValueError(f"noise multiplier must be positive, got {z}")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"sample rate {q!r} is outside (0, 1]")
    out = list(history)
    if out and out[-1][0] == z and out[-1][1] == q:
        out[-1] = (z, q, out[-1][2] + steps)
    else:
        out.append((float(z), float(q), int(steps)))
    return out


def _epsilon(history: History, delta: float, method: str) -> float:
    return _cached_epsilon(tuple(history), delta, method)


@functools.lru_cache(maxsize=1024)
def _cached_epsilon(
    history: tuple[tuple[float, float, int], ...], delta: float, method: str
) -> float:
    # The round loop asks for the same history twice (budget check, then report): compute once.
    if not history:
        return 0.0
    accountant: Any
    if method == "rdp":
        from opacus.accountants import RDPAccountant

        accountant = RDPAccountant()
    else:
        from opacus.accountants import PRVAccountant

        accountant = PRVAccountant()
    accountant.history = list(history)
    with warnings.catch_warnings():
        # Opacus warns when the best RDP order is the largest tried; the bound is still valid.
        warnings.simplefilter("ignore")
        if method == "rdp":
            return float(accountant.get_epsilon(delta, alphas=RDP_ORDERS))
        return float(accountant.get_epsilon(delta))
