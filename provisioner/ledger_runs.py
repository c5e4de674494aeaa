"""The ledger's runs table: when each run began and how it ended; `provisioner status`."""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from provisioner import timestamps
from provisioner.errors import LedgerError
from provisioner.ledger_lock import lock_holder
from provisioner.ledger_schema import SCHEMA_VERSION, UNSETTLED, checked_version, connect
from provisioner.vocabulary import EntryStatus

_RUNS_NEWEST_FIRST = (
    "SELECT r.run_id, r.scope, r.input, r.pid, r.started_at, r.ended_at, r.exit_code,"
    " r.counts, r.stop_reason,"
    " (SELECT count(*) FROM entries e WHERE e.run_id = r.run_id"
    f"  AND e.status = '{EntryStatus.CREATED}')"
    " FROM runs r ORDER BY r.started_at DESC LIMIT ?"
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


@dataclass(frozen=True)
class LedgerStatus:
    """What `provisioner status` shows: created and unsettled rows per scope, the last runs."""

    runs: list[RunRecord]
    created: dict[str, int]
    unsettled: dict[str, int]


# A run the ledger shows unfinished: still running while its process holds the ledger's lock.
IN_PROGRESS = "in progress"
DID_NOT_FINISH = "did not finish (killed or crashed)"


def run_state(run: RunRecord, holder: int | None) -> str:
    """How `run` ended, or that it runs still: `holder` is the pid holding the ledger's lock."""
    if run.exit_code is not None:
        return f"exit {run.exit_code}"
    return IN_PROGRESS if holder == run.pid else DID_NOT_FINISH


def run_states(path: Path, runs: list[RunRecord]) -> list[str]:
    """The state of each of `runs` of the ledger at `path`, asked of its lock now."""
    holder = lock_holder(path)
    return [run_state(run, holder) for run in runs]


def record_run_start(
    connection: sqlite3.Connection, scope: str, run_id: str, input_path: str, *, forced: bool
) -> None:
    """Record the start of a run (by this process, now)."""
    connection.execute(
        "INSERT OR REPLACE INTO runs (run_id, scope, input, pid, started_at, forced)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (run_id, scope, input_path, os.getpid(), timestamps.utc_now(), int(forced)),
    )


def record_run_end(
    connection: sqlite3.Connection,
    run_id: str,
    *,
    exit_code: int,
    counts: Mapping[str, int],
    stop_reason: str,
) -> None:
    """Record how a run ended."""
    connection.execute(
        "UPDATE runs SET ended_at = ?, exit_code = ?, counts = ?, stop_reason = ? WHERE run_id = ?",
        (timestamps.utc_now(), exit_code, json.dumps(dict(counts)), stop_reason, run_id),
    )


def read_status(path: Path, limit: int = 10) -> LedgerStatus:
    """The last runs (newest first), created and unsettled rows per scope; read-only, no lock."""
    if not path.exists():
        raise LedgerError(
            f"{path}: no ledger here yet; it is made by the first `provisioner create`"
        )
    with tempfile.TemporaryDirectory(prefix="provisioner-status-") as scratch:
        return _read_status(connect(path, read_only=True, scratch=Path(scratch)), path, limit)


def _read_status(connection: sqlite3.Connection, path: Path, limit: int) -> LedgerStatus:
    try:
        version = checked_version(connection, path)
        if version < SCHEMA_VERSION:
            raise LedgerError(
                f"{path}: ledger schema {version} is older than this version's "
                f"{SCHEMA_VERSION}; the next `provisioner create` migrates it"
            )
        runs = [_run_record(*fields) for fields in connection.execute(_RUNS_NEWEST_FIRST, (limit,))]
        created = dict(
            connection.execute(
                "SELECT scope, count(*) FROM entries WHERE status = ? GROUP BY scope",
                (EntryStatus.CREATED,),
            ).fetchall()
        )
        unsettled = dict(
            connection.execute(
                f"SELECT scope, count(*) FROM entries WHERE {UNSETTLED} GROUP BY scope"
            ).fetchall()
        )
    except sqlite3.DatabaseError as error:
        raise LedgerError(f"{path}: cannot read the ledger ({error})") from error
    finally:
        connection.close()
    return LedgerStatus(runs, created, unsettled)


def _run_record(
    run_id: str,
    scope: str,
    input_path: str,
    pid: int,
    started: str,
    ended: str,
    exit_code: int | None,
    counts: str,
    reason: str,
    created: int,
) -> RunRecord:
    """A row of _RUNS_NEWEST_FIRST as a RunRecord (counts are stored as JSON)."""
    return RunRecord(
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
