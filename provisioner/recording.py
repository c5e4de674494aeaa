"""The run's side of the ledger: what it knows of each row, rows in flight, outcomes recorded.

Each call reads or writes many rows at once (a chunk of the input, a batch handed to the
workers, the rows that finished together): a statement per row would hand Python's lock to the
sending threads and wait for it back, row after row (ledger.py says how one statement takes
many rows). Rows are marked in flight before they are sent and their outcomes committed before
they are written anywhere else; a ledger that fails stops the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from itertools import islice

from provisioner.cells import fingerprint_range, key_fingerprint, spreadsheet_changed
from provisioner.errors import LedgerError
from provisioner.ledger import RECORDED_AS_CREATED, Entry, Finished, Ledger
from provisioner.outcome import Outcome
from provisioner.plan import Decision
from provisioner.rows import Row, RowBuilder
from provisioner.staging import CheckedInput
from provisioner.stopping import Stopping
from provisioner.vocabulary import ErrorCode, LookupResult, Status

LEDGER_CHUNK = 500  # rows whose ledger entries are read in one query (SQLite takes any number)


@dataclass(frozen=True)
class Known:
    """What the ledger knows of one row: its entry, or a created key a spreadsheet changed
    into this row's key (cells.spreadsheet_changed)."""

    entry: Entry | None = None
    changed_from: Entry | None = None


NOTHING_KNOWN = Known()


def known(ledger: Ledger, rows: Sequence[Row]) -> dict[str, Known]:
    """What the ledger knows of these rows, by key (two queries, however many rows)."""
    entries = ledger.lookup_all([row.key for row in rows])
    found = {key: Known(entry) for key, entry in entries.items()}
    # A new key that a spreadsheet could have made of a created one (`00123` saved as `123`).
    spans = {
        row.key: span
        for row in rows
        if row.key not in entries
        and row.problem is None
        and (span := fingerprint_range(row.key)) is not None
    }
    candidates = ledger.created_with_fingerprints_in(list(spans.values()))
    for key, near in zip(spans, candidates, strict=True):
        changed_from = next((e for e in near if spreadsheet_changed(e.row_key, key)), None)
        if changed_from is not None:
            found[key] = Known(changed_from=changed_from)
    return found


def rows_known(
    checked: CheckedInput, ledger: Ledger | None, scope: str
) -> Iterator[tuple[int, Row, Known]]:
    """Every row of the input in order (its position, the row with its identity in `scope`,
    what the ledger knows of it), the ledger read a chunk of rows at a time."""
    builder = RowBuilder(checked.columns, checked.repeats, checked.scope)
    numbered = enumerate(checked.table.rows())
    while chunk := list(islice(numbered, LEDGER_CHUNK)):
        rows = [
            (sequence, builder.build(number, cells).with_identity(scope))
            for sequence, (number, cells) in chunk
        ]
        seen = known(ledger, [row for _, row in rows]) if ledger else {}
        for sequence, row in rows:
            yield sequence, row, seen.get(row.key, NOTHING_KNOWN)


class Recorder:
    """Writes a run's rows to the ledger: in flight before they are sent, then what became of
    them. A ledger that cannot be written stops the run: rows finishing meanwhile still reach
    the files, and the ledger keeps them in flight, so the next run looks them up."""

    def __init__(self, ledger: Ledger, run_id: str, stopping: Stopping) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.stopping = stopping
        self.failed = False

    def mark_in_flight(self, decisions: Sequence[Decision]) -> bool:
        """Mark rows in flight before they are sent; False (and the run stops) if it cannot."""
        try:
            with self.ledger.transaction():
                rows = [(decision.row.key, decision.row.identity) for decision in decisions]
                self.ledger.mark_all_in_flight(rows, self.run_id)
        except LedgerError as error:
            self.stopping.stop(str(error))
            return False
        return True

    def record(self, finished: Iterable[tuple[Decision, Outcome]]) -> dict[str, Outcome]:
        """Commit finished rows before they are written anywhere else (no-op once failed).

        Returns, by row key, the outcomes to write instead: a row that claims a web chat
        another row holds is flagged, not recorded (`held_elsewhere`)."""
        if self.failed:
            return {}
        changes = [
            Finished(
                decision.row.key,
                outcome,
                decision.prior,
                decision.to_send,
                key_fingerprint(decision.row.key)
                if outcome.status in RECORDED_AS_CREATED
                else None,
            )
            for decision, outcome in finished
            if decision.to_send
        ]
        if not changes:  # rows known without sending (existing, invalid): nothing to write
            return {}
        try:
            with self.ledger.transaction():
                held = self.ledger.record_outcomes(changes, self.run_id)
        except LedgerError as error:
            self.failed = True
            self.stopping.stop(str(error))
            return {}
        outcomes = {change.row_key: change.outcome for change in changes}
        return {key: held_elsewhere(outcomes[key], holder) for key, holder in held.items()}

    def record_lookup(self, row_key: str, outcome: Outcome) -> None:
        """What the final lookup found for a created row; a failed ledger is left as it is (the
        results still say it, and a rerun's lookup finds it)."""
        with suppress(LedgerError), self.ledger.transaction():
            self.ledger.record_lookup(
                row_key,
                lookup=outcome.lookup,
                duplicate_sids=" ".join(outcome.duplicate_sids),
            )


def held_elsewhere(outcome: Outcome, holder: str) -> Outcome:
    """A row whose answer or lookup named a web chat the ledger records for row `holder`: one
    conversation never settles two rows, so it is failed and left in flight (the next run
    looks it up again), never recorded as created."""
    found = outcome.lookup in (LookupResult.FOUND, LookupResult.DUPLICATES)
    return replace(
        outcome,
        status=Status.FAILED,
        error_code=ErrorCode.LOOKUP_FAILED if found else ErrorCode.UNREADABLE_ANSWER,
        error_message=(
            f"{'the lookup' if found else 'the answer'} named {outcome.conversation_sid}, "
            f"which the ledger records for row key {holder!r}; one web chat never settles two "
            "rows, so this row was not recorded and the next run looks it up again"
        ),
        ambiguous_attempts=outcome.ambiguous_attempts + (0 if found else 1),
    )
