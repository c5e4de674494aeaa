"""The account's other traffic (`OtherTraffic`, `--reserve`): what the run learns of it, and the
rate the run yields to it.

The account is shared. The same limits serve the contact centre's website, whose visitors start
web chats through them and are refused, not retried, on a 429. The run books at most `--rate`
minus the reserve a second, so the account keeps that much for them; and it yields to traffic it
cannot see. A 429 is either the account's limit (the run pushed past what it had shown the
account takes: at the start, or climbing back after a cut) or someone else's use of the account:
a 429 at a rate the run has held for `HELD_SPAN` seconds without one (a rate the account has
shown it allows), with fewer in flight than the cap, means others took the tokens. The first
teaches the limit (limits_model.py). The second lowers a separate yield, once per episode: a
lone 429 may be one burst of visitors (`FIRST_YIELD_BACKOFF`, made good by `BURST_CLIMB`); a
second before that is made good is a busy hour, and the yield drops to `BUSY_SHARE` of the rate
before it, then hovers (AIMD: `YIELD_BACKOFF` a 429, `YIELD_CLIMB` back a second: over minutes,
since a busy hour lasts an hour), never above the ceiling. It settles where the others' bursts
refuse the run about once a minute, which leaves them the bucket nearly always full. What others
use is estimated as the account's rate less the reserve and the rate yielded to. The cap on
requests in flight is shared too: limits_concurrency.py. A reserve of 0 is the run alone on the
account: nothing is yielded, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from provisioner.limits_permits import Permit
from provisioner.limits_rate import MIN_RATE

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


@dataclass(frozen=True)
class BusySpell:
    """A stretch in which other traffic on the account drew 429s: when, how many, what the run
    slowed to on average (requests a second)."""

    start: float
    end: float
    throttled: int
    yielded_to: float
    others: float  # requests a second the others used, estimated (see OtherTraffic.spells)


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
