"""The row model and its validation: which column is which parameter, row keys, problems."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from provisioner.cells import key_fingerprint, spreadsheet_changed, unescape_cell
from provisioner.errors import InputError
from provisioner.result_columns import (
    ROW_KEY,
    SOURCE_ROW,
    TOOL_COLUMN_SUFFIXES,
)
from provisioner.vocabulary import ErrorCode

ADDRESS_SID = "AddressSid"
PARAMETERS = (
    ADDRESS_SID,
    "ChatFriendlyName",
    "CustomerFriendlyName",
    "PreEngagementData",
    "Identity",
)
IDENTITY = "Identity"
CUSTOMER_ID = "customer_id"
PRE_ENGAGEMENT_PREFIX = "pre_engagement."
IDENTITY_PREFIX = "prv-"  # derived identities; Twilio takes any string, ours are ASCII <= 64

ADDRESS_SID_PATTERN = re.compile(r"IG[0-9a-fA-F]{32}")
# C0 but tab and line breaks, DEL, and C1 (U+0080-U+009F: U+009B starts a terminal escape)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def normalize_header(header: str) -> str:
    """Fold a header so that `Address SID`, `address_sid` and `AddressSid` compare equal."""
    return re.sub(r"[\s_\-]+", "", header).casefold()


def derive_identity(scope: str, row_key: str) -> str:
    """The identity a row's web chat gets when the input names none: stable, ASCII, 36 chars.

    Derived from the ledger scope (account and API host) and the row key, so the same row gets
    the same identity on every run and machine, and a lookup at Twilio finds its web chat.
    """
    digest = hashlib.blake2b(f"{scope}\0{row_key}".encode(), digest_size=16).hexdigest()
    return IDENTITY_PREFIX + digest


@dataclass(frozen=True)
class Columns:
    """How an input's headers map onto parameters, keys and carried-through columns."""

    headers: tuple[str, ...]
    parameters: Mapping[str, int]
    pre_engagement: Mapping[str, int]
    customer_id: int | None
    row_key: int | None
    source_row: int | None  # a fed-back file's pointer to the original sheet's row
    carried: tuple[int, ...]
    fed_back: bool  # a file this tool wrote: its headers end with the tool's columns

    @property
    def carried_headers(self) -> list[str]:
        """The original headers that outputs repeat, in input order."""
        return [self.headers[index] for index in self.carried]

    def describe(self) -> list[str]:
        """Which column is sent as which parameter, and which are only carried through."""
        lines = [
            f"{self.headers[index]!r} -> {name}" for name, index in self.parameters.items()
        ] + [
            f"{self.headers[index]!r} -> PreEngagementData.{key}"
            for key, index in self.pre_engagement.items()
        ]
        used = {*self.parameters.values(), *self.pre_engagement.values()}
        if self.customer_id is not None:
            lines.append(f"{self.headers[self.customer_id]!r} -> the row key (not sent)")
            used.add(self.customer_id)
        others = [self.headers[index] for index in self.carried if index not in used]
        if others:
            lines.append(f"carried to the outputs only, not sent: {_listing(others)}")
        return lines

    @classmethod
    def resolve(cls, headers: Sequence[str], mapping: Mapping[str, str] | None = None) -> Columns:
        """Match headers to parameters; `mapping` (parameter -> header) overrides the matching."""
        headers = tuple(headers)
        tool_added = _tool_added_columns(headers)
        finder = _HeaderFinder(headers, tool_added)
        mapping = _canonical_mapping(mapping or {})
        found = {name: finder.find(name, mapping.get(name)) for name in PARAMETERS}
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
            and index not in tool_added
        }
        for name, header in mapping.items():
            if name.startswith(PRE_ENGAGEMENT_PREFIX):
                index = finder.find(name, header)
                assert index is not None  # an explicit header is found or raises
                pre_engagement[name[len(PRE_ENGAGEMENT_PREFIX) :]] = index
        if pre_engagement and "PreEngagementData" in parameters:
            raise InputError(
                "both a PreEngagementData column and pre_engagement.* columns; use one or the other"
            )
        row_key = _tool_column(headers, tool_added, ROW_KEY)
        if row_key is None:
            row_key = finder.find(ROW_KEY, mapping.get(ROW_KEY))
        source_row = _tool_column(headers, tool_added, SOURCE_ROW)
        carried = tuple(
            index for index in range(len(headers)) if index not in tool_added and index != row_key
        )
        return cls(
            headers=headers,
            parameters=parameters,
            pre_engagement=pre_engagement,
            customer_id=finder.find(CUSTOMER_ID, mapping.get(CUSTOMER_ID)),
            row_key=row_key,
            source_row=source_row,
            carried=carried,
            fed_back=bool(tool_added),
        )


