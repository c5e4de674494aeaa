"""Visitors' places in flight are released by one `Releases` thread from a heap of due times:
what a timer thread a visitor gave for free must still hold (a failing release harms no other,
no thread is left behind) and what the heap adds must be right under concurrency."""

from __future__ import annotations

import random
import threading
import time

import pytest

from provisioner.emulator import Emulator
from provisioner.emulator.visitors import Releases
from tests.run_checks import wait_until

WAIT_LIMIT = 5.0  # seconds another thread may take to get somewhere before the test fails
SHORT = 0.02  # seconds a place is held: short, the tests wait for real
CALLERS = 8  # threads holding places at once, as the server's handler threads and visitors do
HOLDS_EACH = 100
SEED = 23


def release_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread not in before}


def test_a_release_that_raises_does_not_keep_later_places_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reported: list[type[BaseException] | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: reported.append(args.exc_type))
    releases, released = Releases(), list[str]()

    def broken() -> None:
        raise RuntimeError("a release that fails")

    releases(SHORT, broken)
    releases(2 * SHORT, lambda: released.append("later"))

    wait_until(lambda: released == ["later"])  # a timer thread each did no worse
    assert reported == [RuntimeError]  # reported, as a thread's own failure is, not swallowed


def test_no_thread_is_left_waiting_once_nothing_is_in_flight() -> None:
    before = set(threading.enumerate())
    releases, released = Releases(), list[int]()

    releases(SHORT, lambda: released.append(1))
    wait_until(lambda: released == [1])
    wait_until(lambda: not release_threads(before))  # a timer thread ended too

    releases(SHORT, lambda: released.append(2))  # a later visitor is still released
    wait_until(lambda: released == [1, 2])


def test_places_held_from_many_threads_are_each_released_once_not_before_their_time() -> None:
    releases = Releases()
    lock = threading.Lock()
    released: list[tuple[int, float, float]] = []  # (hold, due, released at)
    choices = random.Random(SEED)
    plans = [[choices.uniform(0, 5 * SHORT) for _ in range(HOLDS_EACH)] for _ in range(CALLERS)]
    start = threading.Barrier(CALLERS)

    def hold_all(caller: int) -> None:
        start.wait()
        for index, seconds in enumerate(plans[caller]):
            due = time.monotonic() + seconds

            def release(hold: int = caller * HOLDS_EACH + index, due: float = due) -> None:
                with lock:
                    released.append((hold, due, time.monotonic()))

            releases(seconds, release)

    callers = [threading.Thread(target=hold_all, args=(i,)) for i in range(CALLERS)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()

    wait_until(lambda: len(released) >= CALLERS * HOLDS_EACH)
    time.sleep(SHORT)  # none released twice, even late
    assert sorted(hold for hold, _, _ in released) == list(range(CALLERS * HOLDS_EACH))
    assert all(at >= due - 0.001 for _, due, at in released)  # never before its time


def test_an_emulator_stopped_with_visitors_in_flight_still_gives_their_places_back() -> None:
    emulator = Emulator(latency=0.2, max_concurrent=1000, live_rate=500.0, seed=SEED).start()
    wait_until(lambda: emulator.faults.cap.in_flight > 0)

    emulator.shutdown()

    assert emulator.visitor_counts().served > 0
    wait_until(lambda: emulator.faults.cap.in_flight == 0)
