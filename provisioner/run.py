"""One run of `provisioner create`: plan, send, record, report; signals and stopping."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from provisioner.client import Attempt, Credentials, FlexClient
from provisioner.emulator import Emulator
from provisioner.errors import ConfigError, ExitCode, InputError
from provisioner.ledger import Entry, Ledger, open_ledger, utc_now
from provisioner.report import (
    REORDER_LIMIT,
    Outcome,
    RedactingFilter,
    ResultFiles,
    Status,
    Summary,
    status_counts,
)
from provisioner.retry import Clock, RateLimiter, Sleep, retry_policy
from provisioner.rows import Columns, Repeats, Row, RowBuilder
from provisioner.table import Table, open_table

log = logging.getLogger("provisioner")

MAX_FAILURES_IN_A_ROW = 20
PREVIEW_ROWS = 10
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class RunOptions:
    """Everything one run needs to know, gathered from the command line."""

    input_path: Path
    out_dir: Path = Path("outputs")
    run_id: str | None = None
    concurrency: int = 8
    rate: float | None = 20.0
    max_attempts: int = 5
    timeout: float = 30.0
    base_url: str = ""
    dry_run: bool = False
    sandbox: bool = False
    force: bool = False
    strict: bool = False
    ledger_path: Path | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None


@dataclass(frozen=True)
class Progress:
    """A snapshot of a run, for progress bars and plain progress lines."""

    done: int
    total: int
    counts: Mapping[Status, int]
    requests: int
    elapsed: float


@dataclass
class Runtime:
    """What tests replace: sleeping, the clock, the environment, what people are told."""

    sleep: Sleep | None = None  # None: a real sleep that a stop interrupts
    clock: Clock = time.monotonic
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    say: Callable[[str], None] = lambda line: None
    progress: Callable[[Progress], None] = lambda progress: None


def check_run_id(run_id: str) -> str:
    """A run id must be a plain folder name."""
    if not _RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
        raise ConfigError(
            f"--run-id {run_id!r}: use a plain folder name (letters, digits, '.', '_', '-')"
        )
    return run_id


def create(options: RunOptions, runtime: Runtime, credentials: Credentials | None) -> Summary:
    """Run `provisioner create` from options to written outputs; returns the summary."""
    table = open_table(
        options.input_path,
        encoding=options.encoding,
        delimiter=options.delimiter,
        sheet=options.sheet,
    )
    columns = Columns.resolve(table.headers, options.columns)
    planned = _check_every_row(table, columns)
    if options.strict and planned.invalid:
        raise InputError(
            f"--strict: {planned.invalid} invalid rows; nothing was sent. "
            "--dry-run lists them, with the reasons, in errors.csv"
        )
    with ExitStack() as stack:
        base_url, credentials = _endpoint(options, runtime, credentials, stack)
        ledger_path = options.ledger_path or options.out_dir / "ledger.sqlite"
        ledger = (
            stack.enter_context(open_ledger(ledger_path, _scope(options, base_url, credentials)))
            if credentials is not None
            else None
        )
        run_id, run_dir = _run_folder(options)
        stack.enter_context(_run_log(run_dir / "run.log", credentials))
        run = _Run(options, runtime, table, columns, planned, ledger, run_id, run_dir)
        if credentials is None:
            runtime.say("dry run without credentials: the ledger was not consulted")
        if credentials is None or options.dry_run:
            return run.execute(None, base_url, ledger_path)
        client = FlexClient(
            base_url, credentials, timeout=options.timeout, pool_size=options.concurrency
        )
        stack.callback(client.close)
        return run.execute(client, base_url, ledger_path)
    raise AssertionError("unreachable")  # pragma: no cover (ExitStack does not swallow)


@dataclass(frozen=True)
class _Checked:
    rows: int
    invalid: int
    repeats: Repeats


def _check_every_row(table: Table, columns: Columns) -> _Checked:
    """Read the whole input once before sending, so a broken file sends nothing."""
    builder = RowBuilder(columns)
    rows = invalid = 0
    for number, cells in table.rows():
        rows += 1
        if builder.build(number, cells).problem is not None:
            invalid += 1
    if not rows:
        raise InputError(f"{table.path}: has a header row but no data rows")
    repeats = builder.repeats()
    return _Checked(rows, invalid + repeats.duplicate_rows, repeats)


def _endpoint(
    options: RunOptions, runtime: Runtime, credentials: Credentials | None, stack: ExitStack
) -> tuple[str, Credentials | None]:
    """The API root and credentials to use; starts the in-process emulator for --sandbox."""
    if options.sandbox:
        emulator = stack.enter_context(Emulator())
        runtime.say(
            f"sandbox: sending to a local emulator at {emulator.url}; nothing reaches Twilio"
        )
        return emulator.url, Credentials(emulator.username, emulator.secret, "sandbox")
    if credentials is None and not options.dry_run:
        raise ConfigError("no credentials")  # the CLI checks first; this guards other callers
    return options.base_url, credentials


def _scope(options: RunOptions, base_url: str, credentials: Credentials) -> str:
    """Ledger entries belong to an account on an API host; a sandbox never counts as real."""
    if options.sandbox:
        return "sandbox"
    return f"{credentials.account}@{urlsplit(base_url).netloc}"


def _run_folder(options: RunOptions) -> tuple[str, Path]:
    if options.run_id is not None:
        run_id = check_run_id(options.run_id)
        run_dir = options.out_dir / run_id
        if run_dir.exists():
            raise ConfigError(
                f"{run_dir}: a run folder with this --run-id exists; choose another --run-id"
            )
    else:
        base = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        run_id, number = base, 1
        while (options.out_dir / run_id).exists():
            number += 1
            run_id = f"{base}-{number}"
        run_dir = options.out_dir / run_id
    try:
        run_dir.mkdir(parents=True)
    except OSError as error:
        raise ConfigError(f"{run_dir}: cannot create the run folder ({error.strerror})") from error
    return run_id, run_dir


@contextmanager
def _run_log(path: Path, credentials: Credentials | None) -> Iterator[None]:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter([credentials.secret] if credentials else []))
    log.addHandler(handler)
    previous_level = log.level
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)
        handler.close()


class _Run:
    """The sending phase: one instance per run, shared by the worker threads."""

    def __init__(
        self,
        options: RunOptions,
        runtime: Runtime,
        table: Table,
        columns: Columns,
        planned: _Checked,
        ledger: Ledger | None,
        run_id: str,
        run_dir: Path,
    ) -> None:
        self.options = options
        self.runtime = runtime
        self.table = table
        self.columns = columns
        self.total = planned.rows
        self.repeats = planned.repeats
        self.ledger = ledger
        self.run_id = run_id
        self.run_dir = run_dir
        self.stopping = threading.Event()
        self.stop_reason = ""
        self.limiter = RateLimiter(options.rate, runtime.clock)
        self.sleep: Sleep = runtime.sleep or self._interruptible_sleep
        # One policy for all workers: tenacity keeps each call's state thread-local.
        self.policy = retry_policy(options.max_attempts, self.sleep, self.stopping)
        self.requests = 0
        self.forced = 0
        self.warnings: list[str] = []
        self._requests_lock = threading.Lock()

    def _interruptible_sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    def stop(self, reason: str) -> None:
        """Stop taking new rows; requests in flight finish."""
        if not self.stopping.is_set():
            self.stop_reason = reason
            self.stopping.set()
            log.warning("stopping: %s", reason)
            self.runtime.say(f"stopping: {reason}; finishing requests in flight")

    def execute(self, client: FlexClient | None, base_url: str, ledger_path: Path) -> Summary:
        """Send every row that needs it and write the outputs; returns the summary."""
        options = self.options
        started_at, started = utc_now(), self.runtime.clock()
        in_flight_before = self.ledger.in_flight_count() if self.ledger else 0
        log.info(
            "run %s: input %s, %d rows, base url %s, concurrency %d, rate %s, max attempts %d%s",
            self.run_id,
            options.input_path,
            self.total,
            base_url,
            options.concurrency,
            options.rate or "unlimited",
            options.max_attempts,
            ", dry run" if options.dry_run else "",
        )
        if in_flight_before:
            log.warning(
                "%d rows were in flight when an earlier run ended abruptly", in_flight_before
            )
            self.runtime.say(
                f"warning: {in_flight_before} rows were in flight when an earlier run was killed; "
                "they may exist at Twilio and are flagged in ambiguous_attempts"
            )
        if self.ledger and not options.dry_run:
            self.ledger.begin_run(self.run_id, str(options.input_path), forced=options.force)
        files = ResultFiles(self.run_dir, self.columns.carried_headers)
        with _signals_stop(self):
            if client is None:
                self._plan_only(files, started)
            else:
                self._send_all(client, files, started)
        files.close()
        counts = status_counts(files.counts)
        exit_code = self._exit_code(files.counts)
        if self.ledger and not options.dry_run:
            self.ledger.end_run(
                self.run_id, exit_code=exit_code, counts=counts, stop_reason=self.stop_reason
            )
        summary_path = self.run_dir / "summary.json"
        summary = Summary(
            run_id=self.run_id,
            input=str(options.input_path),
            started_at=started_at,
            ended_at=utc_now(),
            duration_seconds=round(self.runtime.clock() - started, 3),
            rows=self.total,
            counts=counts,
            invalid_reasons=dict(files.invalid_reasons.most_common()),
            requests_sent=self.requests,
            exit_code=int(exit_code),
            stop_reason=self.stop_reason,
            dry_run=options.dry_run,
            warnings=self.warnings,
            forced_rows=self.forced,
            ambiguous_rows=files.ambiguous_rows,
            in_flight_from_earlier_runs=in_flight_before,
            rate={
                "requested": options.rate,
                "settled": self.limiter.settled_rate,
                "final": self.limiter.rate,
                "lowest": self.limiter.lowest_rate,
                "throttled_429": self.limiter.throttled,
            },
            base_url=base_url,
            ledger=str(ledger_path) if self.ledger else "",
            files={
                "results": str(files.results_path),
                "errors": str(files.errors_path),
                "log": str(self.run_dir / "run.log"),
                "summary": str(summary_path),
            },
            rerun_command=self._rerun_command(files),
        )
        summary.write(summary_path)
        log.info("run %s ended: exit %d, %s", self.run_id, exit_code, counts)
        return summary

    def _exit_code(self, counts: Mapping[Status, int]) -> ExitCode:
        if self.stopping.is_set():
            return ExitCode.STOPPED
        if counts.get(Status.INVALID) or counts.get(Status.FAILED):
            return ExitCode.ROWS_FAILED
        return ExitCode.OK

    def _rerun_command(self, files: ResultFiles) -> str:
        if all(
            files.counts.get(s, 0) == 0
            for s in (Status.FAILED, Status.NOT_ATTEMPTED, Status.INVALID)
        ):
            return ""
        out = "" if self.options.out_dir == Path("outputs") else f" --out {self.options.out_dir}"
        sandbox = " --sandbox" if self.options.sandbox else ""
        return f"provisioner create {files.errors_path}{out}{sandbox}"

    def _rows(self) -> Iterator[tuple[int, Row]]:
        builder = RowBuilder(self.columns, self.repeats)
        for sequence, (number, cells) in enumerate(self.table.rows()):
            yield sequence, builder.build(number, cells)

    def _plan_only(self, files: ResultFiles, started: float) -> None:
        """--dry-run: every row's outcome as far as it can be known without sending."""
        previews = 0
        for sequence, row in self._rows():
            outcome, _ = self._plan(row)
            if outcome is None:
                self._check_pre_engagement(row)
                if previews < PREVIEW_ROWS:
                    previews += 1
                    fields = " ".join(f"{k}={v!r}" for k, v in row.parameters.items())
                    self.runtime.say(f"would send row {row.number}: {fields}")
                outcome = Outcome(Status.NOT_ATTEMPTED, error_message="dry run: would be sent")
            files.add(sequence, row, outcome)
        if previews == PREVIEW_ROWS:
            self.runtime.say(f"... and so on: every row is in {files.results_path}")
        self._report(files, started)

    def _send_all(self, client: FlexClient, files: ResultFiles, started: float) -> None:
        """Send the rows that need it on worker threads; the ledger is written here only.

        Rows are marked in flight in small batches as they are handed to the workers, and
        outcomes are recorded in one commit per wake-up, before they are written anywhere
        else: a handful of commits a second instead of two per row.
        """
        assert self.ledger is not None
        ledger = self.ledger
        concurrency = self.options.concurrency
        window, refill_below = 2 * concurrency, concurrency + (concurrency + 1) // 2
        pending: dict[Future[Outcome], tuple[int, Row, Entry | None]] = {}
        batch: list[tuple[int, Row, Entry | None]] = []
        failures_in_a_row = 0

        def submit(executor: ThreadPoolExecutor) -> None:
            with ledger.transaction():
                for _, row, _ in batch:
                    ledger.mark_in_flight(row.key, self.run_id)
            for sequence, row, prior in batch:
                future = executor.submit(self._provision, client, row, prior)
                pending[future] = (sequence, row, prior)
            batch.clear()

        def collect() -> None:
            nonlocal failures_in_a_row
            done, _ = wait(list(pending), timeout=0.2, return_when=FIRST_COMPLETED)
            finished = [(pending.pop(future), future.result()) for future in done]
            with ledger.transaction():
                for (_, row, prior), outcome in finished:
                    self._record(row, prior, outcome)
            for (sequence, row, _), outcome in finished:
                files.add(sequence, row, outcome)
                if outcome.status is Status.CREATED:
                    failures_in_a_row = 0
                elif outcome.exhausted:
                    failures_in_a_row += 1
                    if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                        self.stop(f"{failures_in_a_row} rows in a row failed after every retry")
            self._report(files, started)

        with ThreadPoolExecutor(concurrency, thread_name_prefix="send") as executor:
            for sequence, row in self._rows():
                outcome, prior = self._plan(row)
                if outcome is None and self.stopping.is_set():
                    outcome = Outcome(Status.NOT_ATTEMPTED, error_message=self._not_sent_message())
                if outcome is not None:
                    files.add(sequence, row, outcome)
                    continue
                batch.append((sequence, row, prior))
                if len(pending) + len(batch) >= window:
                    submit(executor)
                    while pending and (
                        len(pending) >= refill_below or files.waiting >= REORDER_LIMIT
                    ):
                        collect()
            if batch:
                submit(executor)
            while pending:
                collect()
        self._report(files, started)

    def _record(self, row: Row, prior: Entry | None, outcome: Outcome) -> None:
        """Write one finished row to the ledger (inside the caller's transaction)."""
        assert self.ledger is not None
        if outcome.status is Status.CREATED:
            self.ledger.record_created(
                row.key,
                self.run_id,
                conversation_sid=outcome.conversation_sid,
                identity=outcome.identity,
                request_id=outcome.request_id,
                ambiguous_attempts=outcome.ambiguous_attempts,
            )
        elif outcome.status is Status.FAILED:
            self.ledger.record_failed(
                row.key, self.run_id, ambiguous_attempts=outcome.ambiguous_attempts
            )
        else:  # never sent: the run stopped before its turn
            self.ledger.restore(row.key, prior)

    def _check_pre_engagement(self, row: Row) -> None:
        """Twilio takes any text, but its web chat expects JSON: warn before it is sent."""
        text = row.parameters.get("PreEngagementData")
        if text is None:
            return
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            warning = (
                f"row {row.number}: PreEngagementData is not valid JSON ({error.msg}); "
                "it would be sent as written"
            )
            self.warnings.append(warning)
            if len(self.warnings) <= PREVIEW_ROWS:
                self.runtime.say(f"warning: {warning}")

    def _not_sent_message(self) -> str:
        return f"not sent: the run stopped ({self.stop_reason})"

    def _report(self, files: ResultFiles, started: float) -> None:
        done = sum(files.counts.values())
        self.runtime.progress(
            Progress(
                done, self.total, dict(files.counts), self.requests, self.runtime.clock() - started
            )
        )

    def _plan(self, row: Row) -> tuple[Outcome | None, Entry | None]:
        """The outcome known without sending (invalid, existing), and the ledger's entry."""
        if row.problem is not None:
            return Outcome(
                Status.INVALID, error_code=row.problem_code, error_message=row.problem
            ), None
        entry = self.ledger.lookup(row.key) if self.ledger else None
        if entry is not None and entry.status == "created":
            if not self.options.force:
                return Outcome(
                    Status.EXISTING,
                    conversation_sid=entry.conversation_sid,
                    identity=entry.identity,
                    ambiguous_attempts=entry.ambiguous_attempts,
                    request_id=entry.request_id,
                    error_message=f"created earlier, by run {entry.run_id}",
                ), entry
            self.forced += 1
            log.info(
                "row %d (%s): created by run %s; creating again (--force)",
                row.number,
                row.key,
                entry.run_id,
            )
        return None, entry

    def _provision(self, client: FlexClient, row: Row, prior: Entry | None) -> Outcome:
        """Send one row with retries; runs on a worker thread and touches no file."""
        # A row left in flight by a killed run may exist at Twilio: that try counts as ambiguous.
        ambiguous = 0
        if prior is not None and prior.status != "created":
            ambiguous = prior.ambiguous_attempts + (1 if prior.status == "in_flight" else 0)
        attempts = 0
        last: Attempt | None = None

        def one_try() -> Attempt | None:
            nonlocal attempts, ambiguous, last
            if self.stopping.is_set():
                return None
            delay = self.limiter.reserve()
            if delay > 0:
                self.sleep(delay)
                if self.stopping.is_set():
                    return None
            attempts += 1
            with self._requests_lock:
                self.requests += 1
            attempt = client.create_web_chat(row.parameters)
            last = attempt
            if attempt.ambiguous:
                ambiguous += 1
            if attempt.created:
                self.limiter.accepted()
                return attempt
            if attempt.http_status == 429:
                self.limiter.throttle(attempt.retry_after)
            elif attempt.http_status is not None:
                self.limiter.accepted()
            log.info(
                "row %d (%s) try %d: %s %s %s%s",
                row.number,
                row.key,
                attempts,
                attempt.http_status or "no answer",
                attempt.error_code,
                attempt.error_message,
                f" [{attempt.request_id}]" if attempt.request_id else "",
            )
            if attempt.credentials_rejected:
                self.stop(
                    f"Twilio rejected the credentials (HTTP {attempt.http_status}); check them"
                )
            return attempt

        self.policy(one_try)
        if last is None:
            return Outcome(
                Status.NOT_ATTEMPTED,
                ambiguous_attempts=ambiguous,
                error_message=self._not_sent_message(),
            )
        if last.created:
            return Outcome(
                Status.CREATED,
                conversation_sid=last.conversation_sid,
                identity=last.identity,
                attempts=attempts,
                ambiguous_attempts=ambiguous,
                http_status=last.http_status,
                error_message=last.error_message,
                request_id=last.request_id,
            )
        exhausted = last.retryable
        message = last.error_message
        if exhausted and attempts < self.options.max_attempts:
            message += " (the run stopped before the next try)"
            exhausted = False
        elif exhausted:
            message += f" (gave up after {attempts} tries)"
        return Outcome(
            Status.FAILED,
            attempts=attempts,
            ambiguous_attempts=ambiguous,
            http_status=last.http_status,
            error_code=last.error_code,
            error_message=message,
            request_id=last.request_id,
            exhausted=exhausted,
        )


@contextmanager
def _signals_stop(run: _Run) -> Iterator[None]:
    """SIGINT and SIGTERM stop the run gracefully; a second signal ends it at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if run.stopping.is_set():
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        run.stop(f"interrupted by {name}")

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
