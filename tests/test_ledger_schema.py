"""The ledger's SQLite file on real files: what is a ledger, migrations, transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.errors import LedgerError
from provisioner.ledger import open_ledger
from provisioner.ledger_schema import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    connect,
    migrate,
    write_transaction,
)

SCOPE = "AC123@flex-api.twilio.com"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.db"


@pytest.fixture
def migrated(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, Path]]:
    """A connection to a new file migrated to the current schema, and the file."""
    path = tmp_path / "ledger.db"
    path.touch()
    connection = connect(path, read_only=False)
    try:
        migrate(connection, path)
        yield connection, path
    finally:
        connection.close()


def test_an_empty_file_is_migrated_to_the_current_schema(
    migrated: tuple[sqlite3.Connection, Path],
) -> None:
    connection, _ = migrated

    pragmas = [
        connection.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("application_id", "user_version", "journal_mode")
    ]
    names = connection.execute("SELECT type, name FROM sqlite_master ORDER BY name").fetchall()

    assert pragmas == [APPLICATION_ID, SCHEMA_VERSION, "wal"]
    assert names == [
        ("table", "entries"),
        ("index", "entries_by_conversation"),
        ("index", "entries_by_fingerprint"),
        ("index", "entries_by_run"),
        ("table", "runs"),
        ("index", "sqlite_autoindex_runs_1"),
    ]


INSERT_RUN = (
    "INSERT INTO runs (run_id, scope, input, pid, started_at) VALUES (?, 's', 'in', 1, 't')"
)


def write_then_break(connection: sqlite3.Connection, path: Path) -> None:
    with write_transaction(connection, path):
        connection.execute(INSERT_RUN, ("r1",))
        connection.execute("INSERT INTO runs (run_id) VALUES ('r2')")  # NOT NULL columns


def test_a_failed_write_commits_nothing_and_names_the_ledger(
    migrated: tuple[sqlite3.Connection, Path],
) -> None:
    connection, path = migrated

    with pytest.raises(LedgerError) as raised:
        write_then_break(connection, path)
    with write_transaction(connection, path):  # the connection is usable again
        connection.execute(INSERT_RUN, ("r3",))
    runs = connection.execute("SELECT run_id FROM runs").fetchall()

    assert str(raised.value).startswith(f"{path}: cannot write the ledger (NOT NULL constraint")
    assert runs == [("r3",)]


def test_a_file_that_is_not_a_ledger_is_refused(path: Path) -> None:
    path.parent.mkdir()
    path.write_text("customer_id,AddressSid\n")

    with pytest.raises(LedgerError, match="not a provisioner ledger"), open_ledger(path, SCOPE):
        pass
