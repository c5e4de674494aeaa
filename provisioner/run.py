"""One run of `provisioner create`: file -> rows -> plan -> dispatch -> send -> ledger and files."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from provisioner import timestamps
from provisioner.client import TwilioClient
from provisioner.dispatch import WINDOW_PER_WORKER, Dispatcher, Idle
from provisioner.emulator import Emulator
from provisioner.endpoints import Credentials, scope_of
from provisioner.errors import (
    ConfigError,
    ExitCode,
    InputError,
    LedgerError,
    ProvisionerError,
    ResultsError,
)
from provisioner.ledger import Ledger, open_ledger
from provisioner.limits import AccountLimits
from provisioner.options import (
    Conduct,
    Endpoints,
    InputReading,
    Output,
    Pacing,
    Reporting,
    Sandbox,
    Sending,
    Source,
)
from provisioner.ordered import HELD_LIMIT
from provisioner.outcome import Outcome
from provisioner.plan import Decision, cut_off, not_sent, plan
from provisioner.prelookup import (
    LOOKAHEAD_WINDOWS,
    FirstLookups,
    Job,
    added_seconds,
    lookup_workers,
)
from provisioner.private import open_private
from provisioner.recording import Recorder, rows_known
from provisioner.report import (
    ONE_IN_FLIGHT,
    PREVIEW_ROWS,
    RedactingFilter,
    ResultFiles,
    Tally,
    writer_factories,
)
from provisioner.report_html import write_report
from provisioner.rows import (
    Row,
)
from provisioner.run_summary import summary_of
from provisioner.runtime import Progress, Runtime, Sleep
from provisioner.send import Lookups, RowSender, SendSettings
from provisioner.staging import CheckedInput, moved_into, run_folder, staged_input
from provisioner.stopping import MAX_FAILURES_IN_A_ROW, FailureStreak, Stopping, failure_reason
from provisioner.summary import Duplicate, SettingUsed, Summary
from provisioner.vocabulary import EntryStatus, ErrorCode, LookupResult, Status
from provisioner.words import plural

log = logging.getLogger("provisioner")

# --sandbox-live-rate plays the account as Twilio's: its rate limit is --rate (the account's,
# as the operator states it), or Twilio's documented 5 creations a second with --rate 0; and
# answers take about 300 ms, as Twilio's do (the benchmarks' stand-in for Twilio too).
SANDBOX_ACCOUNT_RATE = 5.0
SANDBOX_LATENCY = 0.3
SANDBOX_SCOPE = "sandbox"  # the ledger scope of --sandbox runs (the emulator's own account)
DRY_RUN_SCOPE = "dry-run"  # identities a dry run without credentials shows are derived in it
HIDDEN_ROWS_NAMED = 5  # hidden rows a warning names: enough to find them, short enough to read


@dataclass(frozen=True, kw_only=True)
class RunOptions(
    Reporting, Conduct, Sending, Sandbox, Pacing, Endpoints, InputReading, Output, Source
):
    """Everything one run needs to know: the groups of options it shares with reconcile
    (options.py: output, input reading, endpoints, pacing), create's own groups (the sandbox,
    sending, conduct, reporting), and what the command line was given."""

    rerun_options: tuple[str, ...] = ()  # the options a rerun repeats, as command-line words
    settings: Mapping[str, SettingUsed] = field(default_factory=dict)  # per option


@dataclass(frozen=True)
class _Endpoint:
    base_url: str
    conversations_url: str
    credentials: Credentials | None
    scope: str
    emulator: Emulator | None = None  # --sandbox's

    @property
    def identity_scope(self) -> str:
        """The scope the rows' identities are derived in (a dry run's without credentials too)."""
        return self.scope or DRY_RUN_SCOPE


def create(options: RunOptions, runtime: Runtime, credentials: Credentials | None) -> Summary:
    """Run `provisioner create` from options to written outputs; returns the summary."""
    with ExitStack() as stack:
        consulted = options.sandbox or credentials is not None  # the ledger is asked
        scope = _ledger_scope(options, credentials) or DRY_RUN_SCOPE
        checked = _check_input(
            options, runtime, stack, consulted and options.ledger_file.exists(), scope
        )
        endpoint = _endpoint(options, runtime, credentials, stack)
        client = None
        if endpoint.credentials is not None and not options.dry_run:
            # Built first: an unusable proxy or CA bundle is found before anything is made.
            client = TwilioClient(
                endpoint.base_url,
                endpoint.conversations_url,
                endpoint.credentials,
                timeout=options.timeout,
                pool_size=options.concurrency,
                env=runtime.env,
            )
            stack.callback(client.close)
        ledger = None
        if endpoint.credentials is not None:
            ledger = stack.enter_context(open_ledger(options.ledger_file, endpoint.scope))
            if options.strict:
                _refuse_invalid_or_changed_keys(checked, ledger, endpoint)
        run_id, run_dir = run_folder(options.out_dir, options.run_id)
        checked = moved_into(checked, run_dir)
        stack.enter_context(_run_log(run_dir / "run.log", endpoint.credentials))
        run = _Run(options, runtime, checked, endpoint, ledger, run_id, run_dir)
        if endpoint.credentials is None:
            runtime.say("dry run without credentials: the ledger was not consulted")
        if client is None:
            return run.plan_only()
        return run.send_all(client)
    raise AssertionError("unreachable")  # pragma: no cover (ExitStack does not swallow)


def _check_input(
    options: RunOptions, runtime: Runtime, stack: ExitStack, ledger_known: bool, scope: str
) -> CheckedInput:
    """The input, staged and read whole; with --strict, refused if any row is invalid."""
    checked = staged_input(options, runtime, stack, scope)
    # A row the ledger shows created is existing however invalid its cells are now: with a
    # ledger to ask (`ledger_known`), _refuse_invalid_or_changed_keys counts only the others.
    if options.strict and checked.invalid and not ledger_known:
        raise InputError(
            f"--strict: {plural(checked.invalid, 'invalid row')}; nothing was sent. "
            "--dry-run lists them, with the reasons, in errors.csv"
        )
    return checked


def _endpoint(
    options: RunOptions, runtime: Runtime, credentials: Credentials | None, stack: ExitStack
) -> _Endpoint:
    """The API roots and credentials to use; starts the in-process emulator for --sandbox."""
    scope = _ledger_scope(options, credentials)
    if options.sandbox:
        emulator = stack.enter_context(_sandbox_emulator(options))
        runtime.say(
            f"sandbox: sending to a local emulator at {emulator.url}; nothing reaches Twilio"
        )
        sandbox = Credentials(emulator.username, emulator.secret, "sandbox")
        return _Endpoint(emulator.url, emulator.url, sandbox, scope, emulator)
    if credentials is None and not options.dry_run:
        raise ConfigError("no credentials")  # the CLI checks first; this guards other callers
    return _Endpoint(options.base_url, options.conversations_url, credentials, scope)


def _sandbox_emulator(options: RunOptions) -> Emulator:
    """--sandbox's emulator: bare, or with --sandbox-live-rate an account shaped as Twilio's
    (visitors arrive once sending starts)."""
    if not options.sandbox_live_rate:
        return Emulator()
    return Emulator(rate_limit=options.rate or SANDBOX_ACCOUNT_RATE, latency=SANDBOX_LATENCY)


def _ledger_scope(options: RunOptions, credentials: Credentials | None) -> str:
    """The ledger scope (account and API host) the run's identities are derived in; '' for a
    dry run without credentials (its identities use DRY_RUN_SCOPE)."""
    if options.sandbox:
        return SANDBOX_SCOPE
    return scope_of(credentials.account, options.base_url) if credentials else ""


@contextmanager
def _run_log(path: Path, credentials: Credentials | None) -> Iterator[None]:
    descriptor = open_private(path, os.O_WRONLY | os.O_APPEND)
    os.close(descriptor)
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
    """The state of one run: its parts, and the pipeline from decisions to written files."""

    def __init__(
        self,
        options: RunOptions,
        runtime: Runtime,
        checked: CheckedInput,
        endpoint: _Endpoint,
        ledger: Ledger | None,
        run_id: str,
        run_dir: Path,
    ) -> None:
        self.options = options
        self.runtime = runtime
        self.checked = checked
        self.endpoint = endpoint
        self.ledger = ledger
        self.run_id = run_id
        self.run_dir = run_dir
        self.stopping = Stopping(runtime.say)
        self.limits = AccountLimits(
            options.rate, options.concurrency, runtime.clock, reserve=options.reserve
        )
        self.tally = Tally()
        # Rows finished, whatever their order (the tally counts them as they are written, in
        # input order, so one row waiting out --lookup-lag would hold the progress count back).
        self.finished: Counter[Status] = Counter()
        self.started_at, self.started = timestamps.utc_now(), runtime.clock()
        self.started_wall = runtime.wall_clock()
        self.warnings: list[str] = []
        self.forced = 0
        self.duplicates: list[Duplicate] = []
        self.recorder: Recorder | None = None  # once sending starts
        self.lookups_refused = ""
        self.failure: Exception | None = None  # what failed after sending started, if anything
        self.in_flight: dict[int, Decision] = {}  # rows handed to the workers, not yet written
        self.written: set[int] = set()  # the rows (positions) written to the results
        self.told_one_in_flight = False  # the cap-of-one warning is said once
        self.files = ResultFiles(
            run_dir,
            checked.columns.carried_headers,
            writer_factories(options.xlsx, options.input_path, checked.table, checked.columns),
        )
        self.in_flight_before = len(ledger.unsettled()) if ledger else 0
        # A sandbox emulator starts empty: nothing made elsewhere can be found there.
        self.new_ledger = ledger is not None and not options.sandbox and ledger.is_new()
        _describe(self)

    def decisions(self) -> Iterator[tuple[int, Decision]]:
        """Every row of the input, in order, with what to do with it."""
        for sequence, row, seen in rows_known(
            self.checked, self.ledger, self.endpoint.identity_scope
        ):
            decision = plan(
                row, seen.entry, force=self.options.force, changed_from=seen.changed_from
            )
            if decision.forced:
                self.forced += 1
                log.info("row %d (%s): creating again (--force)", row.number, row.key)
            yield sequence, decision

    def plan_only(self) -> Summary:
        """--dry-run: every row's outcome as far as it can be known without sending."""
        previews = 0
        for sequence, decision in self.decisions():
            outcome = decision.outcome
            if outcome is None:
                self._warn(decision.row.pre_engagement_warning())
                if previews < PREVIEW_ROWS:
                    previews += 1
                    fields = " ".join(f"{k}={v!r}" for k, v in decision.row.parameters.items())
                    self.runtime.say(f"would send row {decision.row.number}: {fields}")
                outcome = Outcome(
                    Status.NOT_ATTEMPTED,
                    identity=decision.row.identity,
                    error_code=ErrorCode.DRY_RUN,
                    error_message="dry run: would be sent",
                )
            self._write(sequence, decision.row, outcome)
        if previews == PREVIEW_ROWS:
            self.runtime.say(f"... and so on: every row is in {self.files.results_path}")
        return self._finish()

    def send_all(self, client: TwilioClient) -> Summary:
        """Send every row that needs it, recording each outcome before writing it."""
        assert self.ledger is not None
        ledger = self.ledger
        sleep = self.runtime.sleep or self.stopping.sleep
        sender = RowSender(
            client,
            self.limits,
            self.stopping,
            SendSettings(self.options.max_attempts, self.options.lookups, self.options.lookup_lag),
            sleep=sleep,
            clock=self.runtime.clock,
            wall_clock=self.runtime.wall_clock,
            jitter=self.runtime.jitter,
        )
        ledger.begin_run(self.run_id, str(self.options.input_path), forced=self.options.force)
        recorder = self.recorder = Recorder(ledger, self.run_id, self.stopping)

        def started(jobs: list[Job]) -> bool:
            self.in_flight.update((job.sequence, job.decision) for job in jobs)
            return recorder.mark_in_flight([job.decision for job in jobs])

        first = self._first_lookups(client, sleep, sender.lookups)
        streak = FailureStreak(MAX_FAILURES_IN_A_ROW)
        dispatcher: Dispatcher[Job, Outcome] = Dispatcher(
            self._stopping_on_failure(lambda job: sender.send(job.decision, job.looked_up), streak),
            concurrency=self.options.concurrency,
            stopping=self.stopping,
            ready=lambda job: job.known,
            not_sent=lambda job: not_sent(job.decision, self.stopping.not_sent_message),
            # Marked in flight with its batch but never sent (still queued): restored, not cut off.
            cut_off=lambda job: (
                cut_off(job.decision)
                if sender.may_have_sent(job.decision.row.key)
                else not_sent(job.decision, self.stopping.not_sent_message)
            ),
            on_start=started,
            backlog=lambda: self.files.waiting,
            backlog_limit=HELD_LIMIT,
            # A failure may stop the run (FailureStreak): it is counted as soon as it comes.
            routine=lambda outcome: outcome.status is Status.CREATED,
        )
        rechecks: list[tuple[Row, Outcome, float]] = []
        if self.endpoint.emulator is not None:
            self.endpoint.emulator.live_rate = self.options.sandbox_live_rate
        jobs: Generator[Job | Idle, None, None] = (
            first.jobs(self.decisions()) if first else (Job(*job) for job in self.decisions())
        )
        with self.stopping.on_signals(), closing(jobs):
            finishing = dispatcher.run(jobs)
            try:
                for finished in finishing:
                    flagged = recorder.record((job.decision, outcome) for job, outcome in finished)
                    for job, recorded in finished:
                        decision = job.decision
                        sender.taken(decision.row.key)
                        outcome = flagged.get(decision.row.key, recorded)
                        self._write(job.sequence, decision.row, outcome)
                        if outcome.status is Status.CREATED and outcome.ambiguous_attempts:
                            prior = decision.prior
                            since = min(self.started_wall, prior.first_sent) if prior else None
                            rechecks.append((decision.row, outcome, since or self.started_wall))
                    self._progress()
            except ResultsError:
                raise  # the results cannot be written at all
            except Exception as error:  # whatever it was, every row still gets its status
                self._fail(error)
                self._write_the_rest()
            finally:
                finishing.close()  # the workers finish their requests, and start no other
            with self._writing_files():
                self.files.close()  # complete before the final check may amend them
            if rechecks and self.options.lookups and not self.stopping.is_set:
                _final_check(self, sender, rechecks)
        self.lookups_refused = sender.lookups_refused or (first.refused if first else "")
        return self._finish()

    def _stopping_on_failure(
        self, send: Callable[[Job], Outcome], streak: FailureStreak
    ) -> Callable[[Job], Outcome]:
        """`send`, stopping the run at once if it raises or ends a `streak` (on a worker): the
        other workers' waits end, and none starts another request before the main thread hears
        of it (counted there, a worker would send rows it was handed meanwhile)."""

        def sending(job: Job) -> Outcome:
            try:
                outcome = send(job)
            except Exception as error:
                self.stopping.stop(failure_reason(error))
                raise
            reason = streak.add(outcome)
            if reason:
                self.stopping.stop(reason)
            return outcome

        return sending

    def _fail(self, error: Exception) -> None:
        """Something failed after sending started: stop, and keep why (run.log has the stack)."""
        log.error("the run failed: %s", failure_reason(error), exc_info=error)
        self.stopping.stop(failure_reason(error))
        self.failure = error

    def _write_the_rest(self) -> None:
        """After a failure, every row not yet written: `not_attempted` (a row whose request was
        in flight, cut off: it may exist, and the next run looks it up first)."""
        message = self.stopping.not_sent_message
        for sequence, row, _ in rows_known(self.checked, None, self.endpoint.identity_scope):
            if sequence in self.written:
                continue
            if sequence in self.in_flight:
                decision = self.in_flight[sequence]
                self._write(sequence, decision.row, cut_off(decision))
                continue
            decision = plan(row, None, force=self.options.force)
            self._write(sequence, row, decision.outcome or not_sent(decision, message))

    def _first_lookups(
        self, client: TwilioClient, sleep: Sleep, shared: Lookups
    ) -> FirstLookups | None:
        """Lookups before a row's first send (a new ledger; rows whose first lookup failed),
        under the Conversations API's own limits, learnt apart from the web chat endpoint's
        (`shared`: its lookups, under the web chat limits, once the account shows one cap)."""
        if not self.options.lookups:
            return None
        workers = lookup_workers(self.options.concurrency)
        conversations = AccountLimits(None, workers, self.runtime.clock)
        return FirstLookups(
            Lookups(client, conversations, self.stopping, sleep, self.runtime.jitter),
            self.stopping,
            shared=shared,
            new_ledger=self.new_ledger,
            workers=workers,
            ahead=LOOKAHEAD_WINDOWS * WINDOW_PER_WORKER * self.options.concurrency,
        )

    def _write(self, sequence: int, row: Row, outcome: Outcome) -> None:
        self.in_flight.pop(sequence, None)
        self.written.add(sequence)
        self.finished[outcome.status] += 1
        with self._writing_files():
            written = self.files.add(sequence, row, outcome)
        for written_row, written_outcome in written:
            self.tally.add(written_row, written_outcome)

    def _warn(self, warning: str | None) -> None:
        if warning is None:
            return
        self.warnings.append(warning)
        if len(self.warnings) <= PREVIEW_ROWS:
            self.runtime.say(f"warning: {warning}")

    def _progress(self) -> None:
        self.stopping.announce()
        state = self.limits.state()
        if state.cap == 1 and self.options.reserve > 0 and not self.told_one_in_flight:
            self.told_one_in_flight = True  # a live chat is refused while any row is in flight
            self._warn(ONE_IN_FLIGHT)
        self.runtime.progress(
            Progress(
                sum(self.finished.values()),
                self.checked.rows,
                dict(self.finished),
                state.sent,
                self.runtime.clock() - self.started,
                throttled=state.throttled,
                rate=state.rate,
                concurrency=state.concurrency,
                stopped=self.stopping.is_set,
            )
        )

    def _exit_code(self) -> ExitCode:
        if isinstance(self.failure, ProvisionerError):
            return self.failure.exit_code
        if self.failure is not None:
            return ExitCode.INTERNAL
        if self.stopping.is_set:
            return ExitCode.STOPPED
        if self.tally.counts[Status.INVALID] or self.tally.counts[Status.FAILED]:
            return ExitCode.ROWS_FAILED
        return ExitCode.OK

    def _finish(self) -> Summary:
        if self.endpoint.emulator is not None:
            self.endpoint.emulator.live_rate = 0  # the batch is over: so is the rehearsal
        self.stopping.announce()
        with self._writing_files():
            self.files.close()
        if not self.options.dry_run:  # a plan sends nothing: it has no pace to show
            self._progress()
        exit_code = self._exit_code()
        counts = self.tally.status_counts()
        if self.ledger and self.recorder and not self.recorder.failed:
            with suppress(LedgerError), self.ledger.transaction():
                self.ledger.end_run(
                    self.run_id,
                    exit_code=exit_code,
                    counts=counts,
                    stop_reason=self.stopping.reason,
                )
        summary = summary_of(self, exit_code, counts)
        with self._writing_files():
            summary.write(self.run_dir / "summary.json")
            write_report(self.run_dir / "report.html", summary)
        log.info("run %s ended: exit %d, %s", self.run_id, exit_code, counts)
        return summary

    @contextmanager
    def _writing_files(self) -> Iterator[None]:
        """A file that cannot be written (a full disk) stops the run: exit 3, not a crash."""
        try:
            yield
        except OSError as error:
            raise ResultsError(
                f"cannot write the results ({error.filename or self.run_dir}: {error.strerror}); "
                "every answer received is in the ledger: free space, then rerun the same input"
            ) from error


