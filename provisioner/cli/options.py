"""The commands' options, each defined once: its flag, type, default (read from the dataclass of
its group, options.py), help, where its value may come from and whether a rerun repeats it (its
PROVISIONER_* variable and settings key derived from these and its name, settings.py). A group's
options reach the command as one dataclass."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import click

from provisioner.cli.settings import Option, Origin, per_command, settings_tables
from provisioner.cli.values import (
    MAX_RATE,
    MIN_VISITOR_RATE,
    ApiRoot,
    ColumnMapping,
    FilePath,
    Number,
    Rate,
    Seconds,
    check_delimiter,
    check_encoding,
    check_run_id,
    parse_columns,
)
from provisioner.config import find_config, load_config
from provisioner.errors import ConfigError, ProvisionerError
from provisioner.options import (
    Conduct,
    Endpoints,
    InFlight,
    InputReading,
    Output,
    Pacing,
    Reporting,
    Sandbox,
    Sending,
    Settling,
    default_of,
)
from provisioner.table import MAX_SHEET_ROWS

F = TypeVar("F", bound=Callable[..., Any])
MAX_CONCURRENCY = 256  # requests in flight at most, whatever an account allows
MAX_ATTEMPTS_ALLOWED = 20  # the most --max-attempts takes


def setting(name: str, *declarations: str, rerun: bool, **attributes: Any) -> Callable[[F], F]:
    """Option --`name`, which its PROVISIONER_<NAME> variable and the settings file set too;
    `rerun`: a rerun of errors.csv repeats it."""
    return click.option(
        f"--{name}", *declarations, cls=Option, origin=Origin.ENVIRONMENT, rerun=rerun, **attributes
    )


def command_line_option(*declarations: str, **attributes: Any) -> Callable[[F], F]:
    """An option only the command line gives (a decision for one run, or how this one reads its
    settings): no variable, no settings key, never repeated by a rerun."""
    return click.option(
        *declarations, cls=Option, origin=Origin.COMMAND_LINE, rerun=False, **attributes
    )


def _grouped(
    argument: str,
    build: Callable[..., Any],
    names: Sequence[str],
    options: Sequence[Callable[[Any], Any]],
) -> Callable[[F], F]:
    """`options` (in --help's order), whose values reach the command as one argument,
    `build(**values)`, instead of one argument each. `names` may name an option of the group
    that the command places apart, where its --help has always shown it (create's --reserve,
    --run-id)."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def packed(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return command(*args, **{argument: build(**values)}, **kwargs)

        decorated: Any = packed
        for option in reversed(options):
            decorated = option(decorated)
        return decorated  # type: ignore[no-any-return]

    return decorate


def _names(group: type[Any]) -> list[str]:
    return [item.name for item in fields(group)]


# --out and --ledger (an Output), shared by the commands that read or write a ledger.
output_options = _grouped(
    "output",
    Output,
    _names(Output),
    [
        setting(
            "out",
            "out_dir",
            rerun=True,
            type=FilePath(path_type=Path, file_okay=False),
            default=default_of(Output, "out_dir"),
            show_default=True,
            help="Output root; each run writes into OUT/<run-id>/.",
        ),
        setting(
            "ledger",
            "ledger_path",
            rerun=True,
            type=FilePath(path_type=Path, dir_okay=False),
            help="The ledger file (default: OUT/ledger.sqlite).",
        ),
    ],
)

# How INPUT is read and mapped (an InputReading): shared by create and reconcile.
input_options = _grouped(
    "reading",
    InputReading,
    _names(InputReading),
    [
        setting(
            "column",
            "columns",
            rerun=True,
            type=ColumnMapping(),
            multiple=True,
            callback=parse_columns,
            metavar="PARAM=HEADER",
            help="Read PARAM from column HEADER (repeatable; PARAM may be "
            "pre_engagement.KEY). Environment: PROVISIONER_COLUMN='A=B;C=D'.",
        ),
        setting(
            "encoding",
            rerun=False,
            callback=check_encoding,
            help="The CSV's text encoding, e.g. utf-8, cp1252 [default: detected: UTF-8, "
            "UTF-16 or UTF-32 with a BOM, or Windows-1252].",
        ),
        setting(
            "delimiter",
            rerun=False,
            callback=check_delimiter,
            help="CSV delimiter [default: sniffed: comma, semicolon, tab or |].",
        ),
        setting("sheet", rerun=False, help="Workbook sheet to read [default: the first]."),
        setting(
            "header-row",
            rerun=False,
            type=click.IntRange(1, MAX_SHEET_ROWS),
            help="The sheet row that holds the headers [default: the first row naming "
            "an AddressSid column].",
        ),
    ],
)


def _given_endpoints(base_url: str | None, conversations_url: str | None) -> Endpoints:
    """The API roots as given: "" for one not given (endpoints.api_roots works it out)."""
    return Endpoints(base_url=base_url or "", conversations_url=conversations_url or "")


# Where requests go, as given (an Endpoints, "" where not given): shared by create and
# reconcile; endpoints.api_roots works out the rest.
endpoint_options = _grouped(
    "endpoints",
    _given_endpoints,
    _names(Endpoints),
    [
        setting(
            "base-url",
            rerun=True,
            type=ApiRoot(),
            help="Flex API root [default: https://flex-api.twilio.com, or from "
            "TWILIO_REGION/TWILIO_EDGE].",
        ),
        setting(
            "conversations-url",
            rerun=True,
            type=ApiRoot(),
            help="Conversations API root for lookups [default: --base-url when given, else "
            "https://conversations.twilio.com or from TWILIO_REGION/TWILIO_EDGE].",
        ),
    ],
)


def _pacing(rate: float, lookup_lag: float, timeout: float) -> Pacing:
    """The pacing options; --rate 0 is no limit (None)."""
    return Pacing(rate=rate or None, lookup_lag=lookup_lag, timeout=timeout)


# --rate, --lookup-lag and --timeout (a Pacing), shared by create and reconcile.
pacing_options = _grouped(
    "pacing",
    _pacing,
    _names(Pacing),
    [
        setting(
            "rate",
            rerun=True,
            type=Rate(),
            default=default_of(Pacing, "rate"),
            show_default=True,
            help="Requests per second at most, all workers together: 0.5 to 10000, or 0 for no "
            "limit. Twilio limits "
            "web chat creation to 5/s per account (Flex Conversations limits page); pass yours "
            "if Twilio raised it.",
        ),
        setting(
            "lookup-lag",
            rerun=True,
            type=Seconds(0, 600),
            default=default_of(Pacing, "lookup_lag"),
            show_default=True,
            help="Seconds Twilio's participant index may lag behind a creation.",
        ),
        setting(
            "timeout",
            rerun=True,
            type=Seconds(0.01, 600),
            default=default_of(Pacing, "timeout"),
            show_default=True,
            help="Seconds for each whole answer.",
        ),
    ],
)


def _concurrency_option(help_text: str) -> Callable[[F], F]:
    """--concurrency (an InFlight's), shared by create and reconcile, each saying what is in
    flight."""
    return setting(
        "concurrency",
        rerun=True,
        type=click.IntRange(1, MAX_CONCURRENCY),
        default=default_of(InFlight, "concurrency"),
        show_default=True,
        help=help_text,
    )


# create's own groups. --sandbox and --sandbox-live-rate (a Sandbox).
sandbox_options = _grouped(
    "sandbox",
    Sandbox,
    _names(Sandbox),
    [
        setting(
            "sandbox",
            rerun=True,
            is_flag=True,
            help="Send to a local emulator started in-process; no credentials needed.",
        ),
        setting(
            "sandbox-live-rate",
            rerun=False,
            type=Rate(MIN_VISITOR_RATE),
            default=default_of(Sandbox, "sandbox_live_rate"),
            show_default=True,
            help="With --sandbox: website visitors a second starting web chats on the same "
            "account (its limit --rate, 300 ms answers); the summary counts those the batch "
            "left refused.",
        ),
    ],
)

# --reserve, of the Sending below: create's --help shows it after the pacing options.
reserve_option = setting(
    "reserve",
    rerun=True,
    type=Number(0, MAX_RATE),
    default=default_of(Sending, "reserve"),
    show_default=True,
    help="Requests per second left for the account's other traffic (the contact centre's live "
    "web chats): the run books at most --rate minus this, and slows further when it meets "
    "others. 0 when nothing else uses the account (a night run, a staging account). Nothing "
    "to keep it from with --rate 0.",
)

# --concurrency, --max-attempts and --reserve (placed apart, above): a Sending.
sending_options = _grouped(
    "sending",
    Sending,
    _names(Sending),
    [
        _concurrency_option(
            "Requests in flight at most; the run learns the account's real cap below it."
        ),
        setting(
            "max-attempts",
            rerun=True,
            type=click.IntRange(1, MAX_ATTEMPTS_ALLOWED),
            default=default_of(Sending, "max_attempts"),
            show_default=True,
            help="Tries per row, the first included.",
        ),
    ],
)

# --run-id, of the Conduct below: create's --help shows it before --concurrency. A decision
# for one run, never a standing setting: no variable, no settings key.
run_id_option = command_line_option(
    "--run-id",
    callback=check_run_id,
    help="The run folder's name [default: UTC time, e.g. 20261124T214500Z].",
)


def _conduct(
    run_id: str | None, dry_run: bool, force: bool, strict: bool, no_lookup: bool
) -> Conduct:
    """What the run is and does; --no-lookup is a run without lookups."""
    return Conduct(
        run_id=run_id, dry_run=dry_run, force=force, strict=strict, lookups=not no_lookup
    )


# --dry-run, --force, --strict, --no-lookup and --run-id (placed apart, above): a Conduct.
conduct_options = _grouped(
    "conduct",
    _conduct,
    ["run_id", "dry_run", "force", "strict", "no_lookup"],
    [
        setting(
            "dry-run", rerun=False, is_flag=True, help="Validate and write the plan; send nothing."
        ),
        command_line_option(
            "--force",
            is_flag=True,
            help="Create again rows the ledger shows as created (never from the environment or "
            "a file).",
        ),
        setting(
            "strict", rerun=False, is_flag=True, help="Send nothing if any row is invalid (exit 2)."
        ),
        setting(
            "no-lookup",
            rerun=True,
            is_flag=True,
            help="Do not look rows up at Twilio: a row whose answer was lost is sent again as "
            "it is (it may then have two web chats), and a new ledger's rows are sent without "
            "being looked up first (what another folder or host created is created again).",
        ),
    ],
)

# --xlsx, --quiet and --json (a Reporting).
reporting_options = _grouped(
    "reporting",
    Reporting,
    _names(Reporting),
    [
        setting(
            "xlsx",
            rerun=True,
            is_flag=True,
            help="Write results.xlsx and errors.xlsx too (always, for a workbook input, or a "
            "file fed back from a run folder that has an errors.xlsx).",
        ),
        setting(
            "quiet", rerun=False, own=True, is_flag=True, help="Only warnings, errors, the end."
        ),
        setting(
            "json",
            "as_json",
            rerun=False,
            own=True,
            is_flag=True,
            help="Print summary.json on stdout at the end.",
        ),
    ],
)

# reconcile's own: --close-duplicates and --concurrency (a Settling).
settling_options = _grouped(
    "settling",
    Settling,
    _names(Settling),
    [
        command_line_option(
            "--close-duplicates",
            is_flag=True,
            help="Close (State=closed, never delete) the extra web chats of a row that has more "
            "than one, keeping the one the ledger records.",
        ),
        _concurrency_option(
            "Lookups in flight at most; learns the account's real cap below it, as create does."
        ),
    ],
)


def _load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """--config (eager): the file's values become defaults, below the environment."""
    try:
        path = find_config(value, _working_directory())
        if path is not None:
            values = load_config(path, settings_tables(), ctx.command.name or "", own=per_command())
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
    return command_line_option(
        "--config",
        "config_path",
        type=FilePath(path_type=Path, dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=_load_config,
        help="Settings file [default: ./provisioner.toml when it exists; refused unless "
        "yours or root's, and writable by its owner only].",
    )(command)
