"""The account's limits, simulated against servers that limit by rate, by concurrency, or both.

The simulations drive the pure `Limits` with an explicit clock: workers book slots, send when
their slot comes, and hear back after the server's latency, event by event. No thread, no sleep.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from provisioner.attempts import MAX_RETRY_AFTER
from provisioner.emulator import TokenBucket
from provisioner.limits import AccountLimits
from provisioner.limits_model import DEFAULT_PAUSE, OVERSIZED_PAUSE_EVERY, Limits
from provisioner.limits_permits import Answer, Booking, Permit
from provisioner.limits_rate import MIN_RATE, SEND_JITTER_MARGIN
from provisioner.limits_timeline import TIMELINE_POINTS, Timeline

THROTTLE_LATENCY = 0.005  # a 429 is answered at once: nothing was processed


@dataclass(frozen=True)
class Reply:
    answer: Answer
    latency: float
    retry_after: float | None = None
    held: bool = False  # the server counts it in flight until it answers


@dataclass
class Account:
    """A server shaped like a Twilio account: a concurrency cap, a token bucket, or both."""

    cap: int | None = None
    rate_limit: float | None = None
    latency: tuple[float, float] = (0.02, 0.02)
    refuse_first: int = 0  # the first requests get a 429, whatever the limits
    latency_after: tuple[float, float, float] | None = None  # (from t, low, high): a slowdown
    # Live web chats the run cannot see: (from t, visitors a second), a Poisson process each.
    visitors: tuple[tuple[float, float], ...] = ()
    seed: int = 7
    in_flight: int = field(init=False, default=0)
    arrivals: int = field(init=False, default=0)
    rng: random.Random = field(init=False)
    bucket: TokenBucket | None = field(init=False, default=None)

    def start(self, clock: Callable[[], float]) -> None:
        """A fresh account whose token bucket reads the simulation's clock."""
        self.in_flight = self.arrivals = 0
        self.rng = random.Random(self.seed)
        self.bucket = TokenBucket(self.rate_limit, clock) if self.rate_limit else None

    def visitors_at(self, now: float) -> float:
        """Visitors a second at `now`."""
        rates = [rate for start, rate in self.visitors if start <= now]
        return rates[-1] if rates else 0.0

    def visit(self, now: float) -> Reply:
        """A live chat, as Twilio's Webchat app asks for one: a token and a place in flight."""
        if self.cap is not None and self.in_flight >= self.cap:
            return Reply(Answer.THROTTLED, THROTTLE_LATENCY)
        if self.bucket is not None and not self.bucket.take():
            return Reply(Answer.THROTTLED, THROTTLE_LATENCY)
        self.in_flight += 1
        return Reply(Answer.ACCEPTED, self.rng.uniform(*self.latency), held=True)

    def handle(self, now: float) -> Reply:
        self.arrivals += 1
        if self.arrivals <= self.refuse_first:
            return Reply(Answer.THROTTLED, THROTTLE_LATENCY)
        if self.cap is not None and self.in_flight >= self.cap:
            return Reply(Answer.THROTTLED, THROTTLE_LATENCY)
        if self.bucket is not None and not self.bucket.take():
            return Reply(Answer.THROTTLED, THROTTLE_LATENCY)
        low, high = self.latency
        if self.latency_after is not None and now >= self.latency_after[0]:
            low, high = self.latency_after[1:]
        self.in_flight += 1
        return Reply(Answer.ACCEPTED, self.rng.uniform(low, high), held=True)


@dataclass
class Run:
    """What a simulated run did."""

    limits: Limits
    duration: float
    sends: list[tuple[float, int]] = field(default_factory=list)  # (time, in flight)
    accepted: list[float] = field(default_factory=list)
    throttled: list[float] = field(default_factory=list)
    visits: list[tuple[float, bool]] = field(default_factory=list)  # (time, served)

    def throughput(self, since: float = 0.0, until: float | None = None) -> float:
        end = self.duration if until is None else until
        return sum(1 for at in self.accepted if since <= at < end) / (end - since)

    def visitors_refused(self, since: float, until: float) -> float:
        """The share of visitors refused from `since` to `until`."""
        served = [ok for at, ok in self.visits if since <= at < until]
        return served.count(False) / len(served)

    def throttled_share(self) -> float:
        return len(self.throttled) / len(self.sends)


