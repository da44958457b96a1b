"""Central DP when devices choose when to train: a bound on each device's participations.

Under buffered asynchronous aggregation the server does not sample anybody: a device trains
when it is online and free, so Poisson-subsampling amplification, which rests on the server's
own coin flips, does not hold. What does hold without any sampling argument:

- every aggregation adds Gaussian noise N(0, (zC)²) once to the sum of the buffer's clipped,
  staleness-weighted updates (each weight is at most 1, so one device moves the sum by at most
  C), and divides by the buffer size K;
- the server accepts at most ``k`` updates from each device over the run (``--dp-participations``)
  and at most one per aggregation, and stops giving a device work once it has contributed ``k``
  times.

A device therefore appears in at most ``k`` Gaussian releases of sensitivity C. Its guarantee
(device level, under zero-out adjacency: the device's updates replaced by zeros, so who trains
when is public, as in DP-FTRL's production accounting) is ``k`` adaptively composed Gaussian
mechanisms with noise multiplier z and no amplification: RDP ``k·a/(2z²)`` at order a, which
:class:`~fedge.privacy.accountant.Accountant` computes as ``k`` steps at sampling rate 1.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from fedge.privacy.accountant import Accountant
from fedge.privacy.central import clip_update, noised_mean_update
from fedge.privacy.sampling import make_generators

__all__ = ["ParticipationBoundDP", "participation_epsilon"]


def participation_epsilon(
    *, noise_multiplier: float, participations: int, delta: float, method: str = "rdp"
) -> float:
    """ε of ``participations`` Gaussian releases (noise multiplier z, no subsampling) at δ."""
    if participations <= 0:
        return 0.0
    accountant = Accountant(delta=delta, method=method)
    accountant.step(noise_multiplier=noise_multiplier, sample_rate=1.0, steps=participations)
    return accountant.epsilon()


class ParticipationBoundDP:
    """The noise, the per-device participation count and the ε of central DP under async."""

    def __init__(
        self,
        *,
        noise_multiplier: float,
        clip_norm: float,
        buffer_size: int,
        max_participations: int,
        delta: float,
        accountant: str = "rdp",
        seed: int | None = None,
    ) -> None:
        if noise_multiplier <= 0 or clip_norm <= 0 or buffer_size < 1 or max_participations < 1:
            raise ValueError(
                "noise multiplier, clip norm, buffer size and participations must be positive"
            )
        self.noise_multiplier = noise_multiplier
        self.clip_norm = clip_norm
        self.buffer_size = buffer_size
        self.max_participations = max_participations
        self.delta = delta
        self.method = accountant
        self.participations: dict[int, int] = {}
        (self._noise_rng,) = make_generators(seed, 1)

    def may_contribute(self, device: int) -> bool:
        """Whether ``device`` has participations left."""
        return self.participations.get(device, 0) < self.max_participations

    def noised_update(
        self,
        devices: Sequence[int],
        deltas: Sequence[Mapping[str, np.ndarray]],
        weights: Sequence[float],
    ) -> dict[str, np.ndarray]:
        """``(Σ w_i·clip(Δ_i) + N(0, (zC)²)) / K`` for one full buffer; counts each device."""
        if len(set(devices)) != len(devices):
            raise ValueError("a device contributes at most one update to an aggregation")
        if any(not 0.0 <= w <= 1.0 for w in weights):
            raise ValueError("staleness weights above 1 would raise the sensitivity above C")
        for device in devices:
            if not self.may_contribute(device):
                raise ValueError(f"device {device} has used its {self.max_participations} updates")
        weighted = [
            {k: v * w for k, v in clip_update(dict(delta), self.clip_norm).items()}
            for delta, w in zip(deltas, weights, strict=True)
        ]
        reference = {k: np.zeros(np.shape(v)) for k, v in deltas[0].items()}
        noised, _ = noised_mean_update(
            weighted,
            reference,
            clip_norm=self.clip_norm,
            noise_std=self.noise_multiplier * self.clip_norm,
            denominator=self.buffer_size,
            rng=self._noise_rng,
        )
        for device in devices:
            self.participations[device] = self.participations.get(device, 0) + 1
        return noised

    @property
    def epsilon(self) -> float:
        """ε spent so far by the device that has contributed most."""
        most = max(self.participations.values(), default=0)
        return participation_epsilon(
            noise_multiplier=self.noise_multiplier,
            participations=most,
            delta=self.delta,
            method=self.method,
        )

    @property
    def epsilon_bound(self) -> float:
        """ε of a device that uses all its participations: the run's guarantee."""
        return participation_epsilon(
            noise_multiplier=self.noise_multiplier,
            participations=self.max_participations,
            delta=self.delta,
            method=self.method,
        )
