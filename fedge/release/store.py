"""The coordinator's release store: content-addressed artifacts on disk, metadata in SQLite.

Artifacts live at ``root/artifacts/<sha[:2]>/<sha>`` and are written once (temporary file,
fsync, rename), so a crash never leaves a half-written artifact under its content address.
Releases, device rollout facts and per-device install outcomes live in the ``release_*`` tables
of the database at ``db_url`` (the coordinator can point it at its own SQLite file).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import (
    Float,
    Integer,
    LargeBinary,
    String,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from fedge.release.errors import ArtifactNotFoundError, ReleaseError, ReleaseNotFoundError
from fedge.release.manifest import Manifest, TensorSpec, format_time
from fedge.release.rollout import ReleaseTarget, bucket_of, select_release, validate_percent
from fedge.release.signing import SignedManifest, sign_manifest

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "INSTALL_STATES",
    "RELEASE_KEY_FILE",
    "DeviceTelemetry",
    "ReleaseInfo",
    "ReleaseStore",
    "db_url_for",
    "open_release_store",
]

DEFAULT_CHUNK_SIZE = 1024 * 1024
RELEASE_KEY_FILE = "release_key.pem"
MAX_CHUNK_SIZE = 2 * 1024 * 1024
INSTALL_STATES = ("offered", "downloading", "installed", "refused", "rolled_back", "failed")


class _Base(DeclarativeBase):
    """Own metadata: only the release_* tables, so they sit beside the coordinator's."""


class _Artifact(_Base):
    __tablename__ = "release_artifacts"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    length: Mapped[int] = mapped_column(Integer)
    created: Mapped[str] = mapped_column(String(32))


class _Release(_Base):
    __tablename__ = "release_releases"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(100))
    percent: Mapped[int] = mapped_column(Integer)
    withdrawn: Mapped[int] = mapped_column(Integer, default=0)
    rollback_of: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[str] = mapped_column(String(32))
    manifest_json: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(String(64))


class _Device(_Base):
    __tablename__ = "release_devices"
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    profile: Mapped[str] = mapped_column(String(100))
    bucket: Mapped[int] = mapped_column(Integer)
    active_version: Mapped[int] = mapped_column(Integer, default=0)
    last_seen: Mapped[str] = mapped_column(String(32))


class _Install(_Base):
    __tablename__ = "release_installs"
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(500), default="")
    updated: Mapped[str] = mapped_column(String(32))


class _Telemetry(_Base):
    __tablename__ = "release_telemetry"
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    active_version: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    latency_p50_ms: Mapped[float] = mapped_column(Float)
    latency_p99_ms: Mapped[float] = mapped_column(Float)
    swaps: Mapped[int] = mapped_column(Integer)
    updated: Mapped[str] = mapped_column(String(32))


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


