"""A round's task metrics beside its accuracy: ROC-AUC of a binary task; precision, recall,
F1, ROC-AUC and the threshold of an anomaly task (``rounds.metrics_json``)."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("metrics_json", sa.Text(), nullable=True, server_default="{}"))
