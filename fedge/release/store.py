"""The coordinator's release store: releases, staged rollout, install outcomes.

Artifacts are content-addressed files (:class:`~fedge.release.artifacts.ArtifactStore`);
releases, device rollout facts, per-device install outcomes and telemetry live in the
``release_*`` tables (:mod:`fedge.release.tables`) of the store's own SQLite file. Which release
a device gets is :func:`fedge.release.rollout.select_release`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fedge.errors import ReleaseError, ReleaseNotFoundError
from fedge.protocol.drift import DriftReference
from fedge.protocol.manifest import Manifest, SignedManifest, TensorSpec, format_time
from fedge.protocol.serde import INSTALL_STATES
from fedge.records import copy_fields
from fedge.release.artifacts import ArtifactStore
from fedge.release.drift import DriftTable
from fedge.release.rollout import (
    ReleaseTarget,
    bucket_of,
    covered_count,
    rollout_order,
    select_release,
    validate_percent,
)
from fedge.release.rollout_table import RolloutTable
from fedge.release.signing import sign_manifest
from fedge.release.tables import (
    ArtifactRow,
    DeviceRolloutRow,
    DownloadRow,
    InstallRow,
    ReleaseRow,
    ReleaseTables,
)
from fedge.release.telemetry import TelemetryTable
from fedge.storage import open_sqlite

__all__ = [
    "RELEASE_KEY_FILE",
    "DeviceReport",
    "Measured",
    "ReleaseInfo",
    "ReleaseStore",
    "open_release_store",
]

RELEASE_KEY_FILE = "release_key.pem"
#: Seconds a read of :meth:`ReleaseStore.targeting` is reused.
TARGETING_TTL = 1.0


@dataclass(frozen=True)
class Measured:
    """What a device measured of a model on itself: batch-1 latency on one thread and the
    peak memory its session added (zeros: nothing measured)."""

    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    peak_memory_mb: float = 0.0


@dataclass(frozen=True)
class DeviceReport:
    """A device's latest word on one release."""

    device_id: str
    state: str
    reason: str
    measured: Measured


@dataclass(frozen=True)
class ReleaseInfo:
    """One row of ``fedge release ls``."""

    version: int
    name: str
    sha256: str
    profile: str
    percent: int
    withdrawn: bool
    rollback_of: int
    created: str
    expires: str


def _now() -> str:
    return format_time(datetime.now(UTC))


