"""Devices' inference telemetry as the release store keeps it: the latest report per device."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from fedge.protocol.manifest import format_time
from fedge.records import copy_fields
from fedge.release.tables import TelemetryRow

__all__ = ["DeviceTelemetry", "TelemetryTable"]


@dataclass(frozen=True)
class DeviceTelemetry:
    """The latest inference telemetry of one device (counts and latencies only)."""

    device_id: str
    active_version: int
    requests: int
    errors: int
    latency_p50_ms: float
    latency_p99_ms: float
    swaps: int
    updated: str


class TelemetryTable:
    """The ``release_telemetry`` table of a release database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, telemetry: DeviceTelemetry) -> None:
        """Keep the latest inference telemetry of a device."""
        with Session(self._engine) as session, session.begin():
            row = session.get(TelemetryRow, telemetry.device_id)
            if row is None:
                row = TelemetryRow(device_id=telemetry.device_id)
                session.add(row)
            for name, value in asdict(telemetry).items():
                setattr(row, name, value)
            row.updated = format_time(datetime.now(UTC))

    def latest(self, *, version: int | None = None) -> list[DeviceTelemetry]:
        """Latest telemetry per device (only devices serving ``version`` if given)."""
        query = select(TelemetryRow).order_by(TelemetryRow.device_id)
        if version is not None:
            query = query.where(TelemetryRow.active_version == version)
        with Session(self._engine) as session:
            return [copy_fields(DeviceTelemetry, r) for r in session.scalars(query)]