def db_url_for(path: Path) -> str:
    """SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{path.resolve()}"


def _now() -> str:
    return format_time(datetime.now(UTC))


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, and ``BEGIN IMMEDIATE`` transactions.

    The coordinator process and the operator CLI write the same file. WAL lets readers run
    beside a writer; taking the write lock when a transaction *starts* (instead of upgrading a
    read transaction later, which SQLite refuses at once with "database is locked" when another
    process committed meanwhile) makes concurrent writers wait for the busy timeout instead.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class ReleaseStore:
    """Artifacts + manifests + rollout state. Thread-safe (one SQLAlchemy engine)."""

    def __init__(
        self,
        *,
        root: Path,
        db_url: str | None = None,
        key: Ed25519PrivateKey | None = None,
        validity: timedelta = timedelta(days=30),
        fleet: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.artifacts_dir = self.root / "artifacts"
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.validity = validity
        self.fleet = fleet
        url = db_url or db_url_for(self.root / "releases.db")
        self.engine = create_engine(url)
        if url.startswith("sqlite"):
            _configure_sqlite(self.engine)
        _Base.metadata.create_all(self.engine)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    # -- artifacts -------------------------------------------------------------------------

    def artifact_path(self, sha256: str) -> Path:
        """Where the artifact with this content address lives (it may not exist)."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ArtifactNotFoundError(f"not a sha256 content address: {sha256!r}")
        return self.artifacts_dir / sha256[:2] / sha256

    def add_artifact(self, source: Path) -> tuple[str, int]:
        """Copy ``source`` into the store under its SHA-256; return ``(sha256, length)``."""
        if not Path(source).is_file():
            raise ReleaseError(f"artifact {source} does not exist or is not a file")
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.artifacts_dir, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            sha, length = digest.hexdigest(), os.path.getsize(tmp_name)
            if length == 0:
                raise ReleaseError(f"artifact {source} is empty")
            dest = self.artifact_path(sha)
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp_name, dest)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        with Session(self.engine) as session, session.begin():
            if session.get(_Artifact, sha) is None:
                session.add(_Artifact(sha256=sha, length=length, created=_now()))
        return sha, length

    def artifact_length(self, sha256: str) -> int:
        """Length in bytes of a stored artifact."""
        path = self.artifact_path(sha256)
        if not path.is_file():
            raise ArtifactNotFoundError(f"no artifact {sha256}")
        return path.stat().st_size

    def read_artifact(
        self, sha256: str, *, offset: int = 0, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, chunk)`` from ``offset`` to the end of the artifact."""
        length = self.artifact_length(sha256)
        if offset < 0 or offset > length:
            raise ReleaseError(f"offset {offset} is outside artifact of {length} bytes")
        size = min(max(chunk_size, 1), MAX_CHUNK_SIZE) if chunk_size else DEFAULT_CHUNK_SIZE
        with open(self.artifact_path(sha256), "rb") as handle:
            handle.seek(offset)
            while block := handle.read(size):
                yield offset, block
                offset += len(block)

    # -- releases --------------------------------------------------------------------------

    def _require_key(self) -> Ed25519PrivateKey:
        if self.key is None:
            raise ReleaseError("the release store was opened without the release signing key")
        return self.key

    def _next_version(self, session: Session) -> int:
        return int(session.scalar(select(func.max(_Release.version))) or 0) + 1

    def _insert(self, session: Session, manifest: Manifest, percent: int) -> SignedManifest:
        signed = sign_manifest(manifest, key=self._require_key())
        session.add(
            _Release(
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
        artifact: Path,
        name: str,
        profile: str,
        percent: int,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        labels: tuple[str, ...] = (),
        report: dict[str, Any] | None = None,
    ) -> SignedManifest:
        """Store ``artifact`` and sign a release at the next version, rolled out to ``percent``."""
        validate_percent(percent)
        if not name or not profile:
            raise ReleaseError("a release needs a non-empty name and device profile")
        self._require_key()
        sha, length = self.add_artifact(artifact)
        now = datetime.now(UTC)
        with Session(self.engine) as session, session.begin():
            manifest = Manifest(
                name=name,
                version=self._next_version(session),
                sha256=sha,
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

    def promote(self, version: int, *, percent: int) -> ReleaseInfo:
        """Widen (or narrow) the rollout of ``version``."""
        validate_percent(percent)
        with Session(self.engine) as session, session.begin():
            row = session.get(_Release, version)
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
            live = select(_Release).where(_Release.withdrawn == 0)
            if version is None:
                bad = session.scalars(live.order_by(_Release.version.desc()).limit(1)).first()
                if bad is None:
                    raise ReleaseNotFoundError("there is no live release to roll back")
            else:
                bad = session.get(_Release, version)
                if bad is None:
                    raise ReleaseNotFoundError(f"no release with version {version}")
                if bad.withdrawn:
                    raise ReleaseError(f"release {version} is already rolled back")
            earlier = session.scalars(
                live.where(
                    _Release.version < bad.version, _Release.profile == bad.profile
                ).order_by(_Release.version.desc())
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
    def _last_good(session: Session, candidates: Sequence[_Release]) -> _Release | None:
        """Newest candidate proven on devices (installed somewhere, rolled back nowhere);
        failing that, the newest candidate no device rolled back; failing that, None."""

        def count(version: int, state: str) -> int:
            query = select(func.count()).where(_Install.version == version, _Install.state == state)
            return int(session.scalar(query) or 0)

        clean = [r for r in candidates if count(r.version, "rolled_back") == 0]
        proven = [r for r in clean if count(r.version, "installed") > 0]
        best = proven or clean
        return best[0] if best else None

    def get(self, version: int) -> ReleaseInfo:
        """One release's facts."""
        with Session(self.engine) as session:
            row = session.get(_Release, version)
            if row is None:
                raise ReleaseNotFoundError(f"no release with version {version}")
            return self._info(row)

    def signed(self, version: int) -> SignedManifest:
        """The signed manifest of ``version``."""
        with Session(self.engine) as session:
            row = session.get(_Release, version)
            if row is None:
                raise ReleaseNotFoundError(f"no release with version {version}")
            return SignedManifest(row.manifest_json, row.signature, row.key_id)

    @staticmethod
    def _info(row: _Release) -> ReleaseInfo:
        manifest = Manifest.from_bytes(row.manifest_json)
        return ReleaseInfo(
            version=row.version,
            name=row.name,
            sha256=row.sha256,
            profile=row.profile,
            percent=row.percent,
            withdrawn=bool(row.withdrawn),
            rollback_of=row.rollback_of,
            created=row.created,
            expires=manifest.expires,
        )

    def list_releases(self) -> list[ReleaseInfo]:
        """All releases, newest first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(_Release).order_by(_Release.version.desc()))
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
            device = session.get(_Device, device_id)
            if device is None:
                device = _Device(device_id=device_id, bucket=bucket_of(device_id))
                session.add(device)
            device.profile, device.last_seen = profile, now
            device.active_version = installed_version
            if installed_version > 0:
                # The device says it runs this version: a report lost in a crash is implied.
                ran = session.get(_Install, (device_id, installed_version))
                if ran is not None and ran.state != "installed":
                    ran.state, ran.reason, ran.updated = "installed", "reported by device", now
            targets = [
                ReleaseTarget(r.version, r.profile, r.percent, bool(r.withdrawn))
                for r in session.scalars(select(_Release))
            ]
            offered = set(
                session.scalars(select(_Install.version).where(_Install.device_id == device_id))
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
            row = session.get(_Release, version)
            assert row is not None
            if version != installed_version and session.get(_Install, (device_id, version)) is None:
                session.add(
                    _Install(device_id=device_id, version=version, state="offered", updated=now)
                )
            return SignedManifest(row.manifest_json, row.signature, row.key_id)

    def _fleet(self, session: Session, profile: str) -> list[str]:
        """The devices a percentage is taken of: the coordinator's fleet when it gave one,
        else every device of this profile that has asked the hub."""
        if self.fleet is not None:
            return list(self.fleet())
        query = select(_Device.device_id).where(_Device.profile == profile)
        return list(session.scalars(query))

    def record_status(
        self,
        *,
        device_id: str,
        version: int,
        state: str,
        reason: str = "",
        active_version: int | None = None,
    ) -> None:
        """Store a device's install outcome for ``version`` (the latest report wins)."""
        if state not in INSTALL_STATES:
            raise ReleaseError(f"unknown install state {state!r}; valid: {INSTALL_STATES}")
        now = _now()
        with Session(self.engine) as session, session.begin():
            row = session.get(_Install, (device_id, version))
            if row is None:
                row = _Install(device_id=device_id, version=version)
                session.add(row)
            row.state, row.reason, row.updated = state, reason[:500], now
            device = session.get(_Device, device_id)
            if device is not None and active_version is not None:
                device.active_version, device.last_seen = active_version, now

    def status(self, version: int) -> dict[str, int]:
        """Devices per install outcome for ``version`` (every state present, zero if none),
        plus ``running``: devices whose last word is that they run ``version`` now."""
        self.get(version)
        counts = dict.fromkeys(INSTALL_STATES, 0)
        with Session(self.engine) as session:
            rows = session.execute(
                select(_Install.state, func.count())
                .where(_Install.version == version)
                .group_by(_Install.state)
            )
            for state, count in rows:
                counts[state] = int(count)
            running = select(func.count()).where(_Device.active_version == version)
            counts["running"] = int(session.scalar(running) or 0)
        return counts

    def device_reports(self, version: int) -> list[tuple[str, str, str]]:
        """``(device_id, state, reason)`` for every device that reported on ``version``."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(_Install.device_id, _Install.state, _Install.reason)
                .where(_Install.version == version)
                .order_by(_Install.device_id)
            )
            return [(d, s, r) for d, s, r in rows]

    def record_telemetry(self, telemetry: DeviceTelemetry) -> None:
        """Keep the latest inference telemetry of a device."""
        with Session(self.engine) as session, session.begin():
            row = session.get(_Telemetry, telemetry.device_id)
            if row is None:
                row = _Telemetry(device_id=telemetry.device_id)
                session.add(row)
            for name, value in asdict(telemetry).items():
                setattr(row, name, value)
            row.updated = _now()

    def telemetry(self, *, version: int | None = None) -> list[DeviceTelemetry]:
        """Latest telemetry per device (only devices serving ``version`` if given)."""
        query = select(_Telemetry).order_by(_Telemetry.device_id)
        if version is not None:
            query = query.where(_Telemetry.active_version == version)
        with Session(self.engine) as session:
            return [
                DeviceTelemetry(
                    r.device_id,
                    r.active_version,
                    r.requests,
                    r.errors,
                    r.latency_p50_ms,
                    r.latency_p99_ms,
                    r.swaps,
                    r.updated,
                )
                for r in session.scalars(query)
            ]

    def copy_artifact_to(self, sha256: str, dest: Path) -> None:
        """Copy an artifact out of the store (for tools and tests)."""
        shutil.copyfile(self.artifact_path(sha256), dest)


def open_release_store(
    *,
    state_dir: Path,
    with_key: bool = False,
    fleet: Callable[[], Iterable[str]] | None = None,
) -> ReleaseStore:
    """The release store of a coordinator state directory.

    Artifacts under ``state_dir/releases``, tables in ``state_dir/releases/releases.db``, the
    release signing key at ``state_dir/release_key.pem`` (created on first use when
    ``with_key``; its ``.pub`` is what devices pin).

    The tables could live in the coordinator's ``state.db`` (pass its URL to
    :class:`ReleaseStore`), but every device poll writes here, and a second writer on that file
    makes the coordinator's deferred read-then-write transactions fail at once with "database
    is locked" (SQLite refuses to upgrade a stale WAL snapshot). A file of its own keeps the
    two apart.
    """
    from fedge.release.signing import load_or_create_release_key

    state_dir = Path(state_dir)
    key = load_or_create_release_key(path=state_dir / RELEASE_KEY_FILE) if with_key else None
    return ReleaseStore(
        root=state_dir / "releases",
        db_url=db_url_for(state_dir / "releases" / "releases.db"),
        key=key,
        fleet=fleet,
    )
