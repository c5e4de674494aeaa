"""What a run writes: which result files (CSV, xlsx), one Outcome per row into them, in input
order; the tally; the lines that end a run, read from its Summary."""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path

from provisioner.causes import CauseTally, cause_lines, explain
from provisioner.cells import unescape_cell
from provisioner.ordered import InOrder
from provisioner.outcome import (
    Outcome,
)
from provisioner.result_columns import RESULT_COLUMNS, RESULT_SCHEMA, ROW_KEY
from provisioner.rows import Columns, Row
from provisioner.summary import ConcurrencyLimits, OtherTrafficSpell, Rate, Summary, Visitors
from provisioner.table import Table
from provisioner.vocabulary import ERROR_STATUSES, ErrorCode, LookupResult, Status
from provisioner.words import plural
from provisioner.writers import CsvWriter, TableWriter, XlsxWriter

ERRORS_CSV, ERRORS_WORKBOOK = "errors.csv", "errors.xlsx"  # as ResultFiles names them
# A new account's cap of one in flight cannot be shared with the live site (issue 21).
ONE_IN_FLIGHT = (
    "the account allows one request in flight: live web chats started during this run may be "
    "refused; run outside opening hours, or ask Twilio to raise the limit"
)


WriterFactory = Callable[[Path, Sequence[str]], TableWriter]


class Tally:
    """Counts of a run's outcomes: statuses, reasons, lookups, causes; nothing written here."""

    def __init__(self) -> None:
        self.counts: Counter[Status] = Counter()
        self.invalid_reasons: Counter[str] = Counter()
        self.lookups: Counter[LookupResult] = Counter()
        self.ambiguous_rows = 0
        self.causes = CauseTally()

    def add(self, row: Row, outcome: Outcome) -> None:
        """Count one finished row."""
        self.counts[outcome.status] += 1
        if outcome.status is Status.INVALID:
            self.invalid_reasons[outcome.error_code] += 1
        if outcome.ambiguous_attempts:
            self.ambiguous_rows += 1
        if outcome.lookup is not LookupResult.NONE:
            self.lookups[outcome.lookup] += 1
        if outcome.is_error and outcome.error_code != ErrorCode.DRY_RUN:  # a plan, not a cause
            cause = explain(
                outcome.error_code,
                outcome.status.value,
                outcome.error_message,
                outcome.more_info,
                http_status=outcome.http_status,
            )
            self.causes.add(
                row.number,
                cause,
                key=row.key,
                status=outcome.status.value,
                message=outcome.error_message,
            )

    def amend(self, before: Outcome, after: Outcome) -> None:
        """A row's lookup changed after it was counted (the final check)."""
        if before.lookup is not LookupResult.NONE:
            self.lookups[before.lookup] -= 1
        if after.lookup is not LookupResult.NONE:
            self.lookups[after.lookup] += 1

    @property
    def done(self) -> int:
        """Rows finished."""
        return sum(self.counts.values())

    @property
    def errors(self) -> int:
        """Rows in errors.csv."""
        return sum(n for status, n in self.counts.items() if status in ERROR_STATUSES)

    def status_counts(self) -> dict[str, int]:
        """Counts for every status, zeros included, in the contract's order."""
        return status_counts(self.counts)

    def lookup_counts(self) -> dict[LookupResult, int]:
        """summary.json's lookups: a count for each result."""
        return {
            result: self.lookups.get(result, 0)
            for result in LookupResult
            if result is not LookupResult.NONE
        }


