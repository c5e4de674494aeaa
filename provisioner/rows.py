"""The row model and its validation: which column is which parameter, row keys, problems."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from provisioner.errors import InputError

ADDRESS_SID = "AddressSid"
PARAMETERS = (
    ADDRESS_SID,
    "ChatFriendlyName",
    "CustomerFriendlyName",
    "PreEngagementData",
    "Identity",
)
CUSTOMER_ID = "customer_id"
ROW_KEY = "row_key"
PRE_ENGAGEMENT_PREFIX = "pre_engagement."

# Columns the tool appends to its outputs; an input carrying them is a fed-back output file.
RESULT_COLUMNS = (
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
)
ERROR_COLUMNS = ("row", "status", "error_code", "error_message", ROW_KEY)

_ADDRESS_SID_PATTERN = re.compile(r"IG[0-9a-fA-F]{32}")


def normalize_header(header: str) -> str:
    """Fold a header so that `Address SID`, `address_sid` and `AddressSid` compare equal."""
    return re.sub(r"[\s_\-]+", "", header).casefold()


@dataclass(frozen=True)
class Columns:
    """How an input's headers map onto parameters, keys and carried-through columns."""

    headers: tuple[str, ...]
    parameters: Mapping[str, int]
    pre_engagement: Mapping[str, int]
    customer_id: int | None
    row_key: int | None
    carried: tuple[int, ...]

    @property
    def carried_headers(self) -> list[str]:
        """The original headers that outputs repeat, in input order."""
        return [self.headers[index] for index in self.carried]

    @classmethod
    def resolve(cls, headers: Sequence[str], mapping: Mapping[str, str] | None = None) -> Columns:
        """Match headers to parameters; `mapping` (parameter -> header) overrides the matching."""
        headers = tuple(headers)
        tool_added = _tool_added_columns(headers)
        by_name: dict[str, list[int]] = {}
        for index, header in enumerate(headers):
            if index not in tool_added:
                by_name.setdefault(normalize_header(header), []).append(index)

        def find(name: str, explicit: str | None) -> int | None:
            if explicit is not None:
                positions = [
                    i for i, h in enumerate(headers) if h == explicit or h.strip() == explicit
                ]
                if not positions:
                    raise InputError(
                        f"--column {name}={explicit}: no such header; found: {_listing(headers)}"
                    )
                return positions[0]
            positions = by_name.get(normalize_header(name), [])
            if len(positions) > 1:
                raise InputError(
                    f"columns {_listing([headers[i] for i in positions])} all mean {name}; "
                    f"keep one, or pick one with --column {name}=HEADER"
                )
            return positions[0] if positions else None

        mapping = dict(mapping or {})
        known = {normalize_header(n): n for n in (*PARAMETERS, CUSTOMER_ID, ROW_KEY)}
        for name in mapping:
            if normalize_header(name) not in known:
                raise InputError(
                    f"--column {name}=...: unknown parameter; use one of {_listing(known.values())}"
                )
        mapping = {known[normalize_header(n)]: h for n, h in mapping.items()}

        found = {name: find(name, mapping.get(name)) for name in PARAMETERS}
        parameters = {name: index for name, index in found.items() if index is not None}
        if ADDRESS_SID not in parameters:
            raise InputError(
                f"no {ADDRESS_SID} column; found: {_listing(headers)}. "
                f"Use --column {ADDRESS_SID}=HEADER"
            )
        pre_engagement = {
            header.strip()[len(PRE_ENGAGEMENT_PREFIX) :]: index
            for index, header in enumerate(headers)
            if header.strip().casefold().startswith(PRE_ENGAGEMENT_PREFIX)
            and header.strip()[len(PRE_ENGAGEMENT_PREFIX) :]
        }
        if pre_engagement and "PreEngagementData" in parameters:
            raise InputError(
                "both a PreEngagementData column and pre_engagement.* columns; use one or the other"
            )
        row_key = find(ROW_KEY, mapping.get(ROW_KEY))
        carried = tuple(
            index for index in range(len(headers)) if index not in tool_added and index != row_key
        )
        return cls(
            headers=headers,
            parameters=parameters,
            pre_engagement=pre_engagement,
            customer_id=find(CUSTOMER_ID, mapping.get(CUSTOMER_ID)),
            row_key=row_key,
            carried=carried,
        )


def _tool_added_columns(headers: tuple[str, ...]) -> set[int]:
    """Positions of columns a previous run appended, recognised by its `row` and `status` pair."""
    if "row" not in headers or "status" not in headers:
        return set()
    added = set(RESULT_COLUMNS) - {ROW_KEY}
    return {index for index, header in enumerate(headers) if header in added}


def _listing(names: Iterable[str]) -> str:
    return ", ".join(repr(name) if name.strip() != name or not name else name for name in names)


@dataclass(frozen=True)
class Row:
    """One data row: what it carries through, what it asks Twilio for, its key, its problem."""

    number: int
    cells: tuple[str, ...]
    parameters: Mapping[str, str]
    key: str
    problem: str | None = None
    problem_code: str = ""


class RowBuilder:
    """Turns raw cells into Rows; keeps the file-wide state that keys and duplicates need."""

    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        self._first_row_of_customer: dict[str, int] = {}
        self._occurrences: dict[bytes, int] = {}

    def build(self, number: int, cells: Sequence[str]) -> Row:
        """Validate one row of cells (already padded to the header width) and give it a key."""
        columns = self.columns
        parameters = {
            name: value
            for name, index in columns.parameters.items()
            if (value := cells[index].strip())
        }
        if columns.pre_engagement:
            fields = {
                key: value
                for key, index in columns.pre_engagement.items()
                if (value := cells[index].strip())
            }
            if fields:
                parameters["PreEngagementData"] = json.dumps(fields, ensure_ascii=False)
        carried = tuple(cells[index] for index in columns.carried)
        problem, code = _problem(parameters)
        given_key = cells[columns.row_key].strip() if columns.row_key is not None else ""
        customer_id = cells[columns.customer_id].strip() if columns.customer_id is not None else ""
        if customer_id and problem is None:
            first = self._first_row_of_customer.setdefault(customer_id, number)
            if first != number:
                problem = f"duplicate customer_id {customer_id!r} (first at row {first})"
                code = "duplicate_customer_id"
        key = given_key or customer_id or self._derived_key(parameters)
        return Row(number, carried, parameters, key, problem, code)

    def _derived_key(self, parameters: Mapping[str, str]) -> str:
        """A key from what the row asks for; the n-th identical row gets suffix `:n`."""
        content = json.dumps([parameters.get(name, "") for name in PARAMETERS]).encode()
        digest = hashlib.sha256(content).digest()[:10]
        count = self._occurrences.get(digest, 0) + 1
        self._occurrences[digest] = count
        base = "auto:" + digest.hex()
        return base if count == 1 else f"{base}:{count}"


def _problem(parameters: Mapping[str, str]) -> tuple[str | None, str]:
    address = parameters.get(ADDRESS_SID, "")
    if not address:
        return f"{ADDRESS_SID} is empty", "missing_address_sid"
    if not _ADDRESS_SID_PATTERN.fullmatch(address):
        return (
            f"{ADDRESS_SID} {address!r} is not IG followed by 32 hex digits",
            "invalid_address_sid",
        )
    return None, ""


def build_rows(columns: Columns, numbered_cells: Iterable[tuple[int, list[str]]]) -> Iterator[Row]:
    """Rows for every non-blank line of cells."""
    builder = RowBuilder(columns)
    for number, cells in numbered_cells:
        yield builder.build(number, cells)
