"""Why rows were not created: each error code's meaning in plain words and the next step.

The one home of the Twilio error codes a WebChats create can answer. The words of our own
codes (rows refused before sending, transport failures) and of the statuses that carry no code
are vocabulary.py's, beside each member; this module explains them all alike. Meanings follow
Twilio's error dictionary (https://www.twilio.com/docs/api/errors/NNNNN, read for each code
below); a code this table does not know falls back to the server's own message and its
more_info link.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from provisioner.endpoints import CREDENTIAL_VARIABLES
from provisioner.vocabulary import FIX_AND_FEED_BACK, ErrorCode, Status
from provisioner.words import plural

TWILIO_ERROR_PAGE = "https://www.twilio.com/docs/api/errors/{code}"
EXAMPLE_ROWS = 5  # rows kept per cause: enough to find the pattern, small enough to print
MAX_CAUSES = 100  # distinct causes kept; a server inventing a code per row cannot grow memory
OTHER_CAUSE = "other"  # where rows go once MAX_CAUSES distinct causes are counted
MAX_MESSAGE_CHARS = 200  # a server's message shown as a meaning is cut here (it is untrusted)
EXAMPLES_PRINTED = 3  # example rows named on each end-of-run line
MAX_CODE_CHARS = 40  # a code longer than this is a server's invention; cut it on the line


class Explanation(NamedTuple):
    """What a code means and what to do about it."""

    meaning: str
    next_step: str


_LOWER_CONCURRENCY = (
    "lower --concurrency (every application on the account shares the cap); "
    "the run retries these with backoff"
)
_TWILIO_TROUBLE = (
    "rerun later; if it persists, check status.twilio.com and give Twilio support the request_id"
)

# Twilio's codes for POST /v2/WebChats. Sources: the dictionary page of each code, as cited.
TWILIO_CODES: Mapping[str, Explanation] = {
    # 20001: the dictionary titles it "Unknown parameters" (a warning: parameters not
    # recognised). Twilio's newer APIs also answer "Missing required parameter X in the post
    # body" with it, so the meaning covers both; Twilio's message names the parameter.
    "20001": Explanation(
        "a parameter was missing or not recognised (Twilio's message names it)",
        "check the column mapping (--column PARAM=HEADER) and the row's values, "
        + FIX_AND_FEED_BACK,
    ),
    # 20003 "Permission Denied": wrong Account SID/Auth Token pair, deleted token or key,
    # suspended account, extra spaces, a key for another region.
    "20003": Explanation(
        "credentials rejected (wrong or deleted SID/token or API key, suspended account, "
        "or a key for another region)",
        f"check {CREDENTIAL_VARIABLES}, and TWILIO_REGION",
    ),
    # 20403 "403 Forbidden": the account lacks permission to the API, typically suspended/closed.
    "20403": Explanation(
        "the account may not use the API (typically suspended or closed)",
        "check the account in the Twilio Console or ask Twilio support",
    ),
    # 20404 "Not Found": an incorrect or deleted SID, a wrong path, or the wrong base URL.
    "20404": Explanation(
        "address not found in this account or region (or the API path does not exist there)",
        "check the AddressSid and TWILIO_REGION (or --base-url)",
    ),
    # 20429 "Too many requests": the account exceeds its allowed concurrency to the REST API;
    # such requests were not processed and are safe to retry.
    "20429": Explanation(
        "too many concurrent requests for this account (not processed, safe to retry)",
        _LOWER_CONCURRENCY,
    ),
    # 20500 "Internal Server Error": an error in Twilio's handling or a timeout in the API.
    "20500": Explanation("internal error at Twilio", _TWILIO_TROUBLE),
    # 20503 "Service unavailable": the Twilio service is temporarily unavailable.
    "20503": Explanation("Twilio's service was temporarily unavailable", _TWILIO_TROUBLE),
    # 21604: the dictionary's text is "'To' phone number is required to send a Message"
    # (Messaging); the emulator answers a missing AddressSid with it, and a WebChats create
    # may too, so the meaning stays general: a required parameter was missing.
    "21604": Explanation(
        "a required parameter was missing (Twilio's message names it)",
        f"check the column mapping (--column AddressSid=HEADER) and the row, {FIX_AND_FEED_BACK}",
    ),
    # 45700 "Unexpected error occurred. Unable to process WebChat request."
    "45700": Explanation("unexpected error at Twilio while creating the web chat", _TWILIO_TROUBLE),
    # 45701 "Unexpected error occurred. Service unavailable."
    "45701": Explanation("Twilio's web chat service was unavailable", _TWILIO_TROUBLE),
    # 45711 "Failed to create webchat participant. Unauthorized": the credentials are not
    # allowed this action.
    "45711": Explanation(
        "the credentials may not create the web chat participant",
        "check that the credentials belong to the account that owns the AddressSid, "
        "or ask for the permission",
    ),
    # 45715 "Failed to create webchat participant. Invalid request parameters": the address
    # configuration may be invalid, or the credentials are not of the address's account.
    "45715": Explanation(
        "the address's configuration is invalid, or the AddressSid is not of this account",
        "check the AddressSid belongs to the credentials' account, and the address in the "
        "Flex Console (Messaging > Conversations Addresses)",
    ),
    # 45719 "Failed to create webchat participant. Too many requests" (not processed,
    # safe to retry).
    "45719": Explanation(
        "too many concurrent requests while creating the participant (safe to retry)",
        _LOWER_CONCURRENCY,
    ),
    # 45731 "Pre-engagement data too large": over the maximum allowed size of 16KB.
    "45731": Explanation(
        "pre-engagement data over 16 kB",
        "shorten PreEngagementData (or the pre_engagement.* cells) below 16 kB, "
        + FIX_AND_FEED_BACK,
    ),
    # 45741 "Failed to create webchat conversation. Account not authorized".
    "45741": Explanation(
        "the account may not create a web chat for this AddressSid",
        "check the credentials and that the AddressSid is one of this account's",
    ),
    # 45744 "A resource provided could not be found": the credentials and AddressSid must
    # belong to the intended account, and a default messaging service must be configured.
    "45744": Explanation(
        "address not found in this account or region (or no default Conversations "
        "messaging service)",
        "check the AddressSid and TWILIO_REGION, and that the account has a default "
        "Conversations service",
    ),
    # 45745 "Invalid or missing parameters in the create conversation request".
    "45745": Explanation(
        "invalid or missing parameters in the create request",
        f"check the row's values against the WebChats API (Twilio's message names the "
        f"parameter), {FIX_AND_FEED_BACK}",
    ),
    # 45780 "Account is sending too many concurrent API requests".
    "45780": Explanation(
        "too many concurrent requests for this account (safe to retry)", _LOWER_CONCURRENCY
    ),
}

# Answers that carried no Twilio code: keyed "http_NNN" (exact) or "http_Nxx" (class).
HTTP_STATUSES: Mapping[str, Explanation] = {
    "http_400": Explanation(
        "the request was refused as invalid (no Twilio code given)",
        f"read error_message in errors.csv, fix the rows, {FIX_AND_FEED_BACK}",
    ),
    "http_401": Explanation(
        "credentials rejected (401)",
        f"check {CREDENTIAL_VARIABLES}",
    ),
    "http_403": Explanation(
        "forbidden (403): the credentials may not do this",
        "check the credentials' account and permissions",
    ),
    "http_404": Explanation(
        "not found (404): the API path or the address does not exist at this host",
        "check --base-url (or TWILIO_REGION/TWILIO_EDGE) and the AddressSid",
    ),
    "http_429": Explanation("throttled (429) every time it was tried", _LOWER_CONCURRENCY),
    "http_4xx": Explanation(
        "the request was refused (no Twilio code given)",
        "read error_message in errors.csv; check --base-url points at the Twilio API",
    ),
    "http_5xx": Explanation(
        "server error at the API host, on every try",
        "rerun later; the rows are retried (and looked up first where an answer was lost)",
    ),
}

# Our own codes (rows refused before sending, what the transport came to) and the statuses
# of rows with no code: their words are vocabulary.py's, beside each code and status.
OUR_CODES: Mapping[str, Explanation] = {
    code: Explanation(code.meaning, code.next_step) for code in ErrorCode if code.meaning
}
STATUSES: Mapping[str, Explanation] = {
    status: Explanation(status.meaning, status.next_step) for status in Status if status.meaning
}

_TABLE: Mapping[str, Explanation] = {**TWILIO_CODES, **HTTP_STATUSES, **OUR_CODES, **STATUSES}
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True)
class Cause:
    """Why a row was not created: its code, what that means and what to do next."""

    code: str
    meaning: str
    next_step: str
    more_info: str = ""


def explain(
    code: str,
    status: str,
    message: str,
    more_info: str = "",
    *,
    http_status: int | None = None,
) -> Cause:
    """The cause of one row's outcome: the table's words, else the server's own message."""
    code = code.strip()
    if not code:
        code = _codeless_key(status, http_status)
    known = _TABLE.get(code) or _TABLE.get(_http_class(code))
    link = more_info.strip() or (TWILIO_ERROR_PAGE.format(code=code) if code.isdigit() else "")
    if known is not None:
        return Cause(code, known.meaning, known.next_step, link if code.isdigit() else "")
    return Cause(code, _server_meaning(code, message, more_info), _unknown_next_step(link), link)


