"""What the account allows: a request rate and a number of requests in flight, learnt from answers.

The model. Twilio limits an account twice, and a 429 does not say which limit it hit: web chat
creation at 5 requests a second, and error 20429, too many requests in flight on the account
(shared by every application on it, no Retry-After). The run holds one limit of each kind:

- a rate (`RateLimit`), enforced by booking slots 1/rate apart (`SlotSchedule`, GCRA): each
  caller books the next slot and sleeps once until it, nothing polls. A pause (Retry-After, else
  `DEFAULT_PAUSE`) moves the next slot to the pause's end and spaces the slots after it again.
- a concurrency limit (`ConcurrencyLimit`), enforced by a condition variable.

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
or one request in flight; a try at one more in flight that is refused makes the next try wait
twice as long (a new account's cap of 1 costs one 429, not one every few seconds).

The account is shared (`OtherTraffic`, `--reserve`). The same limits serve the contact centre's
website, whose visitors start web chats through them and are refused, not retried, on a 429.
The run books at most `--rate` minus the reserve a second, so the account keeps that much for
them; and it yields to traffic it cannot see. A 429 is either the account's limit (the run
pushed past what it had shown the account takes: at the start, or climbing back after a cut)
or someone else's use of the account: a 429 at a rate the run has held for `HELD_SPAN` seconds
without one (a rate the account has shown it allows), with fewer in flight than the cap, means
others took the tokens. The first teaches the limit as above. The second lowers a separate
yield, once per episode: a lone 429 may be one burst of visitors (`FIRST_YIELD_BACKOFF`, made
good by `BURST_CLIMB`); a second before that is made good is a busy hour, and the yield drops
to `BUSY_SHARE` of the rate before it, then hovers (AIMD: `YIELD_BACKOFF` a 429, `YIELD_CLIMB`
back a second: over minutes, since a busy hour lasts an hour), never above the ceiling. It
settles where the others' bursts refuse the run about once a minute, which leaves them the
bucket nearly always full. What others use is estimated as the account's rate less the
reserve and the rate yielded to. A concurrency cap of 2 or more, once a 429 shows it, is kept
one request short and never tried past, leaving a slot for a live chat; a cap of 1 cannot be
shared (`LimitsState.cap`), which the run tells the operator, and is tried past now and then
as without a reserve (a cap Twilio raises during the run is found). A cap of 1 shown by one
429 is doubted first: visitors who empty the bucket at the start refuse a request sent with
two in flight (a level not yet accepted) just as a cap of 1 would, and counting 429s cannot
tell them apart. The run keeps one in flight, tells nothing, and tries two again after
`DOUBT_ANSWERS` answers: refused too, the cap is 1, told then (one 429 more on a new account);
accepted, the 429 was the others' and the concurrency known before it is back. A reserve of 0
is the run alone on the account: nothing is yielded, every slot used, nothing doubted, as before.

The pure parts take the time as an argument and are tested by simulation; `AccountLimits` is the
thin, thread-facing shell over them. Libraries considered: pyrate-limiter and limits enforce a
fixed rate and learn nothing from answers; aiolimiter is asyncio-only and fixed too; the small
AIMD packages on PyPI adapt one limit, a rate or a concurrency, never both from one signal.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from provisioner.attempts import MAX_RETRY_AFTER

Clock = Callable[[], float]
Sleep = Callable[[float], None]

# Pauses and floors.
DEFAULT_PAUSE = 0.5  # a 429 on the rate without Retry-After: the server's bucket refills a little
# Slots are a little wider than 1/rate: a thread wakes and sends a millisecond or two after its
# slot, and without the margin 51 sends could fall within one second at --rate 50.
SEND_JITTER_MARGIN = 0.01
# A Retry-After at or beyond the cap is honoured once in this long: a server whose every answer
# asks for hours gets one full pause, then its Retry-After says nothing new.
OVERSIZED_PAUSE_EVERY = 600.0
MIN_RATE = 0.5  # one request every two seconds still makes progress; a lower rate is a stall
MIN_CONCURRENCY = 1  # one request in flight is always allowed, or nothing is ever sent

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
RATE_BUSY_SHARE = 0.8  # sends at under 80 % of the rate lately: the rate cannot be binding
RATE_QUEUED_SHARE = 0.5  # most sends waited for their slot: the rate binds, and is worth growing

# Lowering and raising the concurrency limit (AIMD on 429s, Gradient2's latency signal).
CONCURRENCY_BACKOFF = 0.9  # AIMDLimit's default backoff ratio
CONCURRENCY_PROBE_INTERVAL = 5.0  # seconds between tries of one more in flight: a try that finds
# the account's cap costs a 429 and a retry (and the cap is shared with the live contact
# centre, whose requests a try may crowd out), so tries must be rare
CONCURRENCY_PROBE_ANSWERS = 100  # and at least this many answers between tries: < 1 % are 429s
# Each 429 blamed on concurrency doubles both spacings, up to this many times the base; a try
# that holds halves them back. A cap that refuses every try is tried ever more rarely: TCP's
# exponential backoff. The first 429 counts: on a new account (1 in flight) it is the cap.
CONCURRENCY_PROBE_BACKOFF_MAX = 64
# A cap of one shown by a single 429 is doubted on a shared account (--reserve): visitors who
# empty the token bucket refuse a request sent with two in flight as readily as a cap of one
# would (a busy start), and a cap of one is told to the operator as a warning. Two in flight
# are tried again after this many answers (a few seconds at 1/0.3 s), not 100 x the backoff:
# on a real cap of one the doubt costs one 429 more.
DOUBT_ANSWERS = 10
SHORT_LATENCY_SAMPLES = 10  # the recent latency: an average over about the last 10 answers
LONG_LATENCY_SAMPLES = 200  # the baseline (Gradient2Limit keeps 600 samples; our runs are shorter)
LATENCY_SPIKE = 2.0  # answers twice as slow as the baseline: the account is queueing us
LATENCY_CALM = 1.3  # add concurrency only while answers stay within 30 % of the baseline

# Yielding to the account's other traffic (--reserve).
HELD_SPAN = 10.0  # seconds at a rate without a 429: the account allows it (a token bucket's
# burst lasts a second or two, so ten clean seconds are the refill rate, not the burst)
HELD_SLACK = 1.05  # what was measured in a clean stretch, plus the noise of 10 s of counting
# The yield is AIMD too, tuned by simulation (tests/test_limits.py) on Twilio's 5/s bucket with
# 300 ms answers and Poisson visitors at 0.5/s, then 2/s: a rate that leaves 2 visitors a second
# about 1 % refused is about 2/s, where their bursts still refuse the run about once a minute.
FIRST_YIELD_BACKOFF = 0.6  # the first 429: leave room at once (4/s -> 2.4/s), noticed in seconds
BURST_CLIMB = 0.005  # requests/s a second back after a lone 429 (a burst): 0.3/s a minute
BUSY_SHARE = 0.45  # a second 429 before that is made good: a busy hour; 4/s -> 1.8/s
YIELD_BACKOFF = 0.9  # each later 429: fine steps, so the rate hovers instead of sawing
YIELD_CLIMB = 0.0025  # requests/s a second back in a busy hour: 0.15/s a minute (it lasts an hour)
BUSY_GAP = 300.0  # others' 429s further apart than this are separate busy spells

TIMELINE_POINTS = 2000  # points kept for report.html's chart; adjacent seconds merge beyond this


class Answer(Enum):
    """What came back for one request, as far as the account's limits are concerned."""

    ACCEPTED = "accepted"  # any HTTP answer but 429
    THROTTLED = "throttled"  # 429
    NO_ANSWER = "no_answer"  # a transport failure: says nothing about the account's limits


