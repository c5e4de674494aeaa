"""Lines for people on stderr: control characters made inert, timestamps off a terminal,
--quiet, and a closed stderr that ends the command with the shell's code."""

from __future__ import annotations

import os
import re
import sys
from typing import ClassVar, TextIO

import click

from provisioner.progress import timestamp
from provisioner.runtime import Runtime

# Control characters but tab: text from an input (headers, file names) or a server would reach
# the terminal as escape sequences (OSC 52 writes the clipboard, CSI clears the screen; Click
# strips only CSI, only off a terminal), or forge lines of a log (CR, LF).
_TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(line: str) -> str:
    """`line` with its control characters shown as escapes (`\\x1b`): inert on a terminal."""
    return _TERMINAL_CONTROLS.sub(lambda control: f"\\x{ord(control[0]):02x}", line)


def say(line: str) -> None:
    """A line for people, on stderr."""
    click.echo(printable(line), err=True)


class Voice:
    """Lines for people on stderr: timestamped when not on a terminal; --quiet keeps only the
    warnings, errors and the final line."""

    # stderr went into a closed pipe: nobody reads these lines, and the command ends with
    # ExitCode.BROKEN_PIPE once its work is done (one stderr per process: one flag).
    unread: ClassVar[bool] = False

    def __init__(self, *, isatty: bool, quiet: bool = False) -> None:
        self.isatty = isatty
        self.quiet = quiet

    def __call__(self, line: str) -> None:
        if self.quiet and not line.startswith(("warning:", "error:", "stopping")):
            return
        self.always(line)

    def always(self, line: str) -> None:
        """A line that --quiet keeps."""
        if Voice.unread:
            return
        line = printable(line)
        try:
            click.echo(line if self.isatty else f"{timestamp()} {line}", err=True)
        except BrokenPipeError:
            # Nobody reads stderr any more (`2>&1 | head`): a run goes on to its end and
            # writes its files, silently, rather than stopping half-way; main() exits 141.
            Voice.unread = True
            nowhere(sys.stderr)


def current_voice() -> Voice:
    """The voice of the command running now: timestamps unless stderr is a terminal."""
    context = click.get_current_context(silent=True)
    runtime = context.find_object(Runtime) if context is not None else None
    isatty = runtime.stderr_isatty if runtime is not None else sys.stderr.isatty()
    return Voice(isatty=isatty)


def nowhere(stream: TextIO) -> None:
    """Point `stream` at /dev/null, so that nothing written or flushed to it fails again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)
