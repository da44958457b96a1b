"""Alembic's entry point: run a history's revisions on the connection fedge opened.

Alembic loads this file itself (from :func:`fedge.storage.migrations.upgrade_schema`, which
passes the connection, already in its ``BEGIN IMMEDIATE`` transaction, and the version table).
"""

from alembic import context

context.configure(
    connection=context.config.attributes["connection"],
    version_table=context.config.attributes["version_table"],
)
with context.begin_transaction():
    context.run_migrations()