@dataclass(frozen=True)
class Booking:
    """A concurrency slot held and a rate slot booked, not yet sent."""

    start: float  # when the request may be sent
    epoch: int  # the schedule's pause count when booked: a pause since voids the booking
    queued: bool  # it waited for its slot, not for a pause: the rate held it back
    number: int = 0  # which booking it is: a lower concurrency limit voids the latest at once


@dataclass(frozen=True)
class Permit:
    """A request being sent: when, and how many were in flight with it (itself included)."""

    sent_at: float
    in_flight: int


@dataclass(frozen=True)
class BusySpell:
    """A stretch in which other traffic on the account drew 429s: when, how many, what the run
    slowed to on average (requests a second)."""

    start: float
    end: float
    throttled: int
    yielded_to: float
    others: float  # requests a second the others used, estimated (see OtherTraffic.spells)


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
        self._recent: deque[tuple[float, bool]] = deque()  # sends of the last RATE_LOOKBACK s

    def sent(self, now: float, queued: bool) -> None:
        """Note one request sent, and whether it had to wait for its rate slot."""
        self._recent.append((now, queued))

    def bound(self, now: float) -> bool:
        """Whether most requests lately waited for their rate slot: the rate held the run back.

        Not the send rate: a run held back by concurrency can send at nearly the rate too.
        """
        prune(self._recent, now - RATE_LOOKBACK)
        if self.rate is None or len(self._recent) < RATE_BUSY_SHARE * self.rate * RATE_LOOKBACK:
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


