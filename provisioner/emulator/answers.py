"""What the emulator answers: a reply with Twilio's JSON, or a dropped connection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"
REQUEST_ID_HEADER = "Twilio-Request-Id"

# Twilio's error codes for what the emulator refuses (one home for them in the emulator).
AUTHENTICATE = 20003  # 401: credentials missing or wrong
METHOD_NOT_ALLOWED = 20004  # 405
NOT_FOUND = 20404  # 404: no such resource (an unknown path, AddressSid or conversation)
UNSUPPORTED_MEDIA_TYPE = 20415  # 415: a POST that is not a form
TOO_MANY_REQUESTS = 20429  # 429: over the rate limit or the concurrency cap
BAD_REQUEST = 70002  # 400: Twilio could not parse the body or a parameter
MISSING_ADDRESS_SID = 21604  # 400: a WebChats create without AddressSid


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, JSON body and headers (Twilio-Request-Id among them)."""

    status: int
    body: Mapping[str, object]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drop:
    """Close the connection without answering, as a network failure would."""


Answer = Reply | Drop


def twilio_error(
    status: int,
    code: int,
    message: str,
    request_id: str,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """Twilio's error JSON with its status, and the request id header."""
    body: dict[str, object] = {
        "code": code,
        "message": message,
        "more_info": MORE_INFO.format(code=code),
        "status": status,
    }
    return Reply(status, body, {REQUEST_ID_HEADER: request_id, **(headers or {})})


def ok(status: int, body: Mapping[str, object], request_id: str) -> Reply:
    """A successful answer with the request id header."""
    return Reply(status, body, {REQUEST_ID_HEADER: request_id})
