"""Drift, shared by both sides: a release's reference distribution and the population
stability index (PSI) a device's window is compared with it by.

The reference is computed once, when a release is built, from the transfer set (public or
synthetic data, never a device's): the share of the transfer set the released model predicts
as each class, and the share of its samples in each of five bins of the per-sample input mean,
the bins cut at the quintiles (so each holds about a fifth; finer bins make PSI jumpy on the
few hundred predictions of a window). It travels in the signed manifest
(``report["drift"]``), so a device bins its own inputs the same way, and the coordinator
compares each device's noisy window with it. PSI above 0.25 is the usual "significant shift".

A model of named input features (a table's columns, a sensor's channels: the release's
preprocessing names them) gets a reference per feature too: five quintile bins of each
feature's value in the model input (a channel's mean over the window), so the coordinator
says which feature drifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DRIFT_THRESHOLD",
    "INPUT_BINS",
    "DriftReference",
    "NoisyWindow",
    "bin_features",
    "bin_inputs",
    "feature_values",
    "input_statistic",
    "psi",
    "reference_from",
]

DRIFT_THRESHOLD = 0.25
INPUT_BINS = 5
_FLOOR = 1e-4  # an empty bin would make PSI infinite; this is the usual small floor


@dataclass(frozen=True)
class NoisyWindow:
    """A closed window: noisy counts per class and per input bin, and its privacy cost."""

    version: int
    window: int
    samples: float
    class_counts: tuple[float, ...]
    input_counts: tuple[float, ...]
    epsilon: float
    #: Per named feature of the release's reference, noisy counts per bin of its value.
    feature_counts: tuple[tuple[float, ...], ...] = ()


def input_statistic(x: np.ndarray) -> np.ndarray:
    """The per-sample statistic of a batch that is binned: the mean of each sample's values."""
    batch = np.asarray(x, dtype=np.float64)
    return batch.reshape(len(batch), -1).mean(axis=1)


def bin_inputs(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The input bin of each sample of ``x`` (``len(edges) + 1`` bins)."""
    return np.searchsorted(edges, input_statistic(x), side="right")


def feature_values(x: np.ndarray) -> np.ndarray | None:
    """Each sample's value of each named feature: a table's columns ``(N, F)`` as they are,
    a series' channels ``(N, C, W)`` as their mean over the window; ``None`` otherwise."""
    batch = np.asarray(x, dtype=np.float64)
    if batch.ndim == 2:
        return batch
    if batch.ndim == 3:
        return batch.mean(axis=2)
    return None


def bin_features(x: np.ndarray, edges: tuple[tuple[float, ...], ...]) -> list[np.ndarray]:
    """Per feature, the bin of each sample of ``x`` (``len(edges[j]) + 1`` bins)."""
    values = feature_values(x)
    if values is None or values.shape[1] != len(edges):
        return []
    return [np.searchsorted(np.asarray(e), values[:, j], side="right") for j, e in enumerate(edges)]


@dataclass(frozen=True)
class DriftReference:
    """What a release's model predicts and sees on the transfer set, as shares."""

    classes: tuple[float, ...]
    input_edges: tuple[float, ...]
    inputs: tuple[float, ...]
    #: Named features (empty: none): each one's bin edges and shares, as for the input mean.
    features: tuple[str, ...] = ()
    feature_edges: tuple[tuple[float, ...], ...] = ()
    feature_shares: tuple[tuple[float, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form carried in the manifest's report."""
        data: dict[str, Any] = {
            "classes": [round(v, 6) for v in self.classes],
            "input_edges": [round(v, 6) for v in self.input_edges],
            "inputs": [round(v, 6) for v in self.inputs],
        }
        if self.features:
            data["features"] = list(self.features)
            data["feature_edges"] = [[round(v, 6) for v in e] for e in self.feature_edges]
            data["feature_shares"] = [[round(v, 6) for v in e] for e in self.feature_shares]
        return data

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
                tuple(str(f) for f in data.get("features", ())),
                tuple(tuple(float(v) for v in e) for e in data.get("feature_edges", ())),
                tuple(tuple(float(v) for v in e) for e in data.get("feature_shares", ())),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if not ref.classes or len(ref.inputs) != len(ref.input_edges) + 1:
            return None
        if not len(ref.features) == len(ref.feature_edges) == len(ref.feature_shares):
            return None
        pairs = zip(ref.feature_edges, ref.feature_shares, strict=True)
        if any(len(shares) != len(edges) + 1 for edges, shares in pairs):
            return None
        return ref


def reference_from(
    x: np.ndarray,
    logits: np.ndarray,
    *,
    bins: int = INPUT_BINS,
    features: tuple[str, ...] | list[str] = (),
) -> DriftReference:
    """The reference of a model whose outputs on the transfer set ``x`` are ``logits``; with
    ``features`` (the names of ``x``'s features, see :func:`feature_values`), per feature too."""
    classes = np.bincount(np.argmax(logits, axis=1), minlength=logits.shape[1]).astype(float)
    edges, shares = _quantile_bins(input_statistic(x), bins)
    values = feature_values(x)
    per_feature = []
    named: tuple[str, ...] = ()
    if values is not None and features and values.shape[1] == len(features):
        named = tuple(features)
        per_feature = [_quantile_bins(values[:, j], bins) for j in range(len(named))]
    return DriftReference(
        tuple((classes / classes.sum()).tolist()),
        edges,
        shares,
        named,
        tuple(e for e, _ in per_feature),
        tuple(s for _, s in per_feature),
    )


def _quantile_bins(values: np.ndarray, bins: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Edges at ``values``' quantiles (about equal bins; ties merge bins) and each bin's share."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return tuple(edges.tolist()), tuple((counts / counts.sum()).tolist())


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
