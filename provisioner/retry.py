"""The retry policy: tenacity, with Twilio's guidance on what to retry and how long to wait."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    stop_when_event_set,
)
from tenacity.wait import wait_base

from provisioner.attempts import Attempt, Lookup
from provisioner.runtime import Sleep
from provisioner.vocabulary import ErrorCode

MAX_BACKOFF = 30.0  # seconds: Twilio's guidance caps backoff; longer stalls a cron run
BACKOFF_BASE = 0.5  # seconds: the first retry waits up to this, each later one up to double
BACKOFF_FLOOR = 0.25  # seconds: never retry at once, even when the jitter draws near zero
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})  # Twilio's guidance: try again
# Trying again cannot help.
FINAL_FAILURES = frozenset({ErrorCode.INVALID_SID, ErrorCode.TLS_UNTRUSTED})


class wait_full_jitter(wait_base):  # noqa: N801  (named like tenacity's own waits)
    """AWS's "full jitter": a uniform wait in [0, min(cap, base * 2**n)], at least `floor`.

    tenacity's wait_random_exponential is the same curve, but draws from the global `random`;
    this one takes a seeded Random, so tests can assert the exact sequence of waits.
    """

    def __init__(self, base: float, cap: float, floor: float, source: random.Random) -> None:
        self.base, self.cap, self.floor, self.source = base, cap, floor, source

    def __call__(self, retry_state: RetryCallState) -> float:
        high = min(self.cap, self.base * 2 ** (retry_state.attempt_number - 1))
        return max(self.floor, self.source.uniform(0, high))


class wait_for_pause(wait_base):  # noqa: N801  (named like tenacity's own waits)
    """Wait the fallback backoff, or until the account's pause ends if that is later.

    The pause holds every Retry-After the run honours (limits_model.py): 429s that arrive together
    share it, so a row retries when it ends, never after a wait of its own stacked on it.
    """

    def __init__(self, fallback: wait_base, pause_left: Callable[[], float]) -> None:
        self.fallback = fallback
        self.pause_left = pause_left

    def __call__(self, retry_state: RetryCallState) -> float:
        return max(self.fallback(retry_state), self.pause_left())


def retryable(reply: Attempt | Lookup) -> bool:
    """Whether asking again may work, for a web chat, a close or a lookup alike: Twilio's
    guidance (429, 500, 502, 503, 504, failed connections) and answers lost or unreadable;
    never a failure that trying again cannot help (a bad SID, an untrusted certificate)."""
    if reply.error_code in FINAL_FAILURES:
        return False
    lost = (
        reply.ambiguous
        if isinstance(reply, Attempt)
        else reply.error_code == ErrorCode.UNREADABLE_ANSWER
    )
    return lost or reply.http_status is None or reply.http_status in RETRYABLE_STATUSES


def should_retry(reply: object) -> bool:
    """tenacity's retry= test: a reply worth another try; None means the run is stopping."""
    if isinstance(reply, Attempt):
        return not reply.created and retryable(reply)
    return isinstance(reply, Lookup) and not reply.ok and retryable(reply)


def retry_policy(
    max_attempts: int,
    sleep: Sleep,
    stopping: threading.Event,
    *,
    retry: Callable[[Any], bool] = should_retry,
    after: Callable[[RetryCallState], None] | None = None,
    source: random.Random | None = None,
    pause_left: Callable[[], float] = lambda: 0.0,
) -> Retrying:
    """Exponential backoff with full jitter, or the account's pause, up to `max_attempts` tries.

    `pause_left` is how long the account's pause still lasts (limits.AccountLimits.pause_left):
    Retry-After is honoured there, once for every row throttled together.

    tenacity checks `stop` before it sleeps, not after: a stop during the backoff is seen by
    the next try itself (send.RowSender's step returns None at once when stopping).
    """
    return Retrying(
        retry=retry_if_result(retry),
        stop=stop_after_attempt(max_attempts) | stop_when_event_set(stopping),
        wait=wait_for_pause(
            wait_full_jitter(BACKOFF_BASE, MAX_BACKOFF, BACKOFF_FLOOR, source or random.Random()),
            pause_left,
        ),
        sleep=sleep,
        after=after or (lambda retry_state: None),
        retry_error_callback=_last_result,
    )


def _last_result(retry_state: RetryCallState) -> Any:
    assert retry_state.outcome is not None
    return retry_state.outcome.result()
