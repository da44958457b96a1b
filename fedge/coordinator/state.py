"""The coordinator's durable state in SQLite: devices, enrolment tokens, runs, rounds, events.

Every write is a short transaction, so a coordinator killed at any moment leaves a consistent
database; the run loop's checkpoints (files) plus these rows are all a restart needs.
"""

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from fedge.data.device import DataSummary
from fedge.errors import NotFoundError, TokenError
from fedge.storage import SqliteDatabase, migrated_metadata

__all__ = [
    "KIND_DEVICE",
    "KIND_GATEWAY",
    "DeviceRow",
    "EventRow",
    "Heartbeat",
    "RoundRow",
    "RunRow",
    "RunState",
    "SiteDeviceReport",
    "State",
]

KIND_DEVICE = "device"
KIND_GATEWAY = "gateway"


class RunState:
    """Run states, as stored (the control protocol's ``RunState`` without the prefix)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


class _Base(DeclarativeBase):
    metadata = migrated_metadata("coordinator")


class DeviceRow(_Base):
    """An enrolled device or site gateway; its integer id is its Flower node id."""

    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    cert_serial: Mapped[str] = mapped_column(String(64))
    enrolled_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float, default=0.0)
    state: Mapped[str] = mapped_column(String(32), default="enrolled")
    version: Mapped[str] = mapped_column(String(64), default="")
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    privacy_spent: Mapped[float | None] = mapped_column(Float, nullable=True)
    # What the device said in its last heartbeat: can it train, its profile, what it serves.
    can_train: Mapped[bool] = mapped_column(Boolean, default=False)
    profile: Mapped[str] = mapped_column(String(100), default="")
    release_version: Mapped[int] = mapped_column(Integer, default=0)
    release_slot: Mapped[str] = mapped_column(String(8), default="")
    # The device's training data as it summarizes it ("" when it has none).
    data_dataset: Mapped[str] = mapped_column(String(64), default="")
    data_shape: Mapped[str] = mapped_column(String(64), default="")
    data_classes: Mapped[int] = mapped_column(Integer, default=0)
    data_samples: Mapped[int] = mapped_column(Integer, default=0)
    # "device" or "gateway". A gateway's site is the one it serves; a device's site is the
    # gateway it enrolled at and talks to ("" for a device of the cloud itself).
    kind: Mapped[str] = mapped_column(String(16), default=KIND_DEVICE)
    site: Mapped[str] = mapped_column(String(100), default="")
    # A gateway: the hash of its enrolment certificate, which its site's tokens pin.
    enroll_fingerprint: Mapped[str] = mapped_column(String(64), default="")
    # A device behind a gateway: whether the gateway last said it is connected.
    reachable: Mapped[bool] = mapped_column(Boolean, default=False)
    # Its last personalisation as it reported it, noised on the device (version 0: none yet).
    personal_version: Mapped[int] = mapped_column(Integer, default=0)
    personal_gain: Mapped[float] = mapped_column(Float, default=0.0)
    personal_reason: Mapped[str] = mapped_column(String(32), default="")

    @property
    def is_gateway(self) -> bool:
        """Whether this row is a site gateway."""
        return self.kind == KIND_GATEWAY


class TokenRow(_Base):
    """A one-time enrolment token (only its hash is stored)."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float)
    used_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # What the token enrols: a device (of the cloud, or of ``site`` at its gateway) or the
    # gateway of ``site``.
    kind: Mapped[str] = mapped_column(String(16), default=KIND_DEVICE)
    site: Mapped[str] = mapped_column(String(100), default="")


class RunRow(_Base):
    """A training run and where its checkpoints live."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(String(16))
    config_json: Mapped[str] = mapped_column(Text)
    rounds_total: Mapped[int] = mapped_column(Integer)
    created: Mapped[float] = mapped_column(Float)
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The node ids of the devices the run trains on, pinned when it first starts (JSON list).
    devices_json: Mapped[str] = mapped_column(Text, default="")
    # An async run's live status: model version, updates in its buffer, trainings out, refused
    # updates and why (JSON object; "" for a sync run).
    async_json: Mapped[str] = mapped_column(Text, default="", server_default="")


class RoundRow(_Base):
    """A completed round of a run."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_id", "server_round"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    server_round: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float] = mapped_column(Float)
    loss: Mapped[float] = mapped_column(Float)
    sampled: Mapped[int] = mapped_column(Integer)
    aggregated: Mapped[int] = mapped_column(Integer)
    dropped: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    # Each dropped device and why: [{"device_id", "node_id", "reason"}].
    drops_json: Mapped[str] = mapped_column(Text, default="[]")
    epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Per site, what its gateway sent this round: [{"site", "gateway_id", "replies", ...}].
    sites_json: Mapped[str] = mapped_column(Text, default="[]")
    # The task's own metrics beyond accuracy and loss: {"roc_auc": ..., "f1": ...}.
    metrics_json: Mapped[str | None] = mapped_column(Text, default="{}", server_default="{}")
    # An async run's version: each update it took, {"device_id", "node_id", "staleness",
    # "weight"} (JSON list; "" for a sync round).
    async_json: Mapped[str] = mapped_column(Text, default="", server_default="")


