"""What the account allows, for the worker threads (`AccountLimits`): acquire() a slot before
each request, release() it with the answer after.

The model it enforces is pure (`Limits`, limits_model.py: the time is an argument, tested by
simulation); this is the thin, thread-facing shell over it, as Netflix's concurrency-limits keeps
the limit apart from the limiter that enforces it. The model's parts, a module each: a request's
way through the limits (limits_permits.py), the rate (limits_rate.py), requests in flight
(limits_concurrency.py), the account's other traffic (limits_others.py), the per-second record
(limits_timeline.py). Libraries considered: pyrate-limiter and limits enforce a fixed rate and
learn nothing from answers; aiolimiter is asyncio-only and fixed too; the small AIMD packages on
PyPI adapt one limit, a rate or a concurrency, never both from one signal.
"""

from __future__ import annotations

import threading
import time

from provisioner.limits_model import Limits, LimitsState
from provisioner.limits_permits import Answer, Permit
from provisioner.limits_timeline import TimelinePoint
from provisioner.runtime import Clock, Sleep


class AccountLimits:
    """The account's limits for worker threads: acquire() before each request, release() after."""

    def __init__(
        self,
        rate: float | None,
        concurrency: int,
        clock: Clock = time.monotonic,
        reserve: float = 0.0,
    ) -> None:
        self._clock = clock
        self._limits = Limits(rate, concurrency, clock(), reserve)
        self._changed = threading.Condition()  # notified whenever a concurrency slot frees

    def acquire(self, sleep: Sleep, stopping: threading.Event) -> Permit | None:
        """Wait for a concurrency slot, then sleep until the next rate slot; None if stopping."""
        while True:
            with self._changed:
                while not stopping.is_set() and self._limits.room() <= 0:
                    self._changed.wait()  # a release() wakes it: no polling
                if stopping.is_set():
                    self._changed.notify()  # pass the wake-up on: the next waiter sees the stop
                    return None
                booking = self._limits.book(self._clock())
            delay = booking.start - self._clock()
            if delay > 0:
                sleep(delay)
            with self._changed:
                if stopping.is_set():
                    self._limits.cancel(booking)
                    self._changed.notify()
                    return None
                permit = self._limits.begin(booking, self._clock())
            if permit is not None:
                return permit
            # A pause or a lower limit came while sleeping: queue again for a slot after it.

    def release(
        self, permit: Permit, answer: Answer, latency: float, retry_after: float | None
    ) -> None:
        """Report how the request went (latency in seconds, 0 if unmeasured); frees its slot."""
        with self._changed:
            self._limits.finish(permit, answer, latency, retry_after, self._clock())
            room = self._limits.room()
            if room > 0:
                self._changed.notify(room)

    def state(self) -> LimitsState:
        """The limits now, where they settled, and the lowest, for progress and summary.json."""
        with self._changed:
            return self._limits.state()

    def pause_left(self) -> float:
        """Seconds until the account's pause ends (0 when there is none)."""
        with self._changed:
            return self._limits.pause_left(self._clock())

    def timeline(self) -> list[TimelinePoint]:
        """The timeline's points (a second each, merged beyond limits_timeline.TIMELINE_POINTS)."""
        with self._changed:
            return self._limits.timeline.points()