def _describe(run: _Run) -> None:
    """What the run is about to do, in run.log and for people: columns, earlier unsettled rows."""
    options = run.options
    log.info(
        "run %s: input %s, %d rows, base url %s, concurrency %d, rate %s (reserve %g), "
        "max attempts %d%s",
        run.run_id,
        options.input_path,
        run.checked.rows,
        run.endpoint.base_url,
        options.concurrency,
        options.rate or "unlimited",
        options.reserve if options.rate else 0,
        options.max_attempts,
        ", dry run" if options.dry_run else "",
    )
    table = run.checked.table
    if hidden := table.hidden_rows:
        named = ", ".join(map(str, hidden[:HIDDEN_ROWS_NAMED]))
        more = ", ..." if len(hidden) > HIDDEN_ROWS_NAMED else ""
        run._warn(
            f"{table.where}: {plural(len(hidden), 'row')} hidden "
            f"({'row' if len(hidden) == 1 else 'rows'} {named}{more}); sent like the others"
        )
    for line in run.checked.columns.describe():
        log.info("column %s", line)
        run.runtime.say(f"column {line}")
    if run.in_flight_before:
        log.warning("%d rows of earlier runs are unsettled", run.in_flight_before)
        run.runtime.say(
            f"{plural(run.in_flight_before, 'row')} of earlier runs may exist at Twilio "
            "unrecorded "
            "(a run was killed, or an answer was lost); they are looked up before any is "
            "sent again"
        )
    _describe_first_lookups(run)


