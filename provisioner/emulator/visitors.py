"""The contact centre's website on the same account: visitors who open the chat widget.

Twilio's Webchat app backend creates a web chat (`POST /v2/WebChats`) on the account each time
a visitor opens the widget, and does not retry a 429: the visitor simply gets no chat. Here
visitors arrive as a Poisson process at `rate` a second (seeded), each through the account's
concurrency cap and token bucket exactly as a request is (a place in flight first, then a
token), holding its place for the emulator's latency. Their web chats are made on the account
under their own identities (`visitor-...`, never a row's `prv-...`) and kept apart from the
batch's creations, so nothing that counts the batch's web chats counts them.
"""

from __future__ import annotations

import heapq
import itertools
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from provisioner.emulator.faults import FaultPlan, Limit
from provisioner.emulator.service import WebChatService

VISITOR_PREFIX = "visitor-"  # a visitor's identity: apart from the rows' (rows.IDENTITY_PREFIX)
VISITOR_ADDRESS = "IG" + "f" * 32  # the website's own chat address, as the Webchat app sends it
VISITOR_FORM = {"ChatFriendlyName": "Webchat", "CustomerFriendlyName": "Website visitor"}

Hold = Callable[[float, Callable[[], None]], None]  # after `seconds`, call the release


@dataclass(frozen=True)
class Visit:
    """One visitor: when they arrived (the emulator's clock) and the limit that refused them."""

    arrived: float
    refused_by: Limit | None = None

    @property
    def served(self) -> bool:
        """True when the visitor got a web chat."""
        return self.refused_by is None


@dataclass(frozen=True)
class VisitorCounts:
    """Visitors who arrived, and those refused by each limit."""

    arrived: int = 0
    refused_by_rate_limit: int = 0
    refused_by_concurrency_cap: int = 0

    @classmethod
    def of(cls, visits: Iterable[Visit]) -> VisitorCounts:
        """The counts of these visits (all of a run's, or those of one phase)."""
        chosen = list(visits)
        return cls(
            arrived=len(chosen),
            refused_by_rate_limit=sum(visit.refused_by is Limit.RATE for visit in chosen),
            refused_by_concurrency_cap=sum(visit.refused_by is Limit.CAP for visit in chosen),
        )

    @property
    def refused(self) -> int:
        """Visitors who got no web chat."""
        return self.refused_by_rate_limit + self.refused_by_concurrency_cap

    @property
    def served(self) -> int:
        """Visitors who got a web chat."""
        return self.arrived - self.refused

    @property
    def refused_share(self) -> float:
        """The share of visitors refused (0 when none arrived)."""
        return self.refused / self.arrived if self.arrived else 0.0

    def line(self) -> str:
        """One line for people."""
        return (
            f"visitors: {self.arrived} arrived, {self.served} served, {self.refused} refused "
            f"({self.refused_share:.1%}; {self.refused_by_rate_limit} by the rate limit, "
            f"{self.refused_by_concurrency_cap} by the concurrency cap)"
        )


class Releases:
    """Visitors' places in flight, each released when its latency has passed, by one thread.

    A timer thread a visitor would make thousands of threads at a high --live-rate with no
    rate limit; one thread waiting on a heap of due times makes one.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._count = itertools.count()  # ties broken by arrival, never by comparing callables
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def __call__(self, seconds: float, release: Callable[[], None]) -> None:
        """Call `release` after `seconds` (at once when not positive)."""
        if seconds <= 0:
            release()
            return
        with self._changed:
            heapq.heappush(self._due, (time.monotonic() + seconds, next(self._count), release))
            self._changed.notify()
            if self._thread is None:
                # A daemon: a visitor still in flight must not keep the process alive.
                self._thread = threading.Thread(
                    target=self._run, name="emulator-visitor-releases", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._changed:
                if not self._due:
                    # Nothing in flight: end (an emulator stopped would otherwise leave this
                    # thread waiting forever); the next hold starts one.
                    self._thread = None
                    return
                while (wait := self._due[0][0] - time.monotonic()) > 0:
                    self._changed.wait(wait)
                _, _, release = heapq.heappop(self._due)
            try:
                release()  # outside the lock: FaultPlan.release takes the cap's own
            except Exception:
                # One failing release must not keep every later place in flight for good:
                # reported as any thread's uncaught failure is, and the others go on.
                kind, error, trace = sys.exc_info()
                threading.excepthook(
                    threading.ExceptHookArgs((kind, error, trace, threading.current_thread()))
                )


class Visitors:
    """Visitors arriving at `rate` a second (changeable while running); each visit recorded."""

    def __init__(
        self,
        plan: FaultPlan,
        service: WebChatService,
        *,
        latency: Callable[[], float],
        rate: float = 0.0,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        hold: Hold | None = None,
    ) -> None:
        self._plan = plan
        self._service = service
        self._latency = latency
        self._rate = rate
        self._random = random.Random(seed)
        self._clock = clock
        self._hold = hold or Releases()
        self._visits: list[Visit] = []
        self._changed = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.asked = rate > 0  # visitors were asked for at some point: say what became of them

    @property
    def rate(self) -> float:
        """Visitors a second now (0: none)."""
        with self._changed:
            return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        with self._changed:
            self._rate = value
            self.asked = self.asked or value > 0
            self._changed.notify_all()

    @property
    def visits(self) -> list[Visit]:
        """Every visit so far, in order of arrival."""
        with self._changed:
            return list(self._visits)

    def counts(self) -> VisitorCounts:
        """The counts of every visit so far."""
        return VisitorCounts.of(self.visits)

    def arrive(self) -> Visit:
        """One visitor opens the widget now: a create through the cap and the bucket, no retry."""
        arrived = self._clock()
        refused_by = self._plan.admit_visitor()
        if refused_by is None:
            ids = self._service.ids
            form = {**VISITOR_FORM, "AddressSid": VISITOR_ADDRESS}
            form["Identity"] = ids.make(VISITOR_PREFIX)
            self._service.create(form, ids.make("RQ"), visitor=True)
            self._hold(self._latency(), self._plan.release)
        visit = Visit(arrived, refused_by)
        with self._changed:
            self._visits.append(visit)
        return visit

    def start(self) -> None:
        """Let visitors arrive, from a daemon thread, until stop()."""
        with self._changed:
            if self._thread is not None or self._stopped:
                return
            self._thread = threading.Thread(target=self._arrivals, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No more visitors; those in flight finish on their own."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _arrivals(self) -> None:
        with self._changed:
            while not self._stopped:
                if self._rate <= 0:
                    self._changed.wait()
                    continue
                # Woken early (a new rate, or stop): draw afresh from now. The exponential gap
                # is memoryless, so the arrivals stay a Poisson process at each rate in turn.
                if self._changed.wait(self._random.expovariate(self._rate)):
                    continue
                self._changed.release()  # arrive() takes it to record the visit
                try:
                    self.arrive()
                finally:
                    self._changed.acquire()
