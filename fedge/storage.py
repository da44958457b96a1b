"""The one SQLite setup of fedge's databases (coordinator, gateway, release store).

WAL lets readers run beside a writer; a busy timeout makes a writer wait for the lock instead of
failing; and every transaction takes the write lock when it *starts* (``BEGIN IMMEDIATE``):
SQLite refuses at once, with "database is locked", to upgrade a read transaction whose snapshot
another connection has since written past, so deferred transactions fail under concurrency
where immediate ones only wait. A table that gained a column since the file was created gets it
added, so a newer coordinator opens an older database.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

__all__ = ["SqliteDatabase", "open_sqlite"]

BUSY_TIMEOUT_MS = 30_000


def open_sqlite(path: Path, *, tables: type[DeclarativeBase]) -> Engine:
    """An engine on the SQLite file ``path`` with ``tables`` created (and completed)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{Path(path).resolve()}", connect_args={"check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions begin below, not in the driver
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    tables.metadata.create_all(engine)
    _add_missing_columns(engine, tables)
    return engine


class SqliteDatabase:
    """A database in one SQLite file with ``tables``, safe to use from many threads."""

    def __init__(self, path: Path, *, tables: type[DeclarativeBase]) -> None:
        self._engine = open_sqlite(path, tables=tables)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._lock = threading.RLock()

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction, committed on success, serialized with other writers."""
        with self._lock, self._sessions() as session, session.begin():
            yield session


def _add_missing_columns(engine: Engine, tables: type[DeclarativeBase]) -> None:
    with engine.begin() as conn:
        inspector = inspect(conn)
        for table in tables.metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                kind = column.type.compile(engine.dialect)
                default = getattr(column.default, "arg", None)
                clause = f" DEFAULT {_literal(default)}" if default is not None else ""
                conn.execute(
                    text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}{clause}')
                )


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"
