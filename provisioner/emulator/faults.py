"""The fault plan: scripted faults, seeded random faults, a rate limit, a concurrency cap."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Fault:
    """A scripted answer for the next request naming one AddressSid (or one lookup's Identity)."""

    status: int | None = None  # answer with Twilio's error JSON and this status
    code: int | None = None
    retry_after: str | None = None
    drop: bool = False  # close the connection without answering
    create: bool = False  # create the web chat first (the client cannot know it exists)
    delay: float = 0.0  # seconds to wait before answering
    hold: threading.Event | None = None  # wait until a test sets it: a request held in flight


# What --error-rate draws from: server errors and a dropped connection, before creating anything.
RANDOM_FAULTS = (
    Fault(status=503, code=20503),
    Fault(status=500, code=20500),
    Fault(status=502, code=20502),
    Fault(drop=True),
)


class TokenBucket:
    """`rate` requests a second with a burst of `rate`: how the emulator limits, and tests model.

    The burst is one request at least: a bucket under 1/s holding `rate` tokens would never
    hold a whole one, and would refuse every request (`--rate-limit 0.5`).
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def take(self) -> bool:
        """Spend a token if one is there."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class ConcurrencyCap:
    """At most `limit` requests in flight at once (None: no cap), as Twilio's 20429 counts them."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet answered."""
        with self._lock:
            return self._in_flight

    def enter(self) -> bool:
        """Admit one more request if the cap allows it; the caller must leave() when it is done."""
        with self._lock:
            if self.limit is not None and self._in_flight >= self.limit:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        """One admitted request was answered."""
        with self._lock:
            self._in_flight -= 1


class Limit(Enum):
    """Which of the account's limits refused a visitor (a live web chat not started)."""

    RATE = "rate limit"
    CAP = "concurrency cap"


class _Queues:
    """Faults waiting for the next requests, per key (an AddressSid or an Identity)."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[Fault]] = {}

    def extend(self, key: str, faults: tuple[Fault, ...]) -> None:
        self._queues.setdefault(key, deque()).extend(faults)

    def pop(self, key: str) -> Fault | None:
        queue = self._queues.get(key)
        return queue.popleft() if queue else None

    def clear(self) -> None:
        self._queues.clear()


class FaultPlan:
    """Decides, per request, which fault (if any) it meets; counts the requests it throttles."""

    def __init__(
        self,
        *,
        seed: int | None = None,
        error_rate: float = 0.0,
        rate_limit: float | None = None,
        max_concurrent: int | None = None,
        conversations_max_concurrent: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.error_rate = error_rate
        self.throttled = 0  # 429s for the rate limit and for the concurrency cap
        self.cap = ConcurrencyCap(max_concurrent)
        # The Conversations API's own cap (lookups, closes), when it has one apart from the web
        # chat endpoint's (Flex counts its endpoints' requests in flight apart: error 45780);
        # None: one cap counts every request, as Twilio's account-wide 20429 does.
        self.conversations_cap = (
            ConcurrencyCap(conversations_max_concurrent)
            if conversations_max_concurrent is not None
            else None
        )
        self._bucket = TokenBucket(rate_limit, clock) if rate_limit else None
        self._random = random.Random(seed)
        self._creates = _Queues()
        self._lookups = _Queues()
        self._lock = threading.Lock()

    def script(self, address_sid: str, *faults: Fault) -> None:
        """Answer the next creates for `address_sid` with these faults, in order."""
        with self._lock:
            self._creates.extend(address_sid, faults)

    def script_lookup(self, identity: str, *faults: Fault) -> None:
        """Answer the next lookups of `identity` with these faults, in order."""
        with self._lock:
            self._lookups.extend(identity, faults)

    def forget_scripts(self) -> None:
        """Drop every scripted fault not met yet (a rehearsal's failure is over)."""
        with self._lock:
            self._creates.clear()
            self._lookups.clear()

    def admit(self, conversations: bool = False) -> bool:
        """Take a place under the concurrency cap (the Conversations API's own, if it has one,
        for its requests); False (counted as throttled) when it is full."""
        if self._cap_of(conversations).enter():
            return True
        with self._lock:
            self.throttled += 1
        return False

    def release(self, conversations: bool = False) -> None:
        """Give back the place admit() took."""
        self._cap_of(conversations).leave()

    def _cap_of(self, conversations: bool) -> ConcurrencyCap:
        if conversations and self.conversations_cap is not None:
            return self.conversations_cap
        return self.cap

    def for_create(self, address_sid: str) -> tuple[Fault | None, bool]:
        """The fault this create meets, and whether the rate limit throttles it."""
        with self._lock:
            fault = self._creates.pop(address_sid)
            throttled = self._bucket is not None and not self._bucket.take()
            if throttled:
                self.throttled += 1
            # A scripted fault or a throttled answer already says what happens: draw nothing.
            if not throttled and fault is None and self._random.random() < self.error_rate:
                fault = self._random.choice(RANDOM_FAULTS)
            return fault, throttled

    def admit_visitor(self) -> Limit | None:
        """Admit a website visitor's create through the same cap and bucket as every request:
        None when admitted (the caller must release() once answered), else the limit that
        refused it. Not counted in `throttled`, which counts the answers to the batch."""
        if not self.cap.enter():
            return Limit.CAP
        with self._lock:
            if self._bucket is None or self._bucket.take():
                return None
        self.cap.leave()
        return Limit.RATE

    def for_lookup(self, identity: str) -> Fault | None:
        """The scripted fault this lookup meets, if any."""
        with self._lock:
            return self._lookups.pop(identity)