class OtherTraffic:
    """What the run learns of the account's other traffic, and the rate it yields to it.

    A 429 at a rate not above what the run has held for `HELD_SPAN` seconds without one is
    others' doing (`blames`); the yield then steps down once per episode (as `RateLimit.cut`;
    how far: `give_way`) and climbs back a little a second, never above the ceiling, where it
    stops yielding. Inactive with no reserve or no rate.
    """

    def __init__(self, ceiling: float | None, reserve: float, now: float) -> None:
        self.ceiling = ceiling
        self.active = reserve > 0 and ceiling is not None
        self.cap: float | None = None  # the rate yielded to; None: not yielding
        self.busy = False  # a second 429 came while yielding: a busy hour, not a burst
        self._before = 0.0  # the rate allowed before the yield began
        self.lowest: float | None = None
        self.held = 0.0  # the highest rate held for HELD_SPAN without a 429
        self.throttled = 0  # 429s blamed on others
        self.cut_at = -math.inf
        self._tested = True
        self.clean_since = now  # the last 429 of any kind
        self._floor: float | None = None  # the lowest rate allowed since then
        self._climbed_at = now  # the yield last climbed
        self._looked_at = now  # the spell's average was last brought up to date
        self._spells: list[_Spell] = []

    def limit(self, rate: float | None) -> float | None:
        """The rate allowed: the learnt `rate`, or the yield if it is lower."""
        if self.cap is None or rate is None:
            return rate
        return min(rate, self.cap)

    def blames(self, rate: float) -> bool:
        """Whether a 429 blamed on the rate, while the run allows itself `rate`, is others'
        doing: the run had held that rate or more without a 429."""
        return self.active and self.held > 0 and rate <= self.held

    def throttle(self, now: float, rate: float | None) -> None:
        """Any 429: the clean stretch starts again, at the rate allowed now."""
        self.clean_since = now
        self._floor = rate

    def give_way(self, permit: Permit, now: float, rate: float) -> None:
        """A 429 from others: yield (once an episode), and count it in the busy spell.

        The first may be one burst of visitors: a step down, made good quickly (`BURST_CLIMB`).
        A second before it is made good is a busy hour: straight down to `BUSY_SHARE` of the
        rate before, then small steps, and a slow climb (`YIELD_CLIMB`) until the yield ends.
        """
        self.throttled += 1
        self._integrate(now)
        spell = self._spells[-1] if self._spells else None
        if spell is None or now - spell.end > BUSY_GAP:
            spell = _Spell(now, rate)
            self._spells.append(spell)
        if self.active and permit.sent_at > self.cut_at and self._tested:
            if self.cap is None:  # maybe one burst of visitors
                self._before = rate
                target = rate * FIRST_YIELD_BACKOFF
            elif not self.busy:  # a second before the yield is made good: a busy hour
                self.busy = True
                target = min(rate * YIELD_BACKOFF, self._before * BUSY_SHARE)
            else:
                target = rate * YIELD_BACKOFF
            self.cap = max(MIN_RATE, target)
            self.lowest = self.cap if self.lowest is None else min(self.lowest, self.cap)
            self.cut_at = self._climbed_at = now
            self._tested = False
            spell.first_rate = min(spell.first_rate, self.cap)
        spell.reach(now)

    def answered(
        self, permit: Permit, now: float, rate: float | None, measured: float | None
    ) -> None:
        """An accepted answer: learn the rate held; while yielding, climb back a little."""
        self._tested = self._tested or permit.sent_at > self.cut_at
        if rate is not None:
            self._floor = rate if self._floor is None else min(self._floor, rate)
        held = now - self.clean_since >= HELD_SPAN
        if held and self._floor is not None and measured is not None:
            self.held = max(self.held, min(self._floor, measured * HELD_SLACK))
        self._integrate(now)
        if self.cap is not None and self.ceiling is not None:
            climb = YIELD_CLIMB if self.busy else BURST_CLIMB
            self.cap += climb * (now - self._climbed_at)
            if self.cap >= self.ceiling:
                self.cap = None  # back where it was asked to be: the others have room again
                self.busy = False
        self._climbed_at = now

    def _integrate(self, now: float) -> None:
        """Add the rate yielded to since the last look to the busy spell's average."""
        rate = self.cap if self.cap is not None else self.ceiling
        if self._spells and rate is not None:
            self._spells[-1].area += rate * (now - self._looked_at)
        self._looked_at = now

    def spells(self) -> list[BusySpell]:
        """The busy spells so far, with the rate the run slowed to in each, and what the others
        used: the ceiling less that rate (the yield settles where the others, plus the bursts
        the reserve is for, fill the account)."""
        return [spell.frozen(self.ceiling or 0.0) for spell in self._spells]


