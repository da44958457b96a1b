"""Drift, shared by both sides: a release's reference distribution and the population
stability index (PSI) a device's window is compared with it by.

The reference is computed once, when a release is built, from the transfer set (public or
synthetic data, never a device's): the share of the transfer set the released model predicts
as each class, and the share of its samples in each of five bins of the per-sample input mean,
the bins cut at the quintiles (so each holds about a fifth; finer bins make PSI jumpy on the
few hundred predictions of a window). It travels in the signed manifest
(``report["drift"]``), so a device bins its own inputs the same way, and the coordinator
compares each device's noisy window with it. PSI above 0.25 is the usual "significant shift".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DRIFT_THRESHOLD",
    "INPUT_BINS",
    "DriftReference",
    "bin_inputs",
    "input_statistic",
    "psi",
    "reference_from",
]

DRIFT_THRESHOLD = 0.25
INPUT_BINS = 5
_FLOOR = 1e-4  # an empty bin would make PSI infinite; this is the usual small floor


def input_statistic(x: np.ndarray) -> np.ndarray:
    """The per-sample statistic of a batch that is binned: the mean of each sample's values."""
    batch = np.asarray(x, dtype=np.float64)
    return batch.reshape(len(batch), -1).mean(axis=1)


def bin_inputs(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The input bin of each sample of ``x`` (``len(edges) + 1`` bins)."""
    return np.searchsorted(edges, input_statistic(x), side="right")


@dataclass(frozen=True)
class DriftReference:
    """What a release's model predicts and sees on the transfer set, as shares."""

    classes: tuple[float, ...]
    input_edges: tuple[float, ...]
    inputs: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form carried in the manifest's report."""
        return {
            "classes": [round(v, 6) for v in self.classes],
            "input_edges": [round(v, 6) for v in self.input_edges],
            "inputs": [round(v, 6) for v in self.inputs],
        }

    @classmethod
    def from_dict(cls, data: Any) -> DriftReference | None:
        """Parse the JSON form; ``None`` when absent or malformed (no comparison then)."""
        if not isinstance(data, dict):
            return None
        try:
            ref = cls(
                tuple(float(v) for v in data["classes"]),
                tuple(float(v) for v in data["input_edges"]),
                tuple(float(v) for v in data["inputs"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if not ref.classes or len(ref.inputs) != len(ref.input_edges) + 1:
            return None
        return ref


def reference_from(x: np.ndarray, logits: np.ndarray, *, bins: int = INPUT_BINS) -> DriftReference:
    """The reference of a model whose outputs on the transfer set ``x`` are ``logits``."""
    classes = np.bincount(np.argmax(logits, axis=1), minlength=logits.shape[1]).astype(float)
    stat = input_statistic(x)
    edges = np.unique(np.quantile(stat, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, stat, side="right"), minlength=len(edges) + 1)
    return DriftReference(
        tuple((classes / classes.sum()).tolist()),
        tuple(edges.tolist()),
        tuple((counts / counts.sum()).tolist()),
    )


def psi(expected: np.ndarray | tuple[float, ...], actual: np.ndarray | tuple[float, ...]) -> float:
    """Population stability index of the counts (or shares) ``actual`` against ``expected``.

    Negative counts (noise) are clipped to zero; both sides are normalized and floored.
    """
    e = np.clip(np.asarray(expected, dtype=np.float64), 0, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), 0, None)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        return 0.0
    e = np.maximum(e / e.sum(), _FLOOR)
    a = np.maximum(a / a.sum(), _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))
