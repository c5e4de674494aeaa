"""Errors become one `error:` line and their exit code, in one place: the commands' errors
(`reports_errors`), Click's usage errors and a closed pipe (`Commands`, the group's class)."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from provisioner.cli.settings import Option, Origin
from provisioner.cli.voice import current_voice
from provisioner.config import source_label
from provisioner.errors import ExitCode, ProvisionerError

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Turn ProvisionerError into one clear line and its exit code; --traceback shows the stack."""

    @click.option(
        "--traceback",
        "show_traceback",
        cls=Option,
        origin=Origin.COMMAND_LINE,
        rerun=False,
        is_flag=True,
        help="Show the stack on errors.",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, show_traceback: bool, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ProvisionerError as error:
            if show_traceback:
                traceback.print_exc()
            current_voice().always(f"error: {error}")
            sys.exit(error.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit, BrokenPipeError):
            raise  # a closed pipe is no bug: main() ends the command quietly
        except KeyboardInterrupt:  # before sending started; a run in progress stops gracefully
            current_voice().always("interrupted")
            sys.exit(ExitCode.STOPPED)
        except Exception as error:
            if show_traceback:
                traceback.print_exc()
            current_voice().always(
                f"internal error: {type(error).__name__}: {error} (a bug: rerun with "
                "--traceback and report it; a rerun is safe, the ledger keeps what was created)"
            )
            sys.exit(ExitCode.INTERNAL)

    return wrapper  # type: ignore[return-value]


class ClosedPipeError(Exception):
    """Output went into a closed pipe; main() ends the command quietly.

    Click answers a closed pipe with exit 1 (an error code of ours); carried past it as this,
    main() gives the shell's code instead (ExitCode.BROKEN_PIPE).
    """


@contextmanager
def _closed_pipe_passes_click() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError as error:
        raise ClosedPipeError from error


class Commands(click.Group):
    """Click's group, whose usage errors are one `error:` line like every other error."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _closed_pipe_passes_click():  # --help and --version print here
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _closed_pipe_passes_click():  # every command, its own --help included
            return super().invoke(ctx)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        try:
            code = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.exceptions.Abort:
            current_voice().always("interrupted")
            sys.exit(ExitCode.STOPPED)
        except click.ClickException as error:
            where = (
                error.ctx.command_path if isinstance(error, click.UsageError) and error.ctx else ""
            )
            hint = f" (see {where} --help)" if where else ""
            _name_the_source(error)
            current_voice().always(f"error: {error.format_message()}{hint}")
            sys.exit(error.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def _name_the_source(error: click.ClickException) -> None:
    """A bad value that came from the environment or the settings file says which."""
    if not isinstance(error, click.BadParameter) or error.param_hint is not None:
        return
    param, ctx = error.param, error.ctx
    if not isinstance(param, click.Option) or not param.name or ctx is None:
        return
    source = ctx.get_parameter_source(param.name)
    if source in (ParameterSource.ENVIRONMENT, ParameterSource.DEFAULT_MAP):
        label = source_label(source.name, max(param.opts, key=len), ctx.meta.get("config_path"))
        error.param_hint = f"{param.get_error_hint(ctx)} from the {label}"