class ResultFiles:
    """results and errors tables, written as rows finish but always in input order."""

    def __init__(
        self,
        run_dir: Path,
        carried_headers: Sequence[str],
        writer_factories: Mapping[str, WriterFactory],
    ) -> None:
        results_header = [*carried_headers, *(c.name for c in RESULT_SCHEMA)]
        errors_header = [*carried_headers, *(c.name for c in RESULT_SCHEMA if c.in_errors)]
        self.paths: dict[str, Path] = {}
        self._results: list[TableWriter] = []
        self._errors: list[TableWriter] = []
        for suffix, factory in writer_factories.items():
            self.paths[f"results{suffix}"] = run_dir / f"results{suffix}"
            self.paths[f"errors{suffix}"] = run_dir / f"errors{suffix}"
            self._results.append(factory(run_dir / f"results{suffix}", results_header))
            self._errors.append(factory(run_dir / f"errors{suffix}", errors_header))
        self._order: InOrder[tuple[Row, Outcome]] = InOrder()
        self._factories = dict(writer_factories)
        self._closed = False

    @property
    def results_path(self) -> Path:
        """results.csv."""
        return self.paths["results.csv"]

    @property
    def errors_path(self) -> Path:
        """errors.csv."""
        return self.paths["errors.csv"]

    @property
    def waiting(self) -> int:
        """Outcomes held back until the rows before them finish."""
        return self._order.held

    def add(self, sequence: int, row: Row, outcome: Outcome) -> list[tuple[Row, Outcome]]:
        """Accept the `sequence`-th row's outcome (0-based); returns the rows now written."""
        written = self._order.add(sequence, (row, outcome))
        for ready_row, ready in written:
            self._write(ready_row, ready)
        if written:
            for writer in (*self._results, *self._errors):
                writer.flush()
        return written

    def _write(self, row: Row, outcome: Outcome) -> None:
        cells = [column.fill(row, outcome) for column in RESULT_SCHEMA]
        for writer in self._results:
            writer.write([*row.cells, *cells])
        if outcome.is_error:
            in_errors = [
                cell for cell, column in zip(cells, RESULT_SCHEMA, strict=True) if column.in_errors
            ]
            for writer in self._errors:
                writer.write([*row.cells, *in_errors])

    def close(self) -> None:
        """Close every file (once); every accepted outcome has been written."""
        assert not self._order.held, "outcomes still waiting for earlier rows"
        if self._closed:
            return
        self._closed = True
        for writer in (*self._results, *self._errors):
            writer.close()

    def amend(self, amended: Mapping[str, Outcome]) -> None:
        """After close(): rewrite the results tables with what the final check found.

        Only created rows are amended, so errors tables never change. The CSV is read back
        (it is this tool's own file) and every results table is written again from it.
        """
        csv_path = self.paths["results.csv"]
        with csv_path.open(encoding="utf-8-sig", newline="") as stream:
            records = [[unescape_cell(cell) for cell in record] for record in csv.reader(stream)]
        header, rows = records[0], records[1:]
        key_at = len(header) - len(RESULT_SCHEMA) + RESULT_COLUMNS.index(ROW_KEY)
        changed = {
            name: len(header) - len(RESULT_SCHEMA) + RESULT_COLUMNS.index(name)
            for name in ("lookup", "duplicate_sids", "error_message")
        }
        for cells in rows:
            outcome = amended.get(cells[key_at])
            if outcome is not None:
                cells[changed["lookup"]] = outcome.lookup.value
                cells[changed["duplicate_sids"]] = " ".join(outcome.duplicate_sids)
                cells[changed["error_message"]] = outcome.error_message
        for name, factory in self._factories.items():
            path = self.paths[f"results{name}"]
            temporary = path.with_name(f".{path.name}.amend")
            writer = factory(temporary, header)
            for cells in rows:
                writer.write(cells)
            writer.close()
            os.replace(temporary, path)


class RedactingFilter(logging.Filter):
    """Removes secrets from log records, whatever code produced them."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._secrets = [secret for secret in secrets if secret]

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, with every secret in its message replaced."""
        message = record.getMessage()
        for secret in self._secrets:
            message = message.replace(secret, "[redacted]")
        record.msg, record.args = message, None
        return True


def status_counts(counts: Mapping[Status, int]) -> dict[str, int]:
    """Counts for every status, zeros included, in the contract's order."""
    return {status.value: counts.get(status, 0) for status in Status}


# A dry run shows this many rows, and any run this many warnings, before pointing at its files.
PREVIEW_ROWS = 10
OTHER_TRAFFIC_SHOWN = 3  # busy spells named in the end-of-run line; summary.json has them all


