"""The SQLite stores' schemas by migration: old files upgrade in place, newer ones are refused.

``tests/fixtures/state-v0`` holds the three databases as fedge wrote them before it versioned
its schemas (``tests/fixtures/make_state_v0.py`` says how); every test works on a copy.
"""

import logging
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData
from typer.testing import CliRunner

from fedge.cli.main import app
from fedge.coordinator.state import State
from fedge.coordinator.state import _Base as CoordinatorTables
from fedge.errors import ConfigError
from fedge.gateway.state import GatewayState
from fedge.gateway.state import _Base as GatewayTables
from fedge.release.store import open_release_store
from fedge.release.tables import ReleaseTables
from fedge.storage import open_sqlite, sqlite_engine
from fedge.storage.migrations import head_revision, history_dir, schema_revision, upgrade_schema

FIXTURE = Path(__file__).parent / "fixtures" / "state-v0"
#: Each store: its tables and its file in the fixture.
STORES = {
    "coordinator": (CoordinatorTables, "coordinator/state.db"),
    "gateway": (GatewayTables, "gateway/gateway.db"),
    "release": (ReleaseTables, "coordinator/releases/releases.db"),
}
#: A revision written after this fedge's newest: a column added with a default.
LATER_REVISION = '''"""A column added after this fedge's newest revision (written by the test)."""

import sqlalchemy as sa
from alembic import op

revision = "{later}"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("note", sa.String(50), server_default="none"))
'''


@pytest.fixture
def v0(tmp_path: Path) -> Path:
    """A copy of the state written by fedge before its schemas had versions."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "state-v0"))


def _later_history(tmp_path: Path) -> Path:
    """The coordinator's history with one revision more than this fedge has."""
    history = Path(shutil.copytree(history_dir("coordinator"), tmp_path / "coordinator"))
    head = _head("coordinator")
    (history / f"r{LATER}_note.py").write_text(LATER_REVISION.format(later=LATER, head=head))
    return history


def _head(store: str) -> str:
    return head_revision(history_dir(store))


#: The revision number one past this fedge's newest coordinator revision.
LATER = f"{int(_head('coordinator')) + 1:04d}"


def _revision(path: Path, store: str) -> str | None:
    engine = sqlite_engine(path)
    try:
        return schema_revision(engine, history_dir(store))
    finally:
        engine.dispose()


def _version_table(name: str | None, kind: str) -> bool:
    return kind == "table" and str(name).startswith("alembic_version")


def _schema(path: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master"))


def test_a_state_directory_of_the_previous_fedge_opens_with_its_data(v0: Path) -> None:
    for store, (_, file) in STORES.items():
        assert _revision(v0 / file, store) is None, f"the {store} fixture is already versioned"
    state = State(v0 / "coordinator" / "state.db")
    device = state.device("dev-v0")
    assert device is not None and device.name == "camera-1" and not device.revoked
    run = state.run(0)
    assert (run.config_json, run.attempts) == ('{"rounds": 2}', 1)
    assert [(r.server_round, r.accuracy) for r in state.rounds(run.id)] == [(1, 0.5)]
    state.close()
    gateway = GatewayState(v0 / "gateway" / "gateway.db")
    assert [(d.device_id, d.node_id) for d in gateway.devices()] == [("dev-v0", 1)]
    gateway.close()
    releases = open_release_store(state_dir=v0 / "coordinator")
    assert [(r.version, r.name, r.percent) for r in releases.list_releases()] == [
        (1, "linear-v0", 50)
    ]
    assert releases.signed(1).manifest.name == "linear-v0"
    releases.close()
    for store, (_, file) in STORES.items():
        assert _revision(v0 / file, store) == _head(store)


@pytest.mark.parametrize("store", sorted(STORES))
def test_an_upgraded_file_has_the_schema_of_a_new_one(v0: Path, tmp_path: Path, store: str) -> None:
    tables, file = STORES[store]
    open_sqlite(v0 / file, tables=tables).dispose()
    open_sqlite(tmp_path / "new.db", tables=tables).dispose()
    assert _schema(v0 / file) == _schema(tmp_path / "new.db")


@pytest.mark.parametrize("store", sorted(STORES))
def test_the_newest_revision_is_what_the_tables_declare(tmp_path: Path, store: str) -> None:
    tables, _ = STORES[store]
    engine = open_sqlite(tmp_path / "new.db", tables=tables)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_name": lambda name, kind, _: not _version_table(name, kind)}
        )
        differences = compare_metadata(context, tables.metadata)
    engine.dispose()
    assert differences == [], f"the {store} tables differ from its newest revision: add one"


