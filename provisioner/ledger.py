"""The SQLite ledger: what was created where, so reruns never create a web chat twice."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from provisioner.cells import key_fingerprint
from provisioner.errors import LedgerError
from provisioner.outcome import CUT_OFF, Outcome, Status

APPLICATION_ID = 0x50525631  # "PRV1": marks a SQLite file as a provisioner ledger
# Each entry moves the schema one version forward; never edit one that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE entries (
            scope TEXT NOT NULL,
            row_key TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('in_flight', 'created', 'failed')),
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
        "UPDATE entries SET key_fingerprint = key_fingerprint(row_key) WHERE status = 'created'",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
# Seconds between checks that the ledger file is still the one opened (a stat each commit
# cost more than the commit on a busy run; a second's delay to notice is harmless).
IDENTITY_CHECK_EVERY = 1.0
# Created keys a new key is compared with: a fingerprint range holds a few at most.
KEY_CANDIDATES = 20
# Seconds SQLite waits for `status` reading while a run commits (the lock is held briefly).
BUSY_TIMEOUT = 10.0


def utc_now() -> str:
    """The current UTC time as ISO 8601 with a Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Entry:
    """What the ledger knows of one row key."""

    row_key: str
    status: str
    conversation_sid: str
    identity: str
    request_id: str
    run_id: str
    ambiguous_attempts: int
    first_sent_at: str = ""
    updated_at: str = ""
    lookup: str = ""
    duplicate_sids: str = ""

    @property
    def updated(self) -> float:
        """`updated_at` as seconds since the epoch (0 when unknown)."""
        return _epoch(self.updated_at)

    @property
    def first_sent(self) -> float:
        """`first_sent_at` as seconds since the epoch (0 when unknown)."""
        return _epoch(self.first_sent_at)


