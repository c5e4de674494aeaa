"""The SQLite ledger: what was created where, so reruns never create a web chat twice.

This module owns the entries (one per row key and scope) and opening a ledger for a run. The
file's schema and migrations are ledger_schema.py's, its lock ledger_lock.py's, the runs table
and `provisioner status` ledger_runs.py's; callers import them all from here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from provisioner import timestamps
from provisioner.errors import ExitCode, LedgerError
from provisioner.ledger_lock import FileWatch, exclusive_lock, refuse_hard_links
from provisioner.ledger_runs import (
    record_run_end,
    record_run_start,
)
from provisioner.ledger_schema import (
    UNSETTLED,
    connect,
    migrate,
    write_transaction,
)
from provisioner.outcome import Outcome
from provisioner.private import PRIVATE_FOLDER_MODE, open_private
from provisioner.timestamps import epoch_seconds
from provisioner.vocabulary import EntryStatus, ErrorCode, LookupResult, Status

# Created keys a new key is compared with: a fingerprint range holds a few at most.
KEY_CANDIDATES = 20
# Outcomes recorded as a web chat that exists: created, or `existing` when a new ledger's
# lookup found one made from another ledger (prelookup.py), so that later runs skip it.
RECORDED_AS_CREATED = frozenset({Status.CREATED, Status.EXISTING})


@dataclass(frozen=True)
class Entry:
    """What the ledger knows of one row key."""

    row_key: str
    status: EntryStatus
    conversation_sid: str
    identity: str
    request_id: str
    run_id: str
    ambiguous_attempts: int
    first_sent_at: str = ""
    updated_at: str = ""
    lookup: str = ""  # a LookupResult's value (text: no CHECK holds the column to them)
    duplicate_sids: str = ""

    def __post_init__(self) -> None:
        # Read back from SQLite as text; the entries' CHECK holds it to EntryStatus's values.
        object.__setattr__(self, "status", EntryStatus(self.status))

    @property
    def updated(self) -> float:
        """`updated_at` as seconds since the epoch (0 when unknown)."""
        return _epoch(self.updated_at)

    @property
    def first_sent(self) -> float:
        """`first_sent_at` as seconds since the epoch (0 when unknown)."""
        return _epoch(self.first_sent_at)

    def last_sent_by(self, opened: float) -> float:
        """When the run that wrote this entry last sent its row, at the latest (epoch seconds),
        for a run that took the ledger at `opened`. A recorded outcome came after the row's
        last try. A row still in flight was left by a run that ended without its outcome
        (killed, or cut off): that run may have sent it at any moment until it ended, seconds
        after marking it, and it ended before this run took the ledger."""
        return opened if self.status is EntryStatus.IN_FLIGHT else self.updated


def _epoch(text: str) -> float:
    return epoch_seconds(text) or 0.0


_ENTRY_COLUMNS = (
    "row_key, status, conversation_sid, identity, request_id, run_id, ambiguous_attempts,"
    " first_sent_at, updated_at, lookup, duplicate_sids"
)


# Writes of many rows in one statement: the rows come as one JSON array (`:rows`) that
# json_each takes apart inside SQLite. A statement per row would be one step per row, and each
# step gives Python's lock to the threads sending requests: the main thread then waits its
# turn again, row after row (`WHERE true` lets the parser see the ON CONFLICT clause). SQLite's
# JSON ends a string at a NUL: keys hold none (rows.py refuses control characters in keys).
def _at(index: int, table: str = "json_each") -> str:
    """The `index`-th value of a row of `:rows` (json_extract: SQLite 3.37 has no ->>)."""
    return f"json_extract({table}.value, '$[{index}]')"


_CREATED_IN_SPANS = (  # spans: [[low, high], ...]
    f"SELECT span, {_ENTRY_COLUMNS} FROM (SELECT spans.key AS span, entries.*,"
    " row_number() OVER (PARTITION BY spans.key ORDER BY key_fingerprint) AS candidate"
    " FROM json_each(:spans) AS spans JOIN entries ON entries.scope = :scope"
    f" AND key_fingerprint BETWEEN {_at(0, 'spans')} AND {_at(1, 'spans')}"
    f" AND status = '{EntryStatus.CREATED}')"
    f" WHERE candidate <= {KEY_CANDIDATES} ORDER BY span, candidate"
)
_MARK_IN_FLIGHT = (  # rows: [row_key, identity]
    "INSERT INTO entries (scope, row_key, status, run_id, updated_at, first_sent_at, identity)"
    f" SELECT :scope, {_at(0)}, '{EntryStatus.IN_FLIGHT}', :run_id, :now, :now, {_at(1)}"
    " FROM json_each(:rows) WHERE true"
    f" ON CONFLICT (scope, row_key) DO UPDATE SET status = '{EntryStatus.IN_FLIGHT}',"
    " run_id = excluded.run_id, updated_at = excluded.updated_at,"
    " identity = excluded.identity,"
    " first_sent_at = CASE WHEN entries.first_sent_at = ''"
    f" OR entries.status = '{EntryStatus.CREATED}'"
    " THEN excluded.first_sent_at ELSE entries.first_sent_at END"
)
_RECORD_CREATED = (  # rows: [row_key, sid, identity, request_id, ambiguous, lookup, dups, print]
    "INSERT INTO entries (scope, row_key, status, conversation_sid, identity, request_id,"
    " run_id, ambiguous_attempts, created_at, updated_at, lookup, duplicate_sids,"
    " key_fingerprint)"
    f" SELECT :scope, {_at(0)}, '{EntryStatus.CREATED}', {_at(1)}, {_at(2)}, {_at(3)}, :run_id,"
    f" {_at(4)}, :now, :now, {_at(5)}, {_at(6)}, {_at(7)}"
    " FROM json_each(:rows) WHERE true"
    f" ON CONFLICT (scope, row_key) DO UPDATE SET status = '{EntryStatus.CREATED}',"
    " conversation_sid = excluded.conversation_sid, identity = excluded.identity,"
    " request_id = excluded.request_id, run_id = excluded.run_id,"
    " ambiguous_attempts = excluded.ambiguous_attempts,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at,"
    " lookup = excluded.lookup, duplicate_sids = excluded.duplicate_sids,"
    " key_fingerprint = excluded.key_fingerprint"
)
# rows: [row_key, sid]; the created entries of other keys with these sids. SQLite's planner,
# without statistics, scans the scope's entries instead (0.5 s a batch at 200,000 entries):
# CROSS JOIN keeps json_each outside, INDEXED BY names the index (a lookup per SID, 40 us),
# and `!= ''` is what lets a partial index answer.
_HELD_BY_OTHERS = (
    f"SELECT {_at(0)}, entries.row_key FROM json_each(:rows) CROSS JOIN entries"
    " INDEXED BY entries_by_conversation"
    f" ON entries.scope = :scope AND entries.conversation_sid = {_at(1)}"
    " AND entries.conversation_sid != ''"
    f" AND entries.row_key != {_at(0)} AND entries.status = '{EntryStatus.CREATED}'"
)
_RECORD_FAILED = (  # rows: [row_key, ambiguous_attempts, lookup]
    "INSERT INTO entries (scope, row_key, status, run_id, ambiguous_attempts, updated_at,"
    f" lookup) SELECT :scope, {_at(0)}, '{EntryStatus.FAILED}', :run_id, {_at(1)}, :now,"
    f" {_at(2)} FROM json_each(:rows) WHERE true"
    f" ON CONFLICT (scope, row_key) DO UPDATE SET status = '{EntryStatus.FAILED}',"
    " run_id = excluded.run_id, ambiguous_attempts = excluded.ambiguous_attempts,"
    " updated_at = excluded.updated_at, lookup = excluded.lookup"
    f" WHERE entries.status != '{EntryStatus.CREATED}'"
)


@dataclass(frozen=True)
class Finished:
    """A row whose outcome is to be recorded: its key, the outcome, what the ledger had before,
    whether it was marked in flight, and its key's fingerprint (cells.key_fingerprint)."""

    row_key: str
    outcome: Outcome
    prior: Entry | None
    sent: bool
    key_fingerprint: str | None

    @property
    def never_sent(self) -> bool:
        """Marked in flight, then not sent after all (one cut off in flight stays in flight)."""
        status, code = self.outcome.status, self.outcome.error_code
        return self.sent and status is Status.NOT_ATTEMPTED and code != ErrorCode.CUT_OFF