def _codeless_key(status: str, http_status: int | None) -> str:
    if http_status is not None and http_status >= 300:
        return f"http_{http_status}"
    return status.strip() or Status.FAILED


def _http_class(code: str) -> str:
    if len(code) == 8 and code.startswith("http_") and code[5:].isdigit():
        return f"http_{code[5]}xx"
    return ""


def _server_meaning(code: str, message: str, more_info: str) -> str:
    text = message.strip()
    # The client appends " (more_info)" to the message; show the link once, as more_info.
    if more_info and text.endswith(f"({more_info})"):
        text = text[: -len(more_info) - 2].rstrip()
    text = printable(text, MAX_MESSAGE_CHARS)
    return text or f"error {code}, with no message"


def _unknown_next_step(link: str) -> str:
    if link:
        return f"see {link}, and error_message in errors.csv"
    return "read error_message in errors.csv and run.log"


def printable(text: str, limit: int) -> str:
    """Text safe on a terminal: control characters folded to a space, cut at `limit`."""
    text = _UNPRINTABLE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


_OTHER = Cause(
    OTHER_CAUSE,
    "other causes (too many different error codes to list one by one)",
    "read error_code and error_message in errors.csv",
)


@dataclass(frozen=True)
class FailingRow:
    """One example row of a cause (summary.json's failing_rows)."""

    row: int  # the row number the spreadsheet shows
    key: str
    status: str
    code: str
    message: str


