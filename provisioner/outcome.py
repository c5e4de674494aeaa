"""What became of a row: its status and its outcome.

One home for which statuses are errors (the columns that report an outcome are in
result_columns.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """A row's final status; the values are a contract (results.csv, errors.csv, exit codes)."""

    CREATED = "created"
    EXISTING = "existing"
    INVALID = "invalid"
    FAILED = "failed"
    NOT_ATTEMPTED = "not_attempted"


# The statuses that go to errors.csv (invalid and failed rows also make the exit code 1).
ERROR_STATUSES = frozenset({Status.INVALID, Status.FAILED, Status.NOT_ATTEMPTED})


DRY_RUN = "dry_run"  # the error code of a row a dry run would send
CUT_OFF = "cut_off"  # the error code of a request abandoned in flight by a second signal
STOPPED = "stopped"  # the error code of a row whose lookup a stop cut short (looked up next run)


class LookupResult(StrEnum):
    """What looking a row's identity up at Twilio found (the `lookup` column)."""

    NONE = ""  # no lookup was needed
    FOUND = "found"  # exactly one web chat: the row is created
    ABSENT = "absent"  # none: sending (again) was safe
    DUPLICATES = "duplicates"  # more than one web chat for this identity
    FAILED = "failed"  # the lookup could not answer


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
    lookup: LookupResult = LookupResult.NONE
    duplicate_sids: tuple[str, ...] = ()  # the other web chats found for the identity
    more_info: str = ""  # Twilio's link for the error code, when it sent one
    # Failed after exhausting retries on errors Twilio calls transient (counts towards stopping).
    exhausted: bool = False

    @property
    def is_error(self) -> bool:
        """The row goes to errors.csv."""
        return self.status in ERROR_STATUSES