def _epoch(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# Rows that may exist at Twilio unrecorded, or twice: in flight when a run ended, failed after
# a lost answer, created after a lost answer that was never looked up (--no-lookup), or looked
# up with duplicates or no answer.
_UNSETTLED = (
    "status = 'in_flight' OR (status = 'failed' AND ambiguous_attempts > 0)"
    " OR (status = 'created' AND ambiguous_attempts > 0 AND lookup = '')"
    " OR lookup IN ('duplicates', 'failed')"
)
_ENTRY_COLUMNS = (
    "row_key, status, conversation_sid, identity, request_id, run_id, ambiguous_attempts,"
    " first_sent_at, updated_at, lookup, duplicate_sids"
)


@dataclass(frozen=True)
class RunRecord:
    """One run as the ledger remembers it."""

    run_id: str
    scope: str
    input: str
    pid: int
    started_at: str
    ended_at: str
    exit_code: int | None
    counts: Mapping[str, int]
    stop_reason: str
    created: int


class Ledger:
    """One open ledger, used from the run's main thread.

    Writes made inside `transaction()` commit together: the run groups the rows that finish
    (or start) at the same moment into one commit, which keeps the ledger off the hot path.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        scope: str,
        path: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = connection
        self.scope = scope
        self.path = path
        self._identity = _file_identity(path)
        self._next_check = 0.0
        self._clock = clock

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit every write made inside at once, or none of them.

        A ledger deleted or replaced under a run would take its writes into nothing: that, a
        full disk or any other failure to commit is a LedgerError, and nothing is committed.
        """
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + IDENTITY_CHECK_EVERY
            self._check_identity()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise LedgerError(f"{self.path}: cannot write the ledger ({error})") from error

    def _check_identity(self) -> None:
        if _file_identity(self.path) != self._identity:
            raise LedgerError(
                f"{self.path}: the ledger was deleted or replaced during the run; "
                "put it back, then rerun (rows in flight are looked up first)"
            )

    def lookup(self, row_key: str) -> Entry | None:
        """The ledger's entry for `row_key` in this scope, if any."""
        found = self._db.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE scope = ? AND row_key = ?",
            (self.scope, row_key),
        ).fetchone()
        return Entry(*found) if found else None

    def created_with_fingerprint_between(self, low: str, high: str) -> list[Entry]:
        """Created entries whose key fingerprint lies in [low, high] (cells.fingerprint_range)."""
        return [
            Entry(*found)
            for found in self._db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE scope = ?"
                " AND key_fingerprint BETWEEN ? AND ? AND status = 'created'"
                f" ORDER BY key_fingerprint LIMIT {KEY_CANDIDATES}",
                (self.scope, low, high),
            )
        ]

    def unsettled(self) -> list[Entry]:
        """Entries that may exist at Twilio unrecorded: in flight, or with lost answers."""
        return [
            Entry(*found)
            for found in self._db.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE scope = ? AND ({_UNSETTLED})",
                (self.scope,),
            )
        ]

    def mark_in_flight(self, row_key: str, run_id: str, identity: str = "") -> None:
        """Record that a request for `row_key` (with this identity) is about to be sent."""
        now = utc_now()
        self._db.execute(
            "INSERT INTO entries (scope, row_key, status, run_id, updated_at, first_sent_at,"
            " identity) VALUES (?, ?, 'in_flight', ?, ?, ?, ?)"
            " ON CONFLICT (scope, row_key) DO UPDATE SET status = 'in_flight',"
            " run_id = excluded.run_id, updated_at = excluded.updated_at,"
            " identity = excluded.identity,"
            " first_sent_at = CASE WHEN entries.first_sent_at = '' OR entries.status = 'created'"
            " THEN excluded.first_sent_at ELSE entries.first_sent_at END",
            (self.scope, row_key, run_id, now, now, identity),
        )

    def restore(self, row_key: str, prior: Entry | None) -> None:
        """Undo `mark_in_flight` for a row that was never sent after all."""
        if prior is None:
            self._db.execute(
                "DELETE FROM entries WHERE scope = ? AND row_key = ? AND status = 'in_flight'",
                (self.scope, row_key),
            )
        else:
            self._db.execute(
                "UPDATE entries SET status = ?, run_id = ?, updated_at = ?, first_sent_at = ?"
                " WHERE scope = ? AND row_key = ?",
                (
                    prior.status,
                    prior.run_id,
                    prior.updated_at or utc_now(),
                    prior.first_sent_at,
                    self.scope,
                    row_key,
                ),
            )

    def record_created(
        self,
        row_key: str,
        run_id: str,
        *,
        conversation_sid: str,
        identity: str,
        request_id: str,
        ambiguous_attempts: int,
        lookup: str = "",
        duplicate_sids: str = "",
        key_fingerprint: str | None = None,
    ) -> None:
        """Record a web chat that exists at Twilio (a 201, or found by a lookup)."""
        now = utc_now()
        self._db.execute(
            "INSERT INTO entries (scope, row_key, status, conversation_sid, identity, request_id,"
            " run_id, ambiguous_attempts, created_at, updated_at, lookup, duplicate_sids,"
            " key_fingerprint)"
            " VALUES (?, ?, 'created', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (scope, row_key) DO UPDATE SET status = 'created',"
            " conversation_sid = excluded.conversation_sid, identity = excluded.identity,"
            " request_id = excluded.request_id, run_id = excluded.run_id,"
            " ambiguous_attempts = excluded.ambiguous_attempts,"
            " created_at = excluded.created_at, updated_at = excluded.updated_at,"
            " lookup = excluded.lookup, duplicate_sids = excluded.duplicate_sids,"
            " key_fingerprint = excluded.key_fingerprint",
            (
                self.scope,
                row_key,
                conversation_sid,
                identity,
                request_id,
                run_id,
                ambiguous_attempts,
                now,
                now,
                lookup,
                duplicate_sids,
                key_fingerprint,
            ),
        )

    def record_lookup(self, row_key: str, *, lookup: str, duplicate_sids: str) -> None:
        """Record what a later lookup found for a created row."""
        self._db.execute(
            "UPDATE entries SET lookup = ?, duplicate_sids = ?, updated_at = ?"
            " WHERE scope = ? AND row_key = ?",
            (lookup, duplicate_sids, utc_now(), self.scope, row_key),
        )

    def record_failed(
        self, row_key: str, run_id: str, *, ambiguous_attempts: int, lookup: str = ""
    ) -> None:
        """Record that the row's requests failed; a created entry is never downgraded."""
        self._db.execute(
            "INSERT INTO entries (scope, row_key, status, run_id, ambiguous_attempts, updated_at,"
            " lookup) VALUES (?, ?, 'failed', ?, ?, ?, ?)"
            " ON CONFLICT (scope, row_key) DO UPDATE SET status = 'failed',"
            " run_id = excluded.run_id, ambiguous_attempts = excluded.ambiguous_attempts,"
            " updated_at = excluded.updated_at, lookup = excluded.lookup"
            " WHERE entries.status != 'created'",
            (self.scope, row_key, run_id, ambiguous_attempts, utc_now(), lookup),
        )

    def record_outcome(
        self,
        row_key: str,
        outcome: Outcome,
        run_id: str,
        *,
        prior: Entry | None,
        sent: bool,
        key_fingerprint: str | None,
    ) -> None:
        """Record what became of a row (inside the caller's transaction)."""
        if outcome.status is Status.CREATED:
            self.record_created(
                row_key,
                run_id,
                conversation_sid=outcome.conversation_sid,
                identity=outcome.identity,
                request_id=outcome.request_id,
                ambiguous_attempts=outcome.ambiguous_attempts,
                lookup=outcome.lookup.value,
                duplicate_sids=" ".join(outcome.duplicate_sids),
                key_fingerprint=key_fingerprint,
            )
        elif outcome.status is Status.FAILED:
            self.record_failed(
                row_key,
                run_id,
                ambiguous_attempts=outcome.ambiguous_attempts,
                lookup=outcome.lookup.value,
            )
        elif outcome.status is Status.NOT_ATTEMPTED and sent and outcome.error_code != CUT_OFF:
            self.restore(row_key, prior)  # never sent after all; one cut off stays in flight

    def in_flight_count(self) -> int:
        """Rows of this scope left in flight by a run that never finished them."""
        (count,) = self._db.execute(
            "SELECT count(*) FROM entries WHERE scope = ? AND status = 'in_flight'",
            (self.scope,),
        ).fetchone()
        return int(count)

    def begin_run(self, run_id: str, input_path: str, *, forced: bool) -> None:
        """Record the start of a run."""
        self._db.execute(
            "INSERT OR REPLACE INTO runs (run_id, scope, input, pid, started_at, forced)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, self.scope, input_path, os.getpid(), utc_now(), int(forced)),
        )

    def end_run(
        self, run_id: str, *, exit_code: int, counts: Mapping[str, int], stop_reason: str
    ) -> None:
        """Record how a run ended."""
        self._db.execute(
            "UPDATE runs SET ended_at = ?, exit_code = ?, counts = ?, stop_reason = ?"
            " WHERE run_id = ?",
            (utc_now(), exit_code, json.dumps(dict(counts)), stop_reason, run_id),
        )


