"""The rate the run allows itself: what the server accepted lately (`AcceptedWindow`), the slots
booked at the rate (`SlotSchedule`, GCRA), and the rate learnt from 429s (`RateLimit`).

Twilio limits web chat creation to 5 requests a second per account. The rate is enforced by
booking slots 1/rate apart: each caller books the next slot and sleeps once until it, nothing
polls. A pause (Retry-After, else `DEFAULT_PAUSE`: limits_model.py) moves the next slot to the
pause's end and spaces the slots after it again. A 429 blamed on the rate (limits_model.py says
when) lowers it, once per episode: answers to requests sent before the last decrease say nothing
about the new rate. It climbs back after a stretch of clean answers, never above what was asked,
never below `MIN_RATE`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from provisioner.limits_permits import Permit

MIN_RATE = 0.5  # one request every two seconds still makes progress; a lower rate is a stall
# Slots are a little wider than 1/rate: a thread wakes and sends a millisecond or two after its
# slot, and without the margin 51 sends could fall within one second at --rate 50.
SEND_JITTER_MARGIN = 0.01

# Measuring what the server accepted before a 429.
ACCEPTED_WINDOW = 10.0  # seconds of accepted answers measured: evens out a token bucket's burst
MIN_MEASURE_SPAN = 3.0  # fewer seconds than this measure mostly the server's burst, not its rate
MEASURED_SHARE = 0.9  # settle under what the server accepted, so its bucket refills between bursts
PROVEN_ANSWERS = 2  # accepted answers at an in-flight level or above: the server allows it

# Lowering and raising the rate (AIMD with BIC's binary search back to the last rate that was cut).
RATE_BACKOFF = 0.9  # every rate decrease is at least 10 %: AIMDLimit's default backoff ratio
EARLY_RATE_BACKOFF = 0.5  # too little data to measure: halve, as TCP does (BIC climbs back fast)
RATE_PROBE_INTERVAL = 1.0  # seconds of answers without a 429 before the rate climbs a step
RATE_PROBE_STEP = 0.01  # past what the server took, climb 1 % a step: each overshoot costs 429s
RATE_LOOKBACK = 1.0  # seconds of sends that tell whether the rate is what holds the run back
# ... or the time of this many sends at the rate, if longer: under 2.5/s a second holds one or
# two sends, fewer than RATE_BUSY_SHARE of the rate, and a rate never seen binding never climbs.
RATE_LOOKBACK_SENDS = 6  # 0.8 of six is 4.8: five sends of the six a window holds
RATE_BUSY_SHARE = 0.8  # sends at under 80 % of the rate lately: the rate cannot be binding
RATE_QUEUED_SHARE = 0.5  # most sends waited for their slot: the rate binds, and is worth growing


def slot_gap(rate: float | None) -> float | None:
    """Seconds between two slots at `rate`; None with no rate."""
    return None if rate is None else (1.0 + SEND_JITTER_MARGIN) / rate


def prune(entries: deque[Any], horizon: float) -> None:
    """Drop entries older than `horizon`; each entry is a time or a tuple starting with one."""
    while entries:
        first = entries[0]
        if (first[0] if isinstance(first, tuple) else first) >= horizon:
            return
        entries.popleft()


class AcceptedWindow:
    """The accepted answers of the last `ACCEPTED_WINDOW` seconds: when, and at what in flight."""

    def __init__(self) -> None:
        self._entries: deque[tuple[float, int]] = deque()

    def add(self, now: float, in_flight: int) -> None:
        """Record one accepted answer."""
        self._entries.append((now, in_flight))
        prune(self._entries, now - ACCEPTED_WINDOW)

    def rate(self, now: float, since: float) -> float | None:
        """Accepted answers a second since `since`; None if that is too short to tell."""
        prune(self._entries, now - ACCEPTED_WINDOW)
        since = max(since, now - ACCEPTED_WINDOW)
        if now - since < MIN_MEASURE_SPAN:
            return None
        return sum(1 for at, _ in self._entries if at >= since) / (now - since)

    def proven(self, in_flight: int, now: float) -> bool:
        """Whether the server lately accepted requests sent with this many in flight, or more."""
        prune(self._entries, now - ACCEPTED_WINDOW)
        accepted = (1 for _, level in self._entries if level >= in_flight)
        return sum(accepted) >= PROVEN_ANSWERS


class SlotSchedule:
    """GCRA slot booking: each booking takes the next free slot, spaced by the given gap.

    A pause moves the next slot to its end and bumps `epoch`, which voids earlier bookings, so
    requests resume one gap apart instead of all at once.
    """

    def __init__(self, now: float) -> None:
        self.next_slot = now
        self.paused_until = now
        self.epoch = 0
        self._spaced = 0  # bookings after a pause spaced even without a rate (the resume ramp)
        self._resume_gap = 0.0

    def book(self, now: float, gap: float | None) -> float:
        """The start of the next slot; `gap` None means no rate, spaced only just after a pause."""
        start = max(now, self.paused_until)
        if gap is None:
            if self._spaced <= 0:
                return start
            self._spaced -= 1
            gap = self._resume_gap
        start = max(start, self.next_slot)
        self.next_slot = start + gap
        return start

    def give_back(self, start: float) -> None:
        """Bookings from `start` on will not be sent, none after them: their slots are free."""
        self.next_slot = min(self.next_slot, max(start, self.paused_until))

    def pause(self, until: float, ramp: int, resume_gap: float) -> None:
        """Nothing starts before `until`; then `ramp` rate-less bookings are `resume_gap` apart."""
        if until <= self.paused_until:
            return
        self.paused_until = until
        self.next_slot = until
        self.epoch += 1
        self._spaced = ramp
        self._resume_gap = resume_gap


class RateLimit:
    """The rate the run allows itself: cut on a 429 blamed on it, probed up after clean answers.

    AIMD with BIC's recovery: a cut is at least `RATE_BACKOFF` and goes under what the server
    accepted before the 429 (or `EARLY_RATE_BACKOFF` with too little data); the climb back
    halves the distance to what the server took (BIC's binary search), then probes past it
    `RATE_PROBE_STEP` at a time. With no ceiling (`--rate 0`), a learnt rate that climbs past
    what the concurrency limit allows anyway is dropped again.
    """

    def __init__(self, ceiling: float | None, now: float) -> None:
        self.ceiling = ceiling if ceiling and ceiling > 0 else None  # --rate 0: no ceiling
        self.rate = self.ceiling
        self.settled = self.ceiling
        self.lowest = self.ceiling
        self.cut_at = -math.inf  # answers to requests sent before this say nothing new
        self._tested = True  # a request sent since the last cut was accepted: cut again if need be
        self._goal: float | None = None  # what the server took before the last cut
        self._stretch_start = now  # no change and no pause since
        self._recent: deque[tuple[float, bool]] = deque()  # sends lately (bound() says how long)

    def sent(self, now: float, queued: bool) -> None:
        """Note one request sent, and whether it had to wait for its rate slot."""
        self._recent.append((now, queued))

    def bound(self, now: float) -> bool:
        """Whether most requests lately waited for their rate slot: the rate held the run back.

        Not the send rate: a run held back by concurrency can send at nearly the rate too.
        """
        if self.rate is None:
            return False
        lookback = max(RATE_LOOKBACK, RATE_LOOKBACK_SENDS / self.rate)
        prune(self._recent, now - lookback)
        if len(self._recent) < RATE_BUSY_SHARE * self.rate * lookback:
            # Sending well below the rate: slots booked a moment apart look queued, but the
            # rate is not what holds the run back (a concurrency cap is).
            return False
        queued = sum(1 for _, waited in self._recent if waited)
        return queued > RATE_QUEUED_SHARE * len(self._recent)

    def restart(self, at: float) -> None:
        """A change or a pause: the stretch of clean answers starts again at `at`."""
        self._stretch_start = at

    def fresh(self, permit: Permit) -> bool:
        """Whether a 429 to this request is news: sent after the last cut, and the cut tested.

        A cut is tested once a request sent after it is accepted. Until then, more 429s (a
        server refusing everything for a while) pause the run but cut no further: each cut
        would halve a rate that was never tried.
        """
        return permit.sent_at > self.cut_at and self._tested

    def cut(self, now: float, accepted_rate: float | None, usable: float | None) -> None:
        """A 429 blamed on the rate; `usable` is what the concurrency allows without a rate."""
        current = self.rate if self.rate is not None else usable
        if current is None:
            return  # no rate and no latency known yet: the pause alone must do
        if accepted_rate is None:
            self._goal = current
            target = current * EARLY_RATE_BACKOFF
        else:
            self._goal = min(current, accepted_rate)
            target = min(current * RATE_BACKOFF, accepted_rate * MEASURED_SHARE)
        self.rate = max(MIN_RATE, target)
        if accepted_rate is not None:
            self.settled = self.rate  # measured: what to pass next time (a guess is not)
        self.lowest = self.rate if self.lowest is None else min(self.lowest, self.rate)
        self.cut_at = now
        self._tested = False
        self.restart(now)

    def answered(self, permit: Permit, now: float, usable: float | None) -> None:
        """An accepted answer: the last cut is tested; after a clean stretch, climb a step."""
        self._tested = self._tested or permit.sent_at > self.cut_at
        self._climb(now, usable)

    def _climb(self, now: float, usable: float | None) -> None:
        """After a clean stretch in which the rate held the run back, raise it one step."""
        if self.rate is None or self.rate == self.ceiling:
            return
        if now - self._stretch_start < RATE_PROBE_INTERVAL:
            return
        if self.ceiling is None and usable is not None and self.rate >= usable:
            self.rate = None  # the concurrency limit holds the run back anyway: no rate needed
            self.settled = None
            return
        if not self.bound(now):
            return
        step = self.rate * RATE_PROBE_STEP
        if self._goal is not None and self.rate < self._goal:
            step = max(step, (self._goal - self.rate) / 2)
        self.rate += step
        if self.ceiling is not None and self.rate >= self.ceiling:
            self.rate = self.settled = self.ceiling  # back where it was asked to be: that held
        self.restart(now)
