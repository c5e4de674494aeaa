"""A small hostile HTTP/1.1 server for tests: scripted answers, every request recorded.

    with HostileServer() as server:          # or the `hostile` fixture (see below)
        server.script(cut(201, created_body(), after=10), Drop(), created())
        ...point a client at server.url...
        server.received                      # [Received(method, target, headers, body, ...)]

Each request takes the next behaviour scripted for its path (`script(..., path=...)`), else the
next one scripted for any path, else the path's standing answer (`always(path, behaviour)`),
else `default` (a 404 with a Twilio error body unless another is given). Keep-alive works
as in HTTP/1.1 (an answer with a Content-Length leaves the connection open), so pooled
clients are served; `Received.connection` numbers the connection a request came on.

Behaviours (each answers one request):
- `Reply(status, body, headers, reason=, length=True, cut_after=None, status_line_only=False,
  trickle=0.0)`: a whole answer; `length=False` sends no Content-Length (the body ends when the
  connection closes); `cut_after=N` sends N bytes of the body and closes; `status_line_only`
  sends the status line and closes; `trickle` waits that many seconds between bytes.
- `Raw(data)`: sends these bytes verbatim, then closes (for answers `Reply` cannot express).
- `Drop()`: reads the request and closes without a byte (the answer is lost).
- `Hang(seconds)`: reads the request, says nothing for `seconds`, closes.
- `Huge(status, size)`: a body of `size` zero bytes with its Content-Length, generated as sent.
Constructors for the usual cases: `created()`, `json_reply()`, `twilio_error()`, `html_page()`,
`redirect()`, `throttled()`, `many_headers()`, `long_header()`, `gzip_bomb_reply()`, `cut()`,
`status_line_only()`, `trickled()`, `lookup_page()`.

The `hostile` pytest fixture (a started server, stopped at teardown) is defined here as
`hostile_server`: import that name into a test module or conftest to use it.

Bounded: connections, requests per connection, request sizes, idle waits and each answer's
sending time all have limits, and every loop watches the stop event, so `stop()` (the end of
the `with` block or of the fixture) returns within about a second and leaves no thread.
`HostileServer(tls=context)` serves HTTPS; `make_certificate(folder)` writes a self-signed
certificate for 127.0.0.1 with the openssl command.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import socket
import ssl
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

import pytest

POLL = 0.05  # seconds a socket call waits before the stop event is looked at again
IDLE_LIMIT = 5.0  # a connection with no request for this long is closed
ANSWER_TIME_LIMIT = 15.0  # no answer, however slow or huge, is sent for longer
JOIN_TIMEOUT = 2.0  # stop() waits this long for each thread (each ends within POLL)
MAX_CONNECTIONS = 256  # per server: tests open a handful
MAX_REQUESTS_PER_CONNECTION = 1000
MAX_REQUEST_HEAD = 64 * 1024
MAX_REQUEST_BODY = 1024 * 1024
SEND_PIECE = 64 * 1024
BOMB_MEMBER = 16 * 1024 * 1024  # zeros per gzip member: compressed once, repeated
GIB = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Received:
    """One request as the server read it."""

    method: str
    target: str  # as sent: a path, an absolute URL (through a proxy) or host:port (CONNECT)
    headers: tuple[tuple[str, str], ...]
    body: bytes
    connection: int  # 1 for the first connection the server accepted, and so on

    @property
    def path(self) -> str:
        return urlsplit(self.target).path if "/" in self.target else self.target

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query))

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("latin-1")))

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class _Writer:
    """Sends to one client, giving up when it goes away, the server stops, or time is up."""

    def __init__(self, sock: socket.socket, stopping: threading.Event) -> None:
        self._sock = sock
        self._stopping = stopping
        self._until = time.monotonic() + ANSWER_TIME_LIMIT

    def _open(self) -> bool:
        return not self._stopping.is_set() and time.monotonic() < self._until

    def send(self, data: bytes) -> bool:
        view = memoryview(data)
        while view and self._open():
            try:
                sent = self._sock.send(view[:SEND_PIECE])
            except (TimeoutError, ssl.SSLWantWriteError):
                continue
            except OSError:
                return False  # the client closed: what a client that stops reading does
            view = view[sent:]
        return not view

    def pause(self, seconds: float) -> bool:
        return self._open() and not self._stopping.wait(seconds)


class Behaviour(Protocol):
    """How the server answers one request; True keeps the connection open for the next."""

    def answer(self, writer: _Writer, request: Received) -> bool: ...


@dataclass(frozen=True)
class Reply:
    """A whole answer, or its first part (see the module's docstring)."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    reason: str | None = None
    length: bool = True
    cut_after: int | None = None
    status_line_only: bool = False
    trickle: float = 0.0
    trickle_from: int = 0  # bytes of the answer sent at once before the trickle starts

    def status_line(self) -> bytes:
        reason = self.reason
        if reason is None:
            try:
                reason = HTTPStatus(self.status).phrase
            except ValueError:
                reason = "Unknown"
        return f"HTTP/1.1 {self.status} {reason}\r\n".encode("latin-1")

    def encoded(self) -> bytes:
        """The bytes this answer sends (before any trickling)."""
        if self.status_line_only:
            return self.status_line()
        head = [self.status_line()]
        head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in self.headers]
        if self.length:
            head.append(f"Content-Length: {len(self.body)}\r\n".encode())
        else:
            head.append(b"Connection: close\r\n")
        body = self.body if self.cut_after is None else self.body[: self.cut_after]
        return b"".join([*head, b"\r\n", body])

    def answer(self, writer: _Writer, request: Received) -> bool:
        data = self.encoded()
        if self.status_line_only:
            writer.send(data)
            return False
        if self.trickle:
            if not writer.send(data[: self.trickle_from]):
                return False
            for index in range(self.trickle_from, len(data)):
                if not writer.send(data[index : index + 1]) or not writer.pause(self.trickle):
                    return False
        elif not writer.send(data):
            return False
        return self.length and self.cut_after is None