@contextmanager
def open_ledger(
    path: Path, scope: str, clock: Callable[[], float] = time.monotonic
) -> Iterator[Ledger]:
    """Lock, check and migrate the ledger at `path` (created if absent) for one run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise LedgerError(f"{path}: cannot create its folder ({error.strerror})") from error
    if path.exists() and path.stat().st_nlink > 1:
        # A hard link is another name for the file: the lock and SQLite's WAL are named after
        # the path, so a second run through the other name would see none of this run's rows.
        raise LedgerError(
            f"{path}: the ledger has another name (a hard link); use one path for it, "
            "or a symbolic link"
        )
    with _exclusive_lock(path):
        if not path.exists():  # customer data: readable by its owner only, whatever the umask
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        connection = _connect(path, read_only=False)
        try:
            _migrate(connection, path)
            yield Ledger(connection, scope, path, clock)
        finally:
            connection.close()


@dataclass(frozen=True)
class LedgerStatus:
    """What `provisioner status` shows: created and unsettled rows per scope, the last runs."""

    runs: list[RunRecord]
    created: dict[str, int]
    unsettled: dict[str, int]


def read_status(path: Path, limit: int = 10) -> LedgerStatus:
    """The last runs (newest first), created and unsettled rows per scope; read-only, no lock."""
    if not path.exists():
        raise LedgerError(
            f"{path}: no ledger here yet; it is made by the first `provisioner create`"
        )
    with tempfile.TemporaryDirectory(prefix="provisioner-status-") as scratch:
        return _read_status(_connect(path, read_only=True, scratch=Path(scratch)), path, limit)


def _read_status(connection: sqlite3.Connection, path: Path, limit: int) -> LedgerStatus:
    try:
        version = _checked_version(connection, path)
        if version < SCHEMA_VERSION:
            raise LedgerError(
                f"{path}: ledger schema {version} is older than this version's "
                f"{SCHEMA_VERSION}; the next `provisioner create` migrates it"
            )
        runs = [
            RunRecord(
                run_id=run_id,
                scope=scope,
                input=input_path,
                pid=pid,
                started_at=started,
                ended_at=ended,
                exit_code=exit_code,
                counts=json.loads(counts or "{}"),
                stop_reason=reason,
                created=created,
            )
            for (
                run_id,
                scope,
                input_path,
                pid,
                started,
                ended,
                exit_code,
                counts,
                reason,
                created,
            ) in connection.execute(
                "SELECT r.run_id, r.scope, r.input, r.pid, r.started_at, r.ended_at, r.exit_code,"
                " r.counts, r.stop_reason,"
                " (SELECT count(*) FROM entries e WHERE e.run_id = r.run_id"
                "  AND e.status = 'created')"
                " FROM runs r ORDER BY r.started_at DESC LIMIT ?",
                (limit,),
            )
        ]
        created = dict(
            connection.execute(
                "SELECT scope, count(*) FROM entries WHERE status = 'created' GROUP BY scope"
            ).fetchall()
        )
        unsettled = dict(
            connection.execute(
                f"SELECT scope, count(*) FROM entries WHERE {_UNSETTLED} GROUP BY scope"
            ).fetchall()
        )
    except sqlite3.DatabaseError as error:
        raise LedgerError(f"{path}: cannot read the ledger ({error})") from error
    finally:
        connection.close()
    return LedgerStatus(runs, created, unsettled)


def lock_holder(path: Path) -> int | None:
    """The pid of the run holding the ledger's lock now, or None when no run holds it."""
    lock_path = _lock_path(path)
    try:
        stream = lock_path.open("r", encoding="utf-8")
    except OSError:
        return None
    with stream:
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = stream.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(stream.fileno(), fcntl.LOCK_UN)
        return None


def _lock_path(path: Path) -> Path:
    """The lock file beside the real ledger, so two paths to one ledger share one lock."""
    real = path.resolve()
    return real.with_name(real.name + ".lock")


def _file_identity(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_dev, stat.st_ino)


def _connect(path: Path, *, read_only: bool, scratch: Path | None = None) -> sqlite3.Connection:
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


def _checked_version(connection: sqlite3.Connection, path: Path) -> int:
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


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    version = _checked_version(connection, path)
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
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold `<ledger>.lock` for the run; the kernel frees it even if the process is killed."""
    lock_path = _lock_path(path)
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    stream: IO[str] = os.fdopen(descriptor, "r+", encoding="utf-8")
    try:
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            stream.seek(0)
            holder = stream.read().strip() or "unknown"
            raise LedgerError(
                f"{path}: another run (pid {holder}) is using this ledger; "
                "wait for it to finish, nothing was sent"
            ) from error
        stream.seek(0)
        stream.truncate()
        stream.write(str(os.getpid()))
        stream.flush()
        yield
    finally:
        stream.close()
