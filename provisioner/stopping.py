"""Stopping a run: the stop event, its reason, and what sets it (signals, failures in a row)."""

from __future__ import annotations

import logging
import signal
import sys
import termios
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from provisioner.errors import ProvisionerError
from provisioner.outcome import Outcome
from provisioner.vocabulary import Status

log = logging.getLogger("provisioner")

# A closed terminal or SSH session (SIGHUP) is handled like cron's timeout (SIGTERM) and Ctrl-C.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
MAX_FAILURES_IN_A_ROW = 20  # rows failing one after another: something is wrong for all rows


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
        # Re-entrant: a signal handler runs on the main thread, maybe inside stop() itself.
        self._lock = threading.RLock()
        self._unsaid: deque[tuple[int, str, str, bool]] = deque()  # what a handler deferred
        self._echoed = False  # the terminal echoed the Ctrl-C being handled (`^C`)

    @property
    def is_set(self) -> bool:
        """The run is stopping."""
        return self.event.is_set()

    def stop(self, reason: str, *, deferred: bool = False) -> None:
        """Stop taking new rows; requests in flight finish. The first reason is kept.

        `deferred` (from a signal handler): say so at the next `announce()`, since writing to
        a stream the interrupted code may be writing to can fail.
        """
        with self._lock:
            if self.event.is_set():
                return
            self.reason = reason
            self.event.set()
        self._tell(
            f"stopping: {reason}",
            f"stopping: {reason}; finishing requests in flight (again to stop at once)",
            deferred,
        )

    def abandon(self, reason: str, *, deferred: bool = False) -> None:
        """Stop waiting for requests in flight too."""
        self.stop(reason, deferred=deferred)
        with self._lock:
            if self.abandoned.is_set():
                return
            self.abandoned.set()
        self._tell(
            f"abandoning requests in flight: {reason}",
            "stopping at once: requests in flight are left unanswered",
            deferred,
        )

    def announce(self) -> None:
        """Say what a signal handler deferred (call from the main loop)."""
        while self._unsaid:
            level, logged, said, after_echo = self._unsaid.popleft()
            log.log(level, "%s", logged)
            if after_echo:
                _end_the_echoed_line()
            self._say(said)

    def _tell(self, logged: str, said: str, deferred: bool) -> None:
        after_echo, self._echoed = self._echoed, False
        self._unsaid.append((logging.WARNING, logged, said, after_echo))
        if not deferred:
            self.announce()

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
            self._echoed = number == signal.SIGINT and _echoes_control_characters()
            if self.event.is_set():
                self.abandon(f"interrupted again by {name}", deferred=True)
            else:
                self.stop(f"interrupted by {name}", deferred=True)

        previous = {number: signal.signal(number, handle) for number in STOP_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def _echoes_control_characters() -> bool:
    """stderr is a terminal that echoes a typed Ctrl-C as `^C` where its cursor is (ECHOCTL,
    on by default): the line said next would start after it, on the same line."""
    try:
        descriptor = sys.stderr.fileno()
        local_modes = termios.tcgetattr(descriptor)[3]
    except (AttributeError, OSError, ValueError, termios.error):
        return False  # no file behind stderr (a test's), or not a terminal: nothing echoed
    echoing = termios.ECHO | termios.ECHOCTL
    return bool((local_modes & echoing) == echoing)


def _end_the_echoed_line() -> None:
    """End the line the terminal's `^C` is on (after a progress bar, or on a line of its own),
    so that the stopping line starts on a fresh line. Off a terminal nothing was echoed."""
    try:
        sys.stderr.write("\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr closed: the stopping line will not be read either


def failure_reason(error: Exception) -> str:
    """Why a run that failed after sending started stopped, in words for its end."""
    if isinstance(error, ProvisionerError):
        return str(error)
    return (
        f"internal error: {type(error).__name__}: {error} (a bug: the stack is in run.log; "
        "report it. Every row is in results.csv, and a rerun is safe)"
    )


class FailureStreak:
    """Rows that failed one after another; too many mean every row will (a dead endpoint)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.last_kind = ""
        self._lock = threading.Lock()  # rows are counted on the workers, as each finishes

    def add(self, outcome: Outcome) -> str:
        """Count one finished row; returns why to stop, or ''."""
        with self._lock:
            return self._add(outcome)

    def _add(self, outcome: Outcome) -> str:
        if outcome.status is Status.CREATED:
            self.count = 0
            return ""
        if outcome.status is not Status.FAILED:
            return ""
        # Retryable failures that exhausted their tries count together, whatever the code;
        # a refusal counts only with the rows refused the same way before it.
        kind = "exhausted" if outcome.exhausted else outcome.error_code
        if kind != self.last_kind:
            self.count = 0
        self.count += 1
        self.last_kind = kind
        if self.count < self.limit:
            return ""
        if outcome.exhausted:
            return f"{self.count} rows in a row failed after every retry"
        return (
            f"{self.count} rows in a row failed with the same error "
            f"({outcome.error_code or outcome.http_status}: {outcome.error_message})"
        )
