"""Drift as the coordinator keeps it: each device's latest window against its release.

A device's noisy window (:mod:`fedge.edge.drift`) is compared with the reference distribution
its release carries (:mod:`fedge.protocol.drift`) by population stability index, on the
predicted classes and on the inputs' mean; a device whose larger PSI passes ``threshold`` has
drifted. The latest comparison per device is kept in the release database (``release_drift``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from fedge.protocol.drift import DRIFT_THRESHOLD, DriftReference, psi
from fedge.release.tables import DriftRow

__all__ = ["DeviceDrift", "DriftTable", "Window"]


@dataclass(frozen=True)
class Window:
    """A device's noisy window as it arrived."""

    version: int
    window: int
    samples: float
    class_counts: tuple[float, ...]
    input_counts: tuple[float, ...]


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
    )


class DriftTable:
    """The ``release_drift`` table of a release database."""

    def __init__(self, engine: Engine, *, threshold: float = DRIFT_THRESHOLD) -> None:
        self._engine = engine
        self.threshold = threshold

    def record(
        self, device_id: str, window: Window, reference: DriftReference | None
    ) -> tuple[DeviceDrift, bool]:
        """Compare ``window`` with ``reference`` and keep it; the result, and whether the
        device has just started drifting (it had not on its previous window)."""
        note, psi_classes, psi_inputs = "", 0.0, 0.0
        if reference is None:
            note = f"release {window.version} carries no reference distribution"
        elif len(window.class_counts) != len(reference.classes) or len(window.input_counts) != len(
            reference.inputs
        ):
            note = "the window's bins differ from the release's reference"
        else:
            psi_classes = psi(reference.classes, window.class_counts)
            psi_inputs = psi(reference.inputs, window.input_counts)
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
            result = _drift(row)
        return result, drifted and not before

    def latest(self) -> list[DeviceDrift]:
        """Every device's latest comparison."""
        with Session(self._engine) as session:
            rows = session.scalars(select(DriftRow).order_by(DriftRow.device_id))
            return [_drift(r) for r in rows]
