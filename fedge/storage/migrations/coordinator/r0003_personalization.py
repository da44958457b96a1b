"""Each device's last personalisation as it reported it, noised on the device: the release it
personalised, the gain and "gain" or the reason it kept the release (``devices.personal_*``)."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(
            sa.Column("personal_version", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("personal_gain", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("personal_reason", sa.String(32), nullable=False, server_default="")
        )
