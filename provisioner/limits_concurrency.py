"""How many requests may be in flight (`ConcurrencyLimit`): the account's cap, learnt from 429s
and from answers slowing down; on a shared account, the slot kept free under it and the doubt of
a cap of one.

Twilio's error 20429 is too many requests in flight on the account (shared by every application
on it, no Retry-After). A 429 blamed on concurrency (limits_model.py says when) lowers the limit,
once per episode: answers to requests sent before the last decrease say nothing about the new
limit. It climbs back after a stretch of clean answers, never above what was asked, never below
one request in flight; a try at one more in flight that is refused makes the next try wait twice
as long (a new account's cap of 1 costs one 429, not one every few seconds).

On a shared account (`--reserve`, limits_others.py) a concurrency cap of 2 or more, once a 429
shows it, is kept one request short and never tried past, leaving a slot for a live chat; a cap
of 1 cannot be shared (`LimitsState.cap`), which the run tells the operator, and is tried past
now and then as without a reserve (a cap Twilio raises during the run is found). A cap of 1
shown by one 429 is doubted first: visitors who empty the bucket at the start refuse a request
sent with two in flight (a level not yet accepted) just as a cap of 1 would, and counting 429s
cannot tell them apart. The run keeps one in flight, tells nothing, and tries two again after
`DOUBT_ANSWERS` answers: refused too, the cap is 1, told then (one 429 more on a new account);
accepted, the 429 was the others' and the concurrency known before it is back. A reserve of 0
is the run alone on the account: every slot used, nothing doubted, as before.
"""

from __future__ import annotations

import math

from provisioner.limits_permits import Permit

MIN_CONCURRENCY = 1  # one request in flight is always allowed, or nothing is ever sent

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