def simulate(
    account: Account,
    rate: float | None,
    concurrency: int,
    duration: float,
    seed: int = 1,
    reserve: float = 0.0,
) -> Run:
    """`concurrency` workers send rows for `duration` seconds; a 429'd row is retried after a wait.

    Checks at every send what must always hold: never more in flight than asked, never faster
    than asked, the limits within their bounds.
    """
    now = 0.0
    account.start(lambda: now)
    limits = Limits(rate, concurrency, now, reserve)
    run = Run(limits, duration)
    rng = random.Random(seed)
    events: list[tuple[float, int, Callable[[], None]]] = []
    order = itertools.count()
    waiting: deque[int] = deque()

    def at(when: float, action: Callable[[], None]) -> None:
        heapq.heappush(events, (when, next(order), action))

    def want(worker: int) -> None:
        if limits.room() <= 0:
            waiting.append(worker)
            return
        booking = limits.book(now)
        at(booking.start, lambda: slot(worker, booking))

    def slot(worker: int, booking: Booking) -> None:
        permit = limits.begin(booking, now)
        if permit is None:
            want(worker)
            return
        run.sends.append((now, permit.in_flight))
        check_bounds(run, rate, concurrency)
        reply = account.handle(now)
        at(now + reply.latency, lambda: answered(worker, permit, reply))

    def answered(worker: int, permit: Permit, reply: Reply) -> None:
        if reply.held:
            account.in_flight -= 1
        limits.finish(permit, reply.answer, reply.latency, reply.retry_after, now)
        while waiting and limits.room() > 0:
            want(waiting.popleft())
        if reply.answer is Answer.THROTTLED:
            run.throttled.append(now)
            # The retry policy's first waits: the account's pause, else a jittered short backoff.
            wait = max(limits.pause_left(now), rng.uniform(0.25, 1.0))
            at(now + wait, lambda: want(worker))
        else:
            run.accepted.append(now)
            want(worker)

    visiting = random.Random(seed + 1)

    def visit(phase: tuple[float, float]) -> None:
        if account.visitors_at(now) != phase[1]:
            return  # the next phase has begun, with its own arrivals (a Poisson process forgets)
        reply = account.visit(now)
        run.visits.append((now, reply.answer is Answer.ACCEPTED))
        if reply.held:
            at(now + reply.latency, leave)
        at(now + visiting.expovariate(phase[1]), lambda: visit(phase))

    def leave() -> None:
        account.in_flight -= 1

    for phase in account.visitors:
        if phase[1] > 0:
            at(phase[0] + visiting.expovariate(phase[1]), functools.partial(visit, phase))
    for worker in range(concurrency):
        want(worker)
    while events and events[0][0] < duration:
        now, _, action = heapq.heappop(events)
        action()
    return run


def check_bounds(run: Run, rate: float | None, concurrency: int) -> None:
    state = run.limits.state()
    assert 1 <= state.concurrency <= concurrency
    assert run.sends[-1][1] <= state.concurrency <= concurrency
    if rate is not None:
        ceiling = rate - run.limits.reserve  # what the run may book, the reserve kept
        assert state.rate is not None
        assert MIN_RATE <= state.rate <= ceiling
        # GCRA: never more than `ceiling` sends in any second (+1 for a send on the boundary).
        second = [at for at, _ in run.sends[-int(rate) - 2 :] if at > run.sends[-1][0] - 1.0]
        assert len(second) <= ceiling + 1
    elif state.rate is not None:
        assert state.rate >= MIN_RATE