@dataclass(frozen=True)
class Raw:
    """Send these bytes verbatim (a broken status line, contradictory headers...), then close."""

    data: bytes

    def answer(self, writer: _Writer, request: Received) -> bool:
        writer.send(self.data)
        return False


@dataclass(frozen=True)
class Drop:
    """Read the request, close without answering."""

    def answer(self, writer: _Writer, request: Received) -> bool:
        return False


@dataclass(frozen=True)
class Hang:
    """Read the request, say nothing for `seconds`, close."""

    seconds: float = ANSWER_TIME_LIMIT

    def answer(self, writer: _Writer, request: Received) -> bool:
        writer.pause(self.seconds)
        return False


@dataclass(frozen=True)
class Huge:
    """A body of `size` zero bytes, generated while it is sent."""

    status: int = 201
    size: int = GIB
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)

    def answer(self, writer: _Writer, request: Received) -> bool:
        head = Reply(self.status, headers=self.headers).status_line()
        head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in self.headers)
        if not writer.send(head + f"Content-Length: {self.size}\r\n\r\n".encode()):
            return False
        piece = bytes(SEND_PIECE)
        left = self.size
        while left > 0:
            if not writer.send(piece[: min(left, SEND_PIECE)]):
                return False
            left -= SEND_PIECE
        return True


# ---------------------------------------------------------------- constructors


def web_chat_sid(number: int = 1) -> str:
    """A well-formed Conversation SID, distinct per number."""
    return f"CH{number:032x}"


def created_body(sid: str | None = None, identity: str = "prv-test") -> bytes:
    """Twilio's answer to a new web chat."""
    return json.dumps({"conversation_sid": sid or web_chat_sid(), "identity": identity}).encode()


