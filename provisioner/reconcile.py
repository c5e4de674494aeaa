"""`provisioner reconcile`: settle rows by looking them up at Twilio; never creates anything.

Without an input it settles what the ledger shows unsettled (in flight, lost answers,
duplicates). With an input it looks up every row, recording what already exists, so that a lost
or deleted ledger is rebuilt without a duplicate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.cells import key_fingerprint
from provisioner.client import TwilioClient
from provisioner.endpoints import Credentials, scope_of
from provisioner.errors import ExitCode, LedgerError
from provisioner.ledger import Entry, Ledger, open_ledger
from provisioner.limits import AccountLimits
from provisioner.options import Endpoints, InputReading, Output, Pacing, Settling
from provisioner.ordered import in_order
from provisioner.report import learnt_options
from provisioner.result_columns import ROW_KEY
from provisioner.rows import RowBuilder, derive_identity
from provisioner.runtime import Clock, Runtime
from provisioner.send import Lookups, Settlement, within_limits
from provisioner.staging import CheckedInput, moved_into, run_folder, staged_input
from provisioner.stopping import Stopping
from provisioner.summary import ConcurrencyLimits, Rate
from provisioner.vocabulary import EntryStatus, LookupResult
from provisioner.words import plural
from provisioner.writers import CsvWriter

RUN_PREFIX = "reconcile-"  # a reconcile's folder: reconcile-<UTC time>, beside create's runs
RECONCILE_COLUMNS = (
    ROW_KEY,
    "identity",
    "lookup",
    "conversation_sid",
    "other_sids",
    "closed",
    "message",
)


@dataclass(frozen=True, kw_only=True)
class ReconcileOptions(Settling, Pacing, Endpoints, InputReading, Output):
    """What `provisioner reconcile` was asked to do: the groups of options it shares with
    create (options.py), its own (settling) and its INPUT."""

    input_path: Path | None = None  # None: the rows the ledger shows unsettled


@dataclass
class ReconcileResult:
    """What reconcile found, for the closing lines and the exit code."""

    path: Path
    counts: Counter[str] = field(default_factory=Counter)
    closed: int = 0
    duplicates_left: int = 0  # rows that still have open extra web chats
    failure: str = ""  # why the first failed lookup failed
    stopped: str = ""  # why it stopped before the last row, if it did
    new_ledger: Path | None = None  # the ledger this reconcile started (there was none)
    throttled: int = 0  # lookups and closes Twilio answered 429
    invalid: Counter[str] = field(default_factory=Counter)  # rows not looked up, by reason
    learnt: tuple[str, ...] = ()  # the limits learnt, as options to pass next time

    def add(self, checked: Checked) -> None:
        """Count one row looked up."""
        settlement = checked.settlement
        self.counts[settlement.result] += 1
        if settlement.result is LookupResult.FAILED and not self.failure:
            self.failure = settlement.message
        self.closed += len(checked.closed)
        if _left_open(checked):
            self.duplicates_left += 1

    def lines(self) -> list[str]:
        """The end of a reconcile, for people."""
        found = ", ".join(f"{n} {name}" for name, n in sorted(self.counts.items())) or "nothing"
        lines = [f"looked up {plural(sum(self.counts.values()), 'row')}: {found}"]
        if self.new_ledger is not None:
            lines.append(f"the ledger is new: {self.new_ledger}")
        if self.invalid:
            reasons = ", ".join(f"{n} {code}" for code, n in sorted(self.invalid.items()))
            lines.append(
                f"{plural(self.invalid.total(), 'invalid row')} not looked up ({reasons}): "
                "reconcile.csv says why; fix them, then run create"
            )
        if self.closed:
            lines.append(f"closed {plural(self.closed, 'extra web chat')}")
        if self.duplicates_left:
            lines.append(
                f"{plural(self.duplicates_left, 'row')} still with open extra web chats: "
                "pass --close-duplicates to close them"
            )
        if self.throttled:
            line = f"Twilio throttled {plural(self.throttled, 'request')} (429)"
            if self.learnt:
                these = "these" if len(self.learnt) > 2 else "this"
                line += f"; reconcile learnt {' '.join(self.learnt)}: pass {these} next time"
            lines.append(line)
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}; run reconcile again to finish")
        if self.counts[LookupResult.FAILED]:
            failed = plural(self.counts[LookupResult.FAILED], "row")
            lines.append(f"{failed} not settled (the first: {self.failure}); run reconcile again")
        lines.append(f"reconcile: {self.path}")
        return lines

    @property
    def exit_code(self) -> ExitCode:
        """0 when every row is settled with no duplicates left; 3 when it stopped early."""
        if self.stopped:
            return ExitCode.STOPPED
        if self.counts[LookupResult.FAILED] or self.duplicates_left:
            return ExitCode.ROWS_FAILED
        return ExitCode.OK


def reconcile(
    options: ReconcileOptions, runtime: Runtime, credentials: Credentials
) -> ReconcileResult:
    """Look rows up, `concurrency` at once, and record what exists; close extra web chats when
    asked. reconcile.csv lists the rows in input (or ledger) order."""
    scope = scope_of(credentials.account, options.base_url)
    ledger_path = options.ledger_file
    new_ledger = not ledger_path.exists()
    if new_ledger and options.input_path is None:
        # An empty ledger made here would say "nothing unsettled": a false all-clear.
        raise LedgerError(
            f"{ledger_path}: no ledger here, so nothing to reconcile; pass the --ledger (or "
            "--out) that create used, or INPUT to look every row up and start a ledger"
        )
    with ExitStack() as stack:
        # As in create: a broken input leaves no folder and no ledger behind.
        checked = staged_input(options, runtime, stack) if options.input_path is not None else None
        ledger = stack.enter_context(open_ledger(ledger_path, scope))
        opened = runtime.wall_clock()
        _, run_dir = run_folder(options.out_dir, prefix=RUN_PREFIX)
        checked = moved_into(checked, run_dir) if checked is not None else None
        client = TwilioClient(
            options.base_url,
            options.conversations_url,
            credentials,
            timeout=options.timeout,
            pool_size=options.concurrency,
            env=runtime.env,
        )
        stack.callback(client.close)
        stopping = Stopping(runtime.say)
        limits = AccountLimits(options.rate, options.concurrency, runtime.clock)
        sleep = runtime.sleep or stopping.sleep
        lookups = Lookups(client, limits, stopping, sleep, runtime.jitter)
        checker = _Checker(options, lookups, client, runtime.wall_clock, opened)
        result = ReconcileResult(
            run_dir / "reconcile.csv", new_ledger=ledger_path if new_ledger else None
        )
        # Keys guarded as results.csv guards them, so a spreadsheet keeps `00001` as text.
        writer = CsvWriter(result.path, list(RECONCILE_COLUMNS), key_columns=[ROW_KEY])
        try:
            with stopping.on_signals():
                for target, checked_row in in_order(
                    _targets(checked, ledger, scope),
                    checker.check,
                    concurrency=options.concurrency,
                    stopping=stopping,
                    not_done=lambda target: NOT_LOOKED_UP,
                    cut_off=lambda target: NOT_LOOKED_UP,
                ):
                    if target.problem_code:  # known without a lookup: listed, counted
                        result.invalid[target.problem_code] += 1
                        writer.write(_line(target, checked_row))
                        continue
                    if checked_row is NOT_LOOKED_UP:
                        continue  # the run stopped first: the next reconcile looks it up
                    checked_row = _record(ledger, target, checked_row)
                    result.add(checked_row)
                    writer.write(_line(target, checked_row))
        finally:
            writer.close()
        result.stopped = stopping.reason
        _learnt(result, options, limits)
        return result
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class Target:
    """A row to look up: its key, its identity, and what the ledger knows of it."""

    key: str
    identity: str
    entry: Entry | None
    problem_code: str = ""  # the row is invalid (rows.py's code): not looked up
    problem: str = ""


@dataclass(frozen=True)
class Checked:
    """What one row's lookup settled, and the extra web chats closed for it."""

    settlement: Settlement
    closed: tuple[str, ...] = ()


