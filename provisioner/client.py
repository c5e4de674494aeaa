"""The Twilio APIs: what each call sends, and what each answer means.

transport.py makes the exchanges; nothing a server or the network does raises: every answer
and every failure comes back as an `Attempt` or a `Lookup`, and every text in them that came
from a server or an exception is redacted (the secret never appears), stripped of control
characters and bounded in length.

What a hostile or broken server cannot do:
- make us read more than a Twilio answer can be (`MAX_ANSWER_BYTES`, `MAX_LOOKUP_PAGE_BYTES`,
  counted after decompression);
- keep an attempt going past `timeout` (transport.py says what that does not cover);
- send us elsewhere: a 3xx is a failure (`redirect_refused`), never followed, so the
  credentials and customer data never go to another origin; lookups follow a next page
  only on the root's own origin;
- pass a 2xx off as a creation: `created` needs a readable answer with a Conversation SID.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urljoin, urlsplit

from provisioner.attempts import (
    MAX_RETRY_AFTER,
    Attempt,
    FoundConversation,
    Lookup,
    TwilioError,
    json_object,
    one_line,
    parse_error_body,
    parse_retry_after,
)
from provisioner.endpoints import (
    DEFAULT_PORTS,
    Credentials,
)
from provisioner.transport import TOO_LARGE, Answer, Redactor, Transport
from provisioner.vocabulary import ErrorCode

WEB_CHATS_PATH = "/v2/WebChats"
CONVERSATIONS_PATH = "/v1/Conversations"
PARTICIPANT_CONVERSATIONS_PATH = "/v1/ParticipantConversations"
GATEWAY_FAILURES = frozenset({502, 504})  # a proxy's answer: what it forwarded may have been done
CREATED_STATUS = 201  # what Twilio answers a new web chat; another 2xx with a SID is noted

SID_PATTERN = re.compile(r"CH[0-9a-fA-F]{32}", re.ASCII)  # a Conversation SID
# A web chat, an error or a closed conversation (16 kB of attributes at most, JSON-escaped)
# fits many times over; an error page from a proxy too.
MAX_ANSWER_BYTES = 64 * 1024
# A lookup page holds up to 50 entries, each with a conversation's attributes (16 kB at most)
# and the participant's (4 kB at most), JSON-escaped: about 1 MB at worst.
MAX_LOOKUP_PAGE_BYTES = 2 * 1024 * 1024
LOOKUP_PAGE_SIZE = 50  # Twilio's largest page for ParticipantConversations
MAX_LOOKUP_PAGES = 20  # 1,000 conversations for one identity: far past any duplicate we make
MAX_FIELD_CHARS = 256  # Twilio's longest identity and friendly name
MAX_ERROR_CODE_CHARS = 32  # Twilio's error codes are five digits
MAX_REQUEST_ID_CHARS = 64  # a Twilio-Request-Id is 34 characters (RQ + 32 hex digits)
MAX_MORE_INFO_CHARS = 300  # a link to Twilio's page for an error code


class TwilioClient:
    """Creates web chats and looks up and closes conversations; every answer becomes a value.

    Only the constructor raises (ConfigError for an unusable proxy or CA bundle in `env`).
    """

    def __init__(
        self,
        flex_root: str,
        conversations_root: str,
        credentials: Credentials,
        *,
        timeout: float,
        pool_size: int,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = Transport(
            (flex_root, conversations_root), credentials, timeout, pool_size, env
        )
        self._redact = self._transport.redact
        self._web_chats_url = flex_root + WEB_CHATS_PATH
        self._conversations_root = conversations_root
        self._clock = clock

    def create_web_chat(self, parameters: Mapping[str, str]) -> Attempt:
        """POST one web chat; every outcome, failures included, comes back as an Attempt."""
        started = self._clock()
        answer = self._transport.exchange(
            "POST", self._web_chats_url, data=dict(parameters), cap=MAX_ANSWER_BYTES
        )
        attempt = _web_chat_attempt(answer, self._redact)
        return replace(attempt, latency=self._clock() - started)

    def close_conversation(self, sid: str) -> Attempt:
        """Set one conversation's State to closed (never delete); `created` means it was done."""
        started = self._clock()
        if not SID_PATTERN.fullmatch(sid):
            return Attempt(
                error_code=ErrorCode.INVALID_SID,
                error_message="not a Conversation SID (CH + 32 hex digits); nothing was sent",
            )
        url = f"{self._conversations_root}{CONVERSATIONS_PATH}/{sid}"
        answer = self._transport.exchange(
            "POST", url, data={"State": "closed"}, cap=MAX_ANSWER_BYTES
        )
        attempt = _close_attempt(answer, sid, self._redact)
        return replace(attempt, latency=self._clock() - started)

    def find_conversations(self, identity: str) -> Lookup:
        """The conversations `identity` takes part in, following same-origin next pages."""
        started = self._clock()
        lookup = self._read_pages(identity)
        return replace(lookup, latency=self._clock() - started)

    def _read_pages(self, identity: str) -> Lookup:
        url = self._conversations_root + PARTICIPANT_CONVERSATIONS_PATH
        params: dict[str, str | int] | None = {"Identity": identity, "PageSize": LOOKUP_PAGE_SIZE}
        found: dict[str, FoundConversation] = {}  # by SID: pages may overlap as the index moves
        ignored = 0
        for page in range(1, MAX_LOOKUP_PAGES + 1):
            answer = self._transport.exchange("GET", url, params=params, cap=MAX_LOOKUP_PAGE_BYTES)
            if answer.status is None or not 200 <= answer.status < 300 or not answer.complete:
                return _failed_lookup(answer, tuple(found.values()), page, self._redact)
            entries, next_url = _page_of(json_object(answer.body) or {})
            code, message = "", ""
            if entries is None:
                code, message = (
                    ErrorCode.UNREADABLE_ANSWER,
                    "the answer is not a page of conversations",
                )
            elif next_url and _origin(next_url) != _origin(url):
                where = urlsplit(next_url).netloc
                code, message = (
                    ErrorCode.REDIRECT_REFUSED,
                    f"the next page is on {where}; not followed",
                )
            for entry in entries or ():
                conversation = _found(entry, identity, self._redact)
                if conversation is None:
                    ignored += 1
                else:
                    found.setdefault(conversation.sid, conversation)
            if ignored and not code:
                message = f"{ignored} entries without this identity's conversation SID ignored"
            if code or not next_url:
                return _lookup(tuple(found.values()), answer, code, message, page, self._redact)
            url, params = next_url, None
        message = (
            f"more than {MAX_LOOKUP_PAGES} pages of conversations for one identity; not all read"
        )
        return _lookup(
            tuple(found.values()), answer, "too_many_pages", message, MAX_LOOKUP_PAGES, self._redact
        )

    def close(self) -> None:
        """Close pooled connections and stop the deadline thread."""
        self._transport.close()


