"""Privacy accounting for the subsampled Gaussian mechanism, delegated to Opacus.

fedge does not implement the maths: an :class:`Accountant` keeps the history of
``(noise multiplier, sampling rate, steps)`` and asks Opacus' RDP or PRV accountant for ε at a
given δ. The same class serves the server (one step per round, rate q) and each device (one
step per DP-SGD batch, rate batch/records).
"""

from collections.abc import Iterable
from typing import Any

__all__ = ["ACCOUNTANTS", "Accountant", "noise_for_epsilon"]

ACCOUNTANTS = ("rdp", "prv")

History = list[tuple[float, float, int]]


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

    def epsilon_after(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> float:
        """ε that would be spent after ``steps`` more releases; the state is not changed."""
        history = _merged(self._history, noise_multiplier, sample_rate, steps)
        return _epsilon(history, self.delta, self.method)


def noise_for_epsilon(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, method: str = "rdp"
) -> float:
    """The smallest noise multiplier (to 1%) whose ε after ``steps`` is at most the target.

    Raises ``ValueError`` when no noise multiplier reaches the target.
    """
    from opacus.accountants.utils import get_noise_multiplier

    if target_epsilon <= 0:
        raise ValueError(f"target epsilon {target_epsilon!r} must be positive")
    z = float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=method,
            epsilon_tolerance=0.01,
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
    return float(accountant.get_epsilon(delta))
