"""Stopping a run: the stop event, its reason, and the signals that set it."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("provisioner")

# A closed terminal or SSH session (SIGHUP) is handled like cron's timeout (SIGTERM) and Ctrl-C.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopping:
    """Set once when the run must stop taking rows; set again (abandon) to stop waiting too.

    The first stop lets requests in flight finish (each is bounded by --timeout). Abandoning,
    after a second signal, stops waiting for them: the run writes every file at once, with the
    rows cut off counted as ambiguous, and exits.
    """

    def __init__(self, say: Callable[[str], None] = lambda line: None) -> None:
        self.event = threading.Event()
        self.abandoned = threading.Event()
        self.reason = ""
        self._say = say
        self._lock = threading.Lock()

    @property
    def is_set(self) -> bool:
        """The run is stopping."""
        return self.event.is_set()

    def stop(self, reason: str) -> None:
        """Stop taking new rows; requests in flight finish. The first reason is kept."""
        with self._lock:
            if self.event.is_set():
                return
            self.reason = reason
            self.event.set()
        log.warning("stopping: %s", reason)
        self._say(f"stopping: {reason}; finishing requests in flight (again to stop at once)")

    def abandon(self, reason: str) -> None:
        """Stop waiting for requests in flight too."""
        self.stop(reason)
        if not self.abandoned.is_set():
            self.abandoned.set()
            log.warning("abandoning requests in flight: %s", reason)
            self._say("stopping at once: requests in flight are left unanswered")

    def sleep(self, seconds: float) -> None:
        """A sleep that a stop ends early."""
        self.event.wait(seconds)

    @property
    def not_sent_message(self) -> str:
        """What a row that was never sent says."""
        return f"not sent: the run stopped ({self.reason})"

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        """SIGINT, SIGTERM and SIGHUP stop the run; a second one abandons what is in flight."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(number: int, frame: FrameType | None) -> None:
            name = signal.Signals(number).name
            if self.event.is_set():
                self.abandon(f"interrupted again by {name}")
            else:
                self.stop(f"interrupted by {name}")

        previous = {number: signal.signal(number, handle) for number in STOP_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