def _describe_first_lookups(run: _Run) -> None:
    """On the first lines: a ledger new to this account and host looks rows up first."""
    options = run.options
    if options.sandbox or not (run.new_ledger or run.ledger is None):
        return
    rows = run.checked.rows - run.checked.invalid
    if run.ledger is None:  # a dry run without credentials: the ledger's scope is not known
        line = (
            "a real run looks every row up at Twilio before its first send when the ledger "
            "has no entry yet for this account and host (--no-lookup skips it)"
        )
    elif not options.lookups:
        run._warn(
            "this ledger has no entry yet for this account and host, and --no-lookup is set: "
            "web chats created from another folder or host are created again"
        )
        return
    else:
        added = added_seconds(rows, options.rate, options.concurrency)
        workers = lookup_workers(options.concurrency)
        line = (
            f"this ledger has no entry yet for this account and host: {plural(rows, 'row')} "
            f"{'would be' if options.dry_run else 'are'} looked up at Twilio before their "
            "first send (one created from another folder or host is recorded as existing, not "
            f"created again), {workers} at a time ahead of the sends: this adds about "
            f"{_seconds(added)} (--no-lookup skips it)"
        )
    log.info("%s", line)
    run.runtime.say(line)


def _seconds(seconds: float) -> str:
    """A duration for people: `1 s`, `40 s`, `3 min`."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def _final_check(run: _Run, sender: RowSender, rechecks: list[tuple[Row, Outcome, float]]) -> None:
    """Rows that had a lost answer are looked up once more: one web chat, or duplicates?"""
    sleep = run.runtime.sleep or run.stopping.sleep
    sleep(run.options.lookup_lag)  # the index has seen the last creation by then
    assert run.recorder is not None
    amended: dict[str, Outcome] = {}
    for row, outcome, since in rechecks:  # since: the row's first attempt, this run or before
        checked = sender.recheck(row, outcome, since=since)
        if checked != outcome:
            amended[row.key] = checked
            run.tally.amend(outcome, checked)
            run.recorder.record_lookup(row.key, checked)
    if amended:
        with run._writing_files():
            run.files.amend(amended)
    run.duplicates = [
        Duplicate(key, o.conversation_sid, o.duplicate_sids)
        for key, o in amended.items()
        if o.lookup is LookupResult.DUPLICATES
    ]


def _refuse_invalid_or_changed_keys(
    checked: CheckedInput, ledger: Ledger, endpoint: _Endpoint
) -> None:
    """--strict: an invalid row, or one with a key a spreadsheet changed, and nothing is sent
    (a row the ledger shows created is existing, whatever its cells say now)."""
    invalid = changed = 0
    for _, row, seen in rows_known(checked, ledger, endpoint.identity_scope):
        created = seen.entry is not None and seen.entry.status is EntryStatus.CREATED
        if row.problem is not None:
            invalid += row.repeats_a_key or not created
        elif seen.changed_from is not None or (row.twin is not None and seen.entry is None):
            changed += 1
    if invalid:
        raise InputError(
            f"--strict: {plural(invalid, 'invalid row')}; nothing was sent. "
            "--dry-run lists them, with the reasons, in errors.csv"
        )
    if changed:
        raise InputError(
            f"--strict: {plural(changed, 'row')} with a key a spreadsheet changed (key_changed); "
            "nothing was sent. --dry-run lists them in errors.csv"
        )