def names_address_column(cells: Sequence[str], mapping: Mapping[str, str] | None = None) -> bool:
    """True for a row that could be the header: it names the AddressSid column."""
    explicit = _canonical_mapping(mapping or {}).get(ADDRESS_SID)
    wanted = normalize_header(explicit if explicit is not None else ADDRESS_SID)
    return any(normalize_header(cell) == wanted for cell in cells)


def _canonical_mapping(mapping: Mapping[str, str]) -> dict[str, str]:
    """--column names folded onto the parameter names; unknown names are an error."""
    known = {normalize_header(n): n for n in (*PARAMETERS, CUSTOMER_ID, ROW_KEY)}
    canonical = {}
    for name, header in mapping.items():
        stripped = name.strip()
        if stripped.casefold().startswith(PRE_ENGAGEMENT_PREFIX):
            key = stripped[len(PRE_ENGAGEMENT_PREFIX) :]
            if not key:
                raise InputError(f"--column {name}=...: name the key, e.g. pre_engagement.email")
            canonical[PRE_ENGAGEMENT_PREFIX + key] = header
            continue
        if normalize_header(name) not in known:
            raise InputError(
                f"--column {name}=...: unknown parameter; use one of "
                f"{_listing(known.values())} or pre_engagement.KEY"
            )
        canonical[known[normalize_header(name)]] = header
    return canonical


class _HeaderFinder:
    """Finds a parameter's column: by an explicit header, else by the usual matching."""

    def __init__(self, headers: tuple[str, ...], tool_added: set[int]) -> None:
        self.headers = headers
        self.by_name: dict[str, list[int]] = {}
        for index, header in enumerate(headers):
            if index not in tool_added:
                self.by_name.setdefault(normalize_header(header), []).append(index)

    def find(self, name: str, explicit: str | None) -> int | None:
        if explicit is not None:
            positions = self.by_name.get(normalize_header(explicit), [])
            exact = [i for i in positions if self.headers[i].strip() == explicit.strip()]
            positions = exact or positions
            if not positions:
                raise InputError(
                    f"--column {name}={explicit}: no such header{_closest(explicit, self.headers)}"
                    f"; found: {_listing(self.headers)}"
                )
            return positions[0]
        positions = self.by_name.get(normalize_header(name), [])
        if len(positions) > 1:
            raise InputError(
                f"columns {_listing([self.headers[i] for i in positions])} all mean {name}; "
                f"keep one, or pick one with --column {name}=HEADER"
            )
        return positions[0] if positions else None


def _closest(header: str, headers: Sequence[str]) -> str:
    by_fold = {normalize_header(h): h for h in headers}
    close = difflib.get_close_matches(normalize_header(header), list(by_fold), n=3, cutoff=0.5)
    return f" (closest: {_listing(by_fold[c] for c in close)})" if close else ""


def _tool_added_columns(headers: tuple[str, ...]) -> set[int]:
    """Positions of the columns a previous run appended: the headers end with exactly them."""
    for suffix in TOOL_COLUMN_SUFFIXES:
        if len(headers) >= len(suffix) and headers[len(headers) - len(suffix) :] == suffix:
            return set(range(len(headers) - len(suffix), len(headers)))
    return set()


def _tool_column(headers: tuple[str, ...], tool_added: set[int], name: str) -> int | None:
    return next((index for index in tool_added if headers[index] == name), None)


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
    source: int = 0  # the original sheet's row, for a fed-back file; else `number`
    # (row number, key) of an earlier row of this input whose key differs from this one's
    # only as a spreadsheet changes keys (`002004` and `2004`): plan.py flags it key_changed.
    twin: tuple[int, str] | None = None

    @property
    def source_row(self) -> int:
        """The row of the sheet this row first came from."""
        return self.source or self.number

    @property
    def repeats_a_key(self) -> bool:
        """Its problem is a key, customer id or identity of an earlier row, not its values."""
        return self.problem_code in _UNIQUE.values()

    @property
    def identity(self) -> str:
        """The identity sent with the row (rows get one before sending; see with_identity)."""
        return self.parameters.get(IDENTITY, "")

    def with_identity(self, scope: str) -> Row:
        """The row with an Identity to send: its own, else one derived from scope and key."""
        if self.identity or self.problem is not None:
            return self
        identity = derive_identity(scope, self.key)
        return replace(self, parameters={**self.parameters, IDENTITY: identity})

    def pre_engagement_warning(self) -> str | None:
        """Twilio takes any text, but its web chat expects JSON: a warning when it is not."""
        text = self.parameters.get("PreEngagementData")
        if text is None:
            return None
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            return (
                f"row {self.number}: PreEngagementData is not valid JSON ({error.msg}); "
                "it would be sent as written"
            )
        return None


