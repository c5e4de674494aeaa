"""The `provisioner` command group and the console entry point (pyproject's script)."""

from __future__ import annotations

import signal
import sys

import click

from provisioner import __version__
from provisioner.cli.create import create_command
from provisioner.cli.emulator import emulator_command
from provisioner.cli.exits import ClosedPipeError, Commands
from provisioner.cli.reconcile import reconcile_command
from provisioner.cli.status import status_command
from provisioner.cli.voice import Voice, nowhere
from provisioner.errors import ExitCode
from provisioner.runtime import Runtime


@click.group(
    cls=Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="provisioner")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Provision Twilio Flex web chats from a spreadsheet.

    \b
    Example:
      provisioner create inputs/example.csv --sandbox
    """
    ctx.ensure_object(Runtime)


for _command in (create_command, status_command, reconcile_command, emulator_command):
    cli.add_command(_command)


def main() -> None:
    """Console entry point."""
    # Before sending starts (reading and checking the input), SIGTERM and SIGHUP end the
    # command as Ctrl-C does: "interrupted", exit 3, temporary copies removed. While a run
    # sends, stopping.py takes these signals over and stops it gracefully.
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.default_int_handler)
    try:
        try:
            cli(prog_name="provisioner", obj=Runtime(stderr_isatty=sys.stderr.isatty()))
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not as a complaint at exit
    except SystemExit:
        if Voice.unread:  # the command did its work with nobody reading its lines
            sys.exit(ExitCode.BROKEN_PIPE)
        raise
    except (BrokenPipeError, ClosedPipeError):
        # The reader went away (`provisioner status | head -2`): end quietly, as Unix tools
        # do, with the shell's code for them. Python ignores SIGPIPE, so the write failed
        # instead; the streams now go nowhere, so that the exit's own flush cannot fail too.
        nowhere(sys.stdout)
        nowhere(sys.stderr)
        sys.exit(ExitCode.BROKEN_PIPE)
