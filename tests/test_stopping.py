"""Stopping: the first reason is kept, abandoning sets both events, real signals stop the run."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from provisioner.errors import ResultsError
from provisioner.outcome import Outcome
from provisioner.stopping import STOP_SIGNALS, FailureStreak, Stopping, failure_reason
from provisioner.vocabulary import Status

SIGNAL_WAIT = 5.0  # seconds to wait for a handler to run: it runs at once; this only bounds a bug


def wait_for(event: threading.Event) -> None:
    assert event.wait(SIGNAL_WAIT), "the signal handler did not run"


def test_stop_keeps_the_first_reason_and_says_it_once() -> None:
    said: list[str] = []
    stopping = Stopping(said.append)

    stopping.stop("credentials rejected")
    stopping.stop("too many failures in a row")

    assert stopping.is_set
    assert stopping.reason == "credentials rejected"
    assert not stopping.abandoned.is_set()
    assert said == [
        "stopping: credentials rejected; finishing requests in flight (again to stop at once)"
    ]
    assert stopping.not_sent_message == "not sent: the run stopped (credentials rejected)"


def test_abandon_sets_both_and_keeps_an_earlier_reason() -> None:
    said: list[str] = []
    stopping = Stopping(said.append)

    stopping.stop("interrupted by SIGINT")
    stopping.abandon("interrupted again by SIGINT")
    stopping.abandon("interrupted again by SIGTERM")

    assert stopping.event.is_set()
    assert stopping.abandoned.is_set()
    assert stopping.reason == "interrupted by SIGINT"
    assert said == [
        "stopping: interrupted by SIGINT; finishing requests in flight (again to stop at once)",
        "stopping at once: requests in flight are left unanswered",
    ]


def test_abandon_without_an_earlier_stop_stops_with_its_reason() -> None:
    stopping = Stopping()

    stopping.abandon("the ledger is gone")

    assert stopping.is_set
    assert stopping.abandoned.is_set()
    assert stopping.reason == "the ledger is gone"


def test_sleep_ends_at_once_when_stopped() -> None:
    stopping = Stopping()
    stopping.stop("test")
    finished = threading.Event()

    def sleeper() -> None:
        stopping.sleep(60.0)  # would hang the test if the stop did not end it
        finished.set()

    thread = threading.Thread(target=sleeper)
    thread.start()
    thread.join(SIGNAL_WAIT)

    assert finished.is_set()


def test_sleep_is_woken_by_a_stop_from_another_thread() -> None:
    stopping = Stopping()
    timer = threading.Timer(0.01, stopping.stop, args=("from a worker",))
    timer.start()

    stopping.sleep(60.0)
    timer.join()

    assert stopping.reason == "from a worker"


@pytest.mark.parametrize("number", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_a_real_signal_stops_with_its_name(number: signal.Signals) -> None:
    stopping = Stopping()
    before = signal.getsignal(number)

    with stopping.on_signals():
        os.kill(os.getpid(), number)
        wait_for(stopping.event)

    assert stopping.reason == f"interrupted by {number.name}"
    assert not stopping.abandoned.is_set()
    assert signal.getsignal(number) == before  # the handlers are put back


def test_a_second_signal_abandons() -> None:
    stopping = Stopping()

    with stopping.on_signals():
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(stopping.event)
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(stopping.abandoned)

    assert stopping.reason == "interrupted by SIGHUP"
    assert stopping.abandoned.is_set()


def test_every_stop_signal_is_handled_inside_and_restored_after() -> None:
    stopping = Stopping()
    before = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    with stopping.on_signals():
        inside = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    assert all(inside[number] != before[number] for number in STOP_SIGNALS)
    assert {number: signal.getsignal(number) for number in STOP_SIGNALS} == before


def test_on_signals_outside_the_main_thread_installs_nothing() -> None:
    stopping = Stopping()
    before = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    inside: dict[int, object] = {}

    def enter() -> None:
        with stopping.on_signals():
            inside.update({number: signal.getsignal(number) for number in STOP_SIGNALS})

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join(SIGNAL_WAIT)

    assert inside == before


# ---------------------------------------------------------------- rows failing one after another


def failed(code: str, *, exhausted: bool = False) -> Outcome:
    return Outcome(
        Status.FAILED, error_code=code, error_message=f"{code} said no", exhausted=exhausted
    )


def test_the_same_failure_limit_times_in_a_row_stops_naming_it() -> None:
    streak = FailureStreak(3)

    reasons = [streak.add(failed("20003")) for _ in range(3)]

    assert reasons[:2] == ["", ""]
    assert reasons[2]  # the third stops the run, naming how many and the code
    assert "3" in reasons[2]
    assert "20003" in reasons[2]


def test_a_created_row_or_another_failure_starts_the_count_again() -> None:
    streak = FailureStreak(3)
    for outcome in (failed("20003"), failed("20003"), Outcome(Status.CREATED)):
        assert streak.add(outcome) == ""
    for outcome in (failed("20003"), failed("20003"), failed("45700"), failed("45700")):
        assert streak.add(outcome) == ""
    assert streak.count == 2


def test_rows_that_need_no_sending_neither_count_nor_break_a_streak() -> None:
    streak = FailureStreak(2)
    streak.add(failed("20003"))
    for status in (Status.INVALID, Status.EXISTING, Status.NOT_ATTEMPTED):
        assert streak.add(Outcome(status)) == ""
    assert streak.add(failed("20003"))  # the second failure in a row stops it


def test_failures_after_every_retry_count_together_whatever_their_code() -> None:
    streak = FailureStreak(3)
    codes = ["20429", "", "45780"]  # throttled, no answer, a server error: all retried out

    reasons = [streak.add(failed(code, exhausted=True)) for code in codes]

    assert reasons[:2] == ["", ""]
    assert reasons[2]
    assert not any(code in reasons[2] for code in codes if code)  # one kind: no code named


def test_failures_counted_from_many_workers_at_once_are_all_counted() -> None:
    streak, workers, each = FailureStreak(10**6), 8, 500
    start = threading.Barrier(workers)

    def fail() -> None:
        start.wait()
        for _ in range(each):
            streak.add(failed("20003"))

    threads = [threading.Thread(target=fail) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert streak.count == workers * each


def test_why_a_failed_run_stopped_is_its_own_message_or_an_internal_error() -> None:
    assert failure_reason(ResultsError("cannot write the results")) == "cannot write the results"
    internal = failure_reason(KeyError("boom"))
    assert internal.startswith("internal error: KeyError")
    assert "boom" in internal
