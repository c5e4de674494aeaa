"""The emulator: the service and its fault plan served on a loopback port, answers recorded."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from provisioner.emulator.faults import Fault, FaultPlan
from provisioner.emulator.handler import Server
from provisioner.emulator.routes import CLOSE, CREATE, LOOKUP, Routes
from provisioner.emulator.service import SANDBOX_ACCOUNT_SID, Ids, WebChat, WebChatService
from provisioner.emulator.visitors import Visit, VisitorCounts, Visitors

MAIN_POLL = 0.2  # the same when serving the process's main thread (signals end it anyway)


class Recorded(NamedTuple):
    """One answer sent: when (monotonic seconds), its HTTP status, and the kind of request."""

    seconds: float
    status: int
    kind: str


class AnswerLog:
    """Every answer sent, when recording (for benchmarks): `seconds,status,kind` lines."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.rows: list[Recorded] = []
        self._lock = threading.Lock()

    def add(self, status: int, kind: str) -> None:
        """Note one answer sent."""
        if self.enabled:
            with self._lock:
                self.rows.append(Recorded(time.monotonic(), status, kind))

    def write(self, path: Path) -> None:
        """Write the answers as CSV (the first two columns are what benchmarks read)."""
        with self._lock:
            lines = [f"{row.seconds:.6f},{row.status},{row.kind}\n" for row in self.rows]
        path.write_text("seconds,status,kind\n" + "".join(lines))


class Emulator:
    """Twilio's web chat and conversation APIs on a loopback port; answers like Twilio."""

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
        max_concurrent: int | None = None,
        conversations_max_concurrent: int | None = None,
        lookup_lag: float = 0.0,
        seed: int | None = None,
        record_answers: bool = False,
        live_rate: float = 0.0,
        clock: Callable[[], float] | None = None,  # tests inject one; else wall and monotonic
    ) -> None:
        secret = secret if secret is not None else secrets.token_hex(16)
        self.service = WebChatService(
            username, secret, ids=Ids(seed), lookup_lag=lookup_lag, clock=clock or time.time
        )
        self.faults = FaultPlan(
            seed=seed,
            error_rate=error_rate,
            rate_limit=rate_limit,
            max_concurrent=max_concurrent,
            conversations_max_concurrent=conversations_max_concurrent,
            clock=clock or time.monotonic,
        )
        self.log = AnswerLog(record_answers)
        self.routes = Routes(self.service, self.faults, root="", latency=latency)
        self.visitors = Visitors(
            self.faults,
            self.service,
            latency=lambda: self.routes.latency,
            rate=live_rate,
            seed=seed,
            clock=clock or time.monotonic,
        )
        self._server = Server((host, port), self.routes, self.log)
        self.routes.root = self.url  # known once the port is bound

    @property
    def url(self) -> str:
        """The API root to pass as --base-url (it serves the Conversations paths too)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def credentials_env(self) -> dict[str, str]:
        """Environment variables that authenticate against this emulator."""
        return {"TWILIO_ACCOUNT_SID": self.username, "TWILIO_AUTH_TOKEN": self.secret}

    def script(self, address_sid: str, *faults: Fault) -> None:
        """Answer the next creates for `address_sid` with these faults, in order."""
        self.faults.script(address_sid, *faults)

    def script_lookup(self, identity: str, *faults: Fault) -> None:
        """Answer the next lookups of `identity` with these faults, in order."""
        self.faults.script_lookup(identity, *faults)

    def forget_scripts(self) -> None:
        """Drop every scripted fault not met yet."""
        self.faults.forget_scripts()

    def creations(self, parameter: str, value: str) -> int:
        """How many web chats were created with `parameter` equal to `value`."""
        return sum(1 for chat in list(self.created) if chat.parameters.get(parameter) == value)

    def conversations_for(self, identity: str) -> list[WebChat]:
        """Every web chat created for `identity`, whether the index shows it yet or not."""
        return self.service.conversations_for(identity)

    def write_answers(self, path: Path) -> None:
        """Write the recorded answers to `path` as CSV."""
        self.log.write(path)

    def start(self) -> Emulator:
        """Serve in a daemon thread; visitors start arriving (at `live_rate`)."""
        self._server.serve_in_thread()
        self.visitors.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until shutdown(); visitors arrive from a thread of their own."""
        self.visitors.start()
        self._server.serve_forever(poll_interval=MAIN_POLL)

    def shutdown(self) -> None:
        """Stop visitors arriving, stop serving (if serving in a thread), close the socket."""
        self.visitors.stop()
        self._server.stop()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    # What tests and the command read and set; each lives on the part that owns it.
    @property
    def username(self) -> str:
        """The account SID (or API key SID) the emulator accepts."""
        return self.service.username

    @username.setter
    def username(self, value: str) -> None:
        self.service.username = value

    @property
    def secret(self) -> str:
        """The auth token (or API key secret) the emulator accepts."""
        return self.service.secret

    @property
    def latency(self) -> float:
        """Seconds before each successful answer."""
        return self.routes.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self.routes.latency = value

    @property
    def error_rate(self) -> float:
        """Share of creates answered 500/502/503 or dropped, before creating anything."""
        return self.faults.error_rate

    @error_rate.setter
    def error_rate(self, value: float) -> None:
        self.faults.error_rate = value

    @property
    def unknown_addresses(self) -> set[str]:
        """AddressSids answered 404 (20404); add to it to rehearse that failure."""
        return self.service.unknown_addresses

    @property
    def created(self) -> list[WebChat]:
        """The web chats created, in order."""
        return self.service.created

    @property
    def closed(self) -> set[str]:
        """SIDs of the conversations closed."""
        return self.service.closed

    @property
    def requests(self) -> int:
        """Creates received (POST /v2/WebChats), whatever they were answered."""
        return self.routes.received[CREATE]

    @property
    def lookups(self) -> int:
        """Lookups received (GET /v1/ParticipantConversations)."""
        return self.routes.received[LOOKUP]

    @property
    def closes(self) -> int:
        """Conversation updates received (POST /v1/Conversations/{sid})."""
        return self.routes.received[CLOSE]

    @property
    def open_connections(self) -> int:
        """Client connections accepted and not yet ended."""
        return self._server.open_connections

    @property
    def throttled(self) -> int:
        """Requests answered 429: over the rate limit or the concurrency cap."""
        return self.faults.throttled

    @property
    def live_rate(self) -> float:
        """Website visitors a second, each starting a web chat on the account (0: none)."""
        return self.visitors.rate

    @live_rate.setter
    def live_rate(self, value: float) -> None:
        self.visitors.rate = value  # takes effect at once: a benchmark's phases

    @property
    def visits(self) -> list[Visit]:
        """Every visitor so far: when they arrived (monotonic, or the injected clock) and
        whether a limit refused them."""
        return self.visitors.visits

    def visitor_counts(self) -> VisitorCounts:
        """Visitors arrived, served, and refused by each limit, so far."""
        return self.visitors.counts()

    @property
    def answers(self) -> list[Recorded]:
        """The answers sent, when recording."""
        return self.log.rows
