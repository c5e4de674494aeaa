"""What to do with a row, given what the ledger knows of it: a value, with no side effects."""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.ledger import Entry
from provisioner.outcome import Outcome
from provisioner.rows import Row
from provisioner.vocabulary import EntryStatus, ErrorCode, Status


@dataclass(frozen=True)
class Decision:
    """One row's plan: an outcome known without sending, or a row to send."""

    row: Row
    prior: Entry | None = None  # the ledger's entry before this run
    outcome: Outcome | None = None  # known without sending (invalid, existing, key changed)
    forced: bool = False  # created before; --force creates it again
    changed_from: Entry | None = None  # a created key this key is a spreadsheet-mangled copy of

    @property
    def to_send(self) -> bool:
        """The row goes to the workers."""
        return self.outcome is None

    @property
    def unsettled(self) -> bool:
        """An earlier run may have created it: look its identity up before sending."""
        prior = self.prior
        if prior is None or self.forced:
            return False
        return prior.status is EntryStatus.IN_FLIGHT or prior.ambiguous_attempts > 0

    @property
    def prior_ambiguous(self) -> int:
        """Lost answers of earlier runs; a row left in flight by a killed run counts one more."""
        prior = self.prior
        if prior is None or prior.status is EntryStatus.CREATED:
            return 0
        return prior.ambiguous_attempts + (1 if prior.status is EntryStatus.IN_FLIGHT else 0)


def plan(
    row: Row, entry: Entry | None, *, force: bool, changed_from: Entry | None = None
) -> Decision:
    """Decide what to do with `row`; `entry` is the ledger's entry for its key, if any.

    A key the ledger shows created is `existing` whatever the row's other cells say now: its
    web chat exists, and the stale values (the original sheet's, fixed through errors.csv)
    are neither checked nor sent, so the original sheet settles too. A row that repeats an
    earlier row's key stays invalid: it may be another customer given the same ID.
    """
    settled = entry is not None and entry.status is EntryStatus.CREATED and not force
    if row.problem is not None and (row.repeats_a_key or not settled):
        return Decision(
            row,
            outcome=Outcome(Status.INVALID, error_code=row.problem_code, error_message=row.problem),
        )
    if entry is not None and entry.status is EntryStatus.CREATED:
        if force:
            return Decision(row, entry, forced=True)
        return Decision(
            row,
            entry,
            outcome=Outcome(
                Status.EXISTING,
                conversation_sid=entry.conversation_sid,
                identity=entry.identity,
                ambiguous_attempts=entry.ambiguous_attempts,
                request_id=entry.request_id,
                error_message=f"created earlier, by run {entry.run_id}",
            ),
        )
    if changed_from is not None and entry is None and not force:
        return Decision(
            row,
            changed_from=changed_from,
            outcome=Outcome(
                Status.INVALID,
                error_code=ErrorCode.KEY_CHANGED,
                error_message=(
                    f"row key {row.key!r} looks like {changed_from.row_key!r} changed by a "
                    f"spreadsheet, which run {changed_from.run_id} created; restore the "
                    "original ID (keep it as text), or pass --force to create it anyway"
                ),
            ),
        )
    if row.twin is not None and entry is None and not force:
        twin_row, twin_key = row.twin
        return Decision(
            row,
            outcome=Outcome(
                Status.INVALID,
                error_code=ErrorCode.KEY_CHANGED,
                error_message=(
                    f"row key {row.key!r} and row {twin_row}'s {twin_key!r} differ only as a "
                    "spreadsheet changes IDs (leading zeros, .0, exponent form): one customer "
                    "twice? Restore the original ID (keep it as text), or pass --force to "
                    "create both"
                ),
            ),
        )
    return Decision(row, entry)


def not_sent(decision: Decision, message: str) -> Outcome:
    """A row the run never sent because it stopped first."""
    return Outcome(
        Status.NOT_ATTEMPTED,
        identity=decision.row.identity,
        ambiguous_attempts=decision.prior_ambiguous,
        error_message=message,
    )


def cut_off(decision: Decision) -> Outcome:
    """A row whose request was in flight when the run stopped at once: it may exist."""
    return Outcome(
        Status.NOT_ATTEMPTED,
        identity=decision.row.identity,
        ambiguous_attempts=decision.prior_ambiguous + 1,
        error_code=ErrorCode.CUT_OFF,
        error_message="the run stopped at once with this request in flight; the next run "
        "looks it up before sending it again",
    )