@pytest.mark.parametrize("asked", [5.0, 40.0, 200.0])
@pytest.mark.parametrize("limit", [5.0, 40.0])
def test_a_rate_limited_account_is_run_at_its_rate(asked: float, limit: float) -> None:
    run = simulate(Account(rate_limit=limit), asked, 8, duration=120.0)

    assert run.throughput() >= 0.9 * min(asked, limit)
    assert run.throttled_share() < 0.03
    settled = run.limits.state().settled_rate
    assert settled is not None
    assert settled <= min(asked, limit)  # what to pass as --rate next time


@pytest.mark.parametrize(
    ("account", "rate", "concurrency", "ideal", "settled"),
    [
        (Account(cap=6, latency=(0.2, 0.3)), 500.0, 24, 6 / 0.25, 6),
        (Account(cap=1, latency=(0.2, 0.3)), 500.0, 24, 1 / 0.25, 1),
        (Account(cap=1, rate_limit=5.0, latency=(0.2, 0.3)), 5.0, 8, min(5.0, 1 / 0.25), 1),
        (Account(cap=6, rate_limit=5.0, latency=(0.2, 0.3)), 5.0, 8, min(5.0, 6 / 0.25), 8),
        (Account(cap=1, rate_limit=5.0, latency=(0.3, 0.3)), 5.0, 8, min(5.0, 1 / 0.3), 1),
        (Account(cap=6, latency=(0.2, 0.3)), None, 24, 6 / 0.25, 6),
    ],
    ids=[
        "cap6-generous",
        "cap1-generous",
        "cap1-defaults",
        "cap6-defaults",
        "twilio",
        "cap6-rate0",
    ],
)
def test_a_concurrency_capped_account_is_run_at_its_cap(
    account: Account, rate: float | None, concurrency: int, ideal: float, settled: int
) -> None:
    run = simulate(account, rate, concurrency, duration=120.0)

    assert run.throughput() >= 0.9 * ideal
    assert run.throttled_share() < 0.03
    assert run.limits.state().settled_concurrency == settled  # the cap, when it binds


@pytest.mark.parametrize(("rate", "ideal"), [(10.0, 10.0), (None, 4 / 0.02)])
def test_one_early_429_does_not_collapse_the_run(rate: float | None, ideal: float) -> None:
    run = simulate(Account(refuse_first=1, latency=(0.02, 0.02)), rate, 4, duration=30.0)

    assert len(run.throttled) == 1
    first_429 = run.throttled[0]
    assert run.throughput(since=first_429 + 5.0) >= 0.9 * ideal
    state = run.limits.state()
    assert state.rate == state.settled_rate == rate  # back to the ceiling, or to none at all
    assert state.concurrency == 4


def test_a_server_refusing_everything_for_a_while_cuts_the_rate_once() -> None:
    run = simulate(Account(refuse_first=5, latency=(0.3, 0.3)), 5.0, 8, duration=60.0)

    assert len(run.throttled) == 5
    assert run.limits.state().lowest_rate == 5.0 / 2  # one guess, not five halvings
    assert run.throughput(since=10.0) >= 0.9 * 5.0


def drain(limits: Limits, bookings: list[Booking]) -> list[float]:
    """Send every booking at its start, booking again the ones a pause voided; the send times."""
    sent = []
    queue = deque(bookings)
    while queue:
        booking = queue.popleft()
        permit = limits.begin(booking, booking.start)
        if permit is None:
            queue.append(limits.book(booking.start))
        else:
            sent.append(permit.sent_at)
    return sorted(sent)


def test_after_a_pause_sends_resume_one_slot_apart() -> None:
    limits = Limits(10.0, 8, now=0.0)
    first = limits.begin(limits.book(0.0), 0.0)
    assert first is not None
    waiting = [limits.book(0.0) for _ in range(7)]  # workers asleep until their slots

    limits.finish(first, Answer.THROTTLED, 0.05, retry_after=2.0, now=0.05)

    sent = drain(limits, waiting)
    rate = limits.state().rate
    assert rate is not None
    assert sent[0] == pytest.approx(2.05)  # Retry-After honoured from when the 429 came
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert gaps == pytest.approx([(1 + SEND_JITTER_MARGIN) / rate] * 6)


