"""Drift per named input feature (``release_drift.features_json``: PSI per feature)."""

import sqlalchemy as sa

from fedge.storage.migrations import added_columns

revision, down_revision, upgrade = added_columns(
    "0002",
    "release_drift",
    sa.Column("features_json", sa.Text(), nullable=True, server_default="{}"),
)
