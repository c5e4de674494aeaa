"""The Twilio APIs over HTTP: where they are, how we authenticate, what each call came to.

The only module that imports requests and urllib3. Nothing a server or the network does
raises: every answer and every failure comes back as an `Attempt` or a `Lookup`, and every
text in them that came from a server or an exception is redacted (the secret never appears),
stripped of control characters and bounded in length.

What a hostile or broken server cannot do:
- make us read more than a Twilio answer can be (`MAX_ANSWER_BYTES`, `MAX_LOOKUP_PAGE_BYTES`,
  counted after decompression, so a small gzip body that inflates to gigabytes is not read);
- keep an attempt going past `timeout`: a watchdog shuts the connection down at the deadline,
  so a server trickling a byte a second ends within about `timeout`. Not covered: name
  resolution (the system resolver's own timeout), a connect that tries several addresses
  (each gets `timeout`), and a proxy's answer to CONNECT (per read timeout only);
- send us elsewhere: a 3xx is a failure (`redirect_refused`), never followed, so the
  credentials and customer data never go to another origin; lookups follow a next page
  only on the root's own origin;
- pass a 2xx off as a creation: `created` needs a readable answer with a Conversation SID.
"""

from __future__ import annotations

import base64
import contextlib
import html
import http.client
import http.cookiejar
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import InvalidHeader, NameResolutionError, NewConnectionError
from urllib3.response import BaseHTTPResponse, HTTPResponse

from provisioner import __version__
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
    ca_bundle,
    is_loopback,
    proxy_for,
    resolve_base_url,
    resolve_conversations_url,
)

# Re-exported: callers know these as the client's.
__all__ = [
    "Attempt",
    "Credentials",
    "FoundConversation",
    "Lookup",
    "TwilioClient",
    "is_loopback",
    "parse_retry_after",
    "resolve_base_url",
    "resolve_conversations_url",
]

WEB_CHATS_PATH = "/v2/WebChats"
CONVERSATIONS_PATH = "/v1/Conversations"
PARTICIPANT_CONVERSATIONS_PATH = "/v1/ParticipantConversations"
USER_AGENT = f"provisioner/{__version__} (python-requests/{requests.__version__})"
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
MAX_MESSAGE_CHARS = 500  # an error message longer than this is cut (after redaction)
MAX_FIELD_CHARS = 256  # Twilio's longest identity and friendly name
READ_CHUNK = 16 * 1024  # decoded bytes per read: the cap is overshot by at most this much
MAX_CAUSES = 10  # exception chains are walked this deep, never forever
REDACTED = "[redacted]"


# ---------------------------------------------------------------- the deadline


class _Guard:
    """One attempt's deadline: when it passes, the attempt's sockets are shut down."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def watch(self, sock: object) -> None:
        raw = _raw_socket(sock)
        if raw is None:
            return
        with self._lock:
            if self._done:
                return
            self._sockets.append(raw)
            if self.expired:
                _shutdown(raw)

    def forget(self, sock: object) -> bool:
        """Stop watching a socket going back to the pool; True if the deadline shut it down."""
        raw = _raw_socket(sock)
        with self._lock:
            if raw in self._sockets:
                self._sockets.remove(raw)
                return self.expired
        return False

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def finish(self) -> bool:
        """No more shutting down; True if the deadline had passed."""
        with self._lock:
            self._done = True
            self._sockets.clear()
            return self.expired


def _raw_socket(sock: object) -> socket.socket | None:
    for _ in range(3):  # TLS inside TLS (an https proxy) wraps a socket in an SSLTransport
        if isinstance(sock, socket.socket):
            return sock
        sock = getattr(sock, "socket", None)
    return None


def _shutdown(sock: socket.socket) -> None:
    # The plain socket's shutdown: SSLSocket's would drop the TLS object under the reader.
    # OSError: already closed, nothing left to stop.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One thread per client that expires attempts whose deadline has passed."""

    def __init__(self) -> None:
        self._guards: set[_Guard] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, timeout: float) -> _Guard:
        guard = _Guard(time.monotonic() + timeout)
        with self._wake:
            if self._closed:
                return guard  # a closed client still bounds each read by the timeout
            self._guards.add(guard)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="provisioner-deadlines", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        return guard

    def disarm(self, guard: _Guard) -> bool:
        expired = guard.finish()
        with self._wake:
            self._guards.discard(guard)
        return expired

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=1.0)

    def _run(self) -> None:
        with self._wake:
            while not self._closed:
                now = time.monotonic()
                for guard in [g for g in self._guards if g.deadline <= now]:
                    self._guards.discard(guard)
                    guard.expire()
                soonest = min((g.deadline for g in self._guards), default=None)
                self._wake.wait(None if soonest is None else max(soonest - now, 0.0))