def json_reply(status: int, document: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """An answer with a JSON body."""
    content_type = (("Content-Type", "application/json"),)
    return Reply(status, json.dumps(document).encode(), content_type + headers)


def created(sid: str | None = None, identity: str = "prv-test", status: int = 201) -> Reply:
    """A web chat created, as Twilio answers it."""
    return Reply(status, created_body(sid, identity))


def twilio_error(
    status: int, code: object = 20404, message: object = "Not found", **extra: object
) -> Reply:
    """Twilio's error body; any field may be given any type."""
    document = {"code": code, "message": message, "status": status, **extra}
    document.setdefault("more_info", f"https://www.twilio.com/docs/errors/{code}")
    return json_reply(status, document)


def html_page(status: int = 200) -> Reply:
    """An HTML page, as a proxy or a captive portal answers."""
    page = b"<html><body><h1>Welcome</h1><p>Please log in.</p></body></html>"
    return Reply(status, page, (("Content-Type", "text/html; charset=utf-8"),))


def redirect(location: str, status: int = 302) -> Reply:
    """A redirect; its body is a trap: a client that reads it reads a gzip bomb."""
    headers = (("Location", location), ("Content-Type", "text/html"), ("Content-Encoding", "gzip"))
    return Reply(status, gzip_bomb(), headers)


def throttled(retry_after: str, status: int = 429) -> Reply:
    """A 429 with the given Retry-After, verbatim."""
    body = json.dumps({"code": 20429, "message": "Too Many Requests", "status": status})
    headers = (("Content-Type", "application/json"), ("Retry-After", retry_after))
    return Reply(status, body.encode(), headers)


def many_headers(count: int = 150, status: int = 201) -> Reply:
    """More headers than http.client accepts (100)."""
    filler = tuple((f"X-Filler-{n}", "x") for n in range(count))
    return Reply(status, created_body(), (("Content-Type", "application/json"), *filler))


def long_header(length: int = 70_000, status: int = 201) -> Reply:
    """One header line longer than http.client accepts (65536)."""
    headers = (("Content-Type", "application/json"), ("X-Long", "a" * length))
    return Reply(status, created_body(), headers)


def cut(status: int, body: bytes, after: int) -> Reply:
    """Announce the whole body, send `after` bytes of it, close."""
    return Reply(status, body, cut_after=after)


def status_line_only(status: int = 201) -> Reply:
    """A status line, then the connection closes."""
    return Reply(status, status_line_only=True)


def trickled(reply: Reply, seconds_per_byte: float, after_head: bool = False) -> Reply:
    """The same answer a byte at a time: all of it, or only its body (`after_head`)."""
    head = len(reply.encoded().partition(b"\r\n\r\n")[0]) + 4 if after_head else 0
    return replace(reply, trickle=seconds_per_byte, trickle_from=head)


@functools.cache
def gzip_bomb(inflated: int = GIB) -> bytes:
    """Gzip data (about 1/1000 of `inflated`) that inflates to `inflated` zero bytes.

    Built fast: one member of BOMB_MEMBER zeros compressed once and repeated; a gzip stream
    may hold many members and decoders (urllib3's included) read them all.
    """
    member = gzip.compress(bytes(BOMB_MEMBER), compresslevel=9, mtime=0)
    return member * max(1, inflated // BOMB_MEMBER)


def gzip_bomb_reply(status: int = 201, inflated: int = GIB) -> Reply:
    """A JSON answer, gzip-encoded, that inflates to `inflated` bytes."""
    headers = (("Content-Type", "application/json"), ("Content-Encoding", "gzip"))
    return Reply(status, gzip_bomb(inflated), headers)


def lookup_page(
    root: str,
    conversations: Sequence[object],
    next_page_url: str | None = None,
    identity: str = "prv-test",
) -> Reply:
    """A page of GET /v1/ParticipantConversations, as Twilio answers it."""
    url = f"{root}/v1/ParticipantConversations?Identity={identity}&PageSize=50"
    meta = {
        "page": 0,
        "page_size": 50,
        "first_page_url": url,
        "previous_page_url": None,
        "url": url,
        "next_page_url": next_page_url,
        "key": "conversations",
    }
    return json_reply(200, {"conversations": list(conversations), "meta": meta})


def participant_conversation(
    sid: str, identity: str = "prv-test", created_at: str = "2026-11-25T10:00:00Z"
) -> dict[str, object]:
    """One entry of a lookup page."""
    return {
        "account_sid": "AC" + "0" * 32,
        "participant_identity": identity,
        "conversation_sid": sid,
        "conversation_friendly_name": "Chat",
        "conversation_date_created": created_at,
        "conversation_state": "active",
        "conversation_attributes": "{}",
    }


# ---------------------------------------------------------------- the server


@dataclass
class _Connection:
    sock: socket.socket
    number: int
    buffer: bytes = b""
    idle_since: float = field(default_factory=time.monotonic)


class HostileServer:
    """The server: on 127.0.0.1, an ephemeral port, one thread per connection."""

    def __init__(
        self, *, tls: ssl.SSLContext | None = None, default: Behaviour | None = None
    ) -> None:
        self.tls = tls
        self.default: Behaviour = default or twilio_error(404, 20404, "nothing scripted")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()
        self._by_path: dict[str, deque[Behaviour]] = {}
        self._always: dict[str, Behaviour] = {}
        self._received: list[Received] = []
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()  # shut down by stop() so no thread waits
        self.connections = 0
        self.tls_failures = 0

    @property
    def url(self) -> str:
        """The root to give a client: http(s)://127.0.0.1:PORT."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def received(self) -> list[Received]:
        """Every request so far, in the order they were read."""
        with self._lock:
            return list(self._received)

    def script(self, *behaviours: Behaviour, path: str | None = None) -> None:
        """Answer the next requests (to `path` only, when given) with these, in order."""
        with self._lock:
            queue = self._script if path is None else self._by_path.setdefault(path, deque())
            queue.extend(behaviours)

    def always(self, path: str, behaviour: Behaviour) -> None:
        """Answer requests to `path` with this whenever nothing is scripted for them."""
        with self._lock:
            self._always[path] = behaviour

    def _next(self, request: Received) -> Behaviour:
        """Scripted for the path, else scripted, else the path's default, else the default."""
        queue = self._by_path.get(request.path)
        if queue:
            return queue.popleft()
        if self._script:
            return self._script.popleft()
        return self._always.get(request.path, self.default)

    def start(self) -> HostileServer:
        """Accept connections on a thread."""
        thread = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end every connection, join every thread."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() at once (Linux)
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(JOIN_TIMEOUT)
        self._listener.close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.connections += 1
                number = self.connections
                refused = number > MAX_CONNECTIONS or self._stopping.is_set()
                if not refused:
                    self._open.add(sock)
            if refused:
                sock.close()
                continue
            thread = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        try:
            if self.tls is not None:
                sock.settimeout(JOIN_TIMEOUT)
                try:
                    wrapped = self.tls.wrap_socket(sock, server_side=True)
                except (OSError, ssl.SSLError):
                    with self._lock:
                        self.tls_failures += 1
                    return
                with self._lock:
                    self._open.discard(sock)
                    self._open.add(wrapped)
                sock = wrapped
            sock.settimeout(POLL)
            connection = _Connection(sock, number)
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                request = self._read_request(connection)
                if request is None:
                    return
                with self._lock:
                    self._received.append(request)
                    behaviour = self._next(request)
                keep = behaviour.answer(_Writer(sock, self._stopping), request)
                if not keep or (request.header("Connection") or "").lower() == "close":
                    return
        finally:
            with self._lock:
                self._open.discard(sock)
            sock.close()

    def _recv(self, connection: _Connection) -> bool:
        """More bytes into the buffer; False when the client closed, idled, or we stop."""
        while not self._stopping.is_set():
            if time.monotonic() - connection.idle_since > IDLE_LIMIT:
                return False
            try:
                data = connection.sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                return False
            if not data:
                return False
            connection.buffer += data
            return True
        return False

    def _read_request(self, connection: _Connection) -> Received | None:
        connection.idle_since = time.monotonic()
        while b"\r\n\r\n" not in connection.buffer:
            if len(connection.buffer) > MAX_REQUEST_HEAD or not self._recv(connection):
                return None
        head, _, connection.buffer = connection.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        headers = tuple(
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:])
        )
        length_text = next((v for k, v in headers if k.lower() == "content-length"), "0")
        length = int(length_text) if length_text.isdigit() else 0
        if length > MAX_REQUEST_BODY:
            return None
        while len(connection.buffer) < length:
            if not self._recv(connection):
                return None
        body, connection.buffer = connection.buffer[:length], connection.buffer[length:]
        return Received(parts[0], parts[1], headers, body, connection.number)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (openssl command), as PEM files."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context for `HostileServer(tls=...)`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture(name="hostile")
def hostile_server() -> Iterator[HostileServer]:
    """A started hostile server, stopped at teardown."""
    with HostileServer() as server:
        yield server
