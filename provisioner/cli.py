"""The command line: parse options, call one function, map errors to exit codes."""

from __future__ import annotations

import functools
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from provisioner import __version__
from provisioner.client import Credentials, is_loopback, resolve_base_url
from provisioner.emulator import SANDBOX_ACCOUNT_SID, Emulator
from provisioner.errors import ConfigError, ExitCode, ProvisionerError
from provisioner.ledger import read_runs
from provisioner.report import Status, Summary
from provisioner.run import Progress, RunOptions, Runtime, check_run_id, create

F = TypeVar("F", bound=Callable[..., Any])
EMULATOR_TOKEN = "emulator-token"  # a stand-alone emulator's default; never a real secret
PLAIN_PROGRESS_EVERY = 5.0
PREVIEW_WARNINGS = 10  # seconds between progress lines when stderr is not a terminal


def say(line: str) -> None:
    """A line for people, on stderr."""
    click.echo(line, err=True)


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
            say(f"error: {error}")
            sys.exit(error.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:  # before sending started; a run in progress stops gracefully
            say("interrupted")
            sys.exit(ExitCode.STOPPED)
        except Exception as error:
            if show_traceback:
                traceback.print_exc()
            say(
                f"internal error: {type(error).__name__}: {error} "
                "(rerun with --traceback for details)"
            )
            sys.exit(ExitCode.STOPPED)

    return wrapper  # type: ignore[return-value]


def output_options(command: F) -> F:
    """--out and --ledger, shared by the commands that read or write a ledger."""
    command = click.option(
        "--ledger",
        "ledger_path",
        type=click.Path(path_type=Path, dir_okay=False),
        help="The ledger file (default: OUT/ledger.sqlite).",
    )(command)
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("outputs"),
        show_default=True,
        help="Output root; each run writes into OUT/<run-id>/.",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="provisioner")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Provision Twilio Flex web chats from a spreadsheet.

    \b
    Example:
      provisioner create inputs/example.csv --sandbox
    """
    ctx.ensure_object(Runtime)


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


def _check_run_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_run_id(value)
    except ProvisionerError as error:
        raise click.BadParameter(str(error).split(": ", 1)[-1]) from error


@cli.command("create")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@output_options
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
    help="Requests in flight at most.",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, min_open=False),
    default=20.0,
    show_default=True,
    help="Requests per second at most, all workers together; 0 for no limit.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    help="Tries per row, the first included.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.01),
    default=30.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@click.option(
    "--base-url",
    envvar="PROVISIONER_BASE_URL",
    help="API root [default: https://flex-api.twilio.com, or from TWILIO_REGION/TWILIO_EDGE].",
)
@click.option("--dry-run", is_flag=True, help="Validate and write the plan; send nothing.")
@click.option(
    "--sandbox",
    is_flag=True,
    help="Send to a local emulator started in-process; no credentials needed.",
)
@click.option("--force", is_flag=True, help="Create again rows the ledger shows as created.")
@click.option("--strict", is_flag=True, help="Send nothing if any row is invalid (exit 2).")
@click.option(
    "--column",
    "columns",
    multiple=True,
    callback=_parse_columns,
    metavar="PARAM=HEADER",
    help="Read PARAM from column HEADER (repeatable).",
)
@click.option(
    "--encoding", help="Input encoding [default: detected: UTF-8, UTF-16 or Windows-1252]."
)
@click.option("--delimiter", help="CSV delimiter [default: sniffed: comma, semicolon, tab or |].")
@click.option("--sheet", help="xlsx sheet to read [default: the first].")
@click.pass_obj
@reports_errors
def create_command(runtime: Runtime, /, **options: Any) -> None:
    """Create one Flex web chat per row of INPUT (CSV or xlsx).

    Writes OUT/<run-id>/results.csv, errors.csv, summary.json and run.log.
    Credentials come from TWILIO_ACCOUNT_SID + TWILIO_AUTH_TOKEN, or
    TWILIO_API_KEY + TWILIO_API_SECRET. Exit 0: all created or existing;
    1: some rows invalid or failed; 2: nothing sent (usage, input, config);
    3: stopped early.

    \b
    Examples:
      provisioner create inputs/example.csv --sandbox
      provisioner create customers.xlsx --rate 10 --concurrency 4
      provisioner create outputs/20261124T214500Z/errors.csv
    """
    sandbox = options["sandbox"]
    explicit_url = options.pop("base_url")
    base_url = "" if sandbox else resolve_base_url(explicit_url, runtime.env)
    rate = options.pop("rate") or None
    run_options = RunOptions(**options, base_url=base_url, rate=rate)
    credentials = None
    if not sandbox:
        try:
            credentials = Credentials.from_env(runtime.env)
        except ProvisionerError:
            if not run_options.dry_run:
                raise
    runtime.say = say
    runtime.progress = _progress_printer(runtime)
    summary = create(run_options, runtime, credentials)
    _print_summary(summary)
    sys.exit(summary.exit_code)


def _progress_printer(runtime: Runtime) -> Callable[[Progress], None]:
    """A progress bar on a terminal; a plain line every few seconds otherwise (cron)."""
    if sys.stderr.isatty():
        return _ProgressBar()
    return _ProgressLines(runtime.clock)


class _ProgressBar:
    """click's bar with rate and ETA, drawn on stderr."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._finished = False

    def __call__(self, progress: Progress) -> None:
        if self._finished:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=progress.total,
                label="provisioning",
                show_eta=True,
                show_pos=True,
                item_show_func=lambda text: text,
                file=sys.stderr,
            )
            self._bar.__enter__()
        rate = progress.done / progress.elapsed if progress.elapsed > 0 else 0.0
        self._bar.update(progress.done - self._bar.pos, f"{rate:.1f} rows/s")
        if progress.done >= progress.total:
            self._bar.__exit__(None, None, None)
            self._finished = True