NOT_LOOKED_UP = Checked(Settlement(LookupResult.NONE))  # the run stopped before it was


def _targets(checked: CheckedInput | None, ledger: Ledger, scope: str) -> Iterator[Target]:
    """Every row to look up: the input's rows (an invalid one marked, not looked up), or
    without an input what the ledger shows unsettled."""
    if checked is None:
        for entry in ledger.unsettled():
            identity = entry.identity or derive_identity(scope, entry.row_key)
            yield Target(entry.row_key, identity, entry)
        return
    builder = RowBuilder(checked.columns, checked.repeats)
    for number, cells in checked.table.rows():
        row = builder.build(number, cells).with_identity(scope)
        if row.problem is None:
            yield Target(row.key, row.identity, ledger.lookup(row.key))
        else:
            yield Target(row.key, "", None, row.problem_code, row.problem)


class _Checker:
    """Looks one row up and closes its extra web chats when asked; runs on a worker thread,
    touches no file and not the ledger."""

    def __init__(
        self,
        options: ReconcileOptions,
        lookups: Lookups,
        client: TwilioClient,
        wall_clock: Clock,
        opened: float,
    ) -> None:
        self.options, self.lookups, self.client = options, lookups, client
        self.wall_clock, self.opened = wall_clock, opened

    def check(self, target: Target) -> Checked:
        """Wait for the index if the row was sent moments ago, look it up, close extras."""
        if target.problem_code:
            message = f"not looked up: the row is invalid ({target.problem_code}): {target.problem}"
            return Checked(Settlement(LookupResult.NONE, message=message))
        entry = target.entry
        if entry is not None and entry.status is not EntryStatus.CREATED:
            # A row an earlier run was sending moments ago may not show in the index yet.
            wait = entry.last_sent_by(self.opened) + self.options.lookup_lag - self.wall_clock()
            if wait > 0:
                self.lookups.sleep(wait)
        since = entry.first_sent or None if entry is not None else None
        recorded = entry.conversation_sid if entry is not None else ""
        settlement = self.lookups.settle(target.identity, since, recorded)
        if settlement.stopped:
            return NOT_LOOKED_UP  # cut short by the stop, not an answer: looked up next time
        closed: tuple[str, ...] = ()
        if self.options.close_duplicates:
            closed = tuple(sid for sid in settlement.others if self._close(sid))
        return Checked(settlement, closed)

    def _close(self, sid: str) -> bool:
        """Close one conversation, within the account's limits; True when it closed."""
        lookups = self.lookups
        attempt = within_limits(
            lookups.limits,
            lookups.sleep,
            lookups.stopping.event,
            lambda: self.client.close_conversation(sid),
        )
        return attempt is not None and attempt.created