class _Spell:
    """A busy spell being counted: the rate yielded to, integrated up to its last 429."""

    def __init__(self, start: float, rate: float) -> None:
        self.start = self.end = start
        self.throttled = 0
        self.first_rate = rate  # what a spell of one 429 slowed to
        self.area = 0.0  # rate yielded to x seconds, from the start until now
        self.area_at_end = 0.0

    def reach(self, now: float) -> None:
        """One more 429 from others, at `now`."""
        self.end = now
        self.throttled += 1
        self.area_at_end = self.area

    def frozen(self, ceiling: float) -> BusySpell:
        """As reported."""
        span = self.end - self.start
        rate = self.area_at_end / span if span > 0 else self.first_rate
        return BusySpell(self.start, self.end, self.throttled, rate, max(0.0, ceiling - rate))


class _Average:
    """An exponential moving average over about `samples` values, a plain mean until then."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.count = 0
        self.value = 0.0

    def add(self, value: float) -> None:
        """Take in one value."""
        self.count += 1
        weight = max(2.0 / (self.samples + 1), 1.0 / self.count)
        self.value += weight * (value - self.value)


class ConcurrencyLimit:
    """How many requests may be in flight: AIMD on 429s, lowered too when answers slow down.

    Follows Netflix's AIMDLimit for the 429s, the loss signal Twilio gives (its 20429 answers at
    once, so the cap shows in no latency), with Gradient2Limit's comparison of recent latency to
    a long baseline as a second signal, for a server that queues instead. On a 429 the limit drops
    to one under the in-flight level that was refused (the cap is below it), and at least by
    `CONCURRENCY_BACKOFF`; it grows by one after a long clean stretch that reached the limit
    (AIMD's additive increase, paced like TCP's congestion avoidance, but slower: a probe that
    finds the cap costs a 429). Vegas was not chosen: it needs a no-load latency that a shared
    account never shows.
    """

    def __init__(self, ceiling: int, now: float) -> None:
        self.ceiling = max(MIN_CONCURRENCY, ceiling)
        self.limit = self.ceiling
        self.settled = self.ceiling
        self.lowest = self.ceiling
        self.cut_at = -math.inf  # answers to requests sent before this say nothing new
        self.cap: int | None = None  # what the last 429 blamed here showed the cap to be
        self.spare = False  # keep a slot free under a cap (--reserve): never try one more
        self.recent = _Average(SHORT_LATENCY_SAMPLES)
        self.baseline = _Average(LONG_LATENCY_SAMPLES)
        self._changed_at = now
        self._answers = 0  # clean answers since the last change
        self._reached = False  # whether a request went out at the limit since the last change
        self._backoff = 1  # the probe spacings' multiplier: doubled by each 429 blamed here
        self._probing = False  # the limit was raised by a try not yet accepted at the new level
        # A cap of one shown once, with a reserve, not yet told: what was known before it
        # (limit, settled, cap, backoff), restored if two in flight are then accepted.
        self._doubted: tuple[int, int, int | None, int] | None = None

    def sparing(self) -> bool:
        """Whether a slot is kept free under the cap a 429 showed (--reserve): never a cap of
        one, which cannot be shared; it is tried past now and then, as without a reserve, so
        that a cap raised during the run is found."""
        return self.spare and self.cap is not None and self.cap >= 2

    def latency(self) -> float | None:
        """The baseline latency of an accepted answer, if any was measured."""
        return self.baseline.value if self.baseline.count else None

    def answered(self, permit: Permit, latency: float, now: float) -> None:
        """An accepted answer: learn its latency; lower on a spike, or climb after a stretch."""
        if latency > 0:  # 0 means not measured (lookups)
            self.recent.add(latency)
            self.baseline.add(latency)
        self._answers += 1
        reached = permit.in_flight >= self.limit
        self._reached = self._reached or reached
        if self._probing and reached and permit.sent_at >= self._changed_at:
            self._probing = False  # the try held: the next one need not wait as long
            self._backoff = max(1, self._backoff // 2)
            self.cap = None  # the cap is higher than it showed
            if self._doubted is not None and permit.in_flight > MIN_CONCURRENCY:
                # Two in flight accepted: the 429 that showed a cap of one was not the cap.
                limit, self.settled, self.cap, self._backoff = self._doubted
                self._doubted = None
                self._set(limit, now)
                return
        settled = self.baseline.count >= SHORT_LATENCY_SAMPLES
        ratio = self.recent.value / self.baseline.value if settled else 1.0
        if ratio >= LATENCY_SPIKE and permit.sent_at > self.cut_at:
            self._lower(int(self.limit * CONCURRENCY_BACKOFF), now)
        elif (
            self._doubted is not None
            and not self._probing
            and self._answers >= DOUBT_ANSWERS * self._backoff // 2
        ):
            self._set(min(self.ceiling, self.limit + 1), now)  # two in flight, to settle it
            self._probing = True
        elif (
            self._doubted is None
            and self.limit < self.ceiling
            and not self.sparing()  # a try would take a live chat's slot
            and self._reached
            and ratio <= LATENCY_CALM
            and self._answers >= CONCURRENCY_PROBE_ANSWERS * self._backoff
            and now - self._changed_at >= CONCURRENCY_PROBE_INTERVAL * self._backoff
        ):
            self._set(self.limit + 1, now)
            self._probing = True
            if self.limit == self.ceiling:
                self.settled = self.limit

    def refused(self, permit: Permit, now: float) -> None:
        """A 429 blamed on concurrency: below the refused level, and at least one step down.

        One sent before the last cut says nothing new, unless it was refused at a level lower
        than the cut left: the cap is below it too (a burst's 429s come back in any order, and
        a new account's cap of 1 must be learnt as 1, not as the level that came back first).
        """
        before = (self.limit, self.settled, self.cap, self._backoff)
        if permit.sent_at <= self.cut_at:
            if permit.in_flight - 1 < self.limit:
                self._set(max(MIN_CONCURRENCY, permit.in_flight - 1), self._changed_at)
                self.settled = self.limit
                self.lowest = min(self.lowest, self.limit)
                self._showed(before, tried=False)
            return
        self._lower(min(int(self.limit * CONCURRENCY_BACKOFF), permit.in_flight - 1), now)
        self._backoff = min(CONCURRENCY_PROBE_BACKOFF_MAX, self._backoff * 2)
        self._probing = False
        self._showed(before, tried=True)

    def _showed(self, before: tuple[int, int, int | None, int], tried: bool) -> None:
        """The limit a 429 lowered is the cap it showed. A first cap of one with a reserve is
        only doubted (`DOUBT_ANSWERS`): neither told nor settled until a try at two in flight is
        refused too; a 429 from the same burst as the first is no try."""
        if self.limit > MIN_CONCURRENCY or not self.spare or self.cap == MIN_CONCURRENCY:
            self.cap = self.limit  # a cap of one already told stays told
            return
        if self._doubted is None:
            self._doubted = before
        elif tried:
            self._doubted = None  # two in flight refused again: the cap is one
            self.cap = self.limit
            return
        self.settled, self.cap = self._doubted[1], None

    def _lower(self, limit: int, now: float) -> None:
        self._set(max(MIN_CONCURRENCY, limit), now)
        self.cut_at = now
        self.settled = self.limit
        self.lowest = min(self.lowest, self.limit)

    def _set(self, limit: int, now: float) -> None:
        self.limit = limit
        self._changed_at = now
        self._answers = 0
        self._reached = False


class Timeline:
    """Requests sent and 429s per second, with the limits at the end of each second."""

    def __init__(self, start: float) -> None:
        self._start = start
        self._width = 1.0  # seconds per bucket; doubles when the buckets would pass the cap
        self._buckets: list[list[Any]] = []  # [sent, throttled, others, rate, concurrency]

    def count(
        self,
        now: float,
        sent: int,
        throttled: int,
        rate: float | None,
        limit: int,
        others: int = 0,
    ) -> None:
        """Add to the bucket of `now`, and note the limits as they are now; `others` of the
        429s were other traffic's doing."""
        index = max(0, int((now - self._start) / self._width))
        while index >= TIMELINE_POINTS:
            self._merge()
            index = int((now - self._start) / self._width)
        while len(self._buckets) <= index:
            self._buckets.append([0, 0, 0, rate, limit])
        bucket = self._buckets[index]
        bucket[0] += sent
        bucket[1] += throttled
        bucket[2] += others
        bucket[3], bucket[4] = rate, limit

    def _merge(self) -> None:
        """Halve the points: pairs of buckets add up, and keep the later limits."""
        pairs = (self._buckets[index : index + 2] for index in range(0, len(self._buckets), 2))
        self._buckets = [
            [*(sum(b[n] for b in pair) for n in range(3)), *pair[-1][3:]] for pair in pairs
        ]
        self._width *= 2

    def points(self) -> list[dict[str, Any]]:
        """One dict a bucket: t (seconds since the start), sent, throttled (others: how many of
        them other traffic's), rate, concurrency."""
        return [
            {
                "t": index * self._width,
                "sent": sent,
                "throttled": throttled,
                "others": others,
                "rate": None if rate is None else round(rate, 3),
                "concurrency": limit,
            }
            for index, (sent, throttled, others, rate, limit) in enumerate(self._buckets)
        ]


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

    def timeline(self) -> list[dict[str, Any]]:
        """Per-second points (t, sent, throttled, rate, concurrency), at most ~2000."""
        with self._changed:
            return self._limits.timeline.points()
