"""The command line: parse options, call one function, map errors to exit codes."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TextIO, TypeVar

import click
from click.core import ParameterSource

from provisioner import __version__
from provisioner.charsets import encoding_problem
from provisioner.config import (
    ENV_PREFIX,
    Setting,
    env_name,
    find_config,
    load_config,
    source_label,
    split_list,
    unknown_env,
)
from provisioner.emulator import (
    Emulator,
    serve_until_stopped,
    standalone_credentials,
)
from provisioner.emulator import summary as emulator_summary
from provisioner.endpoints import (
    CREDENTIAL_VARIABLES,
    REGION_VARIABLES,
    Credentials,
    api_root,
    is_loopback,
    resolve_base_url,
    resolve_conversations_url,
)
from provisioner.errors import ConfigError, ExitCode, ProvisionerError
from provisioner.ledger_lock import lock_holder
from provisioner.ledger_runs import read_status
from provisioner.limits import MIN_RATE
from provisioner.progress import ProgressBar, ProgressLines, timestamp
from provisioner.reconcile import ReconcileOptions, reconcile
from provisioner.report import Summary, end_of_run
from provisioner.run import RunOptions, create
from provisioner.runtime import Runtime
from provisioner.staging import new_run_id, run_id_problem
from provisioner.table import MAX_SHEET_ROWS
from provisioner.words import plural

F = TypeVar("F", bound=Callable[..., Any])
# Twilio's Flex Conversations limits page: "the Flex Webchat orchestrator currently has a rate
# limit of 5 requests per second" per account; raised only through Twilio sales.
DEFAULT_RATE = 5.0
# Far above any account's rate (Twilio raises the 5/s only through sales), and low enough that
# the pacing's arithmetic on gaps between sends stays exact.
MAX_RATE = 10_000.0
# Emulated website visitors: one in about 17 minutes; fewer is none in a rehearsal, and a wait
# drawn at a far lower rate overflows the thread's timeout.
MIN_VISITOR_RATE = 0.001
# What Linux's file systems take (NAME_MAX, PATH_MAX): a longer path fails only when used.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
# The most runs `status --runs` lists: more than any screen shows, and an integer SQLite takes.
MAX_RUNS_LISTED = 100_000
# The emulator's delays (an answer's latency, the lookup index's lag): a rehearsal of minutes.
EMULATOR_MAX_DELAY = 3600.0
EMULATOR_MAX_CONCURRENT = 10_000  # far above any account's cap on requests in flight


# Control characters but tab: text from an input (headers, file names) or a server would reach
# the terminal as escape sequences (OSC 52 writes the clipboard, CSI clears the screen; Click
# strips only CSI, only off a terminal), or forge lines of a log (CR, LF).
_TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(line: str) -> str:
    """`line` with its control characters shown as escapes (`\\x1b`): inert on a terminal."""
    return _TERMINAL_CONTROLS.sub(lambda control: f"\\x{ord(control[0]):02x}", line)


# The contact centre's website starts web chats on the same account, one a visitor: a second of
# one request keeps a quiet evening's visitors served (issue 21's simulation: 0.35 % refused).
DEFAULT_RESERVE = 1.0


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
            _nowhere(sys.stderr)


def _voice() -> Voice:
    """The voice of the command running now: timestamps unless stderr is a terminal."""
    context = click.get_current_context(silent=True)
    runtime = context.find_object(Runtime) if context is not None else None
    isatty = runtime.stderr_isatty if runtime is not None else sys.stderr.isatty()
    return Voice(isatty=isatty)


def reports_errors(command: F) -> F:
    """Turn ProvisionerError into one clear line and its exit code; --traceback shows the stack."""

    @click.option("--traceback", "show_traceback", is_flag=True, help="Show the stack on errors.")
    @functools.wraps(command)
    def wrapper(*args: Any, show_traceback: bool, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ProvisionerError as error:
            if show_traceback:
                traceback.print_exc()
            _voice().always(f"error: {error}")
            sys.exit(error.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit, BrokenPipeError):
            raise  # a closed pipe is no bug: main() ends the command quietly
        except KeyboardInterrupt:  # before sending started; a run in progress stops gracefully
            _voice().always("interrupted")
            sys.exit(ExitCode.STOPPED)
        except Exception as error:
            if show_traceback:
                traceback.print_exc()
            _voice().always(
                f"internal error: {type(error).__name__}: {error} (a bug: rerun with "
                "--traceback and report it; a rerun is safe, the ledger keeps what was created)"
            )
            sys.exit(ExitCode.INTERNAL)

    return wrapper  # type: ignore[return-value]


# The kinds of value an option takes, each checked where it is parsed (one `error:` line, exit
# 2), whether it came from the command line, a PROVISIONER_* variable or the settings file.


class Number(click.FloatRange):
    """A finite number within a range (Click's FloatRange lets `nan` through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number}: give a finite number", param, ctx)
        return number


class Seconds(Number):
    """A number of seconds within a range."""

    name = "seconds"


class Rate(Number):
    """So many a second: 0 for none (no limit), else from `slowest` to MAX_RATE."""

    name = "rate"

    def __init__(self, slowest: float = MIN_RATE) -> None:
        super().__init__(0, MAX_RATE)
        self.slowest = slowest  # requests: MIN_RATE, the slowest pace a run keeps

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rate = super().convert(value, param, ctx)
        if 0 < rate < self.slowest:
            self.fail(
                f"{rate:g}/s is below {self.slowest:g}/s, the slowest this option takes; refused "
                f"(not raised): give at least {self.slowest:g}, or 0 for none",
                param,
                ctx,
            )
        return rate


class ApiRoot(click.ParamType[str, str]):
    """An API root URL, normalised (`endpoints.api_root`): https://HOST[:PORT]."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return api_root(str(value))
        except ConfigError as error:
            self.fail(str(error), param, ctx)


class FilePath(click.Path):
    """A path no file system refuses outright: no NUL byte (possible only from the settings
    file), no name longer than MAX_NAME_BYTES, at most MAX_PATH_BYTES in all."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            if "\0" in value:
                self.fail("a path cannot hold a NUL byte", param, ctx)
            encoded = os.fsencode(value)
            longest = max((len(part) for part in encoded.split(b"/")), default=0)
            if longest > MAX_NAME_BYTES or len(encoded) > MAX_PATH_BYTES:
                self.fail(
                    f"too long a path: names of at most {MAX_NAME_BYTES} bytes, "
                    f"{MAX_PATH_BYTES} in all",
                    param,
                    ctx,
                )
        return super().convert(value, param, ctx)


def output_options(command: F) -> F:
    """--out and --ledger, shared by the commands that read or write a ledger."""
    command = click.option(
        "--ledger",
        "ledger_path",
        type=FilePath(path_type=Path, dir_okay=False),
        envvar=env_name("ledger"),
        help="The ledger file (default: OUT/ledger.sqlite).",
    )(command)
    return click.option(
        "--out",
        "out_dir",
        type=FilePath(path_type=Path, file_okay=False),
        default=Path("outputs"),
        show_default=True,
        envvar=env_name("out"),
        help="Output root; each run writes into OUT/<run-id>/.",
    )(command)


class ColumnMapping(click.types.StringParamType):
    """PARAM=HEADER; several in one PROVISIONER_COLUMN variable, `;`-separated (headers have
    spaces, which Click would split on)."""

    name = "PARAM=HEADER"

    def split_envvar_value(self, rv: str) -> list[str]:
        return split_list(rv)


def _parse_columns(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    mapping = {}
    for value in values:
        name, sep, header = value.partition("=")
        if not sep or not name.strip() or not header:
            raise click.BadParameter(f'{value!r}: expected PARAM=HEADER, e.g. AddressSid="Address"')
        mapping[name.strip()] = header
    return mapping


def input_options(command: F) -> F:
    """How INPUT is read and mapped: shared by create and reconcile."""
    for decorator in reversed(
        [
            click.option(
                "--column",
                "columns",
                type=ColumnMapping(),
                envvar=env_name("column"),
                multiple=True,
                callback=_parse_columns,
                metavar="PARAM=HEADER",
                help="Read PARAM from column HEADER (repeatable; PARAM may be "
                "pre_engagement.KEY). Environment: PROVISIONER_COLUMN='A=B;C=D'.",
            ),
            click.option(
                "--encoding",
                envvar=env_name("encoding"),
                callback=_check_encoding,
                help="The CSV's text encoding, e.g. utf-8, cp1252 [default: detected: UTF-8, "
                "UTF-16 or UTF-32 with a BOM, or Windows-1252].",
            ),
            click.option(
                "--delimiter",
                envvar=env_name("delimiter"),
                callback=_check_delimiter,
                help="CSV delimiter [default: sniffed: comma, semicolon, tab or |].",
            ),
            click.option(
                "--sheet",
                envvar=env_name("sheet"),
                help="Workbook sheet to read [default: the first].",
            ),
            click.option(
                "--header-row",
                type=click.IntRange(1, MAX_SHEET_ROWS),
                envvar=env_name("header-row"),
                help="The sheet row that holds the headers [default: the first row naming "
                "an AddressSid column].",
            ),
        ]
    ):
        command = decorator(command)
    return command


def endpoint_options(command: F) -> F:
    """Where requests go: shared by create and reconcile."""
    command = click.option(
        "--conversations-url",
        type=ApiRoot(),
        envvar=env_name("conversations-url"),
        help="Conversations API root for lookups [default: --base-url when given, else "
        "https://conversations.twilio.com or from TWILIO_REGION/TWILIO_EDGE].",
    )(command)
    return click.option(
        "--base-url",
        type=ApiRoot(),
        envvar=env_name("base-url"),
        help="Flex API root [default: https://flex-api.twilio.com, or from "
        "TWILIO_REGION/TWILIO_EDGE].",
    )(command)


# The options that decide where requests, and the credentials with them, are sent.
_ENDPOINTS = ("base_url", "conversations_url")
# Where a setting comes from when the operator did not type it: named on the first lines.
_NOT_TYPED = (ParameterSource.DEFAULT_MAP, ParameterSource.ENVIRONMENT)


def pacing_options(command: F) -> F:
    """--rate, --timeout and --lookup-lag, shared by create and reconcile."""
    command = click.option(
        "--timeout",
        type=Seconds(0.01, 600),
        default=30.0,
        show_default=True,
        envvar=env_name("timeout"),
        help="Seconds for each whole answer.",
    )(command)
    command = click.option(
        "--lookup-lag",
        type=Seconds(0, 600),
        default=10.0,
        show_default=True,
        envvar=env_name("lookup-lag"),
        help="Seconds Twilio's participant index may lag behind a creation.",
    )(command)
    return click.option(
        "--rate",
        type=Rate(),
        default=DEFAULT_RATE,
        show_default=True,
        envvar=env_name("rate"),
        help="Requests per second at most, all workers together: 0.5 to 10000, or 0 for no "
        "limit. Twilio limits "
        "web chat creation to 5/s per account (Flex Conversations limits page); pass yours if "
        "Twilio raised it.",
    )(command)


def _check_encoding(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    problem = encoding_problem(value)
    if problem is not None:
        raise click.BadParameter(problem)
    return value


def _check_delimiter(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    value = {"\\t": "\t", "tab": "\t"}.get(value, value)
    if len(value) != 1 or value in "\"'\r\n":
        raise click.BadParameter(f"{value!r}: one character, such as , ; | or \\t")
    return value


def _check_run_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (problem := run_id_problem(value)) is not None:
        raise click.BadParameter(problem)
    return value


def _load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """--config (eager): the file's values become defaults, below the environment."""
    try:
        path = find_config(value, _working_directory())
        if path is not None:
            values = load_config(path, settings_tables(), ctx.command.name or "", own=PER_COMMAND)
            ctx.default_map = {**(ctx.default_map or {}), **values}
    except ProvisionerError as error:
        hint = None if value is not None else "the settings file"  # ./provisioner.toml, found
        raise click.BadParameter(str(error), param_hint=hint) from error
    ctx.meta["config_path"] = path
    return path


def _working_directory() -> Path:
    """Where ./provisioner.toml is looked for; a folder removed under the shell is an error."""
    try:
        return Path.cwd()
    except OSError as error:
        raise ConfigError(
            f"the working directory is gone ({error.strerror}): cd to an existing folder"
        ) from error


def config_option(command: F) -> F:
    """--config: the settings file, read before the other options (create, reconcile, status)."""
    return click.option(
        "--config",
        "config_path",
        type=FilePath(path_type=Path, dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=_load_config,
        help="Settings file [default: ./provisioner.toml when it exists; refused unless "
        "yours or root's, and writable by its owner only].",
    )(command)


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


class _Commands(click.Group):
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
            _voice().always("interrupted")
            sys.exit(ExitCode.STOPPED)
        except click.ClickException as error:
            where = (
                error.ctx.command_path if isinstance(error, click.UsageError) and error.ctx else ""
            )
            hint = f" (see {where} --help)" if where else ""
            _name_the_source(error)
            _voice().always(f"error: {error.format_message()}{hint}")
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


@click.group(
    cls=_Commands,
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


@cli.command("create", help=CREATE_HELP)
@click.argument("input_path", metavar="INPUT", type=FilePath(path_type=Path, allow_dash=True))
@output_options
@input_options
@endpoint_options
@click.option(
    "--sandbox",
    is_flag=True,
    envvar=env_name("sandbox"),
    help="Send to a local emulator started in-process; no credentials needed.",
)
@click.option(
    "--sandbox-live-rate",
    type=Rate(MIN_VISITOR_RATE),
    default=0.0,
    show_default=True,
    envvar=env_name("sandbox-live-rate"),
    help="With --sandbox: website visitors a second starting web chats on the same account "
    "(its limit --rate, 300 ms answers); the summary counts those the batch left refused.",
)
@pacing_options
@click.option(
    "--reserve",
    type=Number(0, MAX_RATE),
    default=DEFAULT_RESERVE,
    show_default=True,
    envvar=env_name("reserve"),
    help="Requests per second left for the account's other traffic (the contact centre's live "
    "web chats): the run books at most --rate minus this, and slows further when it meets "
    "others. 0 when nothing else uses the account (a night run, a staging account). Nothing "
    "to keep it from with --rate 0.",
)
@config_option
@click.option(
    "--run-id",
    callback=_check_run_id,
    help="The run folder's name [default: UTC time, e.g. 20261124T214500Z].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    envvar=env_name("concurrency"),
    help="Requests in flight at most; the run learns the account's real cap below it.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    envvar=env_name("max-attempts"),
    help="Tries per row, the first included.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    envvar=env_name("dry-run"),
    help="Validate and write the plan; send nothing.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Create again rows the ledger shows as created (never from the environment or a file).",
)
@click.option(
    "--strict",
    is_flag=True,
    envvar=env_name("strict"),
    help="Send nothing if any row is invalid (exit 2).",
)
@click.option(
    "--no-lookup",
    is_flag=True,
    envvar=env_name("no-lookup"),
    help="Do not look rows up at Twilio: a row whose answer was lost is sent again as it "
    "is (it may then have two web chats), and a new ledger's rows are sent without being "
    "looked up first (what another folder or host created is created again).",
)
@click.option(
    "--xlsx",
    is_flag=True,
    envvar=env_name("xlsx"),
    help="Write results.xlsx and errors.xlsx too (always, for a workbook input, or a file fed "
    "back from a run folder that has an errors.xlsx).",
)
@click.option(
    "--quiet", is_flag=True, envvar=env_name("quiet"), help="Only warnings, errors, the end."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar=env_name("json"),
    help="Print summary.json on stdout at the end.",
)
@click.pass_context
@reports_errors
def create_command(
    ctx: click.Context,
    input_path: Path,
    out_dir: Path,
    ledger_path: Path | None,
    columns: dict[str, str],
    encoding: str | None,
    delimiter: str | None,
    sheet: str | None,
    header_row: int | None,
    base_url: str | None,
    sandbox: bool,
    sandbox_live_rate: float,
    conversations_url: str | None,
    run_id: str | None,
    concurrency: int,
    rate: float,
    reserve: float,
    max_attempts: int,
    timeout: float,
    dry_run: bool,
    force: bool,
    strict: bool,
    no_lookup: bool,
    lookup_lag: float,
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
    if rate and rate - reserve < MIN_RATE:
        raise click.UsageError(
            f"--reserve {reserve:g} must be below --rate {rate:g}, by {MIN_RATE:g} at least: "
            "the run sends at most --rate minus --reserve a second (--reserve 0 for an account "
            "nothing else uses)"
        )
    base, conversations, credentials = _create_endpoint(
        runtime, base_url, conversations_url, sandbox=sandbox, dry_run=dry_run
    )
    options = RunOptions(
        input_path=input_path,
        out_dir=out_dir,
        run_id=run_id or new_run_id(out_dir),  # named on the first line, for cron logs
        concurrency=concurrency,
        rate=rate or None,
        reserve=reserve,
        max_attempts=max_attempts,
        timeout=timeout,
        base_url=base,
        conversations_url=conversations,
        dry_run=dry_run,
        sandbox=sandbox,
        sandbox_live_rate=sandbox_live_rate,
        force=force,
        strict=strict,
        ledger_path=ledger_path,
        columns=columns,
        encoding=encoding,
        delimiter=delimiter,
        sheet=sheet,
        header_row=header_row,
        lookups=not no_lookup,
        lookup_lag=lookup_lag,
        xlsx=xlsx,
        rerun_options=_rerun_options(ctx),
        settings=_settings(ctx),
    )
    _run_create(ctx, options, credentials, quiet=quiet, as_json=as_json)


def _api_roots(
    runtime: Runtime, base_url: str | None, conversations_url: str | None
) -> tuple[str, str]:
    """The Flex and Conversations API roots: given, from the environment, or Twilio's."""
    given = base_url or runtime.env.get("PROVISIONER_BASE_URL")
    return (
        resolve_base_url(base_url, runtime.env),
        resolve_conversations_url(conversations_url, given, runtime.env),
    )


def _create_endpoint(
    runtime: Runtime,
    base_url: str | None,
    conversations_url: str | None,
    *,
    sandbox: bool,
    dry_run: bool,
) -> tuple[str, str, Credentials | None]:
    """The API roots and credentials of a create: none for --sandbox (its emulator brings its
    own), and a dry run goes on without credentials."""
    if sandbox:
        return "", "", None
    base, conversations = _api_roots(runtime, base_url, conversations_url)
    try:
        return base, conversations, Credentials.from_env(runtime.env)
    except ProvisionerError:
        if not dry_run:
            raise
    return base, conversations, None


def _announce(ctx: click.Context, options: RunOptions, voice: Voice) -> None:
    """The run's first line (the input, the options given, the run id); variables misspelt."""
    shown = shlex.join([str(options.input_path), *_given(ctx)])
    voice(f"provisioner {__version__} create {shown} (run {options.run_id})")
    if not options.rate and ctx.get_parameter_source("reserve") is not ParameterSource.DEFAULT:
        voice("warning: --reserve does nothing with --rate 0: there is no rate to keep it from")
    # The sandbox's requests go to its own emulator, whatever the endpoint options say.
    roots = None if options.sandbox else (options.base_url, options.conversations_url)
    _name_sources(ctx, voice, roots)
    for typo in unknown_env(os.environ, _variable_options()):
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
    _print_summary(summary, voice)
    if as_json:
        click.echo(summary.to_json(), nl=False)
    if summary.abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        # requests left in flight are not waited for
        os._exit(ExitCode.BROKEN_PIPE if Voice.unread else summary.exit_code)
    sys.exit(summary.exit_code)


# Options a rerun of errors.csv repeats: those that shape sending and recording. How the first
# input was read (--sheet, --encoding, ...) does not apply to errors.csv, which this tool wrote.
_RERUN_OPTIONS = (
    "out_dir",
    "ledger_path",
    "columns",
    "base_url",
    "sandbox",
    "conversations_url",
    "concurrency",
    "rate",
    "reserve",
    "max_attempts",
    "timeout",
    "no_lookup",
    "lookup_lag",
    "xlsx",
)


def _name_sources(ctx: click.Context, voice: Voice, roots: tuple[str, str] | None) -> None:
    """The settings not typed, each with where it came from (the first line shows only what
    was typed); where the requests and credentials go (`roots`, when any are sent), when the
    settings file or a variable decided it, also under --quiet."""
    config_path = ctx.meta.get("config_path")
    names = [
        param.name
        for param in ctx.command.params
        if isinstance(param, click.Option) and param.name and param.name not in _ENDPOINTS
    ]
    for source, where in (
        (ParameterSource.DEFAULT_MAP, f"the file {config_path}"),
        (ParameterSource.ENVIRONMENT, f"the environment ({ENV_PREFIX}*)"),
    ):
        words = _option_words(ctx, names, source)
        if words:
            voice(f"settings from {where}: {shlex.join(words)}")
    if roots is None:
        # The sandbox's emulator takes every request: a run "creates" what never reaches Twilio.
        origin = ctx.get_parameter_source("sandbox") if "sandbox" in ctx.params else None
        if ctx.params.get("sandbox") and origin in _NOT_TYPED:
            label = source_label(origin.name, _flag(ctx, "sandbox"), config_path)
            voice.always(f"endpoint: --sandbox from the {label}; nothing reaches Twilio")
        return
    for name, root in zip(_ENDPOINTS, roots, strict=True):
        origin = ctx.get_parameter_source(name)
        if origin in _NOT_TYPED:
            flag = _flag(ctx, name)
            label = source_label(origin.name, flag, config_path)
            voice.always(f"endpoint: {flag} {root} from the {label}; the credentials go there")
    region = {name: ctx.obj.env.get(name, "") for name in REGION_VARIABLES} if ctx.obj else {}
    base_url, conversations_url = (ctx.params.get(name) for name in _ENDPOINTS)
    # Lookups go to the base URL when it is set, and to the region's host only when neither is.
    derived = [roots[0]] if not base_url else []
    derived += [roots[1]] if not (base_url or conversations_url) else []
    if any(region.values()) and derived:
        chosen = " ".join(f"{name}={value}" for name, value in region.items() if value)
        voice.always(
            f"endpoint: {' and '.join(derived)} from the environment ({chosen}); "
            "the credentials go there"
        )


def _flag(ctx: click.Context, name: str) -> str:
    """The long spelling of parameter `name` of the command running: `--base-url`."""
    return next(max(p.opts, key=len) for p in ctx.command.params if p.name == name)


def _option_words(
    ctx: click.Context, names: Sequence[str], only: ParameterSource | None = None
) -> list[str]:
    """The options `names` as command-line words, those not left at their default (`only`:
    those from this source)."""
    words: list[str] = []
    by_name = {param.name: param for param in ctx.command.params}
    for name in names:
        param = by_name[name]
        value = ctx.params.get(name)
        source = ctx.get_parameter_source(name)
        if source is ParameterSource.DEFAULT or value is None or value is False:
            continue
        if only is not None and source is not only:
            continue
        if isinstance(value, (tuple, dict)) and not value:
            continue
        flag = max(param.opts, key=len) if isinstance(param, click.Option) else name
        if isinstance(param, click.Option) and param.is_flag:
            words.append(flag)
        elif isinstance(value, dict):
            for key, header in value.items():
                words += [flag, f"{key}={header}"]
        else:
            words += [flag, str(value)]
    return words


def _rerun_options(ctx: click.Context) -> tuple[str, ...]:
    return tuple(_option_words(ctx, _RERUN_OPTIONS))


def _given(ctx: click.Context) -> list[str]:
    """The options typed on the command line, as words."""
    names = [p.name for p in ctx.command.params if p.name and p.name != "input_path"]
    return _option_words(ctx, names, ParameterSource.COMMANDLINE)


def _settings(ctx: click.Context) -> dict[str, dict[str, Any]]:
    """Every option's value and where it came from, for summary.json."""
    config_path = ctx.meta.get("config_path")
    settings = {}
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or not param.name or not param.expose_value:
            continue
        source = ctx.get_parameter_source(param.name)
        value = ctx.params.get(param.name)
        settings[param.name] = {
            "value": str(value) if isinstance(value, Path) else value,
            "source": source_label(
                source.name if source else "DEFAULT", max(param.opts, key=len), config_path
            ),
        }
    return settings


def _print_summary(summary: Summary, voice: Voice) -> None:
    for kept, line in end_of_run(summary):
        (voice.always if kept else voice)(line)


def _setting_kind(param: click.Parameter) -> type:
    if isinstance(param, click.Option) and param.is_flag:
        return bool
    if param.multiple:
        return list
    if isinstance(param.type, click.types.IntParamType):
        return int
    if isinstance(param.type, click.types.FloatParamType):
        return float
    if isinstance(param.type, click.Path):
        return Path
    return str


# Options that are a decision for one run, never a standing setting: they come only from the
# command line (creating again, closing chats, naming a run folder).
ONE_RUN_ONLY = ("run_id", "force", "close_duplicates", "show_traceback")
# How a command prints is its own: create's `json = true` in [create] does not make status print
# JSON. Every other option reconcile or status shares with create, set in [create], serves them.
PER_COMMAND = ("as_json", "quiet")
_CONFIGURED_COMMANDS = ("create", "reconcile", "status")


def _settings_of(command: click.Command) -> list[Setting]:
    """What provisioner.toml may set for `command`: its options, but --config and those above."""
    return [
        Setting(max(param.opts, key=len).lstrip("-"), param.name, _setting_kind(param))
        for param in command.params
        if isinstance(param, click.Option)
        and param.name
        and param.expose_value
        and param.name not in ONE_RUN_ONLY
    ]


@functools.cache
def settings_tables() -> dict[str, list[Setting]]:
    """Each configured command's settings, by the name of its table in provisioner.toml."""
    return {name: _settings_of(cli.commands[name]) for name in _CONFIGURED_COMMANDS}


def _variable_options() -> list[str]:
    """The options of every command that a PROVISIONER_* variable sets."""
    return sorted(
        {
            max(param.opts, key=len)
            for command in cli.commands.values()
            for param in command.params
            if isinstance(param, click.Option) and param.envvar
        }
    )


@cli.command("status")
@output_options
@click.option(
    "--runs",
    "limit",
    type=click.IntRange(1, MAX_RUNS_LISTED),
    default=10,
    show_default=True,
    help="How many recent runs to list.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON on stdout.")
@config_option
@reports_errors
def status_command(out_dir: Path, ledger_path: Path | None, limit: int, as_json: bool) -> None:
    """Show what the ledger knows: web chats created, rows unsettled, the last runs.

    Reads the ledger without changing it (a read-only ledger works).

    \b
    Example:
      provisioner status --out outputs
    """
    path = ledger_path or out_dir / "ledger.sqlite"
    status = read_status(path, limit)
    holder = lock_holder(path)
    runs = [
        {
            **run.__dict__,
            "state": (
                f"exit {run.exit_code}"
                if run.exit_code is not None
                else "in progress"
                if holder == run.pid
                else "did not finish (killed or crashed)"
            ),
        }
        for run in status.runs
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


@cli.command("reconcile")
@click.argument(
    "input_path",
    metavar="[INPUT]",
    required=False,
    type=FilePath(path_type=Path, allow_dash=True),
)
@output_options
@input_options
@endpoint_options
@click.option(
    "--close-duplicates",
    is_flag=True,
    help="Close (State=closed, never delete) the extra web chats of a row that has more than "
    "one, keeping the one the ledger records.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    envvar=env_name("concurrency"),
    help="Lookups in flight at most; learns the account's real cap below it, as create does.",
)
@pacing_options
@config_option
@click.pass_obj
@reports_errors
def reconcile_command(
    runtime: Runtime,
    input_path: Path | None,
    out_dir: Path,
    ledger_path: Path | None,
    columns: dict[str, str],
    encoding: str | None,
    delimiter: str | None,
    sheet: str | None,
    header_row: int | None,
    base_url: str | None,
    conversations_url: str | None,
    close_duplicates: bool,
    concurrency: int,
    timeout: float,
    lookup_lag: float,
    rate: float,
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
    base, conversations = _api_roots(runtime, base_url, conversations_url)
    options = ReconcileOptions(
        input_path=input_path,
        out_dir=out_dir,
        ledger_path=ledger_path,
        columns=columns,
        encoding=encoding,
        delimiter=delimiter,
        sheet=sheet,
        header_row=header_row,
        base_url=base,
        conversations_url=conversations,
        close_duplicates=close_duplicates,
        timeout=timeout,
        rate=rate or None,
        concurrency=concurrency,
        lookup_lag=lookup_lag,
    )
    voice = Voice(isatty=runtime.stderr_isatty)
    runtime.say = voice
    _name_sources(click.get_current_context(), voice, (base, conversations))
    result = reconcile(options, runtime, Credentials.from_env(runtime.env))
    for line in result.lines():
        voice.always(line)
    sys.exit(result.exit_code)


@cli.command("emulator")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Loopback address to listen on."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port (0: any free port; see --url-file).",
)
@click.option(
    "--url-file",
    type=FilePath(path_type=Path, dir_okay=False),
    help="Once listening, write the URL to this file (atomically); removed when stopped.",
)
@click.option(
    "--latency-ms",
    type=Number(0, EMULATOR_MAX_DELAY * 1000),
    default=0.0,
    show_default=True,
    help="Delay before each successful answer (creates, lookups and closes).",
)
@click.option(
    "--error-rate",
    type=Number(0, 1),
    default=0.0,
    show_default=True,
    help="Share of creates answered 500/502/503 or dropped, before creating anything.",
)
@click.option("--seed", type=int, help="Seed for --error-rate and the SIDs, to repeat a rehearsal.")
@click.option(
    "--rate-limit",
    type=Rate(),
    help="Creates per second above which it answers 429 (code 20429, Retry-After: 1).",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(1, EMULATOR_MAX_CONCURRENT),
    help="Requests in flight above which it answers 429 at once (code 20429, no Retry-After); "
    "every request counts, unless --conversations-max-concurrent gives lookups and closes a "
    "cap of their own.",
)
@click.option(
    "--conversations-max-concurrent",
    type=click.IntRange(1, EMULATOR_MAX_CONCURRENT),
    help="A cap of its own for the Conversations API's requests in flight (lookups, closes): "
    "--max-concurrent then counts web chat creations only.",
)
@click.option(
    "--lookup-lag-s",
    type=Seconds(0, EMULATOR_MAX_DELAY),
    default=0.0,
    show_default=True,
    help="Seconds before a new conversation shows in GET /v1/ParticipantConversations.",
)
@click.option(
    "--unknown-address",
    "unknown_addresses",
    multiple=True,
    metavar="SID",
    help="Answer creates for this AddressSid 404 (code 20404); repeatable.",
)
@click.option(
    "--record",
    type=FilePath(path_type=Path, dir_okay=False),
    help="When stopped, write each answer's time, HTTP status and kind to this CSV.",
)
@click.option(
    "--live-rate",
    type=Rate(MIN_VISITOR_RATE),
    default=0.0,
    show_default=True,
    help="Website visitors a second (Poisson, seeded by --seed), each starting a web chat "
    "through the same --rate-limit and --max-concurrent, never retried; counted when stopped.",
)
@click.pass_obj
@reports_errors
def emulator_command(
    runtime: Runtime,
    host: str,
    port: int,
    url_file: Path | None,
    latency_ms: float,
    error_rate: float,
    seed: int | None,
    rate_limit: float | None,
    max_concurrent: int | None,
    conversations_max_concurrent: int | None,
    lookup_lag_s: float,
    unknown_addresses: tuple[str, ...],
    record: Path | None,
    live_rate: float,
) -> None:
    """Serve a local Twilio emulator until stopped.

    It serves POST /v2/WebChats, GET /v1/ParticipantConversations and
    POST /v1/Conversations/{sid} (State=closed), and checks HTTP Basic auth:
    against TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN when they are set,
    otherwise against the sandbox credentials it prints. With --live-rate,
    simulated website visitors start web chats on the same account meanwhile.
    SIGTERM or Ctrl-C stops it (exit 0) after writing --record, and it prints
    what it served (and the visitors served and refused).

    \b
    Example:
      provisioner emulator --port 8765 --error-rate 0.1 --max-concurrent 4 \\
          --lookup-lag-s 2 --unknown-address IG00000000000000000000000000000001
      # in another terminal, with the same credentials in the environment:
      provisioner create big.csv --base-url http://127.0.0.1:8765
      # a busy hour on the website, beside the batch:
      provisioner emulator --rate-limit 5 --latency-ms 300 --live-rate 2 --seed 1
    """
    if not is_loopback(host):
        raise click.BadParameter("the emulator listens on loopback only", param_hint="--host")
    username, secret = standalone_credentials(runtime.env)
    try:
        emulator = Emulator(
            username=username,
            secret=secret,
            host=host,
            port=port,
            latency=latency_ms / 1000,
            error_rate=error_rate,
            rate_limit=rate_limit,
            max_concurrent=max_concurrent,
            conversations_max_concurrent=conversations_max_concurrent,
            lookup_lag=lookup_lag_s,
            seed=seed,
            record_answers=record is not None,
            live_rate=live_rate,
        )
    except OSError as error:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({error.strerror}); choose another --port"
        ) from error
    emulator.unknown_addresses.update(unknown_addresses)
    say(
        f"emulating POST {emulator.url}/v2/WebChats and GET {emulator.url}"
        "/v1/ParticipantConversations (Ctrl-C to stop)"
    )
    from_env = (runtime.env.get("TWILIO_ACCOUNT_SID"), runtime.env.get("TWILIO_AUTH_TOKEN"))
    if (username, secret) == from_env:
        say("accepting the credentials in TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    else:
        say(f"accepting: export TWILIO_ACCOUNT_SID={username} TWILIO_AUTH_TOKEN={secret}")
    serve_until_stopped(emulator, url_file=url_file, record=record)
    say(emulator_summary(emulator))


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
        _nowhere(sys.stdout)
        _nowhere(sys.stderr)
        sys.exit(ExitCode.BROKEN_PIPE)


def _nowhere(stream: TextIO) -> None:
    """Point `stream` at /dev/null, so that nothing written or flushed to it fails again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)
