"""Drift per named input feature (``release_drift.features_json``: PSI per feature)."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("release_drift") as batch:
        batch.add_column(sa.Column("features_json", sa.Text(), nullable=True, server_default="{}"))
