"""HTTP framing: read a request off the socket, write the answer back (or drop the connection);
the connections open, counted from accept to shutdown."""

from __future__ import annotations

import json
import selectors
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from provisioner.emulator.answers import BAD_REQUEST, Answer, Drop, Reply, twilio_error
from provisioner.emulator.routes import OTHER, Request, Routes

MAX_BODY = 1 << 20  # bytes; far above any form Twilio accepts, and bounds memory per request
WRITE_BUFFER = 64 * 1024  # headers and body leave in one segment, flushed per answer
THREAD_POLL = 0.01  # seconds between shutdown checks from a thread: how long stop() waits
# Connections the kernel completes before the serving thread accepts them: socketserver's 5
# drops the SYNs of a sixth made at once (a run's pool opens --concurrency's, up to 256), and
# the client tries again only a second later, its request counted nowhere in between.
LISTEN_QUEUE = 512


class AnswerSink(Protocol):
    """Where answers are recorded (the emulator's answers log)."""

    def add(self, status: int, kind: str) -> None:
        """Note one answer sent."""


class Server(ThreadingHTTPServer):
    """A threading server whose handlers ask `routes`; one daemon thread per connection."""

    daemon_threads = True  # a client that never hangs up must not keep the process alive
    request_queue_size = LISTEN_QUEUE

    def __init__(self, address: tuple[str, int], routes: Routes, log: AnswerSink) -> None:
        super().__init__(address, Handler, bind_and_activate=True)
        self.routes = routes
        self.log = log
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()  # accepted, not yet shut down
        self._connections_lock = threading.Lock()

    @property
    def open_connections(self) -> int:
        """Connections made and not yet ended: accepted ones (a client gone leaves its handler
        to read what it sent before it went, then end), and one the kernel holds for us."""
        with self._connections_lock:
            accepted = len(self._connections)
        return accepted + self._waiting()

    def _waiting(self) -> int:
        """1 when the listening socket has a connection to accept: its request is still to come."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                return 1 if selector.select(timeout=0) else 0
        except (OSError, ValueError):  # closed: nothing waits on it any more
            return 0

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection, counted from here (socketserver's)."""
        request, address = super().get_request()
        with self._connections_lock:
            self._connections.add(request)
        return request, address

    def shutdown_request(self, request: Any) -> None:
        """End a connection (socketserver's), counted ended: every accepted one comes here,
        refused, failed or handled, some paths twice, hence a set and not a number."""
        try:
            super().shutdown_request(request)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def serve_in_thread(self) -> None:
        """Serve from a daemon thread until stop()."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": THREAD_POLL}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (if serving from a thread) and close the socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up (timeouts, stopped runs) are normal here; anything else is a bug."""
        if not isinstance(sys.exception(), OSError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Handler(BaseHTTPRequestHandler):
    """One connection: requests in, answers out, keep-alive as Twilio's edge does."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"  # refusals of garbled request lines get a status line
    server_version = "provisioner-emulator"
    disable_nagle_algorithm = True
    wbufsize = WRITE_BUFFER
    server: Server

    def do_GET(self) -> None:
        """Serve a GET."""
        self._handle()

    def do_POST(self) -> None:
        """Serve a POST."""
        self._handle()

    def do_DELETE(self) -> None:
        """Serve a DELETE (Twilio's JSON 404 or 405: nothing here is deleted)."""
        self._handle()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line...), in Twilio's JSON."""
        self.close_connection = True
        text = message or self.responses.get(code, ("Bad request",))[0]
        reply = twilio_error(code, BAD_REQUEST, text, self.server.routes.request_id())
        self._deliver(OTHER, reply)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the run's own log says what matters."""

    def _handle(self) -> None:
        body = self._read_body()
        if isinstance(body, Reply):
            self._deliver(OTHER, body)
            return
        request = Request(
            method=self.command,
            target=self.path,
            authorization=self.headers.get("Authorization"),
            content_type=self.headers.get("Content-Type", ""),
            body=body,
            host=self.headers.get("Host"),
        )
        kind, answer = self.server.routes.answer(request)
        self._deliver(kind, answer)

    def _read_body(self) -> bytes | Reply:
        """The body, or a refusal when its length is missing, malformed or too large."""
        declared = self.headers.get("Content-Length")
        if declared is None and self.headers.get("Transfer-Encoding") is None:
            return b""
        try:
            length = int(declared or "")
        except ValueError:
            length = -1
        if 0 <= length <= MAX_BODY:
            return self.rfile.read(length)
        self.close_connection = True  # the unread body would be taken for the next request
        status, message = (413, "Body too large") if length > MAX_BODY else (400, "Bad length")
        return twilio_error(status, BAD_REQUEST, message, self.server.routes.request_id())

    def _deliver(self, kind: str, answer: Answer) -> None:
        if isinstance(answer, Drop):
            self.close_connection = True
            return
        encoded = json.dumps(answer.body).encode()
        # Noted before any byte leaves: the client cannot send its next request (maybe on another
        # connection, so another thread) before this answer is in the log, and the order holds.
        self.server.log.add(answer.status, kind)
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(encoded)
        self.wfile.flush()
