"""The options that travel together: one frozen dataclass a group, the only home of each default.

`RunOptions` (create) and `ReconcileOptions` are made of these groups: those both commands take
(Output, InputReading, Endpoints, Pacing), create's own (Sandbox, Sending, Conduct, Reporting)
and reconcile's (Settling); --concurrency, which both take, is InFlight's, a part of Sending and
of Settling. The command line's options are built from the same fields (`provisioner/cli/
options.py` reads each default here), and so are the settings file's keys and the
PROVISIONER_* variables. Free of Click.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("outputs")
LEDGER_NAME = "ledger.sqlite"  # in the output root, shared by every run there
# Twilio's Flex Conversations limits page: "the Flex Webchat orchestrator currently has a rate
# limit of 5 requests per second" per account; raised only through Twilio sales.
DEFAULT_RATE = 5.0
# Twilio's participant index can lag behind a creation; a lookup sooner than this after the
# lost answer could miss the web chat. Twilio documents no figure: a few seconds is typical.
LOOKUP_LAG = 10.0
DEFAULT_TIMEOUT = 30.0  # seconds for each whole answer (the README's default)
DEFAULT_CONCURRENCY = 8  # requests in flight at most; a run learns the account's real cap below
# The contact centre's website starts web chats on the same account, one a visitor: a second of
# one request keeps a quiet evening's visitors served (issue 21's simulation: 0.35 % refused).
DEFAULT_RESERVE = 1.0
MAX_ATTEMPTS = 5  # tries per row, the first included (the README's default)


def default_of(group: type[Any], name: str) -> Any:
    """The default of field `name` of the dataclass `group` (for the command line's options)."""
    found = next(item for item in fields(group) if item.name == name)
    return found.default


def fields_of(*groups: object) -> dict[str, Any]:
    """The fields of `groups` (dataclasses) by name: the groups a command's options are made of,
    e.g. `ReconcileOptions(input_path=..., **fields_of(output, reading, ...))`."""
    return {item.name: getattr(group, item.name) for group in groups for item in fields(group)}  # type: ignore[arg-type]


def ledger_file(out_dir: Path, ledger_path: Path | None) -> Path:
    """The ledger: --ledger, else OUT/ledger.sqlite (the one place this default is worked out)."""
    return ledger_path or out_dir / LEDGER_NAME


@dataclass(frozen=True)
class Source:
    """The input a run reads (create's INPUT)."""

    input_path: Path


@dataclass(frozen=True)
class Output:
    """Where files go: the output root (--out) and the ledger (--ledger)."""

    out_dir: Path = DEFAULT_OUT
    ledger_path: Path | None = None

    @property
    def ledger_file(self) -> Path:
        """The ledger: --ledger, else OUT/ledger.sqlite."""
        return ledger_file(self.out_dir, self.ledger_path)


@dataclass(frozen=True, kw_only=True)
class InputReading:
    """How INPUT is read and mapped: --column, --encoding, --delimiter, --sheet, --header-row."""

    columns: Mapping[str, str] = field(default_factory=dict)
    encoding: str | None = None  # None: detected
    delimiter: str | None = None  # None: sniffed
    sheet: str | None = None  # None: the first
    header_row: int | None = None  # None: the first row naming an AddressSid column


@dataclass(frozen=True, kw_only=True)
class Endpoints:
    """Where requests go: the Flex and Conversations API roots ("" for the sandbox's own)."""

    base_url: str = ""
    conversations_url: str = ""


@dataclass(frozen=True, kw_only=True)
class Pacing:
    """How fast and how patiently requests go: --rate, --lookup-lag, --timeout."""

    rate: float | None = DEFAULT_RATE  # None: no limit (--rate 0)
    lookup_lag: float = LOOKUP_LAG
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True, kw_only=True)
class InFlight:
    """How many requests are in flight at most: --concurrency (create and reconcile)."""

    concurrency: int = DEFAULT_CONCURRENCY  # the account may hold fewer: a run learns its cap


@dataclass(frozen=True, kw_only=True)
class Sandbox:
    """create's rehearsal on a local emulator: --sandbox, --sandbox-live-rate."""

    sandbox: bool = False
    sandbox_live_rate: float = 0.0  # website visitors a second on the sandbox's account


@dataclass(frozen=True, kw_only=True)
class Sending(InFlight):
    """How create sends its rows: --concurrency, --reserve, --max-attempts."""

    reserve: float = DEFAULT_RESERVE  # requests a second left to the account's other traffic
    max_attempts: int = MAX_ATTEMPTS


@dataclass(frozen=True, kw_only=True)
class Conduct:
    """What one create run is and does: --run-id, --dry-run, --force, --strict, --no-lookup."""

    run_id: str | None = None  # None: named after the time it starts
    dry_run: bool = False
    force: bool = False
    strict: bool = False
    lookups: bool = True  # --no-lookup: False


@dataclass(frozen=True, kw_only=True)
class Reporting:
    """What create gives back besides its CSV files: --xlsx, --quiet, --json."""

    xlsx: bool = False
    quiet: bool = False
    as_json: bool = False


@dataclass(frozen=True, kw_only=True)
class Settling(InFlight):
    """How reconcile settles its rows: --close-duplicates, --concurrency (lookups in flight)."""

    close_duplicates: bool = False
