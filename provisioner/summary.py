"""summary.json: the Summary of a run and its typed parts, written as the README's contract.

Every part is a frozen dataclass whose fields are summary.json's keys, in its order: the end of a
run (report.py) and report.html read the same attributes the file is written from, so renaming a
field is a type error where it is read, not a page that quietly breaks. A key that is no Python
name is one field's name with a trailing underscore (`from_` is written `from`; see `json_key`).
The parts made where their figures are (the causes in causes.py, the timeline's points in
limits_timeline.py) are defined there; the run's side, putting a Summary together from a run
that has ended, is run_summary.py's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from provisioner.causes import CauseCount, FailingRow
from provisioner.limits_model import LimitsState
from provisioner.limits_timeline import TimelinePoint
from provisioner.vocabulary import LookupResult
from provisioner.writers import write_atomically

# A setting's value as the command line gave it: a flag, a number, text, --column's mapping of
# parameters to headers, or None when it has no value (a path is written as text).
SettingValue = str | int | float | bool | Mapping[str, str] | None


@dataclass(frozen=True)
class Rate:
    """Requests a second: asked, settled (what to pass next time), now, the lowest; the 429s,
    those met under the run's own ceiling (other traffic's), and what the run yielded to."""

    requested: float | None = None  # None: no limit (--rate 0)
    settled: float | None = None  # None: no rate settled (the concurrency held the run back)
    final: float | None = None
    lowest: float | None = None
    throttled_429: int = 0
    reserve: float = 0.0  # requests a second left to the account's other traffic
    other_traffic_429: int = 0
    yielded_lowest: float | None = None  # the lowest rate the run yielded to for others

    @classmethod
    def of(cls, state: LimitsState, requested: float | None) -> Rate:
        """The rate asked (--rate; None for none) and where the run's went."""
        return cls(
            requested=requested,
            settled=state.settled_rate,
            final=state.rate,
            lowest=state.lowest_rate,
            throttled_429=state.throttled,
            reserve=state.reserve,
            other_traffic_429=state.others_throttled,
            yielded_lowest=state.lowest_yield,
        )


@dataclass(frozen=True)
class ConcurrencyLimits:
    """Requests in flight: asked, settled, now, the lowest, and the cap a 429 showed."""

    concurrency_requested: int = 0
    concurrency_settled: int = 0
    concurrency_final: int = 0
    concurrency_lowest: int = 0
    concurrency_cap: int | None = None

    @classmethod
    def of(cls, state: LimitsState, requested: int) -> ConcurrencyLimits:
        """The requests in flight asked (--concurrency) and where the run's went."""
        return cls(
            concurrency_requested=requested,
            concurrency_settled=state.settled_concurrency,
            concurrency_final=state.concurrency,
            concurrency_lowest=state.lowest_concurrency,
            concurrency_cap=state.cap,
        )


@dataclass(frozen=True)
class OtherTrafficSpell:
    """A stretch in which other traffic on the account drew 429s (UTC times), and what the run
    slowed to for it (requests a second)."""

    from_: str  # written `from`
    until: str
    throttled_429: int
    yielded_to: float
    others_estimated: float  # what the others used: --rate less the reserve less yielded_to


@dataclass(frozen=True)
class Duplicate:
    """A row key with more than one web chat at Twilio: the one kept and the others."""

    row_key: str
    conversation_sid: str
    others: Sequence[str]


@dataclass(frozen=True)
class Visitors:
    """--sandbox-live-rate: the website's visitors who arrived during the run, and their fate."""

    rate: float
    arrived: int
    served: int
    refused: int
    refused_share: float
    refused_by_rate_limit: int
    refused_by_concurrency_cap: int


@dataclass(frozen=True)
class SettingUsed:
    """An option's value for the run, and where it came from (command line, environment, ...)."""

    value: SettingValue
    source: str


@dataclass(frozen=True)
class Summary:
    """summary.json: how a run went, for people and for the tools that watch cron."""

    run_id: str
    input: str
    started_at: str
    ended_at: str
    duration_seconds: float
    rows: int
    counts: Mapping[str, int]
    invalid_reasons: Mapping[str, int]
    requests_sent: int
    exit_code: int
    stop_reason: str
    dry_run: bool
    warnings: Sequence[str]
    forced_rows: int
    ambiguous_rows: int
    in_flight_from_earlier_runs: int
    rate: Rate
    base_url: str
    ledger: str
    files: Mapping[str, str]
    rerun_command: str  # the first of rerun_commands: what people are told to run
    conversations_url: str = ""
    lookups: Mapping[LookupResult, int] = field(default_factory=dict)
    lookups_refused: str = ""
    duplicates: Sequence[Duplicate] = ()
    causes: Sequence[CauseCount] = ()
    failing_rows: Sequence[FailingRow] = ()
    limits: ConcurrencyLimits = field(default_factory=ConcurrencyLimits)
    timeline: Sequence[TimelinePoint] = ()
    # When other traffic on the account drew 429s, and what the run slowed to for it.
    other_traffic: Sequence[OtherTrafficSpell] = ()
    columns: Sequence[str] = ()
    settings: Mapping[str, SettingUsed] = field(default_factory=dict)
    abandoned: bool = False  # a second signal: requests in flight were not waited for
    visitors: Visitors | None = None  # --sandbox-live-rate: website visitors' fate
    # Every errors file written -> the command that feeds it back (errors.xlsx first).
    rerun_commands: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The summary as JSON text."""
        return json.dumps(asdict(self, dict_factory=_keys), indent=2) + "\n"

    def write(self, path: Path) -> None:
        """Write summary.json atomically."""
        write_atomically(path, self.to_json())


def json_key(name: str) -> str:
    """The summary.json key of a field: its name, less the underscore that keeps a key such as
    `from` (a Python keyword) from being one."""
    return name.removesuffix("_")


def _keys(items: list[tuple[str, object]]) -> dict[str, object]:
    """A part's fields as summary.json's keys (asdict's dict_factory)."""
    return {json_key(name): value for name, value in items}