_current = threading.local()  # the guard of the attempt this thread is making


def _watch_current(connection: HTTPConnection) -> None:
    guard: _Guard | None = getattr(_current, "guard", None)
    if guard is None or connection.sock is None:
        return
    guard.watch(connection.sock)
    # Each read also waits at most what is left, so a silent server times out at the deadline.
    connection.timeout = max(guard.deadline - time.monotonic(), 0.001)


def _release_current(connection: object) -> bool:
    guard: _Guard | None = getattr(_current, "guard", None)
    sock = getattr(connection, "sock", None)
    return guard is not None and sock is not None and guard.forget(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        _watch_current(self)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]
        _watch_current(self)
        return super().getresponse()


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection

    def _put_conn(self, conn: Any) -> None:
        if conn is not None and _release_current(conn):
            conn.close()  # shut down by the deadline: never hand it to the next request
        super()._put_conn(conn)


class _WatchedTLSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection

    def _put_conn(self, conn: Any) -> None:
        if conn is not None and _release_current(conn):
            conn.close()
        super()._put_conn(conn)


_POOL_CLASSES = {"http": _WatchedPool, "https": _WatchedTLSPool}


class _Adapter(HTTPAdapter):
    """requests' adapter with connections the deadline can watch."""

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager


class _Session(requests.Session):
    """A session that never follows, nor even reads, a redirect."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        # requests reads a redirect's whole body to follow it, even with allow_redirects=False.
        return None


# ---------------------------------------------------------------- the exchange


@dataclass(frozen=True)
class _Answer:
    """One HTTP exchange: a status and what of the body could be read, or why there is none."""

    url: str
    status: int | None = None
    reason: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    failure: str = ""  # why there is no status, or why the body is not whole
    detail: str = ""
    reached: bool = True  # the request may have reached the server

    @property
    def complete(self) -> bool:
        return self.status is not None and not self.failure


class _Redactor:
    """Removes the secret, in every form a server could quote it, from texts."""

    def __init__(self, credentials: Credentials, proxies: Mapping[str, str]) -> None:
        forms: set[str] = set()
        secrets = [credentials.secret]
        passwords = [urlsplit(url).password or "" for url in proxies.values()]
        secrets += passwords + [unquote(password) for password in passwords]
        for secret in filter(None, secrets):
            forms |= {secret, quote(secret, safe=""), quote_plus(secret), html.escape(secret)}
            forms.add(json.dumps(secret)[1:-1])
            forms.add(base64.b64encode(secret.encode("latin-1", "replace")).decode())
        basic = f"{credentials.username}:{credentials.secret}".encode("latin-1", "replace")
        forms.add(base64.b64encode(basic).decode())
        ordered = sorted(filter(None, forms), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE)

    def __call__(self, text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
        # Control characters are replaced before redacting: after, they could join its parts.
        cleaned = self._pattern.sub(REDACTED, one_line(text))
        return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


class _Transport:
    """One pooled, kept-alive session: a request out, at most `cap` bytes back by the deadline.

    Proxies (HTTPS_PROXY, NO_PROXY...) and the CA bundle come from `env` (os.environ when
    None); unusable ones raise ConfigError here, before anything is sent.
    """

    def __init__(
        self,
        roots: tuple[str, ...],
        credentials: Credentials,
        timeout: float,
        pool_size: int,
        env: Mapping[str, str] | None,
    ) -> None:
        environment = os.environ if env is None else env
        self.timeout = timeout
        # Proxies per host, so NO_PROXY can tell the roots apart; none means direct.
        self._proxies = {
            f"{urlsplit(root).scheme}://{urlsplit(root).hostname}": proxy
            for root in roots
            if (proxy := proxy_for(root, environment)) is not None
        }
        self._verify = ca_bundle(environment)
        self.redact = _Redactor(credentials, self._proxies)
        self._watchdog = _Watchdog()
        self._session = _Session()
        adapter = _Adapter(pool_connections=len(roots), pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.auth = (credentials.username, credentials.secret)
        # Proxies and CA bundle are read above, from `env`; trust_env would also read .netrc
        # (only when no auth is set, but never is better) and REQUESTS_CA_BUNDLE behind our back.
        self._session.trust_env = False
        self._session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self._session.headers.update(
            {"Accept": "application/json", "Accept-Encoding": "gzip", "User-Agent": USER_AGENT}
        )

    def exchange(
        self,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
        cap: int = MAX_ANSWER_BYTES,
    ) -> _Answer:
        """Send one request and read at most `cap` decoded bytes of the answer by the deadline."""
        guard = self._watchdog.arm(self.timeout)
        _current.guard = guard
        response: requests.Response | None = None
        try:
            try:
                response = self._session.request(
                    method,
                    url,
                    data=data,
                    params=params,
                    timeout=(self.timeout, self.timeout),
                    stream=True,
                    allow_redirects=False,
                    proxies=self._proxies,
                    verify=self._verify,
                )
            except Exception as error:  # every failure becomes a value
                return _no_answer(url, error, guard.expired)
            return self._read(url, response, cap, guard)
        finally:
            _current.guard = None
            self._watchdog.disarm(guard)
            if response is not None:
                with contextlib.suppress(Exception):  # closing what a server broke
                    response.close()

    def _read(self, url: str, response: requests.Response, cap: int, guard: _Guard) -> _Answer:
        answer = _Answer(
            url=url,
            status=response.status_code,
            reason=response.reason or "",
            headers=CaseInsensitiveDict(response.headers),
        )
        if 300 <= response.status_code < 400:
            return answer  # never read: the body of a redirect is nothing we need
        raw: BaseHTTPResponse = response.raw
        chunks: list[bytes] = []
        size = 0
        failure = detail = ""
        try:
            for chunk in raw.stream(READ_CHUNK, decode_content=True):
                size += len(chunk)
                if size > cap:
                    failure, detail = "too_large", f"longer than {cap} bytes"
                    break
                chunks.append(chunk)
                if guard.expired:
                    break
        except Exception as error:  # a cut, a reset, a bad gzip stream
            failure, detail = "cut", _describe(error)
        if guard.expired and failure != "too_large":
            failure, detail = "timeout", f"not complete within {self.timeout:g}s"
        return _Answer(
            url=url,
            status=answer.status,
            reason=answer.reason,
            headers=answer.headers,
            body=b"".join(chunks),
            failure=failure,
            detail=detail,
        )

    def close(self) -> None:
        """Close pooled connections and stop the deadline thread."""
        self._session.close()
        self._watchdog.close()


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
        self._transport = _Transport(
            (flex_root, conversations_root), credentials, timeout, pool_size, env
        )
        self._redact = self._transport.redact
        self._web_chats_url = flex_root + WEB_CHATS_PATH
        self._conversations_root = conversations_root
        self._clock = clock

    def create_web_chat(self, parameters: Mapping[str, str]) -> Attempt:
        """POST one web chat; every outcome, failures included, comes back as an Attempt."""
        started = self._clock()
        answer = self._transport.exchange("POST", self._web_chats_url, data=dict(parameters))
        return replace(self._web_chat_attempt(answer), latency=self._clock() - started)

    def close_conversation(self, sid: str) -> Attempt:
        """Set one conversation's State to closed (never delete); `created` means it was done."""
        started = self._clock()
        if not SID_PATTERN.fullmatch(sid):
            return Attempt(
                error_code="invalid_sid",
                error_message="not a Conversation SID (CH + 32 hex digits); nothing was sent",
            )
        url = f"{self._conversations_root}{CONVERSATIONS_PATH}/{sid}"
        answer = self._transport.exchange("POST", url, data={"State": "closed"})
        return replace(self._close_attempt(answer, sid), latency=self._clock() - started)

    def find_conversations(self, identity: str) -> Lookup:
        """The conversations `identity` takes part in, following same-origin next pages."""
        started = self._clock()
        url = self._conversations_root + PARTICIPANT_CONVERSATIONS_PATH
        params: dict[str, str | int] | None = {"Identity": identity, "PageSize": LOOKUP_PAGE_SIZE}
        found: dict[str, FoundConversation] = {}  # by SID: pages may overlap as the index moves
        ignored = 0
        for page in range(1, MAX_LOOKUP_PAGES + 1):
            answer = self._transport.exchange("GET", url, params=params, cap=MAX_LOOKUP_PAGE_BYTES)
            conversations = tuple(found.values())
            if answer.status is None or not 200 <= answer.status < 300 or not answer.complete:
                return self._failed_lookup(answer, conversations, page, started)
            entries, next_url = _page_of(json_object(answer.body) or {})
            code, message = "", ""
            if entries is None:
                code, message = "unreadable_answer", "the answer is not a page of conversations"
            elif next_url and _origin(next_url) != _origin(url):
                where = urlsplit(next_url).netloc
                code, message = "redirect_refused", f"the next page is on {where}; not followed"
            for entry in entries or ():
                conversation = self._found(entry, identity)
                if conversation is None:
                    ignored += 1
                else:
                    found.setdefault(conversation.sid, conversation)
            if ignored and not code:
                message = f"{ignored} entries without this identity's conversation SID ignored"
            if code or not next_url:
                return self._lookup(tuple(found.values()), answer, code, message, page, started)
            url, params = next_url, None
        return self._lookup(
            tuple(found.values()),
            answer,
            "too_many_pages",
            f"more than {MAX_LOOKUP_PAGES} pages of conversations for one identity; not all read",
            MAX_LOOKUP_PAGES,
            started,
        )

    def close(self) -> None:
        """Close pooled connections and stop the deadline thread."""
        self._transport.close()

    # -- answers into values

    def _web_chat_attempt(self, answer: _Answer) -> Attempt:
        maybe = "; the web chat may exist"
        if answer.status is None or not 200 <= answer.status < 300:
            return self._failed_attempt(answer, maybe)
        document = json_object(answer.body) if answer.complete else None
        sid = document.get("conversation_sid") if document else None
        identity = document.get("identity") if document else None
        request_id = self._redact(answer.headers.get("Twilio-Request-Id", ""), 64)
        problem = self._unreadable(answer, document, sid)
        if problem:
            return Attempt(
                http_status=answer.status,
                request_id=request_id,
                error_code="unreadable_answer",
                error_message=self._redact(f"HTTP {answer.status}, but {problem}{maybe}"),
                ambiguous=True,
            )
        assert isinstance(sid, str)
        note = ""
        if answer.status != CREATED_STATUS:
            note = f"HTTP {answer.status} where Twilio answers {CREATED_STATUS}; created"
        return Attempt(
            http_status=answer.status,
            conversation_sid=sid,
            identity=self._redact(identity, MAX_FIELD_CHARS) if isinstance(identity, str) else "",
            request_id=request_id,
            error_message=note,
        )

    def _close_attempt(self, answer: _Answer, sid: str) -> Attempt:
        if answer.status is None or not 200 <= answer.status < 300:
            return self._failed_attempt(answer, "; the conversation may be closed")
        document = json_object(answer.body) if answer.complete else None
        answered = document.get("sid") if document else None
        problem = self._unreadable(answer, document, answered)
        if not problem and answered != sid:
            problem = "the answer is about another conversation"
        request_id = self._redact(answer.headers.get("Twilio-Request-Id", ""), 64)
        if problem:
            return Attempt(
                http_status=answer.status,
                conversation_sid=sid,
                request_id=request_id,
                error_code="unreadable_answer",
                error_message=self._redact(
                    f"HTTP {answer.status}, but {problem}; the conversation may be closed"
                ),
                ambiguous=True,
            )
        return Attempt(http_status=answer.status, conversation_sid=sid, request_id=request_id)

    def _unreadable(self, answer: _Answer, document: Mapping[str, Any] | None, sid: object) -> str:
        """Why a 2xx answer does not prove what was asked; "" when it does."""
        if answer.failure == "too_large":
            return f"the answer was {answer.detail} and was not read"
        if answer.failure == "timeout":
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
        if not isinstance(sid, str) or not SID_PATTERN.fullmatch(self._redact(sid)):
            return "the answer's SID is not a Conversation SID (CH + 32 hex digits)"
        return ""

    def _failed_attempt(self, answer: _Answer, maybe: str) -> Attempt:
        """A transport failure, a redirect, or a Twilio error, as an Attempt."""
        if answer.status is None:
            ambiguous = answer.reached
            return Attempt(
                error_code=answer.failure,
                error_message=self._redact(answer.detail + (maybe if ambiguous else "")),
                ambiguous=ambiguous,
            )
        code, message, retry_after = self._error_fields(answer)
        more_info = parse_error_body(answer.body).more_info if answer.complete else ""
        # A gateway's 502 or 504 may come after Twilio created the web chat behind it.
        gateway = answer.status in GATEWAY_FAILURES and bool(maybe)
        return Attempt(
            http_status=answer.status,
            request_id=self._redact(answer.headers.get("Twilio-Request-Id", ""), 64),
            error_code=code,
            error_message=message + (self._redact(maybe) if gateway else ""),
            retry_after=retry_after,
            more_info=self._redact(more_info, 300),
            ambiguous=gateway,
        )

    def _error_fields(self, answer: _Answer) -> tuple[str, str, float | None]:
        assert answer.status is not None
        if 300 <= answer.status < 400:
            return "redirect_refused", self._redact(_redirect_message(answer)), None
        error = parse_error_body(answer.body) if answer.complete else TwilioError()
        text = error.message or f"HTTP {answer.status} {answer.reason}".strip()
        if error.more_info:
            text = f"{text} ({error.more_info})"
        if answer.failure:
            text = f"{text} (the answer was cut short: {answer.detail})"
        retry_after = parse_retry_after(answer.headers.get("Retry-After"), cap=MAX_RETRY_AFTER)
        return self._redact(error.code, 32), self._redact(text), retry_after

    def _failed_lookup(
        self,
        answer: _Answer,
        conversations: tuple[FoundConversation, ...],
        page: int,
        started: float,
    ) -> Lookup:
        """The Lookup for a page that was not a readable 2xx."""
        if answer.status is not None and 200 <= answer.status < 300:
            problem = self._unreadable(answer, None, None)
            return self._lookup(conversations, answer, "unreadable_answer", problem, page, started)
        attempt = self._failed_attempt(answer, "")
        return Lookup(
            conversations=conversations,
            http_status=attempt.http_status,
            error_code=attempt.error_code,
            error_message=attempt.error_message,
            request_id=attempt.request_id,
            retry_after=attempt.retry_after,
            latency=self._clock() - started,
            pages=page,
        )

    def _lookup(
        self,
        conversations: tuple[FoundConversation, ...],
        answer: _Answer,
        code: str,
        message: str,
        page: int,
        started: float,
    ) -> Lookup:
        return Lookup(
            conversations=conversations,
            http_status=answer.status,
            error_code=code,
            error_message=self._redact(message),
            request_id=self._redact(answer.headers.get("Twilio-Request-Id", ""), 64),
            latency=self._clock() - started,
            pages=page,
        )

    def _found(self, entry: object, identity: str) -> FoundConversation | None:
        """One entry of a lookup page, or None when it is not this identity's conversation."""
        if not isinstance(entry, dict):
            return None
        sid = entry.get("conversation_sid")
        if not isinstance(sid, str) or not SID_PATTERN.fullmatch(self._redact(sid)):
            return None
        who = entry.get("participant_identity")
        if isinstance(who, str) and who != identity:
            return None  # another identity's conversation is never this row's web chat

        def text(name: str) -> str:
            value = entry.get(name)
            return self._redact(value, MAX_FIELD_CHARS) if isinstance(value, str) else ""

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