class EventRow(_Base):
    """Something that happened: a refused request, a dropped device, a resumed run."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[float] = mapped_column(Float)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    device_id: Mapped[str] = mapped_column(String(64), default="")
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class Heartbeat:
    """What a device says of itself in a heartbeat."""

    can_train: bool
    profile: str
    release_version: int
    release_slot: str
    data: DataSummary | None = None
    # Its last personalisation as it reported it (noised on the device; version 0: none).
    personal_version: int = 0
    personal_gain: float = 0.0
    personal_reason: str = ""


@dataclass(frozen=True)
class SiteDeviceReport:
    """What a gateway says of one of its devices (``heartbeat`` ``None``: none heard yet)."""

    device_id: str
    online: bool
    last_seen: float
    state: str
    version: str
    heartbeat: Heartbeat | None


@dataclass(frozen=True)
class IssuedToken:
    """A new enrolment secret (shown once) and when it expires."""

    secret: str
    expires: float


class State(SqliteDatabase):
    """The coordinator database (one SQLite file; safe to use from many threads)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, tables=_Base)

    # tokens and devices

    def create_token(
        self, *, ttl_seconds: float, kind: str = KIND_DEVICE, site: str = ""
    ) -> IssuedToken:
        """A new one-time enrolment secret valid for ``ttl_seconds``: for a device (of the
        cloud, or of ``site``) or, with ``kind`` gateway, for the gateway of ``site``."""
        secret = secrets.token_hex(16)
        now = time.time()
        with self.session() as s:
            s.add(
                TokenRow(
                    secret_sha256=_sha(secret),
                    created=now,
                    expires=now + ttl_seconds,
                    kind=kind,
                    site=site,
                )
            )
        return IssuedToken(secret, now + ttl_seconds)

    def token_kind(self, secret: str) -> tuple[str, str]:
        """``(kind, site)`` of the unused, unexpired token ``secret``; :class:`TokenError`."""
        with self.session() as s:
            token = _usable_token(s, secret)
            return token.kind, token.site

    def enroll(
        self,
        *,
        secret: str,
        name: str,
        cert_serial: str,
        device_id: str,
        site: str | None = None,
        enroll_fingerprint: str = "",
    ) -> DeviceRow:
        """Consume the token ``secret`` and add the device (or gateway) it enrols.

        ``site``: the site whose gateway relayed the request (``None``: the cloud's own
        enrolment port). A token is only good where it was made for: a site's device token at
        that site's gateway, any other token at the cloud. :class:`TokenError` otherwise.
        """
        with self.session() as s:
            token = _usable_token(s, secret)
            if site is not None and (token.kind != KIND_DEVICE or token.site != site):
                raise TokenError(f"the enrolment token is not for site {site!r}")
            if site is None and token.kind == KIND_DEVICE and token.site:
                raise TokenError(
                    f"the enrolment token is for a device of site {token.site!r}: enrol at "
                    "that site's gateway"
                )
            token.used_by = device_id
            device = DeviceRow(
                device_id=device_id,
                name=name[:200],
                cert_serial=cert_serial,
                enrolled_at=time.time(),
                kind=token.kind,
                site=token.site,
                enroll_fingerprint=enroll_fingerprint,
            )
            s.add(device)
            s.flush()
            return device

    def device(self, device_id: str) -> DeviceRow | None:
        """The device ``device_id``, or ``None``."""
        with self.session() as s:
            return s.scalar(select(DeviceRow).where(DeviceRow.device_id == device_id))

    def find_device(self, ref: str) -> DeviceRow:
        """The device named by ``ref``: its id, a unique prefix of an id, or its name."""
        ref = ref.strip()
        devices = self.devices()
        for match in (
            [d for d in devices if d.device_id == ref],
            [d for d in devices if d.name == ref],
            [d for d in devices if ref and d.device_id.startswith(ref)],
        ):
            if len(match) == 1:
                return match[0]
            if len(match) > 1:
                names = ", ".join(f"{d.device_id} ({d.name})" for d in match)
                raise NotFoundError(f"{ref!r} names {len(match)} devices: {names}; be more exact")
        raise NotFoundError(f"no device {ref!r} (give an id, a unique id prefix or a name)")

    def devices(self) -> list[DeviceRow]:
        """All enrolled devices and gateways, in enrolment order."""
        with self.session() as s:
            return list(s.scalars(select(DeviceRow).order_by(DeviceRow.id)))

    def device_by_node(self, node_id: int) -> DeviceRow | None:
        """The device (or gateway) whose node id is ``node_id``, or ``None``."""
        with self.session() as s:
            return s.get(DeviceRow, node_id)

    def gateway_of(self, site: str) -> DeviceRow | None:
        """The gateway of ``site`` (the latest enrolled one that is not revoked), or ``None``."""
        with self.session() as s:
            query = select(DeviceRow).where(
                DeviceRow.kind == KIND_GATEWAY, DeviceRow.site == site, DeviceRow.revoked.is_(False)
            )
            return s.scalar(query.order_by(DeviceRow.id.desc()).limit(1))

    def site_devices(self, site: str) -> list[DeviceRow]:
        """The devices enrolled for ``site`` (revoked ones too), in enrolment order."""
        with self.session() as s:
            query = select(DeviceRow).where(DeviceRow.kind == KIND_DEVICE, DeviceRow.site == site)
            return list(s.scalars(query.order_by(DeviceRow.id)))

    def sync_site(
        self, gateway_id: str, *, enroll_fingerprint: str, reports: list[SiteDeviceReport]
    ) -> None:
        """Record a gateway's view of its site: its enrolment certificate and its devices.

        A gateway lists only the devices it has news of; one it last called online is seen
        now. A report about a device of another site is ignored: a gateway speaks for its own.
        """
        now = time.time()
        with self.session() as s:
            gateway = s.scalar(select(DeviceRow).where(DeviceRow.device_id == gateway_id))
            if gateway is None:
                return
            gateway.last_seen = now
            gateway.state = "online"
            if enroll_fingerprint:
                gateway.enroll_fingerprint = enroll_fingerprint[:64]
            query = select(DeviceRow).where(
                DeviceRow.kind == KIND_DEVICE, DeviceRow.site == gateway.site
            )
            mine = {d.device_id: d for d in s.scalars(query)}
            for report in reports:
                device = mine.get(report.device_id)
                if device is None or device.revoked:
                    continue
                device.reachable = report.online
                if report.last_seen > device.last_seen:
                    device.last_seen = report.last_seen
                if report.heartbeat is not None:
                    device.state = report.state
                    device.version = report.version[:64]
                    _apply_heartbeat(device, report.heartbeat)
            for device in mine.values():
                if device.reachable and not device.revoked:
                    device.last_seen = max(device.last_seen, now)

    def touch(
        self,
        device_id: str,
        *,
        state: str | None = None,
        version: str | None = None,
        heartbeat: "Heartbeat | None" = None,
    ) -> None:
        """Record that ``device_id`` was seen now (with what its heartbeat said, if given)."""
        with self.session() as s:
            device = s.scalar(select(DeviceRow).where(DeviceRow.device_id == device_id))
            if device is None:
                return
            device.last_seen = time.time()
            if state is not None:
                device.state = state
            if version:
                device.version = version[:64]
            if heartbeat is not None:
                _apply_heartbeat(device, heartbeat)

    def set_privacy_spent(self, device_id: str, epsilon: float) -> None:
        """Record the device's reported privacy spent (its ε)."""
        with self.session() as s:
            device = s.scalar(select(DeviceRow).where(DeviceRow.device_id == device_id))
            if device is not None:
                device.privacy_spent = epsilon

    def revoke(self, device_id: str) -> DeviceRow:
        """Revoke ``device_id``: every later call with its certificate is refused."""
        with self.session() as s:
            device = s.scalar(select(DeviceRow).where(DeviceRow.device_id == device_id))
            if device is None:
                raise NotFoundError(f"no device {device_id!r}")
            device.revoked = True
            device.state = "revoked"
            return device

    # runs, rounds, events

    def create_run(self, *, config_json: str, rounds_total: int) -> RunRow:
        """A new queued run."""
        with self.session() as s:
            run = RunRow(
                state=RunState.QUEUED,
                config_json=config_json,
                rounds_total=rounds_total,
                created=time.time(),
            )
            s.add(run)
            s.flush()
            return run

    def run(self, run_id: int) -> RunRow:
        """Run ``run_id`` (0 = the latest); :class:`NotFoundError` if there is none."""
        with self.session() as s:
            if run_id == 0:
                row = s.scalar(select(RunRow).order_by(RunRow.id.desc()).limit(1))
            else:
                row = s.get(RunRow, run_id)
            if row is None:
                raise NotFoundError("no runs yet" if run_id == 0 else f"no run {run_id}")
            return row

    def runs(self, *, states: tuple[str, ...] = ()) -> list[RunRow]:
        """All runs (optionally only those in ``states``), oldest first."""
        with self.session() as s:
            query = select(RunRow).order_by(RunRow.id)
            if states:
                query = query.where(RunRow.state.in_(states))
            return list(s.scalars(query))

    def set_run_state(
        self, run_id: int, state: str, *, error: str = "", attempt: bool = False
    ) -> None:
        """Move run ``run_id`` to ``state``."""
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is None:
                raise NotFoundError(f"no run {run_id}")
            run.state = state
            if error:
                run.error = error
            if attempt:
                run.attempts += 1

    def set_run_devices(self, run_id: int, node_ids: list[int]) -> None:
        """Pin the devices run ``run_id`` trains on."""
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is None:
                raise NotFoundError(f"no run {run_id}")
            run.devices_json = json.dumps(node_ids)

    def set_run_async(self, run_id: int, status: dict[str, Any]) -> None:
        """Record async run ``run_id``'s live status."""
        with self.session() as s:
            run = s.get(RunRow, run_id)
            if run is None:
                raise NotFoundError(f"no run {run_id}")
            run.async_json = json.dumps(status, sort_keys=True)

    def add_round(self, run_id: int, row: RoundRow) -> None:
        """Record a completed round (a resumed round replaces its earlier record)."""
        with self.session() as s:
            old = s.scalar(
                select(RoundRow).where(
                    RoundRow.run_id == run_id, RoundRow.server_round == row.server_round
                )
            )
            if old is not None:
                s.delete(old)
                s.flush()
            row.run_id = run_id
            s.add(row)

    def rounds(self, run_id: int) -> list[RoundRow]:
        """The completed rounds of ``run_id``, in order."""
        with self.session() as s:
            query = select(RoundRow).where(RoundRow.run_id == run_id)
            return list(s.scalars(query.order_by(RoundRow.server_round)))

    def add_event(
        self, kind: str, message: str, *, run_id: int | None = None, device_id: str = ""
    ) -> None:
        """Append an event."""
        with self.session() as s:
            s.add(
                EventRow(
                    time=time.time(),
                    run_id=run_id,
                    device_id=device_id,
                    kind=kind,
                    message=message[:2000],
                )
            )

    def events(self, *, run_id: int | None = None, limit: int = 200) -> list[EventRow]:
        """The latest ``limit`` events (of ``run_id`` when given), oldest first."""
        with self.session() as s:
            query = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
            if run_id is not None:
                query = query.where(EventRow.run_id == run_id)
            return list(reversed(list(s.scalars(query))))


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _usable_token(session: Session, secret: str) -> TokenRow:
    token = session.scalar(select(TokenRow).where(TokenRow.secret_sha256 == _sha(secret)))
    if token is None:
        raise TokenError("the enrolment token is unknown")
    if token.used_by is not None:
        raise TokenError("the enrolment token was already used")
    if token.expires < time.time():
        raise TokenError("the enrolment token has expired")
    return token


def _apply_heartbeat(device: DeviceRow, heartbeat: Heartbeat) -> None:
    device.can_train = heartbeat.can_train
    device.profile = heartbeat.profile[:100]
    device.release_version = heartbeat.release_version
    device.release_slot = heartbeat.release_slot[:8]
    data = heartbeat.data
    device.data_dataset = data.dataset[:64] if data else ""
    device.data_shape = "x".join(map(str, data.input_shape)) if data else ""
    device.data_classes = data.num_classes if data else 0
    device.data_samples = data.samples if data else 0
    if heartbeat.personal_version:  # a heartbeat without a report keeps the last one
        device.personal_version = heartbeat.personal_version
        device.personal_gain = heartbeat.personal_gain
        device.personal_reason = heartbeat.personal_reason[:32]