def test_after_a_pause_without_a_rate_sends_are_spaced_by_latency_over_concurrency() -> None:
    limits = Limits(None, 4, now=0.0)
    now = 0.0
    for _ in range(10):  # accepted answers, two in flight at a time, teach the latency: 0.4 s
        pair = [limits.begin(limits.book(now), now) for _ in range(2)]
        now += 0.4
        for permit in pair:
            assert permit is not None
            limits.finish(permit, Answer.ACCEPTED, 0.4, None, now)
    in_flight = [limits.begin(limits.book(now), now) for _ in range(3)]
    assert in_flight[2] is not None
    assert in_flight[2].in_flight == 3

    # Three in flight were never accepted: the concurrency, not the rate, was too high.
    limits.finish(in_flight[2], Answer.THROTTLED, 0.01, retry_after=1.0, now=now + 0.01)
    for permit in in_flight[:2]:
        assert permit is not None
        limits.finish(permit, Answer.ACCEPTED, 0.4, None, now + 0.4)
    sent = drain(limits, [limits.book(now + 0.4) for _ in range(2)])

    state = limits.state()
    assert (state.rate, state.concurrency) == (None, 2)
    assert sent == pytest.approx([now + 1.01, now + 1.01 + 0.4 / 2])


def test_answers_slowing_down_sharply_lower_the_concurrency() -> None:
    account = Account(latency=(0.05, 0.06), latency_after=(20.0, 0.5, 0.6))
    run = simulate(account, None, 16, duration=40.0)

    before = [level for at, level in run.sends if 15.0 <= at < 20.0]
    assert max(before) == 16
    assert run.limits.state().lowest_concurrency < 16
    assert not run.throttled


def test_a_429_at_the_concurrency_limit_lowers_it_and_pauses_nobody() -> None:
    limits = Limits(None, 3, now=0.0)
    permits = [limits.begin(limits.book(0.0), 0.0) for _ in range(3)]
    assert permits[2] is not None

    limits.finish(permits[2], Answer.THROTTLED, 0.01, retry_after=None, now=0.01)

    assert (limits.state().concurrency, limits.state().rate) == (2, None)
    assert limits.room() == 0  # two still in flight: the next request waits for an answer
    first = permits[0]
    assert first is not None
    limits.finish(first, Answer.ACCEPTED, 0.2, None, now=0.2)
    assert limits.book(0.2).start == 0.2


def test_429s_to_requests_sent_before_a_cut_do_not_cut_again() -> None:
    limits = Limits(100.0, 8, now=0.0)
    booked = [limits.book(0.0) for _ in range(5)]
    permits = [limits.begin(booking, booking.start) for booking in booked]

    for permit in permits:
        assert permit is not None
        limits.finish(permit, Answer.THROTTLED, 0.01, None, now=0.06)

    assert limits.state().rate == 100.0 / 2
    assert limits.state().throttled == 5


def test_limits_stay_within_what_was_asked_and_never_reach_zero() -> None:
    account = Account(cap=1, rate_limit=1.0, latency=(0.5, 2.0), refuse_first=30)
    run = simulate(account, 3.0, 6, duration=60.0)  # check_bounds runs at every send

    state = run.limits.state()
    assert state.lowest_concurrency == 1
    assert state.lowest_rate is not None
    assert state.lowest_rate >= MIN_RATE
    assert run.throughput() > 0