@dataclass(frozen=True)
class CauseCount:
    """A cause and the rows it held back (summary.json's causes): how many, the first few."""

    code: str
    count: int
    meaning: str
    next_step: str
    example_rows: Sequence[int]
    more_info: str = ""


@dataclass
class _Entry:
    cause: Cause
    count: int = 0
    examples: list[FailingRow] = field(default_factory=list)


class CauseTally:
    """Counts rows by cause, keeping the first few example rows of each; memory stays bounded."""

    def __init__(self, examples: int = EXAMPLE_ROWS, max_causes: int = MAX_CAUSES) -> None:
        self._examples = examples
        self._max_causes = max_causes
        self._entries: dict[str, _Entry] = {}

    def add(
        self, row: int, cause: Cause, *, key: str = "", status: str = "", message: str = ""
    ) -> None:
        """Count one row under its cause; keep it as an example while the cause has room."""
        entry = self._entries.get(cause.code)
        if entry is None:
            if len(self._entries) >= self._max_causes:
                cause = _OTHER
                entry = self._entries.get(cause.code)
            if entry is None:
                entry = self._entries[cause.code] = _Entry(cause)
        entry.count += 1
        if len(entry.examples) < self._examples:
            entry.examples.append(FailingRow(row, key, status, cause.code, message))

    @property
    def total(self) -> int:
        """Rows counted."""
        return sum(entry.count for entry in self._entries.values())

    def causes(self) -> list[CauseCount]:
        """The causes, most frequent first, each with its first example rows."""
        return [
            CauseCount(
                entry.cause.code,
                entry.count,
                entry.cause.meaning,
                entry.cause.next_step,
                tuple(example.row for example in entry.examples),
                entry.cause.more_info,
            )
            for entry in self._ordered()
        ]

    def failing_rows(self) -> list[FailingRow]:
        """The example rows of every cause, most frequent cause first."""
        return [example for entry in self._ordered() for example in entry.examples]

    def _ordered(self) -> list[_Entry]:
        return sorted(self._entries.values(), key=lambda entry: (-entry.count, entry.cause.code))


def cause_lines(causes: Sequence[CauseCount]) -> list[str]:
    """The causes as aligned plain-text lines for the end of a run, most frequent first."""
    if not causes:
        return []
    # Numbers right-aligned, then the noun: "  12 rows" over "   1 row ".
    counts = [plural(cause.count, "row").split(" ") for cause in causes]
    codes = [printable(cause.code, MAX_CODE_CHARS) for cause in causes]
    number_width = max(len(number) for number, _ in counts)
    noun_width = max(len(noun) for _, noun in counts)
    code_width = max(map(len, codes))
    lines = []
    for cause, (number, noun), code in zip(causes, counts, codes, strict=True):
        meaning = printable(cause.meaning, MAX_MESSAGE_CHARS)
        next_step = printable(cause.next_step, MAX_MESSAGE_CHARS)
        rows = [str(row) for row in cause.example_rows][:EXAMPLES_PRINTED]
        line = f"  {number:>{number_width}} {noun:<{noun_width}}  {code:<{code_width}}  {meaning}"
        if next_step:
            line += f" -> {next_step}"
        if rows and cause.count > 0:
            line += f" ({'row' if len(rows) == 1 else 'rows'} {', '.join(rows)}"
            line += ", ...)" if cause.count > len(rows) else ")"
        lines.append(line)
    return lines