class _ProgressLines:
    """A plain line every PLAIN_PROGRESS_EVERY seconds, and one at the end."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last = clock()
        self._finished = False

    def __call__(self, progress: Progress) -> None:
        now = self._clock()
        finished = progress.done >= progress.total
        if self._finished or (not finished and now - self._last < PLAIN_PROGRESS_EVERY):
            return
        self._last, self._finished = now, finished
        rate = progress.done / progress.elapsed if progress.elapsed > 0 else 0.0
        left = (progress.total - progress.done) / rate if rate else 0.0
        counts = ", ".join(f"{s.value} {n}" for s, n in progress.counts.items() if n)
        say(
            f"{time.strftime('%H:%M:%S')} {progress.done}/{progress.total} rows "
            f"({100 * progress.done / max(progress.total, 1):.1f}%), {rate:.1f} rows/s, "
            f"ETA {_duration(left)}; {counts or 'nothing yet'}; {progress.requests} requests"
        )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _print_summary(summary: Summary) -> None:
    counts = ", ".join(f"{summary.counts[s.value]} {s.value}" for s in Status)
    if summary.dry_run:
        reasons = ", ".join(f"{n} {code}" for code, n in summary.invalid_reasons.items())
        say(
            f"plan: {summary.counts['not_attempted']} to create, "
            f"{summary.counts['existing']} already created (existing), "
            f"{summary.counts['invalid']} invalid{f' ({reasons})' if reasons else ''}; nothing sent"
        )
        if len(summary.warnings) > PREVIEW_WARNINGS:
            say(f"... {len(summary.warnings)} warnings in all, listed in summary.json")
    else:
        say(f"done in {summary.duration_seconds:.1f}s: {counts} ({summary.requests_sent} requests)")
    if summary.stop_reason:
        say(f"stopped early: {summary.stop_reason}")
    if summary.ambiguous_rows:
        say(
            f"warning: {summary.ambiguous_rows} rows had a request whose answer was lost; "
            "they may have a duplicate web chat (see ambiguous_attempts in results.csv)"
        )
    if summary.forced_rows:
        say(f"--force: {summary.forced_rows} rows were created again")
    rate = summary.rate
    if rate["throttled_429"]:
        say(
            f"Twilio throttled {rate['throttled_429']} requests (429); "
            f"the rate settled at {rate['settled']:.1f}/s"
        )
    say(f"results: {summary.files['results']}")
    failed = summary.rows - summary.counts["created"] - summary.counts["existing"]
    say(f"errors:  {summary.files['errors']} ({failed} rows)")
    say(f"summary: {summary.files['summary']}")
    if summary.rerun_command:
        say(f"rerun the rest: {summary.rerun_command}")


@cli.command("status")
@output_options
@click.option(
    "--runs",
    "limit",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="How many recent runs to list.",
)
@reports_errors
def status_command(out_dir: Path, ledger_path: Path | None, limit: int) -> None:
    """Show what the ledger knows: rows created, by account and by run.

    \b
    Example:
      provisioner status --out outputs
    """
    path = ledger_path or out_dir / "ledger.sqlite"
    runs, by_scope = read_runs(path, limit)
    click.echo(f"ledger: {path}")
    for scope, created in sorted(by_scope.items()):
        click.echo(f"  {created} web chats created for {scope}")
    click.echo(f"last {len(runs)} runs:")
    for run in runs:
        ended = f"exit {run.exit_code}" if run.exit_code is not None else "did not finish (killed?)"
        reason = f" ({run.stop_reason})" if run.stop_reason else ""
        counts = ", ".join(f"{n} {s}" for s, n in run.counts.items() if n)
        click.echo(
            f"  {run.run_id}  {run.started_at}  {ended}{reason}  "
            f"created {run.created}  [{counts}]  {run.input}"
        )


@cli.command("emulator")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Loopback address to listen on."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port (0: any free port).",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Delay before each successful answer.",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of requests answered 500/502/503 or dropped, before creating anything.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(0, min_open=True),
    help="Requests per second above which it answers 429 (code 20429).",
)
@click.option(
    "--record",
    type=click.Path(path_type=Path, dir_okay=False),
    help="When stopped, write each answer's time and HTTP status to this CSV (for benchmarks).",
)
@click.pass_obj
@reports_errors
def emulator_command(
    runtime: Runtime,
    host: str,
    port: int,
    latency_ms: float,
    error_rate: float,
    rate_limit: float | None,
    record: Path | None,
) -> None:
    """Serve a local emulator of Twilio's POST /v2/WebChats until stopped.

    It checks HTTP Basic auth: against TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN
    when they are set, otherwise against the sandbox credentials it prints.

    \b
    Example:
      provisioner emulator --port 8765 --error-rate 0.1
      # in another terminal, with the same credentials in the environment:
      provisioner create big.csv --base-url http://127.0.0.1:8765
    """
    if not is_loopback(host):
        raise click.BadParameter("the emulator listens on loopback only", param_hint="--host")
    account = runtime.env.get("TWILIO_ACCOUNT_SID")
    token = runtime.env.get("TWILIO_AUTH_TOKEN")
    try:
        emulator = Emulator(
            username=account if account and token else SANDBOX_ACCOUNT_SID,
            secret=token if account and token else EMULATOR_TOKEN,
            host=host,
            port=port,
            latency=latency_ms / 1000,
            error_rate=error_rate,
            rate_limit=rate_limit,
            record_answers=record is not None,
        )
    except OSError as error:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({error.strerror}); choose another --port"
        ) from error
    say(f"emulating POST {emulator.url}/v2/WebChats (Ctrl-C to stop)")
    if account and token:
        say("accepting the credentials in TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    else:
        say(
            f"accepting: export TWILIO_ACCOUNT_SID={SANDBOX_ACCOUNT_SID} "
            f"TWILIO_AUTH_TOKEN={EMULATOR_TOKEN}"
        )
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.shutdown()
        if record is not None:
            lines = [f"{moment:.6f},{status}" for moment, status in emulator.answers]
            record.write_text("seconds,status\n" + "".join(line + "\n" for line in lines))
        say(f"served {emulator.requests} requests; created {len(emulator.created)} web chats")


def main() -> None:
    """Console entry point."""
    cli(prog_name="provisioner")
