"""Schema changes of fedge's SQLite stores, as Alembic migrations run when a store is opened.

Each store (``coordinator``, ``gateway``, ``release``) has its own history: a directory here
whose files are its revisions, oldest first, each naming the one before it (``down_revision``).
The files are independent of each other store's, so each history is kept in its own version
table (``alembic_version_<store>``): the histories could share a file and never read each
other's revision as their own.

Opening a store upgrades its file to the newest revision inside one ``BEGIN IMMEDIATE``
transaction: another process opening the same file waits, then finds it upgraded; a process
killed half-way leaves the file as it was. A file of a newer fedge (a revision this one does not
know) is refused with one line. The first revision of each history is the schema fedge had
before it versioned its schemas, written so that a file of that fedge (its tables, no version
table) is adopted in place (:func:`baseline`).

To change a schema: change the store's tables, then add a revision file to its directory with
``revision`` (the next number), ``down_revision`` (the newest so far) and an ``upgrade()``
using ``alembic.op`` (for SQLite, ``op.batch_alter_table`` to change or drop a column); a
revision that only adds columns takes all three from :func:`added_columns`.
``tests/test_storage.py`` fails while the newest revision and the tables differ.
"""

import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Column, Connection, Engine, MetaData, inspect, text

from fedge.errors import ConfigError
from fedge.log import logger

__all__ = [
    "HISTORIES",
    "added_columns",
    "baseline",
    "create_or_complete",
    "head_revision",
    "history_dir",
    "schema_revision",
    "upgrade_schema",
    "version_table",
]

#: The directory of this package: its ``env.py`` runs the migrations, its subdirectories
#: are the histories.
HISTORIES = Path(__file__).parent

# Alembic runs migrations through module-level proxies (``alembic.op``, ``alembic.context``):
# one migration at a time in a process.
_MIGRATING = threading.Lock()


def history_dir(store: str) -> Path:
    """The directory of the revisions of ``store``'s schema."""
    return HISTORIES / store


def version_table(history: Path) -> str:
    """The table that holds the revision of the history in ``history``."""
    return f"alembic_version_{history.name}"


def head_revision(history: Path) -> str:
    """The newest revision of the history in ``history``."""
    head = _scripts(history).get_current_head()
    if head is None:
        raise ValueError(f"{history} holds no schema revisions")
    return head


def schema_revision(engine: Engine, history: Path) -> str | None:
    """The revision the file of ``engine`` is at in ``history`` (``None``: unversioned)."""
    with engine.connect() as conn:
        return _current(conn, history)


def upgrade_schema(engine: Engine, history: Path) -> None:
    """Bring the file of ``engine`` to the newest revision of ``history``, in place.

    :class:`ConfigError` when the file is at a revision ``history`` does not have (a file of a
    newer fedge); nothing is changed then.
    """
    script = _scripts(history)
    head = head_revision(history)
    with _MIGRATING, engine.begin() as conn:
        current = _current(conn, history)
        if current == head:
            return
        if current is not None and not _known(script, current):
            raise ConfigError(
                str(engine.url.database),
                current,
                f"is the schema revision of a newer fedge ({history.name} schema; this fedge "
                f"knows revisions up to {head!r}): upgrade fedge to open it",
            )
        config = _config(history)
        config.attributes["connection"] = conn
        fresh = current is None and not inspect(conn).get_table_names()
        command.upgrade(config, "head")
        if fresh:  # a new file is created at the head: nothing was upgraded
            return
        was = "unversioned" if current is None else f"revision {current}"
        logger.info(
            "%s: %s schema upgraded from %s to %s", engine.url.database, history.name, was, head
        )


def baseline(tables: MetaData) -> tuple[str, None, Callable[[], None]]:
    """``revision, down_revision, upgrade`` of the first revision of a history: the schema
    fedge had before it versioned its schemas (fedge 5c8fcc8), ``tables`` as that fedge created
    them, frozen in the revision file (the store's ORM classes will change; these must not). A
    file that fedge wrote has these tables and no version table: they are kept, and any column
    the file lacks (fedge added columns as it grew) is added, as that fedge did."""

    def upgrade() -> None:
        create_or_complete(tables)

    return "0001", None, upgrade


def added_columns(
    revision: str, table: str, *columns: Column[Any]
) -> tuple[str, str, Callable[[], None]]:
    """``revision, down_revision, upgrade`` of a revision that adds ``columns`` to ``table``
    (the revision before it is the one numbered one less)."""

    def upgrade() -> None:
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.add_column(column)

    return revision, f"{int(revision) - 1:04d}", upgrade


def create_or_complete(tables: MetaData) -> None:
    """In a revision: create each table of ``tables`` the file lacks, and add each column
    missing from a table it has (as fedge did before it versioned schemas: nullable, with the
    column's default)."""
    conn = op.get_bind()
    tables.create_all(conn, checkfirst=True)
    inspector = inspect(conn)
    for table in tables.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                op.add_column(table.name, _added(column))


def _added(column: Column[Any]) -> Column[Any]:
    default = getattr(column.default, "arg", None)
    server_default = text(_literal(default)) if default is not None else None
    return Column(column.name, column.type, nullable=True, server_default=server_default)


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    return "'" + str(value).replace("'", "''") + "'"


def _current(conn: Connection, history: Path) -> str | None:
    # Read as alembic keeps it, without alembic's context (which logs on every open).
    table = version_table(history)
    if not inspect(conn).has_table(table):
        return None
    return conn.execute(text(f'SELECT version_num FROM "{table}"')).scalar()


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def _config(history: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HISTORIES))
    config.set_main_option("version_locations", str(history))
    config.set_main_option("path_separator", "os")
    config.attributes["version_table"] = version_table(history)
    return config


@cache
def _scripts(history: Path) -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(history))
