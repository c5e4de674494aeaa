"""What people see while a run goes on: a bar on a terminal, timestamped lines for cron."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from provisioner.runtime import Progress
from provisioner.vocabulary import Status
from provisioner.words import plural

PLAIN_PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal
BAR_REDRAW_EVERY = 0.1  # seconds between redraws of the bar: smooth, and cheap
BAR_WIDTH = 24
# Seconds of the run's recent past that its speed (and so the ETA) is measured over: long enough
# to smooth the bursts of a window refilled in batches, short enough to follow a run that a
# throttled account or a wait for Twilio's index slowed down.
SPEED_WINDOW = 30.0


def timestamp(wall_clock: Callable[[], float] = time.time) -> str:
    """Date, time and zone, as cron logs need them: `2026-11-25 14:05:09 +0000`."""
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(wall_clock()))


def rows_done(progress: Progress) -> int:
    """Rows really done: rows a stopped run never sent are finished, but not done."""
    return progress.done - progress.counts.get(Status.NOT_ATTEMPTED, 0)


class Speed:
    """Rows finished a second, as achieved over the last SPEED_WINDOW seconds (the whole run
    until it is that long); fed every snapshot, in order."""

    def __init__(self, window: float = SPEED_WINDOW) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque([(0.0, 0)])  # (elapsed, rows done)

    def __call__(self, progress: Progress) -> float:
        now, done = progress.elapsed, rows_done(progress)
        self._samples.append((now, done))
        # Keep one sample at least a window old, the start of the span measured.
        while len(self._samples) > 1 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()
        then, done_then = self._samples[0]
        return (done - done_then) / (now - then) if now > then else 0.0


def describe(progress: Progress, speed: float | None = None, *, limits: bool = False) -> str:
    """`120/1000 rows (12.0%), 4.9 rows/s, ETA 3m00s; 130 requests, 3 throttled (429); rate
    4.5/s, 2 in flight at most`: the speed as `Speed` measured it (else over the whole run);
    429s and the limits always with `limits`, else once there were 429s."""
    total = progress.total
    done = rows_done(progress)
    if speed is None:
        speed = done / progress.elapsed if progress.elapsed > 0 else 0.0
    text = f"{done}/{total} rows ({100 * done / max(total, 1):.1f}%), {speed:.1f} rows/s"
    if progress.stopped:
        text += ", stopping"
    elif done < total and speed:
        text += f", ETA {duration((total - done) / speed)}"
    text += f"; {plural(progress.requests, 'request')}"
    if progress.throttled or limits:
        rate = "no rate limit" if progress.rate is None else f"rate {progress.rate:.1f}/s"
        text += (
            f", {progress.throttled} throttled (429); {rate}, "
            f"{progress.concurrency} in flight at most"
        )
    return text


def duration(seconds: float) -> str:
    """`1h02m`, `3m05s`, `42s`."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressBar:
    """A one-line bar redrawn in place on a terminal; ends on how far the run got."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._last = float("-inf")
        self._drawn = False
        self._speed = Speed()

    def __call__(self, progress: Progress) -> None:
        now = self._clock()
        speed = self._speed(progress)
        final = progress.done >= progress.total or progress.stopped
        if not final and now - self._last < BAR_REDRAW_EVERY:
            return
        self._last = now
        filled = BAR_WIDTH * rows_done(progress) // max(progress.total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self._stream.write(f"\r\x1b[2K[{bar}] {describe(progress, speed)}")
        self._stream.flush()
        self._drawn = True

    def end(self) -> None:
        """Leave the bar's line, so that the next line starts on its own."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


class ProgressLines:
    """A timestamped line every PLAIN_PROGRESS_EVERY seconds, and one at the end (cron)."""

    def __init__(
        self,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self._clock = clock
        self._last = clock()
        self._ended = False
        self._speed = Speed()

    def __call__(self, progress: Progress) -> None:
        now = self._clock()
        speed = self._speed(progress)
        final = progress.done >= progress.total
        if self._ended or (not final and now - self._last < PLAIN_PROGRESS_EVERY):
            return
        self._last, self._ended = now, final
        counts = ", ".join(f"{s.value} {n}" for s, n in progress.counts.items() if n)
        # A log line always says how the account is holding up, 429s or not.
        self._say(f"{describe(progress, speed, limits=True)}; {counts or 'nothing yet'}")

    def end(self) -> None:
        """Nothing to tidy: every line is whole."""
