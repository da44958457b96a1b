"""A round's task metrics beside its accuracy: ROC-AUC of a binary task; precision, recall,
F1, ROC-AUC and the threshold of an anomaly task (``rounds.metrics_json``)."""

import sqlalchemy as sa

from fedge.storage.migrations import added_columns

revision, down_revision, upgrade = added_columns(
    "0002", "rounds", sa.Column("metrics_json", sa.Text(), nullable=True, server_default="{}")
)
