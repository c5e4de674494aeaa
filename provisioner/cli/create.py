"""`provisioner create`: the options as one RunOptions, one run, its end, its exit code."""

from __future__ import annotations

import math
import os
import shlex
import sys
from pathlib import Path
from typing import NoReturn

import click
from click.core import ParameterSource

from provisioner import __version__
from provisioner.cli.exits import reports_errors
from provisioner.cli.options import (
    concurrency_option,
    config_option,
    endpoint_options,
    input_options,
    output_options,
    pacing_options,
    setting,
)
from provisioner.cli.settings import (
    configured,
    given,
    name_sources,
    rerun_options,
    settings,
    variable_options,
)
from provisioner.cli.values import MAX_RATE, MIN_VISITOR_RATE, FilePath, Number, Rate, check_run_id
from provisioner.cli.voice import Voice
from provisioner.config import unknown_env
from provisioner.endpoints import CREDENTIAL_VARIABLES, Credentials, create_endpoint
from provisioner.errors import ExitCode
from provisioner.limits_rate import MIN_RATE
from provisioner.options import Endpoints, InputReading, Output, Pacing, default_of, fields_of
from provisioner.progress import ProgressBar, ProgressLines
from provisioner.report import end_of_run
from provisioner.run import RunOptions, create
from provisioner.runtime import Runtime
from provisioner.staging import new_run_id

MAX_ATTEMPTS_ALLOWED = 20  # the most --max-attempts takes

# create's --help, kept apart from the function so that the function stays readable whole.
CREATE_HELP = f"""\
Create one Flex web chat per row of INPUT (CSV, xlsx, xlsm, xls, ods, xlsb, or - for
standard input).

Writes OUT/<run-id>/results.csv, errors.csv, summary.json, report.html and run.log.
Credentials come from {CREDENTIAL_VARIABLES}.
Every option can also come from a PROVISIONER_<OPTION> variable or provisioner.toml: the
command line wins over the environment, which wins over the file.
Exit 0: all created or existing; 1: some rows invalid or failed; 2: nothing sent (usage,
input, config); 3: stopped early; 4: internal error; 141: output went into a closed pipe.

\b
Examples:
  provisioner create inputs/example.csv --sandbox
  provisioner create customers.xlsx --rate 5 --concurrency 4
  provisioner create outputs/20261124T214500Z/errors.csv
"""


