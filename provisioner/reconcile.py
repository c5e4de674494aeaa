"""`provisioner reconcile`: settle rows by looking them up at Twilio; never creates anything.

Without an input it settles what the ledger shows unsettled (in flight, lost answers,
duplicates). With an input it looks up every row, recording what already exists, so that a lost
or deleted ledger is rebuilt without a duplicate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from provisioner.causes import plural
from provisioner.cells import key_fingerprint
from provisioner.client import Credentials, FoundConversation, TwilioClient
from provisioner.endpoints import scope_of
from provisioner.errors import ExitCode
from provisioner.ledger import Entry, Ledger, open_ledger
from provisioner.limits import AccountLimits, Answer
from provisioner.outcome import LookupResult
from provisioner.rows import RowBuilder, derive_identity
from provisioner.run import CheckedInput, Runtime, moved_into, staged_input
from provisioner.send import CLOSED, LookupFailure, Lookups, recent
from provisioner.stopping import Stopping
from provisioner.writers import CsvWriter

RECONCILE_COLUMNS = (
    "row_key",
    "identity",
    "lookup",
    "conversation_sid",
    "other_sids",
    "closed",
    "message",
)


@dataclass(frozen=True)
class ReconcileOptions:
    """What `provisioner reconcile` was asked to do."""

    input_path: Path | None
    out_dir: Path
    ledger_path: Path | None
    base_url: str
    conversations_url: str
    columns: Mapping[str, str] = field(default_factory=dict)
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    header_row: int | None = None
    close_duplicates: bool = False
    timeout: float = 30.0
    rate: float | None = 5.0
    lookup_lag: float = 10.0


@dataclass
class ReconcileResult:
    """What reconcile found, for the closing lines and the exit code."""

    path: Path
    counts: Counter[str] = field(default_factory=Counter)
    closed: int = 0
    duplicates_left: int = 0  # rows that still have open extra web chats
    failure: str = ""  # why the first failed lookup failed
    stopped: str = ""  # why it stopped before the last row, if it did

    def lines(self) -> list[str]:
        """The end of a reconcile, for people."""
        found = ", ".join(f"{n} {name}" for name, n in sorted(self.counts.items())) or "nothing"
        lines = [f"looked up {plural(sum(self.counts.values()), 'row')}: {found}"]
        if self.closed:
            lines.append(f"closed {plural(self.closed, 'extra web chat')}")
        if self.duplicates_left:
            lines.append(
                f"{plural(self.duplicates_left, 'row')} still with open extra web chats: "
                "pass --close-duplicates to close them"
            )
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}; run reconcile again to finish")
        if self.counts[LookupResult.FAILED]:
            lines.append(f"some lookups failed ({self.failure}); run reconcile again later")
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
    """Look rows up and record what exists; close extra web chats when asked."""
    scope = scope_of(credentials.account, options.base_url)
    ledger_path = options.ledger_path or options.out_dir / "ledger.sqlite"
    with ExitStack() as stack:
        # As in create: a broken input leaves no folder and no ledger behind.
        checked = staged_input(options, runtime, stack) if options.input_path is not None else None
        ledger = stack.enter_context(open_ledger(ledger_path, scope))
        opened = runtime.wall_clock()
        run_dir = _run_folder(options.out_dir)
        checked = moved_into(checked, run_dir) if checked is not None else None
        client = TwilioClient(
            options.base_url,
            options.conversations_url,
            credentials,
            timeout=options.timeout,
            pool_size=1,
            env=runtime.env,
        )
        stack.callback(client.close)
        stopping = Stopping(runtime.say)
        limits = AccountLimits(options.rate, 1, runtime.clock)
        sleep = runtime.sleep or stopping.sleep
        lookups = Lookups(client, limits, stopping, sleep)

        def closer(sid: str) -> bool:
            """Close one conversation, within the account's limits; True when it closed."""
            permit = limits.acquire(sleep, stopping.event)
            if permit is None:
                return False
            answer = Answer.NO_ANSWER
            try:
                attempt = client.close_conversation(sid)
                answer = Answer.THROTTLED if attempt.http_status == 429 else Answer.ACCEPTED
            finally:
                limits.release(permit, answer, 0.0, None)
            return attempt.created

        result = ReconcileResult(run_dir / "reconcile.csv")
        writer = CsvWriter(result.path, list(RECONCILE_COLUMNS))
        try:
            with stopping.on_signals():
                for key, identity, entry in _targets(checked, ledger, scope):
                    stopping.announce()
                    if stopping.is_set:
                        break
                    _wait_for_the_index(entry, options.lookup_lag, runtime, stopping, opened)
                    found = lookups.find(identity)
                    verdict = (
                        Verdict(LookupResult.FAILED, message=found.message)
                        if isinstance(found, LookupFailure)
                        else verdict_of(recent(found.conversations, _since(entry)), entry)
                    )
                    closed = _settle(ledger, closer, key, identity, entry, verdict, options)
                    result.counts[verdict.result] += 1
                    if verdict.result is LookupResult.FAILED and not result.failure:
                        result.failure = verdict.message
                    result.closed += len(closed)
                    if len(closed) < len(verdict.others):
                        result.duplicates_left += 1
                    writer.write(_line(key, identity, verdict, closed))
        finally:
            writer.close()
        result.stopped = stopping.reason
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _targets(
    checked: CheckedInput | None, ledger: Ledger, scope: str
) -> Iterator[tuple[str, str, Entry | None]]:
    """(row key, identity, ledger entry) of every row to look up: the input's valid rows, or
    without an input what the ledger shows unsettled."""
    if checked is None:
        for entry in ledger.unsettled():
            yield entry.row_key, entry.identity or derive_identity(scope, entry.row_key), entry
        return
    builder = RowBuilder(checked.columns, checked.repeats)
    for number, cells in checked.table.rows():
        row = builder.build(number, cells).with_identity(scope)
        if row.problem is None:
            yield row.key, row.identity, ledger.lookup(row.key)