def _record(ledger: Ledger, target: Target, checked: Checked) -> Checked:
    """Record what the lookup found (on the main thread: the ledger is not shared); returns
    what the row came to, which is a failure when another row holds the web chat found."""
    settlement, entry = checked.settlement, target.entry
    if settlement.result is LookupResult.FAILED:
        return checked
    if settlement.result is LookupResult.ABSENT:
        if entry is not None and entry.status is not EntryStatus.CREATED:
            # Nothing exists: no lost answer is outstanding, the next run sends the row.
            with ledger.transaction():
                ledger.record_failed(
                    target.key, entry.run_id, ambiguous_attempts=0, lookup=LookupResult.ABSENT
                )
        return checked
    left = _left_open(checked)
    with ledger.transaction():
        holder = ledger.record_created(
            target.key,
            entry.run_id if entry else "reconcile",
            conversation_sid=settlement.kept,
            identity=target.identity,
            request_id=entry.request_id if entry else "",
            ambiguous_attempts=entry.ambiguous_attempts if entry else 0,
            lookup=LookupResult.DUPLICATES if left else LookupResult.FOUND,
            duplicate_sids=" ".join(left),
            key_fingerprint=key_fingerprint(target.key),
        )
    if not holder:
        return checked
    # One web chat never settles two rows (ledger.conversation_holders): not recorded.
    message = (
        f"the lookup named {settlement.kept}, which the ledger records for row key {holder!r}; "
        "one web chat never settles two rows, so this row was not recorded"
    )
    return Checked(Settlement(LookupResult.FAILED, message=message), checked.closed)


def _learnt(result: ReconcileResult, options: ReconcileOptions, limits: AccountLimits) -> None:
    """What the account's answers taught the limits, said as create says it."""
    state = limits.state()
    result.throttled = state.throttled
    result.learnt = tuple(
        learnt_options(
            Rate.of(state, options.rate), ConcurrencyLimits.of(state, options.concurrency)
        )
    )


def _left_open(checked: Checked) -> list[str]:
    """The row's extra web chats still open after closing."""
    return [sid for sid in checked.settlement.others if sid not in checked.closed]


def _line(target: Target, checked: Checked) -> list[str]:
    settlement = checked.settlement
    return [
        target.key,
        target.identity,
        settlement.result.value,
        settlement.kept,
        " ".join(settlement.others),
        " ".join(checked.closed),
        settlement.message,
    ]
