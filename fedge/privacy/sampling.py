"""Poisson sampling of clients and the noise generators of central DP.

Each client is selected independently with probability q, so the number of clients per round
varies (and can be zero). That is the sampling the subsampled-Gaussian accountant assumes;
selecting exactly ``q·N`` clients would not give the same amplification.
"""

import secrets
from collections.abc import Sequence

import numpy as np

__all__ = ["make_generators", "poisson_sample"]


def poisson_sample(node_ids: Sequence[int], rate: float, rng: np.random.Generator) -> list[int]:
    """Each of ``node_ids`` independently with probability ``rate``, in the given order."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"sampling rate {rate!r} is outside (0, 1]")
    draws = rng.random(len(node_ids))
    return [node for node, u in zip(node_ids, draws, strict=True) if u < rate]


def make_generators(seed: int | None, count: int) -> list[np.random.Generator]:
    """``count`` independent generators: from ``seed`` (reproducible) or from the OS's CSPRNG.

    Without a seed the entropy comes from :mod:`secrets`, so nobody who knows the code can
    predict (and subtract) the noise.
    """
    entropy = seed if seed is not None else secrets.randbits(128)
    return [
        np.random.Generator(np.random.PCG64(s))
        for s in np.random.SeedSequence(entropy).spawn(count)
    ]
