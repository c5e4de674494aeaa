"""`provisioner reconcile`: settle rows by looking them up at Twilio; never creates anything.

Without an input it settles what the ledger shows unsettled (in flight, lost answers,
duplicates). With an input it looks up every row, recording what already exists, so that a lost
or deleted ledger is rebuilt without a duplicate.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from provisioner.causes import plural
from provisioner.cells import key_fingerprint
from provisioner.client import Credentials, FoundConversation, TwilioClient
from provisioner.errors import ExitCode, InputError
from provisioner.ledger import Entry, Ledger, open_ledger
from provisioner.limits import AccountLimits
from provisioner.outcome import LookupResult
from provisioner.rows import Columns, RowBuilder, derive_identity, names_address_column
from provisioner.run import Runtime
from provisioner.send import CLOSED, Lookups
from provisioner.stopping import Stopping
from provisioner.table import open_table, snapshot_input
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


@dataclass
class ReconcileResult:
    """What reconcile found, for the closing lines and the exit code."""

    path: Path
    counts: Counter[str] = field(default_factory=Counter)
    closed: int = 0
    failure: str = ""  # why the first failed lookup failed

    def lines(self) -> list[str]:
        """The end of a reconcile, for people."""
        found = ", ".join(f"{n} {name}" for name, n in sorted(self.counts.items())) or "nothing"
        lines = [f"looked up {plural(sum(self.counts.values()), 'row')}: {found}"]
        if self.closed:
            lines.append(f"closed {plural(self.closed, 'extra web chat')}")
        elif self.counts[LookupResult.DUPLICATES]:
            lines.append("rows with duplicates: pass --close-duplicates to close the extra ones")
        if self.counts[LookupResult.FAILED]:
            lines.append(f"some lookups failed ({self.failure}); run reconcile again later")
        lines.append(f"reconcile: {self.path}")
        return lines

    @property
    def exit_code(self) -> ExitCode:
        """0 when every row is settled with no duplicates left."""
        duplicates = self.counts[LookupResult.DUPLICATES] and not self.closed
        if self.counts[LookupResult.FAILED] or duplicates:
            return ExitCode.ROWS_FAILED
        return ExitCode.OK


def reconcile(
    options: ReconcileOptions, runtime: Runtime, credentials: Credentials
) -> ReconcileResult:
    """Look rows up and record what exists; close extra web chats when asked."""
    scope = f"{credentials.account}@{urlsplit(options.base_url).netloc}"
    ledger_path = options.ledger_path or options.out_dir / "ledger.sqlite"
    with ExitStack() as stack:
        ledger = stack.enter_context(open_ledger(ledger_path, scope))
        run_dir = _run_folder(options.out_dir)
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
        lookups = Lookups(client, limits, stopping, runtime.sleep or stopping.sleep)
        result = ReconcileResult(run_dir / "reconcile.csv")
        writer = CsvWriter(result.path, list(RECONCILE_COLUMNS))
        try:
            with stopping.on_signals():
                for key, identity, entry in _targets(options, ledger, runtime, run_dir, scope):
                    if stopping.is_set:
                        break
                    found = lookups.find(identity)
                    verdict = (
                        Verdict(LookupResult.FAILED, message=found)
                        if isinstance(found, str)
                        else verdict_of(found.conversations, entry)
                    )
                    closed = _settle(ledger, client, key, identity, entry, verdict, options)
                    result.counts[verdict.result] += 1
                    if verdict.result is LookupResult.FAILED and not result.failure:
                        result.failure = verdict.message
                    result.closed += len(closed)
                    writer.write(_line(key, identity, verdict, closed))
        finally:
            writer.close()
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _targets(
    options: ReconcileOptions, ledger: Ledger, runtime: Runtime, run_dir: Path, scope: str
) -> Iterator[tuple[str, str, Entry | None]]:
    """(row key, identity, ledger entry) of every row to look up."""
    if options.input_path is None:
        for entry in ledger.unsettled():
            yield entry.row_key, entry.identity or derive_identity(scope, entry.row_key), entry
        return
    source = snapshot_input(options.input_path, run_dir, runtime.stdin or sys.stdin.buffer)
    table = open_table(
        source,
        encoding=options.encoding,
        delimiter=options.delimiter,
        sheet=options.sheet,
        header_row=options.header_row,
        looks_like_header=lambda cells: names_address_column(cells, options.columns),
    )
    columns = Columns.resolve(table.headers, options.columns)
    first = RowBuilder(columns)
    for number, cells in table.rows():
        first.build(number, cells)
    builder = RowBuilder(columns, first.repeats())
    seen = False
    for number, cells in table.rows():
        row = builder.build(number, cells).with_identity(scope)
        seen = True
        if row.problem is None:
            yield row.key, row.identity, ledger.lookup(row.key)
    if not seen:
        raise InputError(f"{options.input_path}: has a header row but no data rows")


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
    client: TwilioClient,
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
            if client.close_conversation(sid).http_status == 200:
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
