"""The gateway's schema before fedge versioned it (``gateway.db``, fedge 5c8fcc8).

Its tables as that fedge created them: see :func:`fedge.storage.migrations.baseline`.
"""

import sqlalchemy as sa

from fedge.storage.migrations import baseline

METADATA = sa.MetaData()
sa.Table(
    "site_devices",
    METADATA,
    sa.Column("device_id", sa.String(length=64), primary_key=True),
    sa.Column("node_id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=200), nullable=False, default=""),
    sa.Column("cert_serial", sa.String(length=64), nullable=False, default=""),
    sa.Column("revoked", sa.Boolean(), nullable=False, default=False),
    sa.Column("last_seen", sa.Float(), nullable=False, default=0.0),
    sa.Column("heartbeat", sa.LargeBinary(), nullable=False, default=b""),
)
sa.Table(
    "site_manifests",
    METADATA,
    sa.Column("device_id", sa.String(length=64), primary_key=True),
    sa.Column("available", sa.Boolean(), nullable=False),
    sa.Column("manifest_json", sa.LargeBinary(), nullable=False, default=b""),
    sa.Column("signature", sa.LargeBinary(), nullable=False, default=b""),
    sa.Column("key_id", sa.String(length=64), nullable=False, default=""),
    sa.Column("fetched", sa.Float(), nullable=False),
)
sa.Table(
    "site_outbox",
    METADATA,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("device_id", sa.String(length=64), nullable=False),
    sa.Column("payload", sa.LargeBinary(), nullable=False),
    sa.Column("created", sa.Float(), nullable=False),
)

revision, down_revision, upgrade = baseline(METADATA)