# ---------------------------------------------------------------- answers into values


def _web_chat_attempt(answer: Answer, redact: Redactor) -> Attempt:
    """A web chat's answer: created with its SID, a failure, or ambiguous (it may exist)."""
    maybe = "; the web chat may exist"
    if answer.status is None or not 200 <= answer.status < 300:
        return _failed_attempt(answer, maybe, redact)
    document = json_object(answer.body) if answer.complete else None
    sid = document.get("conversation_sid") if document else None
    identity = document.get("identity") if document else None
    request_id = redact(answer.headers.get("Twilio-Request-Id", ""), MAX_REQUEST_ID_CHARS)
    problem = _unreadable(answer, document, sid, redact)
    if problem:
        return Attempt(
            http_status=answer.status,
            request_id=request_id,
            error_code=ErrorCode.UNREADABLE_ANSWER,
            error_message=redact(f"HTTP {answer.status}, but {problem}{maybe}"),
            ambiguous=True,
        )
    assert isinstance(sid, str)
    note = ""
    if answer.status != CREATED_STATUS:
        note = f"HTTP {answer.status} where Twilio answers {CREATED_STATUS}; created"
    return Attempt(
        http_status=answer.status,
        conversation_sid=sid,
        identity=redact(identity, MAX_FIELD_CHARS) if isinstance(identity, str) else "",
        request_id=request_id,
        error_message=note,
    )