def test_an_unversioned_file_missing_a_later_column_gets_it(v0: Path) -> None:
    # fedge added columns as it grew; a file older than the fixture lacks some.
    path = v0 / "coordinator" / "state.db"
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE devices DROP COLUMN reachable")
        conn.execute("ALTER TABLE rounds DROP COLUMN sites_json")
    state = State(path)
    device = state.device("dev-v0")
    assert device is not None and device.reachable is False
    assert [r.sites_json for r in state.rounds(state.run(0).id)] == ["[]"]
    state.close()
    assert _revision(path, "coordinator") == _head("coordinator")


def test_a_later_revision_upgrades_an_old_file_in_place(
    v0: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = v0 / "coordinator" / "state.db"
    history = _later_history(tmp_path)
    engine = sqlite_engine(path)
    with caplog.at_level(logging.INFO, logger="fedge"):
        upgrade_schema(engine, history)
        upgrade_schema(engine, history)  # at the head: nothing to do
    upgrades = [r.getMessage() for r in caplog.records if "schema upgraded" in r.getMessage()]
    assert upgrades == [
        f"{path.resolve()}: coordinator schema upgraded from unversioned to {LATER}"
    ]
    assert schema_revision(engine, history) == LATER
    engine.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT device_id, note FROM devices").fetchall() == [
            ("dev-v0", "none")
        ]
        assert conn.execute("SELECT count(*) FROM rounds").fetchone() == (1,)


def test_a_file_of_a_newer_fedge_is_refused_in_one_line(v0: Path, tmp_path: Path) -> None:
    path = v0 / "coordinator" / "state.db"
    State(path).close()
    engine = sqlite_engine(path)
    upgrade_schema(engine, _later_history(tmp_path))
    engine.dispose()
    before = path.read_bytes()
    with pytest.raises(ConfigError) as refused:
        State(path)
    message = str(refused.value)
    assert "\n" not in message
    head = _head("coordinator")
    assert str(path.resolve()) in message and f"'{LATER}'" in message and f"'{head}'" in message
    assert path.read_bytes() == before


def test_the_coordinator_refuses_a_newer_state_directory_with_exit_2(
    v0: Path, tmp_path: Path
) -> None:
    path = v0 / "coordinator" / "state.db"
    State(path).close()
    engine = sqlite_engine(path)
    upgrade_schema(engine, _later_history(tmp_path))
    engine.dispose()
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'[coordinator]\nstate-dir = "{v0 / "coordinator"}"\n'
        'address = "127.0.0.1:0"\nenroll-address = "127.0.0.1:0"\n'
    )
    result = CliRunner().invoke(
        app, ["coordinator", "start", "--insecure", "--config", str(config)]
    )
    assert result.exit_code == 2, result.output
    error = f"Error: {path.resolve()}: '{LATER}' is the schema revision of a newer fedge"
    assert result.output.splitlines()[-1].startswith(error), result.output
    assert "Traceback" not in result.output


def test_processes_opening_an_old_file_at_once_upgrade_it_once(v0: Path) -> None:
    path = v0 / "coordinator" / "state.db"
    script = (
        "import sys; from fedge.coordinator.state import State; "
        "s = State(sys.argv[1]); print(len(s.devices())); s.close()"
    )
    openers = [
        subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    outputs = [opener.communicate(timeout=120)[0] for opener in openers]
    assert [opener.returncode for opener in openers] == [0, 0, 0]
    assert outputs == [b"1\n"] * 3
    assert _revision(path, "coordinator") == _head("coordinator")
    with sqlite3.connect(path) as conn:
        versions = conn.execute("SELECT * FROM alembic_version_coordinator").fetchall()
    assert versions == [(_head("coordinator"),)]


def test_tables_without_a_history_are_a_programming_error(tmp_path: Path) -> None:
    from sqlalchemy.orm import DeclarativeBase

    class Loose(DeclarativeBase):
        metadata = MetaData()

    with pytest.raises(TypeError, match="names no schema history"):
        open_sqlite(tmp_path / "x.db", tables=Loose)


def test_a_new_file_is_created_at_the_head_without_an_upgrade_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fedge"):
        State(tmp_path / "state.db").close()
    assert not [r for r in caplog.records if "schema upgraded" in r.getMessage()]
    assert _revision(tmp_path / "state.db", "coordinator") == _head("coordinator")
