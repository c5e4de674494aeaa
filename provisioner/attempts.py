"""What a call to Twilio came to, as typed values: Attempt, Lookup; Twilio's error bodies and
Retry-After, parsed defensively."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

CREDENTIALS_REJECTED = frozenset({401, 403})

MAX_RETRY_AFTER = 30.0  # seconds: a server cannot stall the run longer than this per answer

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


@dataclass(frozen=True)
class Attempt:
    """What one request came to: a web chat, a Twilio error, or a transport failure.

    The client never builds a non-ambiguous 2xx Attempt without a valid conversation_sid
    (for close_conversation: the conversation's SID), so `created` needs only the status.
    """

    http_status: int | None = None
    conversation_sid: str = ""
    identity: str = ""
    request_id: str = ""
    error_code: str = ""
    error_message: str = ""
    retry_after: float | None = None  # seconds, at most MAX_RETRY_AFTER
    ambiguous: bool = False  # the request may have reached Twilio and done what it asked
    latency: float = 0.0  # seconds the attempt took, answer read included
    more_info: str = ""  # Twilio's link for the error code, when it sent one

    @property
    def created(self) -> bool:
        """Twilio did it (created the web chat, closed the conversation) and said so readably."""
        return self.http_status is not None and 200 <= self.http_status < 300 and not self.ambiguous

    @property
    def credentials_rejected(self) -> bool:
        """401 or 403: every further request would fail the same way."""
        return self.http_status in CREDENTIALS_REJECTED


@dataclass(frozen=True)
class FoundConversation:
    """One conversation a looked-up identity takes part in."""

    sid: str
    date_created: str  # ISO 8601 as Twilio writes it, "" when the answer had none
    state: str  # "active", "inactive", "closed", or "" when the answer had none
    friendly_name: str = ""


@dataclass(frozen=True)
class Lookup:
    """What looking an identity up came to; `conversations` is complete only when `ok`."""

    conversations: tuple[FoundConversation, ...] = ()
    http_status: int | None = None
    error_code: str = ""
    error_message: str = ""  # also set when ok: entries that were ignored, and why
    request_id: str = ""
    retry_after: float | None = None  # seconds, at most MAX_RETRY_AFTER
    latency: float = 0.0  # seconds, every page included
    pages: int = 0  # requests sent: each counts against the account's limits

    @property
    def ok(self) -> bool:
        """Every page was answered 2xx, read whole and understood."""
        return (
            self.http_status is not None and 200 <= self.http_status < 300 and not self.error_code
        )

    @property
    def refused(self) -> bool:
        """401 or 403: these credentials may not read Conversations."""
        return self.http_status in CREDENTIALS_REJECTED

    @property
    def throttled(self) -> bool:
        """429: the account's limits were hit."""
        return self.http_status == 429


@dataclass(frozen=True)
class TwilioError:
    """The fields of Twilio's error body; empty strings for what it lacked."""

    code: str = ""
    message: str = ""
    more_info: str = ""


def parse_retry_after(
    value: str | None, now: float | None = None, cap: float | None = None
) -> float | None:
    """Seconds a Retry-After asks for (delta-seconds or HTTP date), >= 0 and <= cap; else None."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:  # an HTTP date is 29 characters
        return None
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until(text, time.time() if now is None else now)
    if seconds is None or math.isnan(seconds):
        return None
    seconds = max(0.0, seconds)
    return seconds if cap is None else min(seconds, cap)


def _seconds_until(text: str, now: float) -> float | None:
    try:
        moment = parsedate_to_datetime(text)
        return moment.timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_error_body(body: bytes | str) -> TwilioError:
    """Twilio's `{code, message, more_info, status}`, whatever type each field has."""
    document = json_object(body) or {}
    code = document.get("code")
    code_text = ""
    if isinstance(code, str):
        code_text = code.strip()
    elif isinstance(code, int) and not isinstance(code, bool):
        code_text = str(code) if abs(code) < 10**12 else ""
    elif isinstance(code, float) and math.isfinite(code) and code.is_integer():
        code_text = str(int(code)) if abs(code) < 1e12 else ""
    message = document.get("message")
    more_info = document.get("more_info")
    more = more_info.strip() if isinstance(more_info, str) else ""
    return TwilioError(
        code=one_line(code_text)[:32],
        message=message if isinstance(message, str) else "",
        more_info=more if more.startswith(("https://", "http://")) else "",
    )


def json_object(body: bytes | str) -> dict[str, Any] | None:
    """The body as a JSON object; None when it is anything else."""
    try:
        document = json.loads(body or b"null")
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
        return None
    return document if isinstance(document, dict) else None


def one_line(text: str) -> str:
    """Text on one line: control characters (line breaks included) become spaces."""
    return CONTROL_CHARACTERS.sub(" ", text).strip()
