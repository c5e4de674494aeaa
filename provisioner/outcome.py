"""What became of a row: its outcome, and the result columns that report it.

One home for the columns a run appends to the input's own: their names, their order and how
each is filled. The statuses, lookup results and error codes an outcome holds are vocabulary.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from provisioner.vocabulary import ERROR_STATUSES, LookupResult, Status

if TYPE_CHECKING:  # rows.py imports the column names from here
    from provisioner.rows import Row


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


@dataclass(frozen=True)
class ResultColumn:
    """One column a run appends: its name, how it is filled, and whether errors.csv has it."""

    name: str
    fill: Callable[[Row, Outcome], str]
    in_errors: bool = False


ROW_KEY = "row_key"
SOURCE_ROW = "source_row"

RESULT_SCHEMA: tuple[ResultColumn, ...] = (
    ResultColumn("row", lambda row, outcome: str(row.number), in_errors=True),
    ResultColumn("status", lambda row, outcome: outcome.status.value, in_errors=True),
    ResultColumn("conversation_sid", lambda row, outcome: outcome.conversation_sid),
    ResultColumn("identity", lambda row, outcome: outcome.identity),
    ResultColumn("attempts", lambda row, outcome: str(outcome.attempts)),
    ResultColumn("ambiguous_attempts", lambda row, outcome: str(outcome.ambiguous_attempts)),
    ResultColumn(
        "http_status",
        lambda row, outcome: "" if outcome.http_status is None else str(outcome.http_status),
    ),
    ResultColumn("error_code", lambda row, outcome: outcome.error_code, in_errors=True),
    ResultColumn("error_message", lambda row, outcome: outcome.error_message, in_errors=True),
    ResultColumn("request_id", lambda row, outcome: outcome.request_id),
    ResultColumn(ROW_KEY, lambda row, outcome: row.key, in_errors=True),
    ResultColumn("lookup", lambda row, outcome: outcome.lookup.value),
    ResultColumn("duplicate_sids", lambda row, outcome: " ".join(outcome.duplicate_sids)),
    ResultColumn(SOURCE_ROW, lambda row, outcome: str(row.source_row), in_errors=True),
)
RESULT_COLUMNS = tuple(column.name for column in RESULT_SCHEMA)
ERROR_COLUMNS = tuple(column.name for column in RESULT_SCHEMA if column.in_errors)
# The result columns of earlier versions: a file ending in one of these was written by this tool.
EARLIER_RESULT_COLUMNS = (
    (
        "row",
        "status",
        "conversation_sid",
        "identity",
        "attempts",
        "ambiguous_attempts",
        "http_status",
        "error_code",
        "error_message",
        "request_id",
        ROW_KEY,
    ),
    ("row", "status", "error_code", "error_message", ROW_KEY),
)
TOOL_COLUMN_SUFFIXES = (RESULT_COLUMNS, ERROR_COLUMNS, *EARLIER_RESULT_COLUMNS)
