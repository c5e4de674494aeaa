"""A local emulator of Twilio's `POST /v2/WebChats`, for --sandbox, rehearsals and tests."""

from __future__ import annotations

import base64
import json
import random
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs

from provisioner.client import WEB_CHATS_PATH

SANDBOX_ACCOUNT_SID = "AC" + "0" * 32
_MORE_INFO = "https://www.twilio.com/docs/errors/{code}"


@dataclass(frozen=True)
class Fault:
    """A scripted answer for the next request naming one AddressSid."""

    status: int | None = None  # answer with Twilio's error JSON and this status
    code: int | None = None
    retry_after: str | None = None
    drop: bool = False  # close the connection without answering
    create: bool = False  # create the web chat first (the client cannot know it exists)
    delay: float = 0.0  # seconds to wait before answering


@dataclass(frozen=True)
class WebChat:
    """One web chat the emulator created."""

    conversation_sid: str
    identity: str
    parameters: Mapping[str, str]
    request_id: str


class TokenBucket:
    """`rate` requests a second with a burst of `rate`: how the emulator limits, and tests model."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._stamp = clock()

    def take(self) -> bool:
        """Spend a token if one is there."""
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Emulator:
    """Serves the endpoint on a loopback port from a background thread; answers like Twilio."""

    def __init__(
        self,
        *,
        username: str = SANDBOX_ACCOUNT_SID,
        secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        error_rate: float = 0.0,
        rate_limit: float | None = None,
        seed: int | None = None,
        record_answers: bool = False,
    ) -> None:
        self.username = username
        self.secret = secret if secret is not None else secrets.token_hex(16)
        self.latency = latency
        self.error_rate = error_rate
        self.unknown_addresses: set[str] = set()
        self.created: list[WebChat] = []
        self.requests = 0
        self.throttled = 0
        self.record_answers = record_answers
        self.answers: list[tuple[float, int]] = []  # (monotonic time, status) when recording
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._bucket = TokenBucket(rate_limit) if rate_limit else None
        self._faults: dict[str, deque[Fault]] = {}
        self._server = _QuietServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The API root to pass as --base-url."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def credentials_env(self) -> dict[str, str]:
        """Environment variables that authenticate against this emulator."""
        return {"TWILIO_ACCOUNT_SID": self.username, "TWILIO_AUTH_TOKEN": self.secret}

    def script(self, address_sid: str, *faults: Fault) -> None:
        """Answer the next requests for `address_sid` with these faults, in order."""
        with self._lock:
            self._faults.setdefault(address_sid, deque()).extend(faults)

    def creations(self, parameter: str, value: str) -> int:
        """How many web chats were created with `parameter` equal to `value`."""
        with self._lock:
            return sum(1 for chat in self.created if chat.parameters.get(parameter) == value)

    def start(self) -> Emulator:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until shutdown()."""
        self._server.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        """Stop serving (if serving in a thread) and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    # What one request gets; runs on the server's handler threads.
    def _answer(
        self, authorization: str | None, content_type: str, body: bytes
    ) -> tuple[int, dict[str, object] | None, dict[str, str]]:
        with self._lock:
            self.requests += 1
        if not self._authorized(authorization):
            return _error(401, 20003, "Authenticate")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return _error(415, 20415, "Unsupported Media Type")
        form = {
            key: values[-1]
            for key, values in parse_qs(body.decode(), keep_blank_values=True).items()
        }
        address = form.get("AddressSid", "")
        with self._lock:
            queue = self._faults.get(address)
            fault = queue.popleft() if queue else None
            throttled = self._bucket is not None and not self._bucket.take()
            if throttled:
                self.throttled += 1
            random_error = (
                not throttled and fault is None and self._random.random() < self.error_rate
            )
            if random_error:
                fault = self._random.choice(
                    [
                        Fault(status=503, code=20503),
                        Fault(status=500, code=20500),
                        Fault(status=502, code=20502),
                        Fault(drop=True),
                    ]
                )
        if fault is not None:
            time.sleep(fault.delay)
            if fault.create:
                self._create(form)
            if fault.drop:
                return 0, None, {}
            if fault.status is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return _error(
                    fault.status, fault.code or fault.status * 100, "Scripted fault", headers
                )
        if throttled:
            return _error(429, 20429, "Too many requests", {"Retry-After": "1"})
        if not address:
            return _error(400, 21604, "Missing required parameter AddressSid in the post body")
        if address in self.unknown_addresses:
            return _error(404, 20404, f"The requested resource {WEB_CHATS_PATH} was not found")
        if self.latency:
            time.sleep(self.latency)
        chat = self._create(form)
        body_out: dict[str, object] = {
            "conversation_sid": chat.conversation_sid,
            "identity": chat.identity,
        }
        return 201, body_out, {"Twilio-Request-Id": chat.request_id}

    def _create(self, form: Mapping[str, str]) -> WebChat:
        chat = WebChat(
            conversation_sid="CH" + uuid.uuid4().hex,
            identity=form.get("Identity") or uuid.uuid4().hex,
            parameters=dict(form),
            request_id="RQ" + uuid.uuid4().hex,
        )
        with self._lock:
            self.created.append(chat)
        return chat

    def _authorized(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        username, _, password = decoded.partition(":")
        return secrets.compare_digest(username, self.username) and secrets.compare_digest(
            password, self.secret
        )


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (timeouts, stopped runs) are normal here, not worth a traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object], dict[str, str]]:
    body: dict[str, object] = {
        "code": code,
        "message": message,
        "more_info": _MORE_INFO.format(code=code),
        "status": status,
    }
    return status, body, {"Twilio-Request-Id": "RQ" + uuid.uuid4().hex, **(headers or {})}


def _handler_for(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Twilio's edge does
        server_version = "provisioner-emulator"
        disable_nagle_algorithm = True
        wbufsize = 64 * 1024  # headers and body leave in one segment, flushed per answer

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path.split("?")[0] != WEB_CHATS_PATH:
                self._send(*_error(404, 20404, f"The requested resource {self.path} was not found"))
                return
            status, payload, headers = emulator._answer(
                self.headers.get("Authorization"), self.headers.get("Content-Type", ""), body
            )
            if status == 0:
                self.close_connection = True
                return
            self._send(status, payload, headers)

        def do_GET(self) -> None:
            self._send(*_error(405, 20004, "Method not allowed"))

        def _send(
            self, status: int, payload: dict[str, object] | None, headers: dict[str, str]
        ) -> None:
            encoded = json.dumps(payload).encode()
            self.send_response(status, HTTPStatus(status).phrase)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(encoded)
            self.wfile.flush()
            if emulator.record_answers:
                with emulator._lock:
                    emulator.answers.append((time.monotonic(), status))

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # quiet: the run's own log says what matters

    return Handler