@dataclass(frozen=True)
class Verdict:
    """What one row's lookup settled: the web chat the ledger keeps and the open extras."""

    result: LookupResult
    kept: str = ""
    others: tuple[str, ...] = ()
    message: str = ""


def verdict_of(conversations: tuple[FoundConversation, ...], entry: Entry | None) -> Verdict:
    """Keep the ledger's web chat when it is there (open or closed), else the first open one,
    else the oldest; only open extras are duplicates (a closed one harms nobody)."""
    if not conversations:
        return Verdict(LookupResult.ABSENT)
    ordered = sorted(conversations, key=lambda found: found.date_created)
    sids = [found.sid for found in ordered]
    open_sids = [found.sid for found in ordered if found.state != CLOSED]
    if entry is not None and entry.conversation_sid in sids:
        kept = entry.conversation_sid
    else:
        kept = open_sids[0] if open_sids else sids[0]
    others = tuple(sid for sid in open_sids if sid != kept)
    return Verdict(LookupResult.DUPLICATES if others else LookupResult.FOUND, kept, others)


def _settle(
    ledger: Ledger,
    closer: Callable[[str], bool],
    key: str,
    identity: str,
    entry: Entry | None,
    verdict: Verdict,
    options: ReconcileOptions,
) -> list[str]:
    """Record what the lookup found; close the extra web chats when asked. Returns those closed."""
    if verdict.result is LookupResult.FAILED:
        return []
    if verdict.result is LookupResult.ABSENT:
        if entry is not None and entry.status != "created":
            # Nothing exists: no lost answer is outstanding, the next run sends the row.
            with ledger.transaction():
                ledger.record_failed(key, entry.run_id, ambiguous_attempts=0, lookup="absent")
        return []
    closed = []
    if options.close_duplicates:
        for sid in verdict.others:
            if closer(sid):
                closed.append(sid)
    left = [sid for sid in verdict.others if sid not in closed]
    with ledger.transaction():
        ledger.record_created(
            key,
            entry.run_id if entry else "reconcile",
            conversation_sid=verdict.kept,
            identity=identity,
            request_id=entry.request_id if entry else "",
            ambiguous_attempts=entry.ambiguous_attempts if entry else 0,
            lookup=LookupResult.DUPLICATES.value if left else LookupResult.FOUND.value,
            duplicate_sids=" ".join(left),
            key_fingerprint=key_fingerprint(key),
        )
    return closed


def _wait_for_the_index(
    entry: Entry | None, lag: float, runtime: Runtime, stopping: Stopping, opened: float
) -> None:
    """A row an earlier run was sending moments ago may not show in the index yet."""
    if entry is None or entry.status == "created":
        return
    wait = entry.last_sent_by(opened) + lag - runtime.wall_clock()
    if wait > 0:
        (runtime.sleep or stopping.sleep)(wait)


def _since(entry: Entry | None) -> float | None:
    """The row's first attempt: conversations older than it are not its web chat."""
    return entry.first_sent or None if entry is not None else None


def _line(key: str, identity: str, verdict: Verdict, closed: list[str]) -> list[str]:
    return [
        key,
        identity,
        verdict.result.value,
        verdict.kept,
        " ".join(verdict.others),
        " ".join(closed),
        verdict.message,
    ]


def _run_folder(out_dir: Path) -> Path:
    base = "reconcile-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir, number = out_dir / base, 1
    while run_dir.exists():
        number += 1
        run_dir = out_dir / f"{base}-{number}"
    run_dir.mkdir(parents=True, mode=0o700)
    return run_dir