@dataclass(frozen=True)
class Repeats:
    """What the first pass over a file learnt: which values occur more than once.

    Holding 64-bit hashes of every customer id of a million-row file in a set would cost
    ~100 MB; a sorted array costs 8 MB, and only the repeated hashes are kept. They are
    candidates: the second pass compares the real values, so a hash collision costs nothing.
    """

    by_kind: Mapping[str, frozenset[int]]
    duplicate_rows: int  # repeats among the hashes: at most the rows that repeat a value

    @classmethod
    def of(cls, hashes: Mapping[str, array[int]]) -> Repeats:
        """Find the repeated hashes among those collected, per kind of value."""
        by_kind, duplicate_rows = {}, 0
        for kind, collected in hashes.items():
            repeated, extra = _repeated(collected)
            by_kind[kind] = frozenset(repeated)
            if kind != _CONTENT:  # a row's repeated key is often its repeated customer_id too
                duplicate_rows = max(duplicate_rows, extra)
        return cls(by_kind, duplicate_rows)


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


# The values that must not repeat, with the problem code a repeat gets; and row contents.
_KEY = "key"  # the row's final key, however obtained: row_key, customer_id or derived
_UNIQUE = {
    ROW_KEY: ErrorCode.DUPLICATE_ROW_KEY,
    CUSTOMER_ID: ErrorCode.DUPLICATE_CUSTOMER_ID,
    IDENTITY: ErrorCode.DUPLICATE_IDENTITY,
    _KEY: ErrorCode.DUPLICATE_ROW_KEY,
}
_CONTENT = "content"
_TWIN = "twin"  # a key's cells.key_fingerprint: keys a spreadsheet may have made of each other
# A sheet row number as this tool writes it: ASCII digits, far fewer than int() refuses.
_ROW_NUMBER = re.compile(r"[0-9]{1,18}")
_NUMBERED = re.compile(r"(auto:[0-9a-f]+):[0-9]+")  # the n-th identical row's derived key


def _key_family(key: str) -> str:
    """What the first pass hashes for a key: a derived key without its `:n`, since the first
    pass cannot number identical rows; the second compares the real keys."""
    numbered = _NUMBERED.fullmatch(key)
    return numbered[1] if numbered else key


