"""Asynchronous runs (``--mode async``): the run's live model version, buffer, trainings out and
refused updates (``runs.async_json``); per version, which devices' updates it took, with their
staleness and weight (``rounds.async_json``)."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("async_json", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("async_json", sa.Text(), nullable=False, server_default=""))
