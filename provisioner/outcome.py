"""What became of a row: its outcome.

One home for which statuses are errors (the statuses, lookup results and error codes an
outcome holds are vocabulary.py's; the columns that report an outcome are result_columns.py's).
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.vocabulary import ERROR_STATUSES, LookupResult, Status


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
