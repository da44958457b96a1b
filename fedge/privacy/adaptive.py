"""Adaptive clipping (Andrew et al., 2021, "Differentially private learning with adaptive
clipping"): the clip norm follows a target quantile of the clients' update norms.

Each round every sampled client contributes ``b = 1[norm(update) <= C]``; the server adds
Gaussian noise (std ``count_std``) to the centred count ``sum(b - 1/2)`` (sensitivity 1/2),
estimates the fraction below ``C`` with the fixed denominator, and moves ``C`` geometrically
towards the target quantile. The two noised releases together equal one Gaussian mechanism with
noise multiplier ``z`` when the update noise uses ``z_update = (z^-2 - (2 count_std)^-2)^-1/2``;
the accountant then charges ``z``.
"""

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["AdaptiveClip", "count_noise_std", "update_noise_multiplier"]


def count_noise_std(*, noise_multiplier: float, expected_clients: float) -> float:
    """The count noise: the paper's ``expected clients / 20``, but at least ``z``.

    At least ``z`` so that the update's noise multiplier exists (and is at most 1.16 z).
    """
    return max(expected_clients / 20.0, noise_multiplier)


def update_noise_multiplier(*, noise_multiplier: float, count_std: float) -> float:
    """The update's noise multiplier, such that update and count together cost exactly ``z``."""
    rest = noise_multiplier**-2 - (2.0 * count_std) ** -2
    if rest <= 0:
        raise ValueError(
            f"count noise {count_std} is too small for noise multiplier {noise_multiplier}"
        )
    return rest**-0.5


@dataclass
class AdaptiveClip:
    """The clip norm and its update rule (target quantile, learning rate)."""

    clip_norm: float
    count_std: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2

    def update(
        self, *, below: int, sampled: int, denominator: float, rng: np.random.Generator
    ) -> float:
        """Move the clip norm after a round; return the noised fraction of norms below it."""
        noised = (below - 0.5 * sampled) + float(rng.normal(0.0, self.count_std))
        fraction = noised / denominator + 0.5
        self.clip_norm *= math.exp(-self.learning_rate * (fraction - self.target_quantile))
        return fraction
