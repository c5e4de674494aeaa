"""What the account allows, as one pure model (`Limits`): a request rate and a number of requests
in flight, learnt from answers, and the requests they admit; the time is an argument.

The model. Twilio limits an account twice, and a 429 does not say which limit it hit: web chat
creation at 5 requests a second, and error 20429, too many requests in flight on the account
(shared by every application on it, no Retry-After). The run holds one limit of each kind:

- a rate (`RateLimit`, limits_rate.py), enforced by booking slots 1/rate apart (`SlotSchedule`,
  GCRA): each caller books the next slot and sleeps once until it, nothing polls. A pause
  (Retry-After, else `DEFAULT_PAUSE`) moves the next slot to the pause's end and spaces the
  slots after it again.
- a concurrency limit (`ConcurrencyLimit`, limits_concurrency.py), enforced by a condition
  variable (`AccountLimits`, limits.py).

A Retry-After (on a 429 or any other answer) pauses the whole account: the server said when it
takes requests again, for every request, and 429s that arrive together share that one pause
(it ends at the latest of their waits, each counted from when it arrived); each throttled row
retries once the pause is over, never after a pause of its own on top. A Retry-After of
`MAX_RETRY_AFTER` or more asks for more than the run ever waits: the first one is honoured for
that long, together with those sent in the same burst, but no second one within
`OVERSIZED_PAUSE_EVERY`: a server answering `Retry-After: 999999` to every first try would
otherwise stall the run half a minute per row. Such an answer then counts as a 429 without one.

A 429 is blamed on concurrency when it went out at the concurrency limit, or with more in flight
than the server has lately accepted (the server refuses that level); on the rate when concurrency
is not suspected, or when the rate was what held the run back just before (then both are lowered,
and the wrong one climbs back). Each limit is lowered once per episode: answers to requests sent
before the last decrease say nothing about the new limit. A 429 on the rate pauses everyone for
its Retry-After (else `DEFAULT_PAUSE`); one on concurrency alone pauses nobody, as the lower limit
already holds requests back until answers drain; bookings over the lowered limit are voided at
once, so requests waiting for a far rate slot do not hold it while nothing is sent. Each limit
climbs back after a stretch of clean answers, never above what was asked, never below `MIN_RATE`
or one request in flight. On a shared account (`--reserve`) a 429 on the rate that the run had
shown the account allows is the others' doing, not the account's limit: the run yields to them
instead (`OtherTraffic`, limits_others.py), and keeps a slot free under a cap of 2 or more
that a 429 showed (limits_concurrency.py).

The parts take the time as an argument and are tested by simulation (tests/test_limits.py);
`AccountLimits` (limits.py) is the thin, thread-facing shell over them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from provisioner.attempts import MAX_RETRY_AFTER
from provisioner.limits_concurrency import MIN_CONCURRENCY, ConcurrencyLimit
from provisioner.limits_others import BusySpell, OtherTraffic
from provisioner.limits_permits import Answer, Booking, Permit
from provisioner.limits_rate import AcceptedWindow, RateLimit, SlotSchedule, slot_gap
from provisioner.limits_timeline import Timeline

# Pauses.
DEFAULT_PAUSE = 0.5  # a 429 on the rate without Retry-After: the server's bucket refills a little
# A Retry-After at or beyond the cap is honoured once in this long: a server whose every answer
# asks for hours gets one full pause, then its Retry-After says nothing new.
OVERSIZED_PAUSE_EVERY = 600.0


@dataclass(frozen=True)
class LimitsState:
    """The limits now, where they settled (the values to pass next time), and the lowest."""

    rate: float | None
    concurrency: int
    settled_rate: float | None
    settled_concurrency: int
    lowest_rate: float | None
    lowest_concurrency: int
    throttled: int  # 429s so far
    sent: int  # requests sent so far
    reserve: float = 0.0  # requests a second left to the account's other traffic
    others_throttled: int = 0  # 429s met under the run's own ceiling: other traffic's doing
    lowest_yield: float | None = None  # the lowest rate the run yielded to for others
    busy: tuple[BusySpell, ...] = ()  # when other traffic was busy, and what the run slowed to
    cap: int | None = None  # the concurrency cap a 429 showed, if the last word was a 429
    # (with a reserve, a cap of 1 once a second 429 confirmed it: see ConcurrencyLimit._showed)


class Limits:
    """Both limits and the requests they admit, driven by an explicit `now`: no threads, no sleep.

    A request goes book() -> (sleep until the booking's start) -> begin() -> finish(); cancel()
    gives a booking back unsent. begin() refuses (None, slot given back) a booking that a pause
    or a lower concurrency limit has voided since: the caller books again.
    """

    def __init__(
        self, rate: float | None, concurrency: int, now: float, reserve: float = 0.0
    ) -> None:
        self.reserve = reserve if rate else 0.0  # --rate 0: no rate to keep a reserve from
        self.rate = RateLimit(rate - self.reserve if rate else None, now)
        self.other = OtherTraffic(self.rate.ceiling, self.reserve, now)
        self.concurrency = ConcurrencyLimit(concurrency, now)
        self.concurrency.spare = self.reserve > 0
        self.schedule = SlotSchedule(now)
        self.accepted = AcceptedWindow()
        self.timeline = Timeline(now)
        self.held = 0  # concurrency slots taken: booked, or sent and not yet answered
        self.in_flight = 0  # sent and not yet answered
        self.sent = 0
        self.throttled = 0
        self._resumed_at = now  # when the last pause ended: what came before it is not measured
        self._last_latency: float | None = None  # of any answer: until a baseline exists
        self._oversized_at = -math.inf  # when a Retry-After at the cap was last honoured
        self._bookings = 0  # bookings made so far: each one's number
        self._booked: dict[int, float] = {}  # bookings not yet sent: number -> start, in order
        self._measured_at = -math.inf  # when the rate held without a 429 was last measured

    def room(self) -> int:
        """How many more requests the concurrency limit lets in now."""
        return self.in_flight_limit() - self.held

    def in_flight_limit(self) -> int:
        """The concurrency limit, one short of a cap a 429 showed when there is a reserve: the
        slot left free is a live chat's."""
        limit = self.concurrency.limit
        return limit - 1 if self.concurrency.sparing() and limit >= 2 else limit

    def allowed_rate(self) -> float | None:
        """The rate the run allows itself now: the learnt rate, or the yield to others."""
        return self.other.limit(self.rate.rate)

    def book(self, now: float) -> Booking:
        """Take a concurrency slot (the caller checked room()) and the next rate slot."""
        self.held += 1
        earliest = max(now, self.schedule.paused_until)
        start = self.schedule.book(now, slot_gap(self.allowed_rate()))
        self._bookings += 1
        self._booked[self._bookings] = start
        return Booking(start, self.schedule.epoch, start > earliest, self._bookings)

    def cancel(self, booking: Booking) -> None:
        """Give back a booking that will not be sent."""
        if self._booked.pop(booking.number, None) is not None:
            self.held -= 1

    def begin(self, booking: Booking, now: float) -> Permit | None:
        """The request goes out now; None if its booking was voided (the slot is given back)."""
        if self._booked.pop(booking.number, None) is None:
            return None  # voided by a lower concurrency limit: its slot was given back then
        if booking.epoch != self.schedule.epoch or self.held > self.in_flight_limit():
            self.held -= 1
            return None
        self.in_flight += 1
        self.sent += 1
        self.rate.sent(now, booking.queued)
        self._count(now, sent=1)
        return Permit(now, self.in_flight)

    def finish(
        self, permit: Permit, answer: Answer, latency: float, retry_after: float | None, now: float
    ) -> None:
        """The answer came: free the slot, and learn from it."""
        self.held -= 1
        self.in_flight -= 1
        if answer is not Answer.NO_ANSWER and latency > 0:  # a timeout's latency is the timeout
            self._last_latency = latency
        wait = self._believed(retry_after, permit, now)
        if answer is Answer.ACCEPTED:
            self.accepted.add(now, permit.in_flight)
            self.concurrency.answered(permit, latency, now)
            self.rate.answered(permit, now, self._usable())
            self.other.answered(permit, now, self.allowed_rate(), self._measured(now))
        others = 0
        if answer is Answer.THROTTLED:
            self.throttled += 1
            before = self.other.throttled
            if self._blame(permit, now) and wait is None:
                wait = DEFAULT_PAUSE
            others = self.other.throttled - before
            self.other.throttle(now, self.allowed_rate())
        if wait is not None:
            self._pause(now, wait)
        self._void_excess()
        self._count(now, throttled=int(answer is Answer.THROTTLED), others=others)

    def _measured(self, now: float) -> float | None:
        """Accepted answers a second since the last 429, at most once a second (it counts the
        window), and only while the reserve is kept."""
        if not self.other.active or now - self._measured_at < 1.0:
            return None
        self._measured_at = now
        return self.accepted.rate(now, self.other.clean_since)

    def _void_excess(self) -> None:
        """Bookings over a lowered concurrency limit are voided now, the earliest first (as
        their own turn would void them); when none is left, the slots are given back. Their
        holders, asleep until their slots, find them voided and queue again. Without this,
        bookings slots apart (a rate slot may be a second away) hold the lowered limit while
        nothing is sent: on a new account (1 in flight) the first seconds went so."""
        voided: list[float] = []
        while self.held > self.in_flight_limit() and self._booked:
            voided.append(self._booked.pop(next(iter(self._booked))))
            self.held -= 1
        if voided and not self._booked:
            self.schedule.give_back(min(voided))

    def pause_left(self, now: float) -> float:
        """Seconds until the account's pause ends (0 when there is none): when a retry may go."""
        return max(0.0, self.schedule.paused_until - now)

    def _believed(self, retry_after: float | None, permit: Permit, now: float) -> float | None:
        """The Retry-After to honour: any under the cap; one at the cap once in a while.

        One at the cap is honoured when none was lately, and for every request sent before the
        one honoured came back (the same burst: their waits share its pause).
        """
        if retry_after is None or retry_after < MAX_RETRY_AFTER:
            return retry_after
        if permit.sent_at < self._oversized_at:
            return retry_after
        if now - self._oversized_at < OVERSIZED_PAUSE_EVERY:
            return None
        self._oversized_at = now
        return retry_after

    def _blame(self, permit: Permit, now: float) -> bool:
        """Lower the limit(s) the 429 may have hit; whether the rate may be at fault.

        Concurrency, if the request went out with more in flight than the server has lately
        accepted (it refuses that level), or at the concurrency limit; the rate, if concurrency
        is not suspected or the rate was what held the run back just before (then both are
        lowered: the wrong one climbs back). A 429 blamed on concurrency alone pauses nobody:
        the lower limit makes requests wait for answers, the pause a concurrency cap asks for.
        """
        level = permit.in_flight
        crowded = level > MIN_CONCURRENCY and (
            level >= self.concurrency.limit or not self.accepted.proven(level, now)
        )
        if crowded:
            self.concurrency.refused(permit, now)
            if not self.rate.bound(now):
                return False
        allowed = self.allowed_rate()
        if allowed is not None and self.other.blames(allowed):
            self.other.give_way(permit, now, allowed)  # not the account's limit: others'
        elif self.rate.fresh(permit):
            since = self.schedule.paused_until
            if since > now:  # a 429 during a pause: measure up to the pause before
                since = self._resumed_at
            self.rate.cut(now, self.accepted.rate(now, since), self._usable())
        return True

    def _pause(self, now: float, seconds: float) -> None:
        """Nothing is sent for `seconds`; then requests resume spaced, not all at once."""
        if self.schedule.paused_until <= now:
            self._resumed_at = self.schedule.paused_until
        latency = self.concurrency.latency() or self._last_latency or 0.0
        limit = self.concurrency.limit
        self.schedule.pause(now + seconds, limit, latency / limit)
        self.rate.restart(self.schedule.paused_until)

    def _usable(self) -> float | None:
        """Requests a second the concurrency limit allows at the latency measured, if known."""
        latency = self.concurrency.latency() or self._last_latency
        return self.concurrency.limit / latency if latency else None

    def _count(self, now: float, sent: int = 0, throttled: int = 0, others: int = 0) -> None:
        self.timeline.count(
            now, sent, throttled, self.allowed_rate(), self.in_flight_limit(), others
        )

    def state(self) -> LimitsState:
        """The limits now, where they settled, and the lowest."""
        return LimitsState(
            rate=self.allowed_rate(),
            concurrency=self.in_flight_limit(),
            settled_rate=self.rate.settled,
            settled_concurrency=self.concurrency.settled,
            lowest_rate=self.rate.lowest,
            lowest_concurrency=self.concurrency.lowest,
            throttled=self.throttled,
            sent=self.sent,
            reserve=self.reserve,
            others_throttled=self.other.throttled,
            lowest_yield=self.other.lowest,
            busy=tuple(self.other.spells()),
            cap=self.concurrency.cap,
        )