class ReleaseStore:
    """Artifacts + manifests + rollout state. Thread-safe (one SQLAlchemy engine)."""

    def __init__(
        self,
        *,
        root: Path,
        key: Ed25519PrivateKey | None = None,
        validity: timedelta = timedelta(days=30),
        fleet: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.artifacts = ArtifactStore(self.root / "artifacts")
        self.key = key
        self.validity = validity
        self.fleet = fleet
        self.engine = open_sqlite(self.root / "releases.db", tables=ReleaseTables)
        self.telemetry = TelemetryTable(self.engine)
        self.drift = DriftTable(self.engine)
        self.rollouts = RolloutTable(self.engine)
        self._targeting = (-TARGETING_TTL, "")  # (monotonic time read, token): see targeting()

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def add_artifact(self, source: Path) -> tuple[str, int]:
        """Store the file ``source`` as an artifact and record it; ``(sha256, length)``."""
        sha, length = self.artifacts.add(source)
        self.record_artifact(sha, length)
        return sha, length

    def record_artifact(self, sha256: str, length: int) -> None:
        """Record an artifact already in :attr:`artifacts`."""
        with Session(self.engine) as session, session.begin():
            if session.get(ArtifactRow, sha256) is None:
                session.add(ArtifactRow(sha256=sha256, length=length, created=_now()))

    # -- releases --------------------------------------------------------------------------

    def _require_key(self) -> Ed25519PrivateKey:
        if self.key is None:
            raise ReleaseError("the release store was opened without the release signing key")
        return self.key

    def _next_version(self, session: Session) -> int:
        return int(session.scalar(select(func.max(ReleaseRow.version))) or 0) + 1

    def newest_version(self) -> int:
        """The highest release version; :class:`ReleaseNotFoundError` when there is none."""
        with Session(self.engine) as session:
            newest = session.scalar(select(func.max(ReleaseRow.version)))
        if newest is None:
            raise ReleaseNotFoundError(
                "the coordinator has no releases yet: publish one with `fedge release publish`"
            )
        return int(newest)

    def _insert(self, session: Session, manifest: Manifest, percent: int) -> SignedManifest:
        signed = sign_manifest(manifest, key=self._require_key())
        session.add(
            ReleaseRow(
                version=manifest.version,
                name=manifest.name,
                sha256=manifest.sha256,
                profile=manifest.profile,
                percent=percent,
                withdrawn=0,
                rollback_of=manifest.rollback_of,
                created=manifest.created,
                manifest_json=signed.manifest_json,
                signature=signed.signature,
                key_id=signed.key_id,
            )
        )
        return signed

    def publish(
        self,
        *,
        name: str,
        profile: str,
        percent: int,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        artifact: Path | None = None,
        sha256: str = "",
        labels: tuple[str, ...] = (),
        report: dict[str, Any] | None = None,
    ) -> SignedManifest:
        """Sign a release of ``artifact`` (a file, stored first) or of the stored artifact
        ``sha256`` at the next version, rolled out to ``percent`` of the devices."""
        validate_percent(percent)
        if not name or not profile:
            raise ReleaseError("a release needs a non-empty name and device profile")
        if (artifact is None) == (not sha256):
            raise ReleaseError("publish needs exactly one of an artifact file and a sha256")
        self._require_key()
        if artifact is not None:
            sha256, length = self.add_artifact(artifact)
        else:
            length = self.artifacts.length(sha256)
            self.record_artifact(sha256, length)
        now = datetime.now(UTC)
        with Session(self.engine) as session, session.begin():
            manifest = Manifest(
                name=name,
                version=self._next_version(session),
                sha256=sha256,
                length=length,
                created=format_time(now),
                expires=format_time(now + self.validity),
                profile=profile,
                inputs=inputs,
                outputs=outputs,
                labels=labels,
                report=dict(report or {}),
            )
            return self._insert(session, manifest, percent)

    def targeting(self) -> str:
        """A token that changes whenever which release a device should run may have changed:
        a publish, a promotion or rollout stage, a rollback (see ``HeartbeatResponse``).

        Every device heartbeat asks, so the answer is read from the database at most once per
        ``TARGETING_TTL`` seconds (a transaction here takes SQLite's write lock).
        """
        read_at, token = self._targeting
        if time.monotonic() - read_at < TARGETING_TTL:
            return token
        query = select(
            func.max(ReleaseRow.version),
            func.coalesce(func.sum(ReleaseRow.percent), 0),
            func.coalesce(func.sum(ReleaseRow.withdrawn), 0),
        )
        with Session(self.engine) as session:
            newest, percents, withdrawn = session.execute(query).one()
        token = f"{newest or 0}.{percents}.{withdrawn}"
        self._targeting = (time.monotonic(), token)
        return token

    def promote(self, version: int, *, percent: int) -> ReleaseInfo:
        """Widen (or narrow) the rollout of ``version``."""
        validate_percent(percent)
        with Session(self.engine) as session, session.begin():
            row = session.get(ReleaseRow, version)
            if row is None:
                raise ReleaseNotFoundError(f"no release with version {version}")
            if row.withdrawn:
                raise ReleaseError(f"release {version} was rolled back; publish a new one")
            row.percent = percent
        return self.get(version)

    def rollback(self, *, version: int | None = None) -> SignedManifest:
        """Withdraw ``version`` (default: the newest live release) and re-release the last good
        artifact as a NEW, higher version at 100%, so devices keep their rollback protection."""
        self._require_key()
        with Session(self.engine) as session, session.begin():
            live = select(ReleaseRow).where(ReleaseRow.withdrawn == 0)
            if version is None:
                bad = session.scalars(live.order_by(ReleaseRow.version.desc()).limit(1)).first()
                if bad is None:
                    raise ReleaseNotFoundError("there is no live release to roll back")
            else:
                bad = session.get(ReleaseRow, version)
                if bad is None:
                    raise ReleaseNotFoundError(f"no release with version {version}")
                if bad.withdrawn:
                    raise ReleaseError(f"release {version} is already rolled back")
            earlier = session.scalars(
                live.where(
                    ReleaseRow.version < bad.version, ReleaseRow.profile == bad.profile
                ).order_by(ReleaseRow.version.desc())
            ).all()
            good = self._last_good(session, earlier)
            if good is None:
                raise ReleaseError(
                    f"release {bad.version} has no earlier good release for profile "
                    f"{bad.profile!r} to roll back to"
                )
            base = Manifest.from_bytes(good.manifest_json)
            now = datetime.now(UTC)
            manifest = Manifest(
                **{
                    **base.__dict__,
                    "version": self._next_version(session),
                    "created": format_time(now),
                    "expires": format_time(now + self.validity),
                    "rollback_of": bad.version,
                }
            )
            bad.withdrawn = 1
            return self._insert(session, manifest, 100)

    @staticmethod
    def _last_good(session: Session, candidates: Sequence[ReleaseRow]) -> ReleaseRow | None:
        """Newest candidate proven on devices (installed somewhere, rolled back nowhere);
        failing that, the newest candidate no device rolled back; failing that, None."""

        def count(version: int, state: str) -> int:
            query = select(func.count()).where(
                InstallRow.version == version, InstallRow.state == state
            )
            return int(session.scalar(query) or 0)

        clean = [r for r in candidates if count(r.version, "rolled_back") == 0]
        proven = [r for r in clean if count(r.version, "installed") > 0]
        best = proven or clean
        return best[0] if best else None

    def get(self, version: int) -> ReleaseInfo:
        """One release's facts."""
        with Session(self.engine) as session:
            row = session.get(ReleaseRow, version)
            if row is None:
                raise ReleaseNotFoundError(f"no release with version {version}")
            return self._info(row)

    def reference(self, version: int) -> DriftReference | None:
        """The drift reference release ``version`` carries (None: none, or no such release)."""
        with Session(self.engine) as session:
            row = session.get(ReleaseRow, version)
            if row is None:
                return None
            report = Manifest.from_bytes(row.manifest_json).report
            return DriftReference.from_dict(report.get("drift"))

    def signed(self, version: int) -> SignedManifest:
        """The signed manifest of ``version``."""
        with Session(self.engine) as session:
            row = session.get(ReleaseRow, version)
            if row is None:
                raise ReleaseNotFoundError(f"no release with version {version}")
            return SignedManifest(row.manifest_json, row.signature, row.key_id)

    @staticmethod
    def _info(row: ReleaseRow) -> ReleaseInfo:
        manifest = Manifest.from_bytes(row.manifest_json)
        return copy_fields(
            ReleaseInfo, row, withdrawn=bool(row.withdrawn), expires=manifest.expires
        )

    def list_releases(self) -> list[ReleaseInfo]:
        """All releases, newest first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(ReleaseRow).order_by(ReleaseRow.version.desc()))
            return [self._info(r) for r in rows]

    # -- devices ---------------------------------------------------------------------------

    def manifest_for(
        self, *, device_id: str, profile: str, installed_version: int = 0
    ) -> SignedManifest | None:
        """The release ``device_id`` should run (or None); records the device and the offer."""
        if not device_id:
            raise ReleaseError("device_id must not be empty")
        now = _now()
        with Session(self.engine) as session, session.begin():
            device = session.get(DeviceRolloutRow, device_id)
            if device is None:
                device = DeviceRolloutRow(device_id=device_id, bucket=bucket_of(device_id))
                session.add(device)
            device.profile, device.last_seen = profile, now
            device.active_version = installed_version
            if installed_version > 0:
                # The device says it runs this version: a report lost in a crash is implied.
                ran = session.get(InstallRow, (device_id, installed_version))
                if ran is not None and ran.state != "installed":
                    ran.state, ran.reason, ran.updated = "installed", "reported by device", now
            targets = [
                ReleaseTarget(r.version, r.profile, r.percent, bool(r.withdrawn))
                for r in session.scalars(select(ReleaseRow))
            ]
            offered = set(
                session.scalars(select(InstallRow.version).where(InstallRow.device_id == device_id))
            )
            version = select_release(
                targets,
                device_id=device_id,
                profile=profile,
                fleet=self._fleet(session, profile),
                offered=offered,
            )
            if version is None:
                return None
            row = session.get(ReleaseRow, version)
            assert row is not None
            if (
                version != installed_version
                and session.get(InstallRow, (device_id, version)) is None
            ):
                session.add(
                    InstallRow(device_id=device_id, version=version, state="offered", updated=now)
                )
            return SignedManifest(row.manifest_json, row.signature, row.key_id)

    def _fleet(self, session: Session, profile: str) -> list[str]:
        """The devices a percentage is taken of: the coordinator's fleet when it gave one,
        else every device of this profile that has asked the hub."""
        if self.fleet is not None:
            return list(self.fleet())
        query = select(DeviceRolloutRow.device_id).where(DeviceRolloutRow.profile == profile)
        return list(session.scalars(query))

    def record_status(
        self,
        *,
        device_id: str,
        version: int,
        state: str,
        reason: str = "",
        active_version: int | None = None,
        measured: Measured | None = None,
    ) -> None:
        """Store a device's install outcome for ``version`` (the latest report wins), with
        what the device measured of the model when it did (``measured``)."""
        if state not in INSTALL_STATES:
            raise ReleaseError(f"unknown install state {state!r}; valid: {INSTALL_STATES}")
        now = _now()
        with Session(self.engine) as session, session.begin():
            row = session.get(InstallRow, (device_id, version))
            if row is None:
                row = InstallRow(device_id=device_id, version=version)
                session.add(row)
            row.state, row.reason, row.updated = state, reason[:500], now
            if measured is not None and measured.latency_p99_ms > 0:
                row.latency_p50_ms = measured.latency_p50_ms
                row.latency_p99_ms = measured.latency_p99_ms
                row.peak_memory_mb = measured.peak_memory_mb
            device = session.get(DeviceRolloutRow, device_id)
            if device is not None and active_version is not None:
                device.active_version, device.last_seen = active_version, now

    def record_download(self, *, device_id: str, sha256: str, offset: int, sent: int) -> None:
        """Record that ``device_id`` downloaded artifact ``sha256`` to its end (``sent`` bytes
        from ``offset``)."""
        with Session(self.engine) as session, session.begin():
            session.add(
                DownloadRow(
                    device_id=device_id, sha256=sha256, offset=offset, sent=sent, time=_now()
                )
            )

    def status(self, version: int) -> dict[str, int]:
        """Devices per install outcome for ``version`` (every state present, zero if none),
        plus ``running``: devices whose last word is that they run ``version`` now, and
        ``downloads``: how many times the hub served the release's artifact to its end (a site
        gateway fetches it once for all its devices)."""
        info = self.get(version)
        counts = dict.fromkeys(INSTALL_STATES, 0)
        with Session(self.engine) as session:
            rows = session.execute(
                select(InstallRow.state, func.count())
                .where(InstallRow.version == version)
                .group_by(InstallRow.state)
            )
            for state, count in rows:
                counts[state] = int(count)
            running = select(func.count()).where(DeviceRolloutRow.active_version == version)
            counts["running"] = int(session.scalar(running) or 0)
            downloads = select(func.count()).where(DownloadRow.sha256 == info.sha256)
            counts["downloads"] = int(session.scalar(downloads) or 0)
        return counts

    def targeted(self, version: int) -> set[str]:
        """The devices release ``version`` targets now and can take it: its share of the
        rollout order of the fleet that have asked the hub as devices of its profile, and every
        device it was already offered to."""
        info = self.get(version)
        with Session(self.engine) as session:
            order = rollout_order(self._fleet(session, info.profile))
            query = select(InstallRow.device_id).where(InstallRow.version == version)
            offered = set(session.scalars(query))
            same = select(DeviceRolloutRow.device_id).where(
                DeviceRolloutRow.profile == info.profile
            )
            eligible = set(session.scalars(same))
            covered = set(order[: covered_count(info.percent, len(order))])
            return (covered & eligible) | offered

    def outcomes(self, version: int) -> dict[str, str]:
        """Each device's latest install state for ``version``."""
        return {r.device_id: r.state for r in self.device_reports(version)}

    def device_reports(self, version: int) -> list[DeviceReport]:
        """Every device's latest report on ``version``, with what it measured."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(InstallRow)
                .where(InstallRow.version == version)
                .order_by(InstallRow.device_id)
            )
            return [
                DeviceReport(
                    r.device_id,
                    r.state,
                    r.reason,
                    Measured(
                        r.latency_p50_ms or 0.0, r.latency_p99_ms or 0.0, r.peak_memory_mb or 0.0
                    ),
                )
                for r in rows
            ]


def open_release_store(
    *,
    state_dir: Path,
    key: Ed25519PrivateKey | None = None,
    fleet: Callable[[], Iterable[str]] | None = None,
) -> ReleaseStore:
    """The release store of a coordinator state directory: ``state_dir/releases``.

    The tables could live in the coordinator's ``state.db``, but every device poll writes here;
    a file of its own keeps those writes from queueing behind the run loop's.
    """
    return ReleaseStore(root=Path(state_dir) / "releases", key=key, fleet=fleet)