def _close_attempt(answer: Answer, sid: str, redact: Redactor) -> Attempt:
    """A close's answer: done when it names the conversation, else a failure or ambiguous."""
    if answer.status is None or not 200 <= answer.status < 300:
        return _failed_attempt(answer, "; the conversation may be closed", redact)
    document = json_object(answer.body) if answer.complete else None
    answered = document.get("sid") if document else None
    problem = _unreadable(answer, document, answered, redact)
    if not problem and answered != sid:
        problem = "the answer is about another conversation"
    request_id = redact(answer.headers.get("Twilio-Request-Id", ""), MAX_REQUEST_ID_CHARS)
    if problem:
        return Attempt(
            http_status=answer.status,
            conversation_sid=sid,
            request_id=request_id,
            error_code=ErrorCode.UNREADABLE_ANSWER,
            error_message=redact(
                f"HTTP {answer.status}, but {problem}; the conversation may be closed"
            ),
            ambiguous=True,
        )
    return Attempt(http_status=answer.status, conversation_sid=sid, request_id=request_id)


def _unreadable(
    answer: Answer, document: Mapping[str, Any] | None, sid: object, redact: Redactor
) -> str:
    """Why a 2xx answer does not prove what was asked; "" when it does."""
    if answer.failure == TOO_LARGE:
        return f"the answer was {answer.detail} and was not read"
    if answer.failure == ErrorCode.TIMEOUT:
        return f"the answer was {answer.detail}"
    if answer.failure:
        return f"the answer was cut short ({answer.detail})"
    if not answer.body:
        return "the answer has no body"
    if document is None:
        kind = answer.headers.get("Content-Type", "") or "no Content-Type"
        return f"the answer is not a JSON object ({one_line(kind)[:60]})"
    if sid is None:
        return "the answer has no SID"
    if not isinstance(sid, str) or not SID_PATTERN.fullmatch(redact(sid)):
        return "the answer's SID is not a Conversation SID (CH + 32 hex digits)"
    return ""


def _failed_attempt(answer: Answer, maybe: str, redact: Redactor) -> Attempt:
    """A transport failure, a redirect, or a Twilio error, as an Attempt."""
    if answer.status is None:
        ambiguous = answer.reached
        return Attempt(
            error_code=answer.failure,
            error_message=redact(answer.detail + (maybe if ambiguous else "")),
            ambiguous=ambiguous,
        )
    code, message, retry_after = _error_fields(answer, redact)
    more_info = parse_error_body(answer.body).more_info if answer.complete else ""
    # A gateway's 502 or 504 may come after Twilio created the web chat behind it.
    gateway = answer.status in GATEWAY_FAILURES and bool(maybe)
    return Attempt(
        http_status=answer.status,
        request_id=redact(answer.headers.get("Twilio-Request-Id", ""), MAX_REQUEST_ID_CHARS),
        error_code=code,
        error_message=message + (redact(maybe) if gateway else ""),
        retry_after=retry_after,
        more_info=redact(more_info, MAX_MORE_INFO_CHARS),
        ambiguous=gateway,
    )


