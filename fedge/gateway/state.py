"""The gateway's durable state in SQLite: its site's roster, manifests, and the cloud's outbox.

- The roster: every device the cloud enrolled for the site (from each sync; revoked ones
  marked), with what each said in its last heartbeat. The gateway authenticates devices
  against it, so a device the cloud revoked is refused at the gateway, with the cloud link up
  or (from the last roster the gateway got) down.
- Manifests: the signed release manifest the cloud last targeted at each device, so a device
  asking while the cloud cannot be reached gets what the cloud would have said.
- The outbox: install reports (all, in order) and inference telemetry (the latest per device)
  the gateway owes the cloud; each stays until the cloud has acknowledged it.

Every write is a short transaction: a gateway killed at any moment leaves a consistent file.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Boolean, Float, Integer, LargeBinary, String, delete, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fedge.protocol.manifest import SignedManifest
from fedge.storage import SqliteDatabase, migrated_metadata

__all__ = [
    "INSTALL",
    "TELEMETRY",
    "GatewayState",
    "OutboxRow",
    "RosterEntry",
    "SiteDeviceRow",
]

INSTALL = "install"
TELEMETRY = "telemetry"


class _Base(DeclarativeBase):
    metadata = migrated_metadata("gateway")


class SiteDeviceRow(_Base):
    """A device of the site: who the cloud says it is, and what it last said of itself."""

    __tablename__ = "site_devices"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="")
    cert_serial: Mapped[str] = mapped_column(String(64), default="")
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[float] = mapped_column(Float, default=0.0)
    # Its last heartbeat (a serialized fedge.v1.HeartbeatRequest; empty: none yet).
    heartbeat: Mapped[bytes] = mapped_column(LargeBinary, default=b"")


class ManifestRow(_Base):
    """The cloud's last answer to "which release should this device run?"."""

    __tablename__ = "site_manifests"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    available: Mapped[bool] = mapped_column(Boolean)
    manifest_json: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    signature: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    key_id: Mapped[str] = mapped_column(String(64), default="")
    fetched: Mapped[float] = mapped_column(Float)


class OutboxRow(_Base):
    """A report the gateway owes the cloud (a serialized hub request)."""

    __tablename__ = "site_outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True)
class RosterEntry:
    """A device as the cloud's roster names it."""

    device_id: str
    node_id: int
    name: str
    cert_serial: str
    revoked: bool


class GatewayState(SqliteDatabase):
    """The gateway database (one SQLite file in its state directory; thread-safe)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, tables=_Base)

    # roster

    def update_roster(self, entries: list[RosterEntry]) -> list[str]:
        """Take the cloud's roster (new devices added, revocations applied); the device ids
        revoked by this update."""
        revoked = []
        with self.session() as s:
            for entry in entries:
                row = s.get(SiteDeviceRow, entry.device_id)
                if row is None:
                    row = SiteDeviceRow(device_id=entry.device_id)
                    s.add(row)
                if entry.revoked and not row.revoked:
                    revoked.append(entry.device_id)
                row.node_id, row.name = entry.node_id, entry.name
                row.cert_serial, row.revoked = entry.cert_serial, entry.revoked
        return revoked

    def device(self, device_id: str) -> SiteDeviceRow | None:
        """The device ``device_id`` of the site, or ``None``."""
        with self.session() as s:
            return s.get(SiteDeviceRow, device_id)

    def devices(self) -> list[SiteDeviceRow]:
        """Every device of the site, by node id."""
        with self.session() as s:
            return list(s.scalars(select(SiteDeviceRow).order_by(SiteDeviceRow.node_id)))

    def heard_from(self, device_id: str, heartbeat: bytes | None = None) -> None:
        """Record that ``device_id`` called now (and its heartbeat, if this was one)."""
        with self.session() as s:
            row = s.get(SiteDeviceRow, device_id)
            if row is not None:
                row.last_seen = time.time()
                if heartbeat is not None:
                    row.heartbeat = heartbeat

    # manifests

    def save_manifest(self, device_id: str, signed: SignedManifest | None) -> None:
        """Keep the cloud's answer for ``device_id`` (``None``: no release targets it)."""
        with self.session() as s:
            row = s.get(ManifestRow, device_id)
            if row is None:
                row = ManifestRow(device_id=device_id)
                s.add(row)
            row.available, row.fetched = signed is not None, time.time()
            row.manifest_json = signed.manifest_json if signed else b""
            row.signature = signed.signature if signed else b""
            row.key_id = signed.key_id if signed else ""

    def manifest(self, device_id: str) -> tuple[bool, SignedManifest | None, float]:
        """``(known, manifest, fetched)``: whether the cloud answered for ``device_id`` yet,
        its last answer and when it came."""
        with self.session() as s:
            row = s.get(ManifestRow, device_id)
            if row is None:
                return False, None, 0.0
            signed = (
                SignedManifest(row.manifest_json, row.signature, row.key_id)
                if row.available
                else None
            )
            return True, signed, row.fetched

    # outbox

    def queue(self, kind: str, device_id: str, payload: bytes) -> None:
        """Owe the cloud a report; telemetry replaces the device's older telemetry."""
        with self.session() as s:
            if kind == TELEMETRY:
                s.execute(
                    delete(OutboxRow).where(
                        OutboxRow.kind == TELEMETRY, OutboxRow.device_id == device_id
                    )
                )
            s.add(OutboxRow(kind=kind, device_id=device_id, payload=payload, created=time.time()))

    def pending(self, limit: int = 100) -> list[OutboxRow]:
        """The oldest reports still owed, in order."""
        with self.session() as s:
            return list(s.scalars(select(OutboxRow).order_by(OutboxRow.id).limit(limit)))

    def delivered(self, row_id: int) -> None:
        """The cloud acknowledged report ``row_id``."""
        with self.session() as s:
            s.execute(delete(OutboxRow).where(OutboxRow.id == row_id))

    def owed(self) -> int:
        """How many reports the gateway still owes the cloud."""
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(OutboxRow)) or 0)
