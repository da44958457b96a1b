"""The one SQLite setup of fedge's databases (coordinator, gateway, release store).

WAL lets readers run beside a writer; a busy timeout makes a writer wait for the lock instead of
failing; and every transaction takes the write lock when it *starts* (``BEGIN IMMEDIATE``):
SQLite refuses at once, with "database is locked", to upgrade a read transaction whose snapshot
another connection has since written past, so deferred transactions fail under concurrency
where immediate ones only wait. Opening a file brings its schema to the newest revision of the
store's history (:mod:`fedge.storage.migrations`), so a newer fedge opens an older file in place.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from fedge.storage.migrations import history_dir, upgrade_schema

__all__ = ["SqliteDatabase", "migrated_metadata", "open_sqlite", "sqlite_engine"]

BUSY_TIMEOUT_MS = 30_000
_HISTORY = "fedge.history"


def migrated_metadata(store: str) -> MetaData:
    """The metadata of tables whose schema is the history ``store`` of
    :mod:`fedge.storage.migrations` (``DeclarativeBase.metadata`` of a store's tables)."""
    return MetaData(info={_HISTORY: store})


def open_sqlite(path: Path, *, tables: type[DeclarativeBase]) -> Engine:
    """An engine on the SQLite file ``path``, its schema upgraded to the newest of ``tables``'
    history (:func:`migrated_metadata`); :class:`~fedge.errors.ConfigError` if it is newer."""
    store = tables.metadata.info.get(_HISTORY)
    if store is None:
        raise TypeError(f"{tables.__name__}.metadata names no schema history: migrated_metadata")
    engine = sqlite_engine(path)
    try:
        upgrade_schema(engine, history_dir(store))
    except BaseException:
        engine.dispose()
        raise
    return engine


def sqlite_engine(path: Path) -> Engine:
    """An engine on the SQLite file ``path`` (WAL, busy timeout, ``BEGIN IMMEDIATE``), as is."""
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

    return engine


class SqliteDatabase:
    """A database in one SQLite file with ``tables``, safe to use from many threads."""

    def __init__(self, path: Path, *, tables: type[DeclarativeBase]) -> None:
        self._engine = open_sqlite(path, tables=tables)
        self._lock = threading.RLock()
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction, committed on success, serialized with other writers."""
        with self._lock, self._sessions() as session, session.begin():
            yield session