def test_the_timeline_counts_every_request_in_at_most_its_points() -> None:
    timeline = Timeline(start=0.0)
    for second in range(5000):
        timeline.count(second + 0.5, sent=2, throttled=second % 2, rate=5.0, limit=3)

    points = timeline.points()
    # 5000 one-second buckets merged twice: four seconds a point.
    assert len(points) == 1250 <= TIMELINE_POINTS
    assert [point.t for point in points[:3]] == [0.0, 4.0, 8.0]
    assert {(p.sent, p.throttled, p.rate, p.concurrency) for p in points} == {(8, 2, 5.0, 3)}


def test_acquire_waits_at_the_limit_until_a_release() -> None:
    limits = AccountLimits(None, 2, clock=lambda: 0.0)
    stopping = threading.Event()
    held = [limits.acquire(lambda s: None, stopping) for _ in range(2)]
    got: list[Permit | None] = []
    waiter = threading.Thread(target=lambda: got.append(limits.acquire(lambda s: None, stopping)))

    waiter.start()
    waiter.join(timeout=0.05)
    assert waiter.is_alive()  # two in flight: the third waits
    assert held[0] is not None
    limits.release(held[0], Answer.ACCEPTED, 0.1, None)
    waiter.join(timeout=5)

    assert not waiter.is_alive()
    assert got[0] is not None
    assert got[0].in_flight == 2


def test_acquire_returns_none_when_stopping() -> None:
    limits = AccountLimits(5.0, 1, clock=lambda: 0.0)
    stopping = threading.Event()
    held = limits.acquire(lambda s: None, stopping)
    assert held is not None
    got: list[Permit | None] = []
    waiters = [
        threading.Thread(target=lambda: got.append(limits.acquire(lambda s: None, stopping)))
        for _ in range(2)
    ]
    for waiter in waiters:
        waiter.start()

    stopping.set()
    limits.release(held, Answer.ACCEPTED, 0.1, None)  # wakes one waiter, who wakes the next
    for waiter in waiters:
        waiter.join(timeout=5)

    assert got == [None, None]
    assert limits.acquire(lambda s: None, stopping) is None
    assert limits.state().sent == 1


def test_acquire_sleeps_until_the_rate_slot_and_gives_it_back_if_stopped_meanwhile() -> None:
    now = [0.0]
    limits = AccountLimits(4.0, 8, clock=lambda: now[0])
    stopping = threading.Event()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    first = limits.acquire(sleep, stopping)
    second = limits.acquire(sleep, stopping)

    def sleep_then_stop(seconds: float) -> None:
        stopping.set()

    assert limits.acquire(sleep_then_stop, stopping) is None
    assert first is not None
    assert second is not None
    gap = (1 + SEND_JITTER_MARGIN) / 4.0
    assert first.sent_at == 0.0
    assert second.sent_at == pytest.approx(gap)
    assert sleeps == [pytest.approx(gap)]
    assert limits.state().sent == 2


@pytest.mark.parametrize("asked", [None, 0.0])
def test_no_rate_means_no_waiting(asked: float | None) -> None:
    limits = Limits(asked, 4, now=0.0)

    assert [limits.book(0.0).start for _ in range(4)] == [0.0] * 4
    assert limits.state().rate is None


def send_together(limits: Limits, count: int, now: float) -> list[Permit]:
    """`count` requests sent at `now`, all in flight together."""
    permits = [limits.begin(limits.book(now), now) for _ in range(count)]
    assert all(permit is not None for permit in permits)
    return [permit for permit in permits if permit is not None]


def test_429s_that_arrive_together_share_one_pause_from_the_latest() -> None:
    limits = Limits(None, 8, now=0.0)
    permits = send_together(limits, 4, 0.0)

    for number, permit in enumerate(permits):  # 10 ms apart, each asking for 5 s
        limits.finish(permit, Answer.THROTTLED, 0.01, retry_after=5.0, now=0.01 * (number + 1))

    assert limits.pause_left(0.04) == pytest.approx(5.0)  # ends at 5.04: one pause, not four
    assert limits.pause_left(5.04) == 0.0


