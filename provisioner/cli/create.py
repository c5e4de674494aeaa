"""`provisioner create`: the options as one RunOptions, one run, its end, its exit code."""

from __future__ import annotations

import math
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import click
from click.core import ParameterSource

from provisioner import __version__
from provisioner.cli.exits import reports_errors
from provisioner.cli.options import (
    conduct_options,
    config_option,
    endpoint_options,
    input_options,
    output_options,
    pacing_options,
    reporting_options,
    reserve_option,
    run_id_option,
    sandbox_options,
    sending_options,
)
from provisioner.cli.settings import (
    configured,
    given,
    name_sources,
    rerun_options,
    settings,
    variable_options,
)
from provisioner.cli.values import FilePath
from provisioner.cli.voice import Voice
from provisioner.config import unknown_env
from provisioner.endpoints import CREDENTIAL_VARIABLES, Credentials, create_endpoint
from provisioner.errors import ExitCode
from provisioner.limits_rate import MIN_RATE
from provisioner.options import (
    Conduct,
    Endpoints,
    InputReading,
    Output,
    Pacing,
    Reporting,
    Sandbox,
    Sending,
    fields_of,
)
from provisioner.progress import ProgressBar, ProgressLines
from provisioner.report import end_of_run
from provisioner.run import RunOptions, create
from provisioner.runtime import Runtime
from provisioner.staging import new_run_id

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
@sandbox_options
@pacing_options
@reserve_option
@config_option
@run_id_option
@sending_options
@conduct_options
@reporting_options
@click.pass_context
@reports_errors
def create_command(
    ctx: click.Context,
    input_path: Path,
    output: Output,
    reading: InputReading,
    endpoints: Endpoints,
    sandbox: Sandbox,
    pacing: Pacing,
    sending: Sending,
    conduct: Conduct,
    reporting: Reporting,
) -> None:
    """`provisioner create`: the options as one RunOptions, one run, its exit code."""
    runtime: Runtime = ctx.obj
    if sandbox.sandbox_live_rate and not sandbox.sandbox:
        live_rate = next(param for param in ctx.command.params if param.name == "sandbox_live_rate")
        raise click.BadParameter(
            "rehearses visitors on the sandbox's emulator: give it with --sandbox",
            ctx=ctx,
            param=live_rate,
        )
    reserve = sending.reserve
    booked = pacing.rate - reserve if pacing.rate else MIN_RATE
    # Compared as the decimals typed: in floats, --rate 0.7 less --reserve 0.2 is 0.4999...
    if booked < MIN_RATE and not math.isclose(booked, MIN_RATE):
        raise click.UsageError(
            f"--reserve {reserve:g} must be below --rate {pacing.rate:g}, by {MIN_RATE:g} at "
            "least: the run sends at most --rate minus --reserve a second (--reserve 0 for an "
            "account nothing else uses)"
        )
    roots, credentials = create_endpoint(
        endpoints, runtime.env, sandbox=sandbox.sandbox, dry_run=conduct.dry_run
    )
    # Named now, not when its folder is made: the run's first line shows it, for cron logs.
    named = replace(conduct, run_id=conduct.run_id or new_run_id(output.out_dir))
    options = RunOptions(
        input_path=input_path,
        **fields_of(output, reading, roots, sandbox, pacing, sending, named, reporting),
        rerun_options=rerun_options(ctx),
        settings=settings(ctx),
    )
    _run_create(ctx, options, credentials)


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
    ctx: click.Context, options: RunOptions, credentials: Credentials | None
) -> NoReturn:
    """Announce the run, run it (a bar on a terminal, lines otherwise), print its end, exit."""
    runtime: Runtime = ctx.obj
    voice = Voice(isatty=runtime.stderr_isatty, quiet=options.quiet)
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
    if options.as_json:
        click.echo(summary.to_json(), nl=False)
    if summary.abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        # requests left in flight are not waited for
        os._exit(ExitCode.BROKEN_PIPE if Voice.unread else summary.exit_code)
    sys.exit(summary.exit_code)
