"""`provisioner reconcile`: settle rows by looking them up at Twilio; creates nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from provisioner.cli.exits import reports_errors
from provisioner.cli.options import (
    config_option,
    endpoint_options,
    input_options,
    output_options,
    pacing_options,
    settling_options,
)
from provisioner.cli.settings import configured, name_sources
from provisioner.cli.values import FilePath
from provisioner.cli.voice import Voice
from provisioner.endpoints import Credentials, api_roots
from provisioner.options import Endpoints, InputReading, Output, Pacing, Settling, fields_of
from provisioner.reconcile import ReconcileOptions, reconcile
from provisioner.runtime import Runtime


@configured
@click.command("reconcile")
@click.argument(
    "input_path",
    metavar="[INPUT]",
    required=False,
    type=FilePath(path_type=Path, allow_dash=True),
)
@output_options
@input_options
@endpoint_options
@settling_options
@pacing_options
@config_option
@click.pass_context
@reports_errors
def reconcile_command(
    ctx: click.Context,
    input_path: Path | None,
    output: Output,
    reading: InputReading,
    endpoints: Endpoints,
    settling: Settling,
    pacing: Pacing,
) -> None:
    """Settle rows that may exist at Twilio unrecorded, by looking them up; creates nothing.

    Without INPUT: every row the ledger shows in flight, with a lost answer, or with
    duplicates; no ledger there is an error (exit 2). With INPUT: every row of the input,
    recording in the ledger what already exists (rebuilds a lost ledger). Rows are looked up
    --concurrency at a time, within --rate. Writes OUT/reconcile-<time>/reconcile.csv, rows in
    input (or ledger) order. Exit 0: all settled, no duplicates left; 1 otherwise; 3: stopped
    early.

    \b
    Examples:
      provisioner reconcile
      provisioner reconcile customers.xlsx --close-duplicates --concurrency 4
    """
    runtime: Runtime = ctx.obj
    roots = api_roots(endpoints, runtime.env)
    options = ReconcileOptions(
        input_path=input_path,
        **fields_of(output, reading, roots, settling, pacing),
    )
    voice = Voice(isatty=runtime.stderr_isatty)
    runtime.say = voice
    name_sources(ctx, voice, (roots.base_url, roots.conversations_url))
    result = reconcile(options, runtime, Credentials.from_env(runtime.env))
    for line in result.lines():
        voice.always(line)
    sys.exit(result.exit_code)
