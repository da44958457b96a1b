"""Each device's last personalisation as it reported it, noised on the device: the release it
personalised, the gain and "gain" or the reason it kept the release (``devices.personal_*``)."""

import sqlalchemy as sa

from fedge.storage.migrations import added_columns

revision, down_revision, upgrade = added_columns(
    "0003",
    "devices",
    sa.Column("personal_version", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("personal_gain", sa.Float(), nullable=False, server_default="0"),
    sa.Column("personal_reason", sa.String(32), nullable=False, server_default=""),
)