class RowBuilder:
    """Turns raw cells into Rows.

    Made twice per run: the first pass (`repeats=None`) collects hashes so that `repeats()`
    can say which row keys, customer ids, identities and row contents repeat; the second pass
    uses that to flag repeats and to number identical rows, keeping state only for repeats.
    """

    def __init__(
        self, columns: Columns, repeats: Repeats | None = None, scope: str | None = None
    ) -> None:
        self.columns = columns
        self._repeats = repeats
        # Given a scope, rows leave with the identity they are sent with (their own, else
        # derived), and identities are checked as sent: a given one may be another row's
        # derived one. Both passes must be given the same scope.
        self._scope = scope
        kinds = (*_UNIQUE, _CONTENT, _TWIN)
        self._hashes: dict[str, array[int]] = {kind: array("Q") for kind in kinds}
        self._first_row: dict[tuple[str, str], int] = {}
        self._occurrences: dict[str, int] = {}
        self._first_twin: dict[str, tuple[int, str]] = {}  # by fingerprint, repeats only

    def repeats(self) -> Repeats:
        """After a first pass: the repeated values, for the second pass."""
        return Repeats.of(self._hashes)

    def build(self, number: int, cells: Sequence[str]) -> Row:
        """Validate one row of trimmed cells (padded to the header width) and give it a key."""
        columns = self.columns
        if columns.fed_back:
            cells = [unescape_cell(cell) for cell in cells]
        else:
            # A key copied out of this tool's own files keeps its guard (`'00123`): whatever
            # the file, the guard is taken off keys, so the copy is the same customer.
            cells = list(cells)
            for index in (columns.row_key, columns.customer_id):
                if index is not None:
                    cells[index] = unescape_cell(cells[index])
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
        given_key = cells[columns.row_key] if columns.row_key is not None else ""
        customer_id = cells[columns.customer_id] if columns.customer_id is not None else ""
        problem, code = _problem(parameters, {ROW_KEY: given_key, CUSTOMER_ID: customer_id})
        key = given_key or customer_id or self._derived_key(parameters)
        unique = {
            ROW_KEY: given_key,
            CUSTOMER_ID: customer_id,
            IDENTITY: parameters.get(IDENTITY, ""),
            # The key the row leaves with, however it was obtained: one row's row_key may be
            # another's customer_id, or a fed-back row's key another row's derived one.
            _KEY: key,
        }
        for kind, value in unique.items():
            if value and problem is None:
                hashed = _key_family(value) if kind == _KEY else value
                first = self._first_row_of(kind, value, number, hashed)
                if first != number:
                    problem, code = _duplicate(kind, value, first), _UNIQUE[kind]
        if self._scope is not None and problem is None and not parameters.get(IDENTITY):
            identity = derive_identity(self._scope, key)
            parameters[IDENTITY] = identity
            first = self._first_row_of(IDENTITY, identity, number, identity)
            if first != number:
                problem, code = _duplicate(IDENTITY, identity, first), _UNIQUE[IDENTITY]
        twin = self._twin_of(key, number) if problem is None else None
        source = _source_row(cells, columns)
        return Row(number, carried, parameters, key, problem, code, source, twin)

    def _first_row_of(self, kind: str, value: str, number: int, hashed: str) -> int:
        if self._repeats is None:
            self._hashes[kind].append(_hash64(hashed))
            return number
        if _hash64(hashed) not in self._repeats.by_kind[kind]:
            return number
        return self._first_row.setdefault((kind, value), number)

    def _twin_of(self, key: str, number: int) -> tuple[int, str] | None:
        """The first earlier row whose key a spreadsheet could have made of this one's, or
        this one's of it (either way: which of the two is the original is not known)."""
        fingerprint = key_fingerprint(key)
        if fingerprint is None:
            return None
        if self._repeats is None:
            self._hashes[_TWIN].append(_hash64(fingerprint))
            return None
        if _hash64(fingerprint) not in self._repeats.by_kind[_TWIN]:
            return None
        first = self._first_twin.setdefault(fingerprint, (number, key))
        _, first_key = first
        if spreadsheet_changed(first_key, key) or spreadsheet_changed(key, first_key):
            return first
        return None

    def _derived_key(self, parameters: Mapping[str, str]) -> str:
        """A key from what the row asks for; the n-th identical row gets suffix `:n`."""
        content = json.dumps([parameters.get(name, "") for name in PARAMETERS])
        digest = hashlib.blake2b(content.encode(), digest_size=10).digest()
        base = "auto:" + digest.hex()
        prefix = int.from_bytes(digest[:8])
        if self._repeats is None:
            self._hashes[_CONTENT].append(prefix)
            return base
        if prefix not in self._repeats.by_kind[_CONTENT]:
            return base
        count = self._occurrences.get(base, 0) + 1
        self._occurrences[base] = count
        return base if count == 1 else f"{base}:{count}"


def _source_row(cells: Sequence[str], columns: Columns) -> int:
    if columns.source_row is None:
        return 0
    text = cells[columns.source_row]
    # ASCII digits only, and few: str.isdigit() takes `²`, which int() refuses, and int()
    # refuses thousands of digits; neither is a row of any sheet (then the row is its own).
    return int(text) if _ROW_NUMBER.fullmatch(text) else 0


def _duplicate(kind: str, value: str, first: int) -> str:
    if kind == _KEY:
        return (
            f"duplicate key {value!r}: row {first} has the same key (given as row_key or "
            "customer_id, or derived from the same values); one key is one customer"
        )
    name = "Identity" if kind == IDENTITY else kind
    return f"duplicate {name} {value!r} (first at row {first})"


def _problem(parameters: Mapping[str, str], keys: Mapping[str, str]) -> tuple[str | None, str]:
    address = parameters.get(ADDRESS_SID, "")
    if not address:
        return f"{ADDRESS_SID} is empty", ErrorCode.MISSING_ADDRESS_SID
    if not ADDRESS_SID_PATTERN.fullmatch(address):
        return (
            f"{ADDRESS_SID} {address!r} is not IG followed by 32 hex digits",
            ErrorCode.INVALID_ADDRESS_SID,
        )
    for name, value in (*parameters.items(), *keys.items()):
        if found := _CONTROL_CHARACTERS.search(value):
            # Named by code point: a control character has no glyph, and no name in unicodedata.
            return (
                f"{name} contains a control character (U+{ord(found[0]):04X}); it must be "
                "plain text",
                ErrorCode.NOT_TEXT,
            )
    return None, ""