def learnt_options(rate: Rate, limits: ConcurrencyLimits) -> list[str]:
    """The options this run learnt, as words to pass next time (empty if it learnt nothing).

    A limit learnt is one that settled somewhere other than where it was asked to be (--rate
    less the reserve): a rate measured under the server's, or the concurrency a 429 showed too
    high. A rate only guessed down (halved with nothing to measure) never settles, so it is
    never advised; nor is one learnt with a reserve (a shared account): its 429s may say what
    the others used, not what the account allows (`shared_rate_line` says so instead).
    """
    words: list[str] = []
    if rate.settled != rate.requested and not rate.reserve:
        words += ["--rate", "0" if rate.settled is None else f"{rate.settled:.1f}"]
    if limits.concurrency_settled != limits.concurrency_requested:
        words += ["--concurrency", str(limits.concurrency_settled)]
    return words


def shared_rate_line(rate: Rate) -> str | None:
    """With a reserve, a rate the run settled under --rate less the reserve, with no 429 it
    could tell was the others': a lower limit or a website busy from the start look alike."""
    settled, requested, reserve = rate.settled, rate.requested, rate.reserve
    if not reserve or not requested or settled is None or rate.other_traffic_429:
        return None
    ceiling = requested - reserve
    if settled >= ceiling:
        return None
    return (
        f"the run settled at {settled:.1f}/s, under --rate less --reserve ({ceiling:g}/s): the "
        "account's limit is lower than --rate, or other traffic was busy from the start; if "
        "nothing else uses this account, --reserve 0 lets the run learn its limit and advise it"
    )


def visitors_line(visitors: Visitors) -> str:
    """--sandbox-live-rate's line: what the batch cost the website's visitors."""
    refused, arrived = visitors.refused, visitors.arrived
    share = f" ({refused / arrived:.1%})" if arrived else ""
    return (
        f"sandbox visitors at {visitors.rate:g}/s: {refused} of {arrived} refused{share} "
        f"while the batch ran ({visitors.refused_by_rate_limit} by the rate limit, "
        f"{visitors.refused_by_concurrency_cap} by the concurrency cap): on the live "
        "site, each would have had no web chat"
    )


