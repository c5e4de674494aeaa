"""`provisioner status`: what the ledger knows, for people or as JSON."""

from __future__ import annotations

import json

import click

from provisioner.cli.exits import reports_errors
from provisioner.cli.options import config_option, output_options
from provisioner.cli.settings import Option, Origin, configured
from provisioner.cli.voice import printable
from provisioner.ledger_runs import read_status, run_states
from provisioner.options import Output
from provisioner.words import plural

# The most runs `status --runs` lists: more than any screen shows, and an integer SQLite takes.
MAX_RUNS_LISTED = 100_000
RUNS_LISTED = 10  # recent runs listed by default: a screenful


@configured
@click.command("status")
@output_options
@click.option(
    "--runs",
    "limit",
    cls=Option,
    origin=Origin.FILE,
    rerun=False,
    type=click.IntRange(1, MAX_RUNS_LISTED),
    default=RUNS_LISTED,
    show_default=True,
    help="How many recent runs to list.",
)
@click.option(
    "--json",
    "as_json",
    cls=Option,
    origin=Origin.FILE,
    rerun=False,
    own=True,
    is_flag=True,
    help="Print the status as JSON on stdout.",
)
@config_option
@reports_errors
def status_command(output: Output, limit: int, as_json: bool) -> None:
    """Show what the ledger knows: web chats created, rows unsettled, the last runs.

    Reads the ledger without changing it (a read-only ledger works).

    \b
    Example:
      provisioner status --out outputs
    """
    path = output.ledger_file
    status = read_status(path, limit)
    runs = [
        {**run.__dict__, "state": state}
        for run, state in zip(status.runs, run_states(path, status.runs), strict=True)
    ]
    if as_json:
        document = {
            "ledger": str(path),
            "created": status.created,
            "unsettled": status.unsettled,
            "runs": runs,
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"ledger: {path}")
    for scope, created in sorted(status.created.items()):
        click.echo(f"  {plural(created, 'web chat')} created for {scope}")
    for scope, unsettled in sorted(status.unsettled.items()):
        click.echo(
            f"  {plural(unsettled, 'row')} unsettled for {scope}: may exist at Twilio "
            "unrecorded; `provisioner reconcile` looks them up (the next create does too)"
        )
    click.echo(f"last {plural(len(runs), 'run')}:")
    for run in runs:
        reason = f" ({run['stop_reason']})" if run["stop_reason"] else ""
        counts = ", ".join(f"{n} {s}" for s, n in run["counts"].items() if n)
        click.echo(
            f"  {run['run_id']}  {run['started_at']}  {run['state']}{reason}  "
            f"created {run['created']}  [{counts}]  {printable(run['input'])}"
        )
