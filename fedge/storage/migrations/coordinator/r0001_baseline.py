"""The coordinator's schema before fedge versioned it (``state.db``, fedge 5c8fcc8).

Its tables as that fedge created them: see :func:`fedge.storage.migrations.baseline`.
"""

import sqlalchemy as sa

from fedge.storage.migrations import baseline

METADATA = sa.MetaData()
sa.Table(
    "devices",
    METADATA,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(length=64), nullable=False, unique=True),
    sa.Column("name", sa.String(length=200), nullable=False),
    sa.Column("cert_serial", sa.String(length=64), nullable=False),
    sa.Column("enrolled_at", sa.Float(), nullable=False),
    sa.Column("last_seen", sa.Float(), nullable=False, default=0.0),
    sa.Column("state", sa.String(length=32), nullable=False, default="enrolled"),
    sa.Column("version", sa.String(length=64), nullable=False, default=""),
    sa.Column("revoked", sa.Boolean(), nullable=False, default=False),
    sa.Column("privacy_spent", sa.Float(), nullable=True),
    sa.Column("can_train", sa.Boolean(), nullable=False, default=False),
    sa.Column("profile", sa.String(length=100), nullable=False, default=""),
    sa.Column("release_version", sa.Integer(), nullable=False, default=0),
    sa.Column("release_slot", sa.String(length=8), nullable=False, default=""),
    sa.Column("data_dataset", sa.String(length=64), nullable=False, default=""),
    sa.Column("data_shape", sa.String(length=64), nullable=False, default=""),
    sa.Column("data_classes", sa.Integer(), nullable=False, default=0),
    sa.Column("data_samples", sa.Integer(), nullable=False, default=0),
    sa.Column("kind", sa.String(length=16), nullable=False, default="device"),
    sa.Column("site", sa.String(length=100), nullable=False, default=""),
    sa.Column("enroll_fingerprint", sa.String(length=64), nullable=False, default=""),
    sa.Column("reachable", sa.Boolean(), nullable=False, default=False),
)
sa.Table(
    "events",
    METADATA,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float(), nullable=False),
    sa.Column("run_id", sa.Integer(), nullable=True, index=True),
    sa.Column("device_id", sa.String(length=64), nullable=False, default=""),
    sa.Column("kind", sa.String(length=32), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
)
sa.Table(
    "runs",
    METADATA,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("config_json", sa.Text(), nullable=False),
    sa.Column("rounds_total", sa.Integer(), nullable=False),
    sa.Column("created", sa.Float(), nullable=False),
    sa.Column("error", sa.Text(), nullable=False, default=""),
    sa.Column("attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("devices_json", sa.Text(), nullable=False, default=""),
)
sa.Table(
    "tokens",
    METADATA,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("secret_sha256", sa.String(length=64), nullable=False, unique=True),
    sa.Column("created", sa.Float(), nullable=False),
    sa.Column("expires", sa.Float(), nullable=False),
    sa.Column("used_by", sa.String(length=64), nullable=True),
    sa.Column("kind", sa.String(length=16), nullable=False, default="device"),
    sa.Column("site", sa.String(length=100), nullable=False, default=""),
)
sa.Table(
    "rounds",
    METADATA,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("server_round", sa.Integer(), nullable=False),
    sa.Column("accuracy", sa.Float(), nullable=False),
    sa.Column("loss", sa.Float(), nullable=False),
    sa.Column("sampled", sa.Integer(), nullable=False),
    sa.Column("aggregated", sa.Integer(), nullable=False),
    sa.Column("dropped", sa.Integer(), nullable=False),
    sa.Column("seconds", sa.Float(), nullable=False),
    sa.Column("drops_json", sa.Text(), nullable=False, default="[]"),
    sa.Column("epsilon", sa.Float(), nullable=True),
    sa.Column("sites_json", sa.Text(), nullable=False, default="[]"),
    sa.UniqueConstraint("run_id", "server_round"),
)

revision, down_revision, upgrade = baseline(METADATA)