def test_a_retry_after_at_the_cap_is_honoured_once_with_its_burst_then_not_again() -> None:
    limits = Limits(None, 8, now=0.0)
    burst = send_together(limits, 2, 0.0)
    limits.finish(burst[0], Answer.THROTTLED, 0.01, retry_after=MAX_RETRY_AFTER, now=0.01)
    limits.finish(burst[1], Answer.THROTTLED, 0.01, retry_after=MAX_RETRY_AFTER, now=0.02)
    assert limits.pause_left(0.02) == pytest.approx(MAX_RETRY_AFTER)  # the burst's, from 0.02

    after = send_together(limits, 1, 30.02)[0]  # sent once the pause was over
    limits.finish(after, Answer.THROTTLED, 0.01, retry_after=MAX_RETRY_AFTER, now=30.03)

    # Not believed: a 429 without Retry-After, a short pause at most, never another 30 s.
    assert limits.pause_left(30.03) <= DEFAULT_PAUSE
    assert limits.state().throttled == 3


def test_a_retry_after_at_the_cap_is_believed_again_after_a_while() -> None:
    limits = Limits(None, 8, now=0.0)
    first = send_together(limits, 1, 0.0)[0]
    limits.finish(first, Answer.THROTTLED, 0.01, retry_after=MAX_RETRY_AFTER, now=0.01)
    later = 0.01 + OVERSIZED_PAUSE_EVERY
    again = send_together(limits, 1, later)[0]

    limits.finish(again, Answer.THROTTLED, 0.01, retry_after=MAX_RETRY_AFTER, now=later)

    assert limits.pause_left(later) == pytest.approx(MAX_RETRY_AFTER)


def test_a_retry_after_under_the_cap_is_always_honoured() -> None:
    limits = Limits(None, 8, now=0.0)
    now = 0.0
    for _ in range(5):
        permit = send_together(limits, 1, now)[0]
        limits.finish(permit, Answer.THROTTLED, 0.01, retry_after=MAX_RETRY_AFTER - 1, now=now)
        assert limits.pause_left(now) == pytest.approx(MAX_RETRY_AFTER - 1)
        now += MAX_RETRY_AFTER


def test_a_retry_after_on_another_answer_than_429_pauses_the_account_too() -> None:
    # A 503 with Retry-After: the server is unavailable to every request, not just this one.
    limits = Limits(None, 8, now=0.0)
    permit = send_together(limits, 1, 0.0)[0]

    limits.finish(permit, Answer.ACCEPTED, 0.01, retry_after=3.0, now=0.01)

    assert limits.pause_left(0.01) == pytest.approx(3.0)
    assert limits.book(0.01).start == pytest.approx(3.01)


def test_bookings_over_a_lowered_limit_are_voided_at_once_and_their_slots_given_back() -> None:
    # A new account: 5/s, 1 in flight. Eight bookings 0.2 s apart; the second is refused.
    limits = Limits(5.0, 8, now=0.0)
    first = limits.begin(limits.book(0.0), 0.0)
    bookings = [limits.book(0.0) for _ in range(7)]
    gap = (1 + SEND_JITTER_MARGIN) / 5.0
    assert [booking.start for booking in bookings] == pytest.approx([gap * n for n in range(1, 8)])
    second = limits.begin(bookings[0], bookings[0].start)
    assert first is not None
    assert second is not None

    limits.finish(second, Answer.THROTTLED, 0.001, None, now=gap + 0.001)

    assert limits.state().concurrency == 1
    assert limits.held == 1  # the first, in flight: every booking over the limit is voided now
    assert all(limits.begin(b, b.start) is None for b in bookings[1:])  # their turn: voided
    assert limits.held == 1  # and not given back twice
    limits.finish(first, Answer.ACCEPTED, 0.3, None, now=0.3)
    # The next request takes the first slot given back, not one after the voided ones.
    assert limits.book(0.3).start == pytest.approx(2 * gap)