def _created_values(row: Finished) -> tuple[object, ...]:
    outcome = row.outcome
    return (
        row.row_key,
        outcome.conversation_sid,
        outcome.identity,
        outcome.request_id,
        outcome.ambiguous_attempts,
        outcome.lookup.value,
        " ".join(outcome.duplicate_sids),
        row.key_fingerprint,
    )


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
        self._file = FileWatch(path, clock)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit every write made inside at once, or none of them.

        A ledger deleted or replaced under a run would take its writes into nothing: that, a
        full disk or any other failure to commit is a LedgerError, and nothing is committed.
        """
        self._file.check()
        with write_transaction(self._db, self.path):
            yield

    def lookup(self, row_key: str) -> Entry | None:
        """The ledger's entry for `row_key` in this scope, if any."""
        return self.lookup_all([row_key]).get(row_key)

    def lookup_all(self, row_keys: Sequence[str]) -> dict[str, Entry]:
        """The entries of these row keys that the ledger has, by key: one query for them all."""
        condition = "row_key IN (SELECT value FROM json_each(?))"
        return {entry.row_key: entry for entry in self._entries(condition, json.dumps(row_keys))}

    def created_with_fingerprints_in(self, spans: Sequence[tuple[str, str]]) -> list[list[Entry]]:
        """For each (low, high), the created entries whose key fingerprint lies in it, the first
        KEY_CANDIDATES by fingerprint: one query for every span."""
        found: list[list[Entry]] = [[] for _ in spans]
        if spans:
            parameters = {"scope": self.scope, "spans": json.dumps(spans)}
            for span, *entry in self._db.execute(_CREATED_IN_SPANS, parameters):
                found[span].append(Entry(*entry))
        return found

    def is_new(self) -> bool:
        """No entry yet in this scope, or no run in it has run to its end (the first was
        stopped or killed): rows this ledger has not seen may have web chats made from another
        ledger (another folder or host), so they are looked up before they are sent."""
        (known,) = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM entries WHERE scope = ?)"
            " AND EXISTS (SELECT 1 FROM runs WHERE scope = ? AND exit_code IS NOT NULL"
            " AND exit_code != ?)",
            (self.scope, self.scope, int(ExitCode.STOPPED)),
        ).fetchone()
        return not known

    def unsettled(self) -> list[Entry]:
        """Entries that may exist at Twilio unrecorded: in flight, or with lost answers."""
        return self._entries(f"({UNSETTLED})")

    def _entries(self, condition: str, *parameters: str) -> list[Entry]:
        """This scope's entries that meet `condition` (SQL, which may end in ORDER BY...)."""
        query = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE scope = ? AND {condition}"
        return [Entry(*found) for found in self._db.execute(query, (self.scope, *parameters))]

    def mark_in_flight(self, row_key: str, run_id: str, identity: str = "") -> None:
        """Record that a request for `row_key` (with this identity) is about to be sent."""
        self.mark_all_in_flight([(row_key, identity)], run_id)

    def mark_all_in_flight(self, rows: Sequence[tuple[str, str]], run_id: str) -> None:
        """Record that requests for these (row key, identity) are about to be sent."""
        self._write_rows(_MARK_IN_FLIGHT, run_id, rows)

    def restore(self, row_key: str, prior: Entry | None) -> None:
        """Undo `mark_in_flight` for a row that was never sent after all."""
        if prior is None:
            self._db.execute(
                "DELETE FROM entries WHERE scope = ? AND row_key = ? AND status = ?",
                (self.scope, row_key, EntryStatus.IN_FLIGHT),
            )
        else:
            updated_at = prior.updated_at or timestamps.utc_now()
            self._db.execute(
                "UPDATE entries SET status = ?, run_id = ?, updated_at = ?, first_sent_at = ?"
                " WHERE scope = ? AND row_key = ?",
                (prior.status, prior.run_id, updated_at, prior.first_sent_at, self.scope, row_key),
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
        lookup: LookupResult = LookupResult.NONE,
        duplicate_sids: str = "",
        key_fingerprint: str | None = None,
    ) -> str:
        """Record a web chat that exists at Twilio (a 201, or found by a lookup); not when
        another row holds its conversation SID: then that row's key is returned, else ''."""
        holder = self.conversation_holders([(row_key, conversation_sid)]).get(row_key, "")
        if holder:
            return holder
        created = (row_key, conversation_sid, identity, request_id, ambiguous_attempts)
        self._write_rows(
            _RECORD_CREATED, run_id, [(*created, lookup, duplicate_sids, key_fingerprint)]
        )
        return ""

    def conversation_holders(self, rows: Sequence[tuple[str, str]]) -> dict[str, str]:
        """For (row key, conversation SID) pairs about to be recorded as created: the keys whose
        SID the ledger already records for another row, each with that row's key; a SID given
        twice among `rows` is held by the first. One query, however many rows."""
        rows = [(row_key, sid) for row_key, sid in rows if sid]
        held: dict[str, str] = {}
        if rows:
            parameters = {"scope": self.scope, "rows": json.dumps(rows)}
            held.update(self._db.execute(_HELD_BY_OTHERS, parameters).fetchall())
        first_with: dict[str, str] = {}
        for row_key, sid in rows:
            holder = first_with.setdefault(sid, row_key)
            if holder != row_key and row_key not in held:
                held[row_key] = holder
        return held

    def record_lookup(self, row_key: str, *, lookup: LookupResult, duplicate_sids: str) -> None:
        """Record what a later lookup found for a created row."""
        self._db.execute(
            "UPDATE entries SET lookup = ?, duplicate_sids = ?, updated_at = ?"
            " WHERE scope = ? AND row_key = ?",
            (lookup, duplicate_sids, timestamps.utc_now(), self.scope, row_key),
        )

    def record_failed(
        self,
        row_key: str,
        run_id: str,
        *,
        ambiguous_attempts: int,
        lookup: LookupResult = LookupResult.NONE,
    ) -> None:
        """Record that the row's requests failed; a created entry is never downgraded."""
        self._write_rows(_RECORD_FAILED, run_id, [(row_key, ambiguous_attempts, lookup)])

    def record_outcomes(self, finished: Sequence[Finished], run_id: str) -> dict[str, str]:
        """Record what became of these rows (inside the caller's transaction): one statement
        for the created ones and one for the failed ones, whatever their number.

        A created row whose conversation SID another row holds is not recorded (it stays as
        it was, in flight: the next run looks it up again): returned, key -> the holder's key.
        """
        held = self.conversation_holders(
            [
                (row.row_key, row.outcome.conversation_sid)
                for row in finished
                if row.outcome.status in RECORDED_AS_CREATED
            ]
        )
        created, failed = [], []
        for row in finished:
            outcome = row.outcome
            if row.row_key in held:
                continue
            if outcome.status in RECORDED_AS_CREATED:
                created.append(_created_values(row))
            elif outcome.status is Status.FAILED:
                failed.append((row.row_key, outcome.ambiguous_attempts, outcome.lookup.value))
            elif row.never_sent:
                self.restore(row.row_key, row.prior)
        self._write_rows(_RECORD_CREATED, run_id, created)
        self._write_rows(_RECORD_FAILED, run_id, failed)
        return held

    def _write_rows(self, statement: str, run_id: str, rows: Sequence[Sequence[object]]) -> None:
        """Run an upsert over `rows`: one statement, one step, however many rows (json_each)."""
        if rows:
            values = {"scope": self.scope, "run_id": run_id, "now": timestamps.utc_now()}
            self._db.execute(statement, {**values, "rows": json.dumps(rows)})

    def in_flight_count(self) -> int:
        """Rows of this scope left in flight by a run that never finished them."""
        (count,) = self._db.execute(
            "SELECT count(*) FROM entries WHERE scope = ? AND status = ?",
            (self.scope, EntryStatus.IN_FLIGHT),
        ).fetchone()
        return int(count)

    def begin_run(self, run_id: str, input_path: str, *, forced: bool) -> None:
        """Record the start of a run (in ledger_runs.py's runs table)."""
        record_run_start(self._db, self.scope, run_id, input_path, forced=forced)

    def end_run(
        self, run_id: str, *, exit_code: int, counts: Mapping[str, int], stop_reason: str
    ) -> None:
        """Record how a run ended."""
        record_run_end(
            self._db, run_id, exit_code=exit_code, counts=counts, stop_reason=stop_reason
        )


@contextmanager
def open_ledger(
    path: Path, scope: str, clock: Callable[[], float] = time.monotonic
) -> Iterator[Ledger]:
    """Lock, check and migrate the ledger at `path` (created if absent) for one run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
    except OSError as error:
        raise LedgerError(f"{path}: cannot create its folder ({error.strerror})") from error
    refuse_hard_links(path)
    with exclusive_lock(path):
        if not path.exists():  # customer data: readable by its owner only, whatever the umask
            os.close(open_private(path, os.O_WRONLY))
        connection = connect(path, read_only=False)
        try:
            migrate(connection, path)
            yield Ledger(connection, scope, path, clock)
        finally:
            connection.close()