def _error_fields(answer: Answer, redact: Redactor) -> tuple[str, str, float | None]:
    """An error answer's code, message and Retry-After."""
    assert answer.status is not None
    if 300 <= answer.status < 400:
        return ErrorCode.REDIRECT_REFUSED, redact(_redirect_message(answer)), None
    error = parse_error_body(answer.body) if answer.complete else TwilioError()
    text = error.message or f"HTTP {answer.status} {answer.reason}".strip()
    if error.more_info:
        text = f"{text} ({error.more_info})"
    if answer.failure:
        text = f"{text} (the answer was cut short: {answer.detail})"
    retry_after = parse_retry_after(answer.headers.get("Retry-After"), cap=MAX_RETRY_AFTER)
    return redact(error.code, MAX_ERROR_CODE_CHARS), redact(text), retry_after


def _failed_lookup(
    answer: Answer, conversations: tuple[FoundConversation, ...], page: int, redact: Redactor
) -> Lookup:
    """The Lookup for a page that was not a readable 2xx."""
    if answer.status is not None and 200 <= answer.status < 300:
        problem = _unreadable(answer, None, None, redact)
        return _lookup(conversations, answer, ErrorCode.UNREADABLE_ANSWER, problem, page, redact)
    attempt = _failed_attempt(answer, "", redact)
    return Lookup(
        conversations=conversations,
        http_status=attempt.http_status,
        error_code=attempt.error_code,
        error_message=attempt.error_message,
        request_id=attempt.request_id,
        retry_after=attempt.retry_after,
        pages=page,
    )


def _lookup(
    conversations: tuple[FoundConversation, ...],
    answer: Answer,
    code: str,
    message: str,
    page: int,
    redact: Redactor,
) -> Lookup:
    """What a lookup found by its last page, and why it stopped there when that is not ok."""
    return Lookup(
        conversations=conversations,
        http_status=answer.status,
        error_code=code,
        error_message=redact(message),
        request_id=redact(answer.headers.get("Twilio-Request-Id", ""), MAX_REQUEST_ID_CHARS),
        pages=page,
    )


def _found(entry: object, identity: str, redact: Redactor) -> FoundConversation | None:
    """One entry of a lookup page, or None when it is not this identity's conversation."""
    if not isinstance(entry, dict):
        return None
    sid = entry.get("conversation_sid")
    if not isinstance(sid, str) or not SID_PATTERN.fullmatch(redact(sid)):
        return None
    if entry.get("participant_identity") != identity:
        # Only an entry that names the identity asked for counts: another identity's, or one
        # that names none, is never this row's web chat (a lookup that drops the field cannot
        # settle a row).
        return None

    def text(name: str) -> str:
        value = entry.get(name)
        return redact(value, MAX_FIELD_CHARS) if isinstance(value, str) else ""

    return FoundConversation(
        sid=sid,
        date_created=text("conversation_date_created"),
        state=text("conversation_state"),
        friendly_name=text("conversation_friendly_name"),
    )


def _page_of(document: Mapping[str, Any]) -> tuple[list[Any] | None, str | None]:
    """A lookup page's entries and next page URL; entries None when it is not such a page."""
    entries, meta = document.get("conversations"), document.get("meta")
    if not isinstance(entries, list) or not isinstance(meta, dict):
        return None, None
    next_url = meta.get("next_page_url")
    if next_url is not None and not isinstance(next_url, str):
        return None, None
    return entries, next_url or None


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        split = urlsplit(url)
        scheme = split.scheme.lower()
        port = split.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None
    if not split.hostname or "@" in split.netloc:
        return None
    return scheme, split.hostname.lower(), port


def _redirect_message(answer: Answer) -> str:
    location = answer.headers.get("Location", "")
    if not location:
        return f"HTTP {answer.status} redirect without a Location; redirects are never followed"
    try:
        target = urlsplit(urljoin(answer.url, location))
        where = target.hostname or "?"
        if target.port is not None:
            where = f"{where}:{target.port}"
    except ValueError:
        where = "an unreadable Location"
    same = _origin(urljoin(answer.url, location)) == _origin(answer.url)
    return (
        f"HTTP {answer.status} redirect to {where}{' (same origin)' if same else ''}; redirects "
        "are never followed (the credentials and customer data would go with it): check the "
        "API root (--base-url, --conversations-url)"
    )
