"""Drift as the coordinator keeps it: each device's latest window against its release.

A device's noisy window (:mod:`fedge.edge.drift`) is compared with the reference distribution
its release carries (:mod:`fedge.protocol.drift`) by population stability index, on the
predicted classes and on the inputs' mean; a device whose larger PSI passes ``threshold`` has
drifted. For a release whose inputs are named features (a table's columns, a sensor's
channels), each feature's PSI is kept too, so an operator sees which feature moved; a feature's
PSI is informative, it does not flag the device by itself (its histogram carries the noise of
every feature's: see :mod:`fedge.edge.drift`). The latest comparison per device is kept in the
release database (``release_drift``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from fedge.protocol.drift import DRIFT_THRESHOLD, DriftReference, NoisyWindow, psi
from fedge.release.tables import DriftRow

__all__ = ["DeviceDrift", "DriftTable", "feature_psi"]


@dataclass(frozen=True)
class DeviceDrift:
    """One device's latest comparison."""

    device_id: str
    version: int
    window: int
    samples: float
    psi_classes: float
    psi_inputs: float
    drifted: bool
    note: str
    updated: float
    #: PSI per named input feature, in the reference's order (empty: none named).
    psi_features: dict[str, float] = field(default_factory=dict)


def _drift(row: DriftRow) -> DeviceDrift:
    return DeviceDrift(
        row.device_id,
        row.version,
        row.window,
        row.samples,
        row.psi_classes,
        row.psi_inputs,
        bool(row.drifted),
        row.note,
        row.updated,
        json.loads(row.features_json or "{}"),
    )


def feature_psi(reference: DriftReference, window: NoisyWindow) -> dict[str, float]:
    """Each named feature's PSI (none when the window's bins differ from the reference's)."""
    if len(window.feature_counts) != len(reference.features):
        return {}
    pairs = zip(reference.feature_shares, window.feature_counts, strict=True)
    if any(len(shares) != len(counts) for shares, counts in pairs):
        return {}
    return {
        name: round(psi(shares, counts), 6)
        for name, shares, counts in zip(
            reference.features, reference.feature_shares, window.feature_counts, strict=True
        )
    }


class DriftTable:
    """The ``release_drift`` table of a release database."""

    def __init__(self, engine: Engine, *, threshold: float = DRIFT_THRESHOLD) -> None:
        self._engine = engine
        self.threshold = threshold

    def record(
        self, device_id: str, window: NoisyWindow, reference: DriftReference | None
    ) -> tuple[DeviceDrift, bool]:
        """Compare ``window`` with ``reference`` and keep it; the result, and whether the
        device has just started drifting (it had not on its previous window)."""
        note, psi_classes, psi_inputs = "", 0.0, 0.0
        by_feature: dict[str, float] = {}
        if reference is None:
            note = f"release {window.version} carries no reference distribution"
        elif len(window.class_counts) != len(reference.classes) or len(window.input_counts) != len(
            reference.inputs
        ):
            note = "the window's bins differ from the release's reference"
        else:
            psi_classes = psi(reference.classes, window.class_counts)
            psi_inputs = psi(reference.inputs, window.input_counts)
            by_feature = feature_psi(reference, window)
        drifted = max(psi_classes, psi_inputs) > self.threshold
        with Session(self._engine) as session, session.begin():
            row = session.get(DriftRow, device_id)
            before = bool(row.drifted) if row is not None else False
            if row is None:
                row = DriftRow(device_id=device_id)
                session.add(row)
            row.version, row.window, row.samples = window.version, window.window, window.samples
            row.psi_classes, row.psi_inputs = psi_classes, psi_inputs
            row.drifted, row.note, row.updated = int(drifted), note, time.time()
            row.features_json = json.dumps(by_feature)
            result = _drift(row)
        return result, drifted and not before

    def latest(self) -> list[DeviceDrift]:
        """Every device's latest comparison."""
        with Session(self._engine) as session:
            rows = session.scalars(select(DriftRow).order_by(DriftRow.device_id))
            return [_drift(r) for r in rows]
