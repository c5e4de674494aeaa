"""The HTTP exchange under the client: one pooled session, bounded answers, a deadline.

The only module that imports requests and urllib3. Nothing a server or the network does
raises: every request comes back as an `Answer`, a status and what of the body could be read,
or why there is none. What each answer means is client.py's.

What a hostile or broken server cannot do here:
- make us read more than the caller's `cap` (counted after decompression, so a small gzip
  body that inflates to gigabytes is not read);
- keep an exchange going past `timeout`: a watchdog shuts the connection down at the deadline,
  so a server trickling a byte a second ends within about `timeout`. Not covered: name
  resolution (the system resolver's own timeout), a connect that tries several addresses
  (each gets `timeout`), and a proxy's answer to CONNECT (per read timeout only);
- send us elsewhere: a redirect is never followed, nor its body read;
- show the secret: `Redactor` removes it, in every form a server could quote it, from texts.
"""

from __future__ import annotations

import base64
import contextlib
import html
import http.client
import http.cookiejar
import json
import math
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import InvalidHeader, NameResolutionError, NewConnectionError
from urllib3.response import BaseHTTPResponse, HTTPResponse

from provisioner import __version__
from provisioner.attempts import one_line
from provisioner.endpoints import Credentials, ca_bundle, proxy_for
from provisioner.vocabulary import ErrorCode

USER_AGENT = f"provisioner/{__version__} (python-requests/{requests.__version__})"
MAX_MESSAGE_CHARS = 500  # an error message longer than this is cut (after redaction)
READ_CHUNK = 16 * 1024  # decoded bytes per read: the cap is overshot by at most this much
MAX_CAUSES = 10  # exception chains are walked this deep, never forever
REDACTED = "[redacted]"
# Failures before the request was sent: nothing can have been done at the other end.
UNSENT_FAILURES = frozenset(
    {
        ErrorCode.CONNECT_TIMEOUT,
        ErrorCode.PROXY_FAILED,
        ErrorCode.TLS_UNTRUSTED,
        ErrorCode.CONNECTION_FAILED,
    }
)
# An answer's failures with a status line: the body was not read whole (not error codes).
FORM = "application/x-www-form-urlencoded"  # the body of every POST
TOO_LARGE = "too_large"  # longer than the cap: not read
CUT = "cut"  # the body was cut short


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
        self._wakes_at = math.inf  # when the thread wakes next by itself

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
            # Woken only for a deadline sooner than its own: with one timeout for every
            # request, a new deadline is the latest, and waking the thread per request would
            # cost every request a thread switch.
            if guard.deadline < self._wakes_at:
                self._wakes_at = guard.deadline
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
                self._wakes_at = min((g.deadline for g in self._guards), default=math.inf)
                wait = None if self._wakes_at == math.inf else max(self._wakes_at - now, 0.0)
                self._wake.wait(wait)


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
class Answer:
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
        """A status and the whole body: nothing failed."""
        return self.status is not None and not self.failure


class Redactor:
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


class Transport:
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
        self.redact = Redactor(credentials, self._proxies)
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
        # Requests are prepared here, not by Session.request: it merges the session's settings
        # into each request through runtime protocol checks that cost a tenth of a row's CPU;
        # these are the same headers, auth and body it would build (test_transport compares).
        self._headers = dict(self._session.headers)
        self._form_headers = {**self._headers, "Content-Type": FORM}

    def exchange(
        self,
        method: str,
        url: str,
        *,
        cap: int,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> Answer:
        """Send one request and read at most `cap` decoded bytes of the answer by the deadline."""
        guard = self._watchdog.arm(self.timeout)
        _current.guard = guard
        response: requests.Response | None = None
        try:
            try:
                response = self._session.send(
                    self._prepared(method, url, data, params),
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

    def _prepared(
        self,
        method: str,
        url: str,
        data: Mapping[str, str] | None,
        params: Mapping[str, str | int] | None,
    ) -> requests.PreparedRequest:
        """The request Session.request would send: session headers, Basic auth, a form body."""
        request = requests.PreparedRequest()
        request.prepare(
            method=method,
            url=url,
            # An empty form is no body, and so no Content-Type, as Session.request sends it.
            headers=self._form_headers if data else self._headers,
            data=urlencode(data).encode("ascii") if data else None,
            params=params,
            auth=self._session.auth,
        )
        return request

    def _read(self, url: str, response: requests.Response, cap: int, guard: _Guard) -> Answer:
        answer = Answer(
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
                    failure, detail = TOO_LARGE, f"longer than {cap} bytes"
                    break
                chunks.append(chunk)
                if guard.expired:
                    break
        except Exception as error:  # a cut, a reset, a bad gzip stream
            failure, detail = CUT, _describe(error)
        if guard.expired and failure != TOO_LARGE:
            failure, detail = ErrorCode.TIMEOUT, f"not complete within {self.timeout:g}s"
        return Answer(
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


def _no_answer(url: str, error: BaseException, expired: bool) -> Answer:
    """A request that got no status line: what failed, and whether it may have arrived."""
    failure, detail = _failure(error, expired, urlsplit(url).netloc)
    return Answer(url, failure=failure, detail=detail, reached=failure not in UNSENT_FAILURES)


def _failure(error: BaseException, expired: bool, host: str) -> tuple[str, str]:
    """What kept a status line from coming back, as a failure code and a text naming `host`."""
    causes = _causes(error)

    def caused_by(*kinds: type[BaseException]) -> bool:
        return any(isinstance(cause, kinds) for cause in causes)

    if isinstance(error, requests.exceptions.ConnectTimeout):  # the request never left
        return ErrorCode.CONNECT_TIMEOUT, f"no connection to {host} in time"
    if expired or isinstance(error, requests.exceptions.ReadTimeout):
        return ErrorCode.TIMEOUT, f"no complete answer from {host} in time"
    if isinstance(error, requests.exceptions.ProxyError):
        return (
            ErrorCode.PROXY_FAILED,
            f"the proxy failed or refused to reach {host} ({_describe(error)})",
        )
    if caused_by(ssl.SSLCertVerificationError):
        return ErrorCode.TLS_UNTRUSTED, (
            f"the certificate of {host} is not trusted ({_describe(error)}); on a network that "
            "inspects TLS, point REQUESTS_CA_BUNDLE or SSL_CERT_FILE at its CA certificates"
        )
    if caused_by(NewConnectionError, NameResolutionError, ConnectionRefusedError):
        return ErrorCode.CONNECTION_FAILED, f"could not connect to {host} ({_describe(error)})"
    unreadable = (http.client.HTTPException, InvalidHeader, requests.exceptions.InvalidHeader)
    if caused_by(*unreadable) and not caused_by(http.client.RemoteDisconnected):
        # Too many headers, a header line too long, a status line that is not HTTP,
        # contradictory lengths.
        return (
            ErrorCode.UNREADABLE_ANSWER,
            f"the answer from {host} could not be read ({_describe(error)})",
        )
    if isinstance(error, requests.exceptions.SSLError):
        return ErrorCode.TLS_FAILED, f"TLS failed with {host} ({_describe(error)})"
    if isinstance(error, (requests.exceptions.ConnectionError, Urllib3Error, OSError)):
        return (
            ErrorCode.CONNECTION_LOST,
            f"connection to {host} lost before an answer ({_describe(error)})",
        )
    return ErrorCode.REQUEST_FAILED, f"{type(error).__name__} ({_describe(error)})"


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
