"""The retry policy (tenacity) and the run-wide rate limiter that adapts to Twilio's 429s."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    stop_when_event_set,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from provisioner.client import Attempt

Sleep = Callable[[float], None]
Clock = Callable[[], float]

ACCEPTED_WINDOW = 10.0  # seconds of accepted requests that measure what the server takes
DEFAULT_RETRY_AFTER = 1.0  # a 429 without Retry-After still pauses the run this long
MAX_BACKOFF = 30.0


class wait_retry_after(wait_base):  # noqa: N801  (named like tenacity's own waits)
    """Wait at least what the server's Retry-After asks, else the fallback backoff."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = self.fallback(retry_state)
        outcome = retry_state.outcome
        attempt = outcome.result() if outcome is not None and not outcome.failed else None
        if isinstance(attempt, Attempt) and attempt.retry_after is not None:
            return max(min(attempt.retry_after, MAX_BACKOFF * 4), backoff)
        return backoff


def should_retry(attempt: Attempt | None) -> bool:
    """Retry what Twilio says to retry; None means the run is stopping, so never."""
    return attempt is not None and not attempt.created and attempt.retryable


def retry_policy(max_attempts: int, sleep: Sleep, stopping: threading.Event) -> Retrying:
    """Exponential backoff with full jitter, honouring Retry-After, up to `max_attempts` tries."""
    return Retrying(
        retry=retry_if_result(should_retry),
        stop=stop_after_attempt(max_attempts) | stop_when_event_set(stopping),
        wait=wait_retry_after(wait_random_exponential(multiplier=0.5, min=0.25, max=MAX_BACKOFF)),
        sleep=sleep,
        retry_error_callback=_last_result,
    )


def _last_result(retry_state: RetryCallState) -> Any:
    assert retry_state.outcome is not None
    return retry_state.outcome.result()


class RateLimiter:
    """Spaces requests at most `rate` per second across all workers; adapts when throttled.

    Each caller reserves the next free slot and sleeps until it, so no thread polls. A 429
    pauses every worker until its Retry-After, and lowers the rate to just under what the
    server was accepting; a long enough stretch of successes raises it again by small steps,
    never above the rate the operator asked for.
    """

    def __init__(self, rate: float | None, clock: Clock = time.monotonic) -> None:
        self.ceiling = rate
        self.rate = rate
        self._clock = clock
        self._lock = threading.Lock()
        self._next_slot = clock()
        self._paused_until = 0.0
        self._cooldown_until = 0.0
        self._successes_since_change = 0
        self._accepted: deque[float] = deque()
        self.throttled = 0
        self.lowest_rate = rate
        self.settled_rate = rate  # what the last 429 episode lowered it to: a good --rate

    def reserve(self) -> float:
        """Claim the next sending slot; returns the seconds to sleep before sending."""
        with self._lock:
            now = self._clock()
            start = max(now, self._paused_until)
            if self.rate is not None:
                start = max(start, self._next_slot)
                self._next_slot = start + 1.0 / self.rate
            return start - now

    def accepted(self) -> None:
        """The server took a request (any answer but 429): maybe climb back towards the ceiling."""
        with self._lock:
            now = self._clock()
            self._accepted.append(now)
            while self._accepted[0] < now - ACCEPTED_WINDOW:
                self._accepted.popleft()
            if self.rate is None or self.ceiling is None or self.rate >= self.ceiling:
                return
            self._successes_since_change += 1
            if self._successes_since_change >= max(20.0, 2 * self.rate):
                self.rate = min(self.ceiling, self.rate + max(0.5, self.ceiling * 0.01))
                self._successes_since_change = 0

    def _accepted_rate(self, now: float) -> float:
        """Requests per second the server accepted lately (a long window evens out bursts)."""
        while self._accepted and self._accepted[0] < now - ACCEPTED_WINDOW:
            self._accepted.popleft()
        if not self._accepted:
            return 0.0
        return len(self._accepted) / max(now - self._accepted[0], 1.0)

    def throttle(self, retry_after: float | None) -> None:
        """The server answered 429: pause every worker, and lower the rate once per episode."""
        with self._lock:
            now = self._clock()
            self.throttled += 1
            pause = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
            self._paused_until = max(self._paused_until, now + pause)
            if now < self._cooldown_until:
                return
            accepted_rate = self._accepted_rate(now)
            current = self.rate if self.rate is not None else max(accepted_rate, 1.0)
            # Just under what the server has been accepting, and at least 10 % lower.
            target = max(0.9 * accepted_rate, 0.5)
            self.rate = max(0.5, min(0.9 * current, target))
            self.settled_rate = self.rate
            self.lowest_rate = min(self.lowest_rate or self.rate, self.rate)
            self._successes_since_change = 0
            self._cooldown_until = now + pause + 1.0
