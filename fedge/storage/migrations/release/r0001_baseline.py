"""The release store's schema before fedge versioned it (``releases.db``, fedge 5c8fcc8).

Its tables as that fedge created them: see :func:`fedge.storage.migrations.baseline`.
"""

import sqlalchemy as sa

from fedge.storage.migrations import baseline

METADATA = sa.MetaData()
sa.Table(
    "release_artifacts",
    METADATA,
    sa.Column("sha256", sa.String(length=64), primary_key=True),
    sa.Column("length", sa.Integer(), nullable=False),
    sa.Column("created", sa.String(length=32), nullable=False),
)
sa.Table(
    "release_devices",
    METADATA,
    sa.Column("device_id", sa.String(length=200), primary_key=True),
    sa.Column("profile", sa.String(length=100), nullable=False),
    sa.Column("bucket", sa.Integer(), nullable=False),
    sa.Column("active_version", sa.Integer(), nullable=False, default=0),
    sa.Column("last_seen", sa.String(length=32), nullable=False),
)
sa.Table(
    "release_downloads",
    METADATA,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(length=200), nullable=False),
    sa.Column("sha256", sa.String(length=64), nullable=False, index=True),
    sa.Column("offset", sa.Integer(), nullable=False),
    sa.Column("sent", sa.Integer(), nullable=False),
    sa.Column("time", sa.String(length=32), nullable=False),
)
sa.Table(
    "release_drift",
    METADATA,
    sa.Column("device_id", sa.String(length=200), primary_key=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("window", sa.Integer(), nullable=False, default=0),
    sa.Column("samples", sa.Float(), nullable=False, default=0.0),
    sa.Column("psi_classes", sa.Float(), nullable=False, default=0.0),
    sa.Column("psi_inputs", sa.Float(), nullable=False, default=0.0),
    sa.Column("drifted", sa.Integer(), nullable=False, default=0),
    sa.Column("note", sa.String(length=200), nullable=False, default=""),
    sa.Column("updated", sa.Float(), nullable=False, default=0.0),
)
sa.Table(
    "release_installs",
    METADATA,
    sa.Column("device_id", sa.String(length=200), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("state", sa.String(length=20), nullable=False),
    sa.Column("reason", sa.String(length=500), nullable=False, default=""),
    sa.Column("updated", sa.String(length=32), nullable=False),
    sa.Column("latency_p50_ms", sa.Float(), nullable=False, default=0.0),
    sa.Column("latency_p99_ms", sa.Float(), nullable=False, default=0.0),
    sa.Column("peak_memory_mb", sa.Float(), nullable=False, default=0.0),
)
sa.Table(
    "release_releases",
    METADATA,
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("name", sa.String(length=200), nullable=False),
    sa.Column("sha256", sa.String(length=64), nullable=False),
    sa.Column("profile", sa.String(length=100), nullable=False),
    sa.Column("percent", sa.Integer(), nullable=False),
    sa.Column("withdrawn", sa.Integer(), nullable=False, default=0),
    sa.Column("rollback_of", sa.Integer(), nullable=False, default=0),
    sa.Column("created", sa.String(length=32), nullable=False),
    sa.Column("manifest_json", sa.LargeBinary(), nullable=False),
    sa.Column("signature", sa.LargeBinary(), nullable=False),
    sa.Column("key_id", sa.String(length=64), nullable=False),
)
sa.Table(
    "release_rollouts",
    METADATA,
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("stages_json", sa.String(length=200), nullable=False),
    sa.Column("stage", sa.Integer(), nullable=False, default=0),
    sa.Column("max_failure_rate", sa.Float(), nullable=False),
    sa.Column("min_devices", sa.Integer(), nullable=False),
    sa.Column("stage_wait", sa.Float(), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("stage_started", sa.Float(), nullable=False),
    sa.Column("reason", sa.String(length=1000), nullable=False, default=""),
    sa.Column("rollback_version", sa.Integer(), nullable=False, default=0),
)
sa.Table(
    "release_telemetry",
    METADATA,
    sa.Column("device_id", sa.String(length=200), primary_key=True),
    sa.Column("active_version", sa.Integer(), nullable=False),
    sa.Column("requests", sa.Integer(), nullable=False),
    sa.Column("errors", sa.Integer(), nullable=False),
    sa.Column("latency_p50_ms", sa.Float(), nullable=False),
    sa.Column("latency_p99_ms", sa.Float(), nullable=False),
    sa.Column("swaps", sa.Integer(), nullable=False),
    sa.Column("updated", sa.String(length=32), nullable=False),
)

revision, down_revision, upgrade = baseline(METADATA)