def end_of_run(summary: Summary) -> list[tuple[bool, str]]:
    """The lines that end a run, for people: (kept by --quiet, line)."""
    lines: list[tuple[bool, str]] = []

    def keep(line: str) -> None:
        lines.append((True, line))

    def say(line: str) -> None:
        lines.append((False, line))

    counts = ", ".join(f"{summary.counts[s]} {s}" for s in summary.counts)
    if summary.dry_run:
        reasons = ", ".join(f"{n} {code}" for code, n in summary.invalid_reasons.items())
        keep(
            f"plan: {summary.counts[Status.NOT_ATTEMPTED]} to create, "
            f"{summary.counts[Status.EXISTING]} already created (existing), "
            f"{summary.counts[Status.INVALID]} invalid{f' ({reasons})' if reasons else ''};"
            " nothing sent"
        )
        if len(summary.warnings) > PREVIEW_ROWS:
            say(f"... {plural(len(summary.warnings), 'warning')} in all, listed in summary.json")
    else:
        keep(
            f"done in {summary.duration_seconds:.1f}s: {counts} "
            f"({plural(summary.requests_sent, 'request')})"
        )
    if summary.stop_reason:
        keep(f"stopped early: {summary.stop_reason}")
    lookups = {name: n for name, n in summary.lookups.items() if n}
    if lookups:
        say(
            "lost answers settled by looking them up at Twilio: "
            + ", ".join(f"{n} {name}" for name, n in lookups.items())
        )
    if summary.lookups_refused:
        say(f"warning: {summary.lookups_refused}")
    for duplicate in summary.duplicates:
        say(
            f"warning: row key {duplicate.row_key} has more than one web chat: "
            f"{duplicate.conversation_sid} (kept) and {' '.join(duplicate.others)}; "
            "`provisioner reconcile --close-duplicates` closes the extra ones"
        )
    if summary.forced_rows:
        were = "was" if summary.forced_rows == 1 else "were"
        say(f"--force: {plural(summary.forced_rows, 'row')} {were} created again")
    throttled = summary.rate.throttled_429
    if throttled:
        line = f"Twilio throttled {plural(throttled, 'request')} (429)"
        learnt = learnt_options(summary.rate, summary.limits)
        if learnt:
            these = "these" if len(learnt) > 2 else "this"
            line += f"; the run learnt {' '.join(learnt)}: pass {these} next time"
        say(line)
        shared = shared_rate_line(summary.rate)
        if shared:
            say(shared)
    if summary.visitors is not None:
        keep(visitors_line(summary.visitors))
    if summary.other_traffic:
        say(other_traffic_line(summary.other_traffic))
    if summary.limits.concurrency_cap == 1 and summary.rate.reserve > 0:
        say(f"warning: {ONE_IN_FLIGHT}")
    if summary.causes:
        would = "would not be" if summary.dry_run else "were not"  # a plan sends nothing
        say(f"why rows {would} created, and what to do:")
        for line in cause_lines(summary.causes):
            say(line)
    say(f"results: {summary.files['results.csv']}")
    failed = sum(summary.counts[status.value] for status in ERROR_STATUSES)
    workbook = f", {summary.files[ERRORS_WORKBOOK]}" if ERRORS_WORKBOOK in summary.files else ""
    say(f"errors:  {summary.files[ERRORS_CSV]}{workbook} ({plural(failed, 'row')})")
    say(f"report:  {summary.files['report']}")
    say(f"summary: {summary.files['summary']}")
    commands = dict(summary.rerun_commands)
    if len(commands) > 1:  # a workbook and a CSV: say which command goes with which edit
        for number, (name, command) in enumerate(commands.items()):
            keep(f"rerun the rest, after fixing {name}{' instead' if number else ''}: {command}")
    elif summary.rerun_command:
        keep(f"rerun the rest: {summary.rerun_command}")
    return lines


def other_traffic_line(spells: Sequence[OtherTrafficSpell]) -> str:
    """When other traffic was busy and what the run slowed to, in one line (local times)."""

    def clock(when: str) -> str:
        return datetime.fromisoformat(when).astimezone().strftime("%H:%M")

    def span(spell: OtherTrafficSpell) -> str:
        start, end = clock(spell.from_), clock(spell.until)
        return f"at {start}" if start == end else f"from {start} to {end}"

    shown = spells[:OTHER_TRAFFIC_SHOWN]
    more = f" and {len(spells) - len(shown)} more times" if len(spells) > len(shown) else ""
    rates = " and ".join(f"{spell.yielded_to:.1f}/s" for spell in shown)
    return (
        f"other traffic on the account was busy {' and '.join(span(s) for s in shown)}{more}; "
        f"the run slowed to {rates} to leave it room"
    )


def writer_factories(
    xlsx: bool, input_path: Path, table: Table, columns: Columns
) -> dict[str, WriterFactory]:
    """CSV always; xlsx too when the input is a workbook or --xlsx asks for it.

    In the CSVs, keys are written so that a spreadsheet keeps them as text (`'00123`).
    """
    keys = [ROW_KEY]  # row numbers survive a spreadsheet as numbers; keys must stay text
    if columns.customer_id is not None:
        keys.append(columns.headers[columns.customer_id])
    factories: dict[str, WriterFactory] = {".csv": partial(CsvWriter, key_columns=keys)}
    if xlsx or table.is_workbook or _beside_workbooks(input_path, columns):
        factories[".xlsx"] = XlsxWriter
    return factories


def _beside_workbooks(input_path: Path, columns: Columns) -> bool:
    """A file this tool wrote (it ends with the tool's columns), fed back from a run folder
    where that run wrote workbooks (errors.xlsx): errors.csv, or errors.xlsx saved as CSV
    beside it. It is one step of a loop in workbooks, so its run writes them too."""
    if not columns.fed_back or str(input_path) == "-":
        return False
    return (input_path.parent / ERRORS_WORKBOOK).is_file()
