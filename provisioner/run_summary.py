"""A run that has ended -> its Summary: counts, where the limits settled, other traffic on the
account, the sandbox's visitors, the commands that finish the job (summary.py has the types)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from provisioner import timestamps
from provisioner.emulator import Emulator
from provisioner.errors import ExitCode
from provisioner.ledger import Ledger
from provisioner.limits import AccountLimits
from provisioner.limits_others import BusySpell
from provisioner.report import ERRORS_CSV, ERRORS_WORKBOOK, ResultFiles, Tally
from provisioner.runtime import Runtime
from provisioner.staging import CheckedInput
from provisioner.stopping import Stopping
from provisioner.summary import (
    ConcurrencyLimits,
    Duplicate,
    OtherTrafficSpell,
    Rate,
    SettingUsed,
    Summary,
    Visitors,
)

XLSX = "--xlsx"  # the option that asks for workbooks, as a rerun command spells it
SHARE_DIGITS = 4  # a share of visitors to 0.01 %: finer is noise
ROUNDED_RATE_DIGITS = 2  # requests a second in other_traffic: estimates, not measurements


class RunSettings(Protocol):
    """The options a summary reports (run.py's RunOptions)."""

    @property
    def input_path(self) -> Path: ...
    @property
    def rate(self) -> float | None: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def dry_run(self) -> bool: ...
    @property
    def sandbox_live_rate(self) -> float: ...
    @property
    def ledger_file(self) -> Path: ...
    @property
    def rerun_options(self) -> tuple[str, ...]: ...
    @property
    def settings(self) -> Mapping[str, SettingUsed]: ...


class RunEndpoint(Protocol):
    """Where the run sent its requests (run.py's _Endpoint)."""

    @property
    def base_url(self) -> str: ...
    @property
    def conversations_url(self) -> str: ...
    @property
    def emulator(self) -> Emulator | None: ...


class EndedRun(Protocol):
    """What a summary is made of: the parts of a run that has ended (run.py's _Run)."""

    @property
    def run_id(self) -> str: ...
    @property
    def run_dir(self) -> Path: ...
    @property
    def options(self) -> RunSettings: ...
    @property
    def runtime(self) -> Runtime: ...
    @property
    def checked(self) -> CheckedInput: ...
    @property
    def endpoint(self) -> RunEndpoint: ...
    @property
    def ledger(self) -> Ledger | None: ...
    @property
    def limits(self) -> AccountLimits: ...
    @property
    def stopping(self) -> Stopping: ...
    @property
    def tally(self) -> Tally: ...
    @property
    def files(self) -> ResultFiles: ...
    @property
    def started_at(self) -> str: ...  # UTC ISO 8601
    @property
    def started(self) -> float: ...  # the run's clock when it started
    @property
    def started_wall(self) -> float: ...  # the wall clock then
    @property
    def warnings(self) -> Sequence[str]: ...
    @property
    def forced(self) -> int: ...
    @property
    def in_flight_before(self) -> int: ...
    @property
    def duplicates(self) -> Sequence[Duplicate]: ...
    @property
    def lookups_refused(self) -> str: ...


def summary_of(run: EndedRun, exit_code: ExitCode, counts: Mapping[str, int]) -> Summary:
    """summary.json of a run that has ended."""
    state = run.limits.state()
    rerun = rerun_commands(run)
    files = {name: str(path) for name, path in run.files.paths.items()}
    files.update(
        log=str(run.run_dir / "run.log"),
        summary=str(run.run_dir / "summary.json"),
        report=str(run.run_dir / "report.html"),
    )
    return Summary(
        run_id=run.run_id,
        input=str(run.options.input_path),
        started_at=run.started_at,
        ended_at=timestamps.utc_now(),
        duration_seconds=round(run.runtime.clock() - run.started, 3),
        rows=run.checked.rows,
        counts=counts,
        invalid_reasons=dict(run.tally.invalid_reasons.most_common()),
        requests_sent=state.sent,
        exit_code=int(exit_code),
        stop_reason=run.stopping.reason,
        abandoned=run.stopping.abandoned.is_set(),
        dry_run=run.options.dry_run,
        warnings=run.warnings,
        forced_rows=run.forced,
        ambiguous_rows=run.tally.ambiguous_rows,
        in_flight_from_earlier_runs=run.in_flight_before,
        rate=Rate.of(state, run.options.rate),
        limits=ConcurrencyLimits.of(state, run.options.concurrency),
        other_traffic=[_spell_of(run, spell) for spell in state.busy],
        base_url=run.endpoint.base_url,
        conversations_url=run.endpoint.conversations_url,
        ledger=str(run.options.ledger_file) if run.ledger else "",
        files=files,
        rerun_command=next(iter(rerun.values()), ""),
        rerun_commands=rerun,
        lookups=run.tally.lookup_counts(),
        duplicates=run.duplicates,
        lookups_refused=run.lookups_refused,
        causes=run.tally.causes.causes(),
        failing_rows=run.tally.causes.failing_rows(),
        timeline=run.limits.timeline(),
        columns=run.checked.columns.describe(),
        settings=run.options.settings,
        visitors=visitors_of(run),
    )


def _spell_of(run: EndedRun, spell: BusySpell) -> OtherTrafficSpell:
    """A busy spell of other traffic, with its times on the wall clock."""
    return OtherTrafficSpell(
        from_=_wall_time(run, spell.start),
        until=_wall_time(run, spell.end),
        throttled_429=spell.throttled,
        yielded_to=round(spell.yielded_to, ROUNDED_RATE_DIGITS),
        others_estimated=round(spell.others, ROUNDED_RATE_DIGITS),
    )


def visitors_of(run: EndedRun) -> Visitors | None:
    """--sandbox-live-rate: the visitors who arrived during the run, served and refused."""
    emulator = run.endpoint.emulator
    if emulator is None or not run.options.sandbox_live_rate or run.options.dry_run:
        return None
    counts = emulator.visitor_counts()
    return Visitors(
        rate=run.options.sandbox_live_rate,
        arrived=counts.arrived,
        served=counts.served,
        refused=counts.refused,
        refused_share=round(counts.refused_share, SHARE_DIGITS),
        refused_by_rate_limit=counts.refused_by_rate_limit,
        refused_by_concurrency_cap=counts.refused_by_concurrency_cap,
    )


def _wall_time(run: EndedRun, clock_time: float) -> str:
    """A time on the run's clock as UTC ISO 8601, as summary.json's other times."""
    wall = run.started_wall + clock_time - run.started
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rerun_commands(run: EndedRun) -> dict[str, str]:
    """The shell commands that finish the job, by the errors file each feeds back (errors.xlsx
    first: the file people are told to edit in a spreadsheet), with every option that mattered.

    A run that wrote workbooks asks for them in its errors.csv command too (--xlsx), so the
    loop keeps them whichever file is fed back.
    """
    if not run.tally.errors or run.options.dry_run:
        return {}
    commands = {}
    for name in (ERRORS_WORKBOOK, ERRORS_CSV):
        path = run.files.paths.get(name)
        if path is None:
            continue
        options = list(run.options.rerun_options)
        if name == ERRORS_CSV and ERRORS_WORKBOOK in run.files.paths and XLSX not in options:
            options.append(XLSX)
        commands[name] = shlex.join(["provisioner", "create", str(path), *options])
    return commands
