"""The ledger's SQLite file: its schema and migrations, how it is opened and written.

With ledger.py and ledger_runs.py, the only modules that import sqlite3.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from provisioner.cells import key_fingerprint
from provisioner.errors import LedgerError
from provisioner.vocabulary import EntryStatus, LookupResult


def sql_list(values: Iterable[str]) -> str:
    """Words as SQL's list of string literals: `('in_flight', 'created', 'failed')`."""
    return "(" + ", ".join("'" + value.replace("'", "''") + "'" for value in values) + ")"


# The CHECK of the entries' status, from EntryStatus: its text is the one the first schema
# shipped with, so ledgers made by any version read the same.
STATUS_CHECK = f"CHECK (status IN {sql_list(EntryStatus)})"

APPLICATION_ID = 0x50525631  # "PRV1": marks a SQLite file as a provisioner ledger
# Each entry moves the schema one version forward; never edit one that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE entries (
            scope TEXT NOT NULL,
            row_key TEXT NOT NULL,
            status TEXT NOT NULL """
        + STATUS_CHECK
        + """,
            conversation_sid TEXT NOT NULL DEFAULT '',
            identity TEXT NOT NULL DEFAULT '',
            request_id TEXT NOT NULL DEFAULT '',
            run_id TEXT NOT NULL,
            ambiguous_attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL DEFAULT '',
            updated_at TEXT NOT NULL,
            PRIMARY KEY (scope, row_key)
        ) WITHOUT ROWID""",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            scope TEXT NOT NULL,
            input TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT NOT NULL DEFAULT '',
            exit_code INTEGER,
            counts TEXT NOT NULL DEFAULT '{}'
        )""",
    ),
    (
        "ALTER TABLE runs ADD COLUMN stop_reason TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN forced INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX entries_by_run ON entries (run_id, status)",
    ),
    (
        "ALTER TABLE entries ADD COLUMN first_sent_at TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE entries ADD COLUMN lookup TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE entries ADD COLUMN duplicate_sids TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE entries ADD COLUMN key_fingerprint TEXT",
        "CREATE INDEX entries_by_fingerprint ON entries (scope, key_fingerprint)"
        " WHERE key_fingerprint IS NOT NULL",
        # Keys created before fingerprints existed get theirs, so key_changed sees them too.
        "UPDATE entries SET key_fingerprint = key_fingerprint(row_key)"
        f" WHERE status = '{EntryStatus.CREATED}'",
    ),
    (
        # Which row holds a web chat: one conversation never settles two rows (ledger.py).
        # Not UNIQUE: a ledger written before may hold such a pair already, and must open.
        "CREATE INDEX entries_by_conversation ON entries (scope, conversation_sid)"
        " WHERE conversation_sid != ''",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
# Seconds SQLite waits for `status` reading while a run commits (the lock is held briefly).
BUSY_TIMEOUT = 10.0
# Rows that may exist at Twilio unrecorded, or twice: in flight when a run ended, failed after
# a lost answer, created after a lost answer that was never looked up (--no-lookup), or looked
# up with duplicates or no answer.
UNSETTLED = (
    f"status = '{EntryStatus.IN_FLIGHT}' OR (status = '{EntryStatus.FAILED}'"
    " AND ambiguous_attempts > 0)"
    f" OR (status = '{EntryStatus.CREATED}' AND ambiguous_attempts > 0"
    f" AND lookup = '{LookupResult.NONE}')"
    f" OR lookup IN {sql_list([LookupResult.DUPLICATES, LookupResult.FAILED])}"
)


def connect(path: Path, *, read_only: bool, scratch: Path | None = None) -> sqlite3.Connection:
    """A connection to the ledger at `path`; read-only, from a copy in `scratch` if need be."""
    uri = f"{path.resolve().as_uri()}?mode={'ro' if read_only else 'rwc'}"
    try:
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT)
        if read_only:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
        if not read_only or scratch is None:
            raise LedgerError(f"{path}: cannot open the ledger ({error})") from error
        # A ledger the user may read but not write (nor its folder): SQLite cannot read its
        # WAL in place, and reading the main file alone would miss the latest commits. A
        # private copy of the file and its WAL holds every commit.
        try:
            copy = scratch / path.name
            shutil.copyfile(path, copy)
            wal = path.with_name(path.name + "-wal")
            if wal.exists():
                shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
            connection = sqlite3.connect(f"{copy.as_uri()}?mode=ro", uri=True)
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except (OSError, sqlite3.Error) as retry_error:
            raise LedgerError(f"{path}: cannot read the ledger ({retry_error})") from error
    return connection


def checked_version(connection: sqlite3.Connection, path: Path) -> int:
    """The schema version, after making sure the file is a ledger this code can read."""
    try:
        (application_id,) = connection.execute("PRAGMA application_id").fetchone()
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        (tables,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        raise LedgerError(
            f"{path}: not a provisioner ledger ({error}); move it away or pass --ledger PATH"
        ) from error
    if tables and application_id != APPLICATION_ID:
        raise LedgerError(
            f"{path}: a SQLite database, but not a provisioner ledger; "
            "move it away or pass --ledger PATH"
        )
    if version > SCHEMA_VERSION:
        raise LedgerError(
            f"{path}: ledger schema {version} is newer than this version of provisioner "
            f"understands ({SCHEMA_VERSION}); upgrade provisioner"
        )
    return int(version)


def migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Bring a ledger (an empty file included) to SCHEMA_VERSION, one migration per commit."""
    version = checked_version(connection, path)
    connection.create_function("key_fingerprint", 1, key_fingerprint, deterministic=True)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives a killed process; only a power cut can lose the last writes.
        connection.execute("PRAGMA synchronous = NORMAL")
        for number in range(version, SCHEMA_VERSION):
            connection.execute("BEGIN IMMEDIATE")
            for statement in MIGRATIONS[number]:
                connection.execute(statement)
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {number + 1}")
            connection.execute("COMMIT")
    except sqlite3.DatabaseError as error:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise LedgerError(f"{path}: cannot update the ledger ({error})") from error


@contextmanager
def write_transaction(connection: sqlite3.Connection, path: Path) -> Iterator[None]:
    """Commit the writes made inside at once, or none; a failure to commit is a LedgerError."""
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise LedgerError(f"{path}: cannot write the ledger ({error})") from error
