"""`provisioner emulator`: a local Twilio emulator, served until stopped."""

from __future__ import annotations

from pathlib import Path

import click

from provisioner.cli.exits import reports_errors
from provisioner.cli.values import MIN_VISITOR_RATE, FilePath, Number, Rate, Seconds
from provisioner.cli.voice import say
from provisioner.emulator import Emulator, serve_until_stopped, standalone_credentials
from provisioner.emulator import summary as emulator_summary
from provisioner.endpoints import is_loopback
from provisioner.errors import ConfigError
from provisioner.runtime import Runtime

# The emulator's delays (an answer's latency, the lookup index's lag): a rehearsal of minutes.
EMULATOR_MAX_DELAY = 3600.0
EMULATOR_MAX_CONCURRENT = 10_000  # far above any account's cap on requests in flight
DEFAULT_PORT = 8765  # the port the README's rehearsals use


@click.command("emulator")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Loopback address to listen on."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
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
