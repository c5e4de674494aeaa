"""The row model and its validation: which column is which parameter, row keys, problems."""

from __future__ import annotations

import hashlib
import json
import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from provisioner.cells import unescape_formula
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
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


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
    fed_back: bool  # a file this tool wrote (its `row` and `status` columns are there)

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
            fed_back=bool(tool_added),
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


@dataclass(frozen=True)
class Repeats:
    """What the first pass over a file learnt: which values occur more than once.

    Holding 64-bit hashes of every customer id of a million-row file in a set would cost
    ~100 MB; a sorted array costs 8 MB, and only the repeated hashes are kept. They are
    candidates: the second pass compares the real values, so a hash collision costs nothing.
    """

    customer_ids: frozenset[int]
    contents: frozenset[int]
    duplicate_rows: int  # rows whose customer_id an earlier row already has

    @classmethod
    def of(cls, customer_ids: array[int], contents: array[int]) -> Repeats:
        """Find the repeated hashes among those collected."""
        repeated_ids, duplicate_rows = _repeated(customer_ids)
        repeated_contents, _ = _repeated(contents)
        return cls(frozenset(repeated_ids), frozenset(repeated_contents), duplicate_rows)


def _repeated(hashes: array[int]) -> tuple[set[int], int]:
    ordered = array("Q", sorted(hashes))
    repeated: set[int] = set()
    extra = 0
    for index in range(1, len(ordered)):
        if ordered[index] == ordered[index - 1]:
            repeated.add(ordered[index])
            extra += 1
    return repeated, extra


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest())


class RowBuilder:
    """Turns raw cells into Rows.

    Made twice per run: the first pass (`repeats=None`) collects hashes so that `repeats()`
    can say which customer ids and row contents repeat; the second pass uses that to flag
    duplicate customer ids and to number identical rows, keeping state only for repeats.
    """

    def __init__(self, columns: Columns, repeats: Repeats | None = None) -> None:
        self.columns = columns
        self._repeats = repeats
        self._id_hashes: array[int] = array("Q")
        self._content_hashes: array[int] = array("Q")
        self._first_row_of_customer: dict[str, int] = {}
        self._occurrences: dict[str, int] = {}

    def repeats(self) -> Repeats:
        """After a first pass: the repeated values, for the second pass."""
        return Repeats.of(self._id_hashes, self._content_hashes)

    def build(self, number: int, cells: Sequence[str]) -> Row:
        """Validate one row of trimmed cells (padded to the header width) and give it a key."""
        columns = self.columns
        if columns.fed_back:
            cells = [unescape_formula(cell) for cell in cells]
        parameters = {
            name: value for name, index in columns.parameters.items() if (value := cells[index])
        }
        if columns.pre_engagement:
            fields = {
                key: value
                for key, index in columns.pre_engagement.items()
                if (value := cells[index])
            }
            if fields:
                parameters["PreEngagementData"] = json.dumps(fields, ensure_ascii=False)
        carried = tuple(cells[index] for index in columns.carried)
        problem, code = _problem(parameters)
        given_key = cells[columns.row_key] if columns.row_key is not None else ""
        customer_id = cells[columns.customer_id] if columns.customer_id is not None else ""
        if customer_id and problem is None:
            first = self._first_row(customer_id, number)
            if first != number:
                problem = f"duplicate customer_id {customer_id!r} (first at row {first})"
                code = "duplicate_customer_id"
        key = given_key or customer_id or self._derived_key(parameters)
        return Row(number, carried, parameters, key, problem, code)

    def _first_row(self, customer_id: str, number: int) -> int:
        if self._repeats is None:
            self._id_hashes.append(_hash64(customer_id))
            return number
        if _hash64(customer_id) not in self._repeats.customer_ids:
            return number
        return self._first_row_of_customer.setdefault(customer_id, number)

    def _derived_key(self, parameters: Mapping[str, str]) -> str:
        """A key from what the row asks for; the n-th identical row gets suffix `:n`."""
        content = json.dumps([parameters.get(name, "") for name in PARAMETERS])
        digest = hashlib.blake2b(content.encode(), digest_size=10).digest()
        base = "auto:" + digest.hex()
        prefix = int.from_bytes(digest[:8])
        if self._repeats is None:
            self._content_hashes.append(prefix)
            return base
        if prefix not in self._repeats.contents:
            return base
        count = self._occurrences.get(base, 0) + 1
        self._occurrences[base] = count
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
    for name, value in parameters.items():
        if _CONTROL_CHARACTERS.search(value):
            return (
                f"{name} contains control characters (such as NUL); it must be plain text",
                "not_text",
            )
    return None, ""
