"""What a run writes: one Outcome per row into results.csv and errors.csv, in input order."""

from __future__ import annotations

import heapq
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from provisioner.rows import ERROR_COLUMNS, RESULT_COLUMNS, Row
from provisioner.table import CsvWriter, write_atomically

REORDER_LIMIT = 10_000  # outcomes held back waiting for an earlier, slower row


class Status(StrEnum):
    """A row's final status; the values are a contract (results.csv, errors.csv, exit codes)."""

    CREATED = "created"
    EXISTING = "existing"
    INVALID = "invalid"
    FAILED = "failed"
    NOT_ATTEMPTED = "not_attempted"


@dataclass(frozen=True)
class Outcome:
    """What became of one row."""

    status: Status
    conversation_sid: str = ""
    identity: str = ""
    attempts: int = 0
    ambiguous_attempts: int = 0
    http_status: int | None = None
    error_code: str = ""
    error_message: str = ""
    request_id: str = ""
    # Failed after exhausting retries on errors Twilio calls transient (counts towards stopping).
    exhausted: bool = False


class ResultFiles:
    """results.csv and errors.csv, written as rows finish but always in input order."""

    def __init__(self, run_dir: Path, carried_headers: Sequence[str]) -> None:
        self.results_path = run_dir / "results.csv"
        self.errors_path = run_dir / "errors.csv"
        self._results = CsvWriter(self.results_path, [*carried_headers, *RESULT_COLUMNS])
        self._errors = CsvWriter(self.errors_path, [*carried_headers, *ERROR_COLUMNS])
        self._waiting: list[tuple[int, int, Row, Outcome]] = []
        self._next = 0
        self.counts: Counter[Status] = Counter()
        self.invalid_reasons: Counter[str] = Counter()
        self.ambiguous_rows = 0

    @property
    def waiting(self) -> int:
        """Outcomes held back until the rows before them finish."""
        return len(self._waiting)

    def add(self, sequence: int, row: Row, outcome: Outcome) -> None:
        """Accept the outcome of the `sequence`-th row (0-based); write whatever is now in order."""
        heapq.heappush(self._waiting, (sequence, row.number, row, outcome))
        written = False
        while self._waiting and self._waiting[0][0] == self._next:
            _, _, ready_row, ready = heapq.heappop(self._waiting)
            self._write(ready_row, ready)
            self._next += 1
            written = True
        if written:
            self._results.flush()
            self._errors.flush()

    def _write(self, row: Row, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        if outcome.status is Status.INVALID:
            self.invalid_reasons[outcome.error_code] += 1
        if outcome.ambiguous_attempts:
            self.ambiguous_rows += 1
        http_status = "" if outcome.http_status is None else str(outcome.http_status)
        self._results.write(
            [
                *row.cells,
                str(row.number),
                outcome.status.value,
                outcome.conversation_sid,
                outcome.identity,
                str(outcome.attempts),
                str(outcome.ambiguous_attempts),
                http_status,
                outcome.error_code,
                outcome.error_message,
                outcome.request_id,
                row.key,
            ]
        )
        if outcome.status not in (Status.CREATED, Status.EXISTING):
            self._errors.write(
                [
                    *row.cells,
                    str(row.number),
                    outcome.status.value,
                    outcome.error_code,
                    outcome.error_message,
                    row.key,
                ]
            )

    def close(self) -> None:
        """Close both files; every accepted outcome has been written."""
        assert not self._waiting, "outcomes still waiting for earlier rows"
        self._results.close()
        self._errors.close()


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
    rate: Mapping[str, float | int | None]
    base_url: str
    ledger: str
    files: Mapping[str, str]
    rerun_command: str

    def write(self, path: Path) -> None:
        """Write summary.json atomically."""
        write_atomically(path, json.dumps(asdict(self), indent=2) + "\n")


class RedactingFilter(logging.Filter):
    """Removes secrets from log records, whatever code produced them."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._secrets = [secret for secret in secrets if secret]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self._secrets:
            message = message.replace(secret, "[redacted]")
        record.msg, record.args = message, None
        return True


def status_counts(counts: Mapping[Status, int]) -> dict[str, int]:
    """Counts for every status, zeros included, in the contract's order."""
    return {status.value: counts.get(status, 0) for status in Status}
