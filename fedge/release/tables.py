"""The release store's tables (``release_*``), in the release database of the coordinator."""

from sqlalchemy import Float, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fedge.storage import migrated_metadata

__all__ = [
    "ArtifactRow",
    "DeviceRolloutRow",
    "DownloadRow",
    "DriftRow",
    "InstallRow",
    "ReleaseRow",
    "ReleaseTables",
    "RolloutRow",
    "TelemetryRow",
]


class ReleaseTables(DeclarativeBase):
    """Own metadata: only the release_* tables, whose schema history is ``release``."""

    metadata = migrated_metadata("release")


class ArtifactRow(ReleaseTables):
    """A stored artifact."""

    __tablename__ = "release_artifacts"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    length: Mapped[int] = mapped_column(Integer)
    created: Mapped[str] = mapped_column(String(32))


class ReleaseRow(ReleaseTables):
    """A signed release and its rollout percentage."""

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


class DeviceRolloutRow(ReleaseTables):
    """A device that asked the hub: its profile, bucket and the version it runs."""

    __tablename__ = "release_devices"
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    profile: Mapped[str] = mapped_column(String(100))
    bucket: Mapped[int] = mapped_column(Integer)
    active_version: Mapped[int] = mapped_column(Integer, default=0)
    last_seen: Mapped[str] = mapped_column(String(32))


class InstallRow(ReleaseTables):
    """A device's latest install outcome for one release."""

    __tablename__ = "release_installs"
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(500), default="")
    updated: Mapped[str] = mapped_column(String(32))
    # What the device measured of the model on itself (batch 1, one thread).
    latency_p50_ms: Mapped[float] = mapped_column(Float, default=0.0)
    latency_p99_ms: Mapped[float] = mapped_column(Float, default=0.0)
    peak_memory_mb: Mapped[float] = mapped_column(Float, default=0.0)


class TelemetryRow(ReleaseTables):
    """A device's latest inference telemetry."""

    __tablename__ = "release_telemetry"
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    active_version: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    latency_p50_ms: Mapped[float] = mapped_column(Float)
    latency_p99_ms: Mapped[float] = mapped_column(Float)
    swaps: Mapped[int] = mapped_column(Integer)
    updated: Mapped[str] = mapped_column(String(32))


class DriftRow(ReleaseTables):
    """A device's latest drift window, compared with its release's reference."""

    __tablename__ = "release_drift"
    device_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    window: Mapped[int] = mapped_column(Integer, default=0)
    samples: Mapped[float] = mapped_column(Float, default=0.0)
    psi_classes: Mapped[float] = mapped_column(Float, default=0.0)
    psi_inputs: Mapped[float] = mapped_column(Float, default=0.0)
    drifted: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str] = mapped_column(String(200), default="")
    updated: Mapped[float] = mapped_column(Float, default=0.0)
    # PSI per named input feature: {"age": 0.04, ...}.
    features_json: Mapped[str | None] = mapped_column(Text, default="{}", server_default="{}")


class RolloutRow(ReleaseTables):
    """A health-gated rollout: its policy, where it stands, and why it stopped."""

    __tablename__ = "release_rollouts"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    stages_json: Mapped[str] = mapped_column(String(200))
    stage: Mapped[int] = mapped_column(Integer, default=0)
    max_failure_rate: Mapped[float] = mapped_column(Float)
    min_devices: Mapped[int] = mapped_column(Integer)
    stage_wait: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))
    stage_started: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(1000), default="")
    rollback_version: Mapped[int] = mapped_column(Integer, default=0)


class DownloadRow(ReleaseTables):
    """An artifact download the hub served to its end (a resumed one counts once, at its end)."""

    __tablename__ = "release_downloads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # Where the completing stream started, and how many bytes it carried.
    offset: Mapped[int] = mapped_column(Integer)
    sent: Mapped[int] = mapped_column(Integer)
    time: Mapped[str] = mapped_column(String(32))