def test_a_new_accounts_cap_of_one_costs_one_429_then_ever_rarer_tries() -> None:
    account = Account(cap=1, rate_limit=5.0, latency=(0.3, 0.3))
    run = simulate(account, 5.0, 8, duration=300.0)

    early = [at for at in run.throttled if at < 100 * 0.3]  # a 100-row batch: one 429
    assert len(early) == 1
    # Each refused try doubles the wait for the next: about 60 s, then 120 s, then 240 s.
    assert len(run.throttled) <= 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(run.throttled)]
    assert gaps == sorted(gaps)
    assert run.throughput() >= 0.97 * (1 / 0.3)


# Twilio's webchat limit shared with a live site: 5/s, 300 ms answers, visitors the run cannot
# see. Phases long enough that the shares measured are not one unlucky burst (issue 21).
QUIET, BUSY = 300.0, 600.0


def co_tenant(seed: int) -> Run:
    """A batch at the defaults (--rate 5 --reserve 1) beside 0.5 visitors/s, then 2/s."""
    account = Account(
        rate_limit=5.0, latency=(0.3, 0.3), visitors=((0.0, 0.5), (QUIET, 2.0)), seed=seed + 7
    )
    return simulate(account, 5.0, 8, QUIET + BUSY, seed=seed, reserve=1.0)


@pytest.mark.parametrize("seed", range(4))
def test_a_batch_leaves_room_for_live_visitors_in_a_quiet_and_a_busy_hour(seed: int) -> None:
    run = co_tenant(seed)

    assert run.visitors_refused(0.0, QUIET) <= 0.01
    assert run.throughput(0.0, QUIET) >= 3.5
    assert run.visitors_refused(QUIET, QUIET + BUSY) <= 0.03
    assert run.throughput(QUIET, QUIET + BUSY) >= 1.8
    state = run.limits.state()
    assert state.others_throttled == len(run.throttled)  # every 429 was the visitors'
    assert state.settled_rate == 4.0  # none taught a limit: nothing to advise
    busy = state.busy[-1]
    assert busy.start <= QUIET + 15.0  # noticed within seconds of the busy hour
    assert 1.8 <= busy.yielded_to <= 2.5
    assert 1.5 <= busy.others <= 2.2  # the visitors' 2/s, estimated from the run's side


@pytest.mark.parametrize("seed", range(4))
def test_the_busy_hour_is_noticed_at_once_and_met_within_a_minute(seed: int) -> None:
    run = co_tenant(seed)

    rates = {p.t: p.rate for p in run.limits.timeline.points() if p.rate is not None}
    assert rates[QUIET + 10.0] < 4.0  # a step down within seconds
    assert rates[QUIET + 60.0] <= 2.5  # and within a minute, room for 2 visitors a second


def test_the_yield_climbs_back_over_minutes_once_the_visitors_are_gone() -> None:
    account = Account(
        rate_limit=5.0, latency=(0.3, 0.3), visitors=((0.0, 0.5), (60.0, 2.0), (360.0, 0.0))
    )
    run = simulate(account, 5.0, 8, 1800.0, reserve=1.0)

    points = {p.t: p.rate for p in run.limits.timeline.points() if p.rate is not None}
    assert points[420.0] < 3.0  # a minute after the busy hour: still leaving room
    assert points[1799.0] == 4.0  # back at --rate minus the reserve, never above it
    assert run.throughput(1500.0) >= 0.95 * 4.0


def test_a_reserve_keeps_the_run_under_the_rate_minus_it() -> None:
    run = simulate(Account(rate_limit=5.0, latency=(0.3, 0.3)), 5.0, 8, 120.0, reserve=1.0)

    assert not run.throttled
    assert 0.95 * 4.0 <= run.throughput(since=5.0) <= 4.0  # check_bounds ran at every send
    assert run.limits.state().reserve == 1.0


