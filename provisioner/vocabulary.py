"""The words provisioner writes in its files, JSON and ledger: one enum per vocabulary, each
member with what it means to people beside it.

StrEnums: a member is its own string, so results.csv, summary.json and the ledger hold the same
values as ever. A bottom module: it imports nothing of provisioner's, and every module may
import it. The Twilio error codes and HTTP statuses, which are Twilio's words, are causes.py's.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

# Next steps that several causes share (causes.py's Twilio codes too).
RERUN = "rerun the printed command to send the rest"
LOOKED_UP = "rerun: rows whose answer was lost are looked up at Twilio before any new request"
# A run that wrote workbooks has errors.xlsx too, which people edit in a spreadsheet.
FIX_AND_FEED_BACK = "then feed errors.csv (or errors.xlsx) back as the input"
_LOOKED_UP_FIRST = "rerun: the row is looked up at Twilio first, so it is never created twice"


class Status(StrEnum):
    """A row's final status; the values are a contract (results.csv, errors.csv, exit codes).

    `words`: what it means, as report.html shows it; `meaning` and `next_step`: the cause of
    a row that ended with it and no error code (only the statuses that are errors have one).
    """

    words: str
    meaning: str
    next_step: str

    def __new__(cls, value: str, words: str, meaning: str = "", next_step: str = "") -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.words, member.meaning, member.next_step = words, meaning, next_step
        return member

    CREATED = "created", "created by this run"
    EXISTING = "existing", "created by an earlier run; not sent again"
    INVALID = (
        "invalid",
        "not sent: the row itself is wrong",
        "the row was refused before sending",
        f"read error_message in errors.csv, fix the row, {FIX_AND_FEED_BACK}",
    )
    FAILED = (
        "failed",
        "sent, and refused or failed on every try",
        "failed without an error code",
        "read error_message in errors.csv and run.log",
    )
    NOT_ATTEMPTED = (
        "not_attempted",
        "not sent: the run stopped first (or a dry run)",
        "not sent: the run stopped before this row",
        RERUN,
    )


# The statuses that go to errors.csv (invalid and failed rows also make the exit code 1).
ERROR_STATUSES = frozenset({Status.INVALID, Status.FAILED, Status.NOT_ATTEMPTED})


class LookupResult(StrEnum):
    """What looking a row's identity up at Twilio found (the `lookup` column, and the ledger's);
    `words`: what it means, as report.html shows it."""

    words: str

    def __new__(cls, value: str, words: str) -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.words = words
        return member

    NONE = "", ""  # no lookup was needed
    FOUND = "found", "the web chat existed at Twilio: recorded, not sent again"
    ABSENT = "absent", "not at Twilio: sending again was safe"  # sending (again) was safe
    DUPLICATES = "duplicates", "more than one conversation at Twilio for the row"
    FAILED = "failed", "the lookup could not answer: flagged, not sent again"


class EntryStatus(StrEnum):
    """A ledger entry's status (the entries table's CHECK is built from these, in this order)."""

    IN_FLIGHT = "in_flight"  # from just before its row is sent until its outcome is recorded
    CREATED = "created"  # its web chat exists at Twilio
    FAILED = "failed"  # its requests failed (a created entry is never downgraded to this)


class ErrorCode(StrEnum):
    """Our own error codes (rows refused before sending, what the transport came to, how a stop
    or a lookup left a row), with the cause's `meaning` and `next_step`.

    A code with no words (a proxy, a certificate, a closed SID) is explained by its message,
    which names the host and what to set.
    """

    meaning: str
    next_step: str

    def __new__(cls, value: str, meaning: str = "", next_step: str = "") -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning, member.next_step = meaning, next_step
        return member

    MISSING_ADDRESS_SID = (
        "missing_address_sid",
        "the row has no AddressSid",
        f"fill it in, or map the column with --column AddressSid=HEADER, {FIX_AND_FEED_BACK}",
    )
    INVALID_ADDRESS_SID = (
        "invalid_address_sid",
        "AddressSid is not IG followed by 32 hex digits",
        f"correct it (copy it from the Flex Console), {FIX_AND_FEED_BACK}",
    )
    NOT_TEXT = (
        "not_text",
        "a value holds control characters",
        f"remove them from the row, {FIX_AND_FEED_BACK}",
    )
    DUPLICATE_CUSTOMER_ID = (
        "duplicate_customer_id",
        "customer_id repeats an earlier row's; this row is left out: only the first with it counts",
        "keep one row per customer, or give each its own customer_id",
    )
    DUPLICATE_ROW_KEY = (
        "duplicate_row_key",
        "the same key as an earlier row, given, fed back or derived (files joined twice, or a "
        "row copied?); this row is left out: only the first with it counts",
        "remove the repeated row, or give it its own customer_id",
    )
    DUPLICATE_IDENTITY = (
        "duplicate_identity",
        "two rows have the same Identity; a lookup could not tell them apart",
        "give each row its own Identity, or leave the column empty to have one derived",
    )
    KEY_CHANGED = (
        "key_changed",
        "the row's key looks like an already-created key changed by a spreadsheet "
        "(e.g. 00123 became 123); not sent, to avoid a second web chat",
        "restore the original ID (the message names it and its run), or pass --force",
    )
    TIMEOUT = (
        "timeout",
        "no answer within --timeout; the web chat may exist",
        f"{LOOKED_UP}; raise --timeout if answers are slow",
    )
    CONNECTION_LOST = (
        "connection_lost",
        "the connection dropped after the request was sent; the web chat may exist",
        f"{LOOKED_UP}; check the network or proxy",
    )
    CONNECTION_FAILED = (
        "connection_failed",
        "could not connect to the API host; nothing was sent",
        "check the network, DNS, HTTPS_PROXY and --base-url or TWILIO_REGION, then rerun",
    )
    CONNECT_TIMEOUT = (
        "connect_timeout",
        "connecting to the API host timed out; nothing was sent",
        "check the network, firewall and HTTPS_PROXY, then rerun",
    )
    UNREADABLE_ANSWER = (
        "unreadable_answer",
        "a success answer without a readable conversation_sid (cut short or malformed); "
        "the web chat may exist",
        f"{LOOKED_UP}, or run provisioner reconcile",
    )
    REDIRECT_REFUSED = (
        "redirect_refused",
        "the server answered with a redirect, which is never followed "
        "(it would carry customer data and credentials elsewhere)",
        "point --base-url at the API root itself, e.g. https://flex-api.twilio.com",
    )
    REQUEST_FAILED = (
        "request_failed",
        "the request failed in transit; the web chat may exist",
        LOOKED_UP,
    )
    # The permission is named by the run's own warning, only after Twilio refused a lookup
    # (401/403): a lookup that failed otherwise is no sign of missing permissions.
    LOOKUP_FAILED = (
        "lookup_failed",
        "an answer was lost and the lookup at Twilio could not settle it; not sent again",
        "rerun later, or run provisioner reconcile: the row is looked up again before "
        "anything is sent",
    )
    # A row whose lookup a stop cut short (looked up next run).
    STOPPED = (
        "stopped",
        "an answer was lost, and the run stopped before the lookup at Twilio could settle it; "
        "not sent again",
        _LOOKED_UP_FIRST,
    )
    # A request abandoned in flight by a second signal.
    CUT_OFF = (
        "cut_off",
        "the run stopped at once (a second signal) with this row's request in flight",
        _LOOKED_UP_FIRST,
    )
    DUPLICATES = (
        "duplicates",
        "Twilio holds more than one conversation for this row's identity",
        "see the SIDs in results.csv; provisioner reconcile can close the extra ones",
    )
    # A row a dry run would send: a plan, not a cause (report.py counts no cause for it).
    DRY_RUN = "dry_run", "not sent: --dry-run only checks and plans", "run without --dry-run"
    # Explained by their message (it names the host, the proxy, or the CA bundle to set).
    PROXY_FAILED = "proxy_failed"
    TLS_UNTRUSTED = "tls_untrusted"
    TLS_FAILED = "tls_failed"
    INVALID_SID = "invalid_sid"  # a conversation SID to close that is not one: nothing sent
