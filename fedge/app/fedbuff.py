"""Buffered asynchronous aggregation (FedBuff, Nguyen et al. 2022) as pure functions.

A device's update is ``Δ = y - x_v``: its trained weights minus the version ``x_v`` it started
from. It arrives ``τ`` versions late (its staleness) and is weighted by ``s(τ)``: polynomial
``(1 + τ)^-a`` (``poly:A``; FedBuff's and FedAsync's ``1/sqrt(1+τ)`` is ``poly:0.5``) or
``constant`` (1). Once ``K`` updates are buffered the server steps

    x ← x + η · (1/K) · Σ s(τ_i) Δ_i

with server learning rate ``η`` (``--async-lr``). Dividing by ``K`` rather than by the sum of
weights is FedBuff's choice: stale updates really count for less, they are not renormalised
back to full size.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedge.errors import ConfigError

__all__ = [
    "StalenessWeight",
    "apply_update",
    "buffered_update",
    "model_delta",
    "parse_staleness_weight",
]

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class StalenessWeight:
    """``s(τ) = (1 + τ)^-exponent`` (exponent 0 is the constant weight 1)."""

    exponent: float

    def __call__(self, staleness: int) -> float:
        if staleness < 0:
            raise ValueError(f"staleness {staleness} is negative")
        return float((1.0 + staleness) ** -self.exponent)

    def describe(self) -> str:
        """The spec this weight was parsed from."""
        return "constant" if self.exponent == 0 else f"poly:{self.exponent:g}"


def parse_staleness_weight(spec: str) -> StalenessWeight:
    """``poly:A`` (A >= 0) or ``constant``; a :class:`ConfigError` otherwise."""
    if spec == "constant":
        return StalenessWeight(0.0)
    kind, _, arg = spec.partition(":")
    if kind == "poly":
        try:
            exponent = float(arg)
        except ValueError:
            exponent = -1.0
        if exponent >= 0 and np.isfinite(exponent):
            return StalenessWeight(exponent)
    raise ConfigError(
        "--staleness-weight", spec, "is not poly:A (A >= 0, weight (1+staleness)^-A) or constant"
    )


def model_delta(trained: Arrays, start: Arrays) -> dict[str, np.ndarray]:
    """``trained - start`` (float64) over the floating tensors; integer buffers are not
    trained and keep the global value."""
    return {
        k: np.asarray(trained[k], dtype=np.float64) - np.asarray(ref, dtype=np.float64)
        for k, ref in start.items()
        if np.issubdtype(np.asarray(ref).dtype, np.floating)
    }


def buffered_update(
    deltas: Sequence[Arrays], weights: Sequence[float], buffer_size: int
) -> dict[str, np.ndarray]:
    """``(1/K) Σ w_i Δ_i`` with ``K = buffer_size``."""
    if len(deltas) != len(weights):
        raise ValueError(f"{len(deltas)} updates but {len(weights)} weights")
    if not deltas or buffer_size < 1:
        raise ValueError("a buffered update needs at least one update and a buffer size >= 1")
    total = {k: np.zeros(np.shape(v), dtype=np.float64) for k, v in deltas[0].items()}
    for delta, weight in zip(deltas, weights, strict=True):
        for k in total:
            total[k] += weight * np.asarray(delta[k], dtype=np.float64)
    return {k: v / buffer_size for k, v in total.items()}


def apply_update(model: Arrays, update: Arrays, server_lr: float) -> dict[str, np.ndarray]:
    """``x + η · update`` in each tensor's own dtype (tensors without an update unchanged)."""
    return {
        k: (
            np.asarray(v + server_lr * np.asarray(update[k]), dtype=np.asarray(v).dtype)
            if k in update
            else np.asarray(v)
        )
        for k, v in model.items()
    }