def test_without_a_rate_there_is_no_reserve() -> None:
    limits = Limits(None, 4, now=0.0, reserve=1.0)

    assert limits.state().reserve == 0.0
    assert [limits.book(0.0).start for _ in range(4)] == [0.0] * 4


def test_429s_before_any_rate_was_held_teach_the_accounts_limit_as_without_a_reserve() -> None:
    # An account allowing 3/s: the run at 4/s is probing it, not meeting other traffic.
    run = simulate(Account(rate_limit=3.0, latency=(0.3, 0.3)), 5.0, 8, 120.0, reserve=1.0)

    state = run.limits.state()
    assert state.others_throttled == 0
    assert state.settled_rate is not None
    assert state.settled_rate < 3.0
    assert run.throughput(since=20.0) >= 0.8 * 3.0


@pytest.mark.parametrize(("reserve", "spare"), [(1.0, 1), (0.0, 0)])
def test_a_cap_learnt_from_a_429_is_kept_one_short_with_a_reserve(
    reserve: float, spare: int
) -> None:
    run = simulate(Account(cap=6, latency=(0.2, 0.3)), 500.0, 24, 120.0, reserve=reserve)

    state = run.limits.state()
    assert state.cap is not None
    assert state.cap >= 6
    levels = [level for at, level in run.sends if at >= 30.0]
    if spare:
        assert max(levels) == state.cap - 1  # never at the cap: a slot free, no tries past it
    else:
        assert max(levels) >= state.cap  # at the cap, and now and then a try past it
    assert state.concurrency == state.cap - spare


def test_a_cap_of_one_is_learnt_and_shown() -> None:
    run = simulate(Account(cap=1, rate_limit=5.0, latency=(0.3, 0.3)), 5.0, 8, 60.0, reserve=1.0)

    state = run.limits.state()
    assert (state.cap, state.concurrency) == (1, 1)  # no slot can be kept free: said to people
    assert run.throughput() >= 0.9 * (1 / 0.3)


def test_the_timeline_counts_429s_from_other_traffic_apart() -> None:
    run = co_tenant(0)

    points = run.limits.timeline.points()
    assert sum(p.others for p in points) == run.limits.state().others_throttled > 0
    assert sum(p.throttled for p in points) == len(run.throttled)


@pytest.mark.parametrize("seed", range(3))
def test_a_run_started_in_a_busy_hour_climbs_back_to_its_ceiling_once_it_is_over(seed: int) -> None:
    # Visitors at 2.5/s from the first second: their 429s come before the run has held any
    # rate, so they teach it a limit of about 2/s (README: it cannot tell them from one).
    # Once they are gone, that limit is probed up again: under 2.5/s a second of sends held
    # too few to show the rate binding, and such a run stayed at about 2/s for good.
    # Over seeds 0-20 the run is back at 4/s 15 to 20 minutes after the visitors left.
    account = Account(
        rate_limit=5.0, latency=(0.3, 0.3), visitors=((0.0, 2.5), (600.0, 0.0)), seed=seed + 7
    )
    run = simulate(account, 5.0, 8, 2400.0, seed=seed, reserve=1.0)

    points = {p.t: p.rate for p in run.limits.timeline.points() if p.rate is not None}
    assert points[300.0] < 3.0  # learnt from the visitors' 429s
    assert points[max(points)] == 4.0  # back at --rate minus the reserve
    assert run.throughput(2100.0) >= 0.95 * 4.0


@pytest.mark.parametrize("asked", [2.0, 3.0])
def test_a_rate_cut_low_by_early_429s_is_probed_back_up_when_it_binds(asked: float) -> None:
    # A server that refused the first requests, then nothing: the cut took the rate to half
    # of --rate, where a second holds one or two sends; it must climb back all the same.
    run = simulate(Account(refuse_first=4, latency=(0.3, 0.3)), asked, 8, 600.0)

    assert run.limits.state().lowest_rate == asked / 2
    assert run.throughput(300.0) >= 0.95 * asked