def _redirect_message(answer: _Answer) -> str:
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


def _no_answer(url: str, error: BaseException, expired: bool) -> _Answer:
    """A request that got no status line: what failed, and whether it may have arrived."""
    host = urlsplit(url).netloc
    causes = _causes(error)

    def caused_by(*kinds: type[BaseException]) -> bool:
        return any(isinstance(cause, kinds) for cause in causes)

    if isinstance(error, requests.exceptions.ConnectTimeout):  # the request never left
        return _Answer(
            url, failure="connect_timeout", reached=False, detail=f"no connection to {host} in time"
        )
    if expired or isinstance(error, requests.exceptions.ReadTimeout):
        return _Answer(url, failure="timeout", detail=f"no complete answer from {host} in time")
    if isinstance(error, requests.exceptions.ProxyError):
        return _Answer(
            url,
            failure="proxy_failed",
            reached=False,
            detail=f"the proxy failed or refused to reach {host} ({_describe(error)})",
        )
    if caused_by(ssl.SSLCertVerificationError):
        return _Answer(
            url,
            failure="tls_untrusted",
            reached=False,
            detail=f"the certificate of {host} is not trusted ({_describe(error)}); on a "
            "network that inspects TLS, point REQUESTS_CA_BUNDLE or SSL_CERT_FILE at its CA "
            "certificates",
        )
    if caused_by(NewConnectionError, NameResolutionError, ConnectionRefusedError):
        return _Answer(
            url,
            failure="connection_failed",
            reached=False,
            detail=f"could not connect to {host} ({_describe(error)})",
        )
    unreadable = (http.client.HTTPException, InvalidHeader, requests.exceptions.InvalidHeader)
    if caused_by(*unreadable) and not caused_by(http.client.RemoteDisconnected):
        # Too many headers, a header line too long, a status line that is not HTTP,
        # contradictory lengths.
        return _Answer(
            url,
            failure="unreadable_answer",
            detail=f"the answer from {host} could not be read ({_describe(error)})",
        )
    if isinstance(error, requests.exceptions.SSLError):
        return _Answer(
            url, failure="tls_failed", detail=f"TLS failed with {host} ({_describe(error)})"
        )
    if isinstance(error, (requests.exceptions.ConnectionError, Urllib3Error, OSError)):
        return _Answer(
            url,
            failure="connection_lost",
            detail=f"connection to {host} lost before an answer ({_describe(error)})",
        )
    return _Answer(
        url, failure="request_failed", detail=f"{type(error).__name__} ({_describe(error)})"
    )


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what caused it, through urllib3's wrappers, never looping."""
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and len(chain) < MAX_CAUSES and cause not in chain:
        chain.append(cause)
        reason = getattr(cause, "reason", None)
        if isinstance(reason, BaseException):
            cause = reason
        elif cause.args and isinstance(cause.args[-1], BaseException):
            cause = cause.args[-1]
        else:
            cause = cause.__cause__ or cause.__context__
    return chain


def _describe(error: BaseException) -> str:
    """The innermost cause's own words, which say more than urllib3's wrappers."""
    innermost = _causes(error)[-1]
    text = str(innermost) or type(innermost).__name__
    text = re.sub(r"<urllib3\.[^>]*>: ", "", text)
    return text if len(text) <= 300 else text[:297] + "..."
