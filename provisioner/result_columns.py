"""The columns a run appends to the input's own: their names, their order, how each is filled
and which go to errors.csv; one home that the row checks (rows.py) and the reports both read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from provisioner.outcome import Outcome


class ResultRow(Protocol):
    """What the result columns read from a row (rows.Row has it)."""

    @property
    def number(self) -> int: ...
    @property
    def key(self) -> str: ...
    @property
    def source_row(self) -> int: ...


@dataclass(frozen=True)
class ResultColumn:
    """One column a run appends: its name, how it is filled, and whether errors.csv has it."""

    name: str
    fill: Callable[[ResultRow, Outcome], str]
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
