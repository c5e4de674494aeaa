"""Stopping: the first reason is kept, abandoning sets both events, real signals stop the run."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from provisioner.stopping import STOP_SIGNALS, Stopping

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