@configured
@click.command("create", help=CREATE_HELP)
@click.argument("input_path", metavar="INPUT", type=FilePath(path_type=Path, allow_dash=True))
@output_options
@input_options
@endpoint_options
@setting(
    "sandbox",
    is_flag=True,
    help="Send to a local emulator started in-process; no credentials needed.",
)
@setting(
    "sandbox-live-rate",
    type=Rate(MIN_VISITOR_RATE),
    default=default_of(RunOptions, "sandbox_live_rate"),
    show_default=True,
    help="With --sandbox: website visitors a second starting web chats on the same account "
    "(its limit --rate, 300 ms answers); the summary counts those the batch left refused.",
)
@pacing_options
@setting(
    "reserve",
    type=Number(0, MAX_RATE),
    default=default_of(RunOptions, "reserve"),
    show_default=True,
    help="Requests per second left for the account's other traffic (the contact centre's live "
    "web chats): the run books at most --rate minus this, and slows further when it meets "
    "others. 0 when nothing else uses the account (a night run, a staging account). Nothing "
    "to keep it from with --rate 0.",
)
@config_option
@click.option(
    "--run-id",
    callback=check_run_id,
    help="The run folder's name [default: UTC time, e.g. 20261124T214500Z].",
)
@concurrency_option(
    default_of(RunOptions, "concurrency"),
    "Requests in flight at most; the run learns the account's real cap below it.",
)
@setting(
    "max-attempts",
    type=click.IntRange(1, MAX_ATTEMPTS_ALLOWED),
    default=default_of(RunOptions, "max_attempts"),
    show_default=True,
    help="Tries per row, the first included.",
)
@setting("dry-run", is_flag=True, help="Validate and write the plan; send nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Create again rows the ledger shows as created (never from the environment or a file).",
)
@setting("strict", is_flag=True, help="Send nothing if any row is invalid (exit 2).")
@setting(
    "no-lookup",
    is_flag=True,
    help="Do not look rows up at Twilio: a row whose answer was lost is sent again as it "
    "is (it may then have two web chats), and a new ledger's rows are sent without being "
    "looked up first (what another folder or host created is created again).",
)
@setting(
    "xlsx",
    is_flag=True,
    help="Write results.xlsx and errors.xlsx too (always, for a workbook input, or a file fed "
    "back from a run folder that has an errors.xlsx).",
)
@setting("quiet", is_flag=True, help="Only warnings, errors, the end.")
@setting("json", "as_json", is_flag=True, help="Print summary.json on stdout at the end.")
@click.pass_context
@reports_errors
def create_command(
    ctx: click.Context,
    input_path: Path,
    output: Output,
    reading: InputReading,
    endpoints: Endpoints,
    sandbox: bool,
    sandbox_live_rate: float,
    pacing: Pacing,
    reserve: float,
    run_id: str | None,
    concurrency: int,
    max_attempts: int,
    dry_run: bool,
    force: bool,
    strict: bool,
    no_lookup: bool,
    xlsx: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """`provisioner create`: the options as one RunOptions, one run, its exit code."""
    runtime: Runtime = ctx.obj
    if sandbox_live_rate and not sandbox:
        live_rate = next(param for param in ctx.command.params if param.name == "sandbox_live_rate")
        raise click.BadParameter(
            "rehearses visitors on the sandbox's emulator: give it with --sandbox",
            ctx=ctx,
            param=live_rate,
        )
    booked = pacing.rate - reserve if pacing.rate else MIN_RATE
    # Compared as the decimals typed: in floats, --rate 0.7 less --reserve 0.2 is 0.4999...
    if booked < MIN_RATE and not math.isclose(booked, MIN_RATE):
        raise click.UsageError(
            f"--reserve {reserve:g} must be below --rate {pacing.rate:g}, by {MIN_RATE:g} at "
            "least: the run sends at most --rate minus --reserve a second (--reserve 0 for an "
            "account nothing else uses)"
        )
    roots, credentials = create_endpoint(endpoints, runtime.env, sandbox=sandbox, dry_run=dry_run)
    options = RunOptions(
        input_path=input_path,
        **fields_of(output, reading, roots, pacing),
        run_id=run_id or new_run_id(output.out_dir),  # named on the first line, for cron logs
        concurrency=concurrency,
        reserve=reserve,
        max_attempts=max_attempts,
        dry_run=dry_run,
        sandbox=sandbox,
        sandbox_live_rate=sandbox_live_rate,
        force=force,
        strict=strict,
        lookups=not no_lookup,
        xlsx=xlsx,
        rerun_options=rerun_options(ctx),
        settings=settings(ctx),
    )
    _run_create(ctx, options, credentials, quiet=quiet, as_json=as_json)


def _announce(ctx: click.Context, options: RunOptions, voice: Voice) -> None:
    """The run's first line (the input, the options given, the run id); variables misspelt."""
    shown = shlex.join([str(options.input_path), *given(ctx)])
    voice(f"provisioner {__version__} create {shown} (run {options.run_id})")
    if not options.rate and ctx.get_parameter_source("reserve") is not ParameterSource.DEFAULT:
        voice("warning: --reserve does nothing with --rate 0: there is no rate to keep it from")
    # The sandbox's requests go to its own emulator, whatever the endpoint options say.
    roots = None if options.sandbox else (options.base_url, options.conversations_url)
    name_sources(ctx, voice, roots)
    for typo in unknown_env(os.environ, variable_options()):
        voice(f"warning: {typo} is not a setting provisioner reads; it was ignored")


def _run_create(
    ctx: click.Context,
    options: RunOptions,
    credentials: Credentials | None,
    *,
    quiet: bool,
    as_json: bool,
) -> NoReturn:
    """Announce the run, run it (a bar on a terminal, lines otherwise), print its end, exit."""
    runtime: Runtime = ctx.obj
    voice = Voice(isatty=runtime.stderr_isatty, quiet=quiet)
    _announce(ctx, options, voice)
    runtime.say = voice
    printer = ProgressBar(sys.stderr) if runtime.stderr_isatty else ProgressLines(voice)
    runtime.progress = printer
    try:
        summary = create(options, runtime, credentials)
    finally:
        printer.end()
    for kept, line in end_of_run(summary):
        (voice.always if kept else voice)(line)
    if as_json:
        click.echo(summary.to_json(), nl=False)
    if summary.abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        # requests left in flight are not waited for
        os._exit(ExitCode.BROKEN_PIPE if Voice.unread else summary.exit_code)
    sys.exit(summary.exit_code)
