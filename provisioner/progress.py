"""What people see while a run goes on: a bar on a terminal, timestamped lines for cron."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from provisioner.causes import plural
from provisioner.outcome import Status
from provisioner.run import Progress

PLAIN_PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal
BAR_REDRAW_EVERY = 0.1  # seconds between redraws of the bar: smooth, and cheap
BAR_WIDTH = 24


def timestamp(wall_clock: Callable[[], float] = time.time) -> str:
    """Date, time and zone, as cron logs need them: `2026-11-25 14:05:09 +0000`."""
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(wall_clock()))


def rows_done(progress: Progress) -> int:
    """Rows really done: rows a stopped run never sent are finished, but not done."""
    return progress.done - progress.counts.get(Status.NOT_ATTEMPTED, 0)


def describe(progress: Progress) -> str:
    """`120/1000 rows (12.0%), 4.9 rows/s, ETA 3m00s; 3 429s, rate 4.5/s, 2 in flight at most`."""
    total = progress.total
    done = rows_done(progress)
    speed = done / progress.elapsed if progress.elapsed > 0 else 0.0
    text = f"{done}/{total} rows ({100 * done / max(total, 1):.1f}%), {speed:.1f} rows/s"
    if progress.stopped:
        text += ", stopping"
    elif done < total and speed:
        text += f", ETA {duration((total - done) / speed)}"
    text += f"; {plural(progress.requests, 'request')}"
    if progress.throttled:
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

    def __call__(self, progress: Progress) -> None:
        now = self._clock()
        final = progress.done >= progress.total or progress.stopped
        if not final and now - self._last < BAR_REDRAW_EVERY:
            return
        self._last = now
        filled = BAR_WIDTH * rows_done(progress) // max(progress.total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self._stream.write(f"\r\x1b[2K[{bar}] {describe(progress)}")
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

    def __call__(self, progress: Progress) -> None:
        now = self._clock()
        final = progress.done >= progress.total
        if self._ended or (not final and now - self._last < PLAIN_PROGRESS_EVERY):
            return
        self._last, self._ended = now, final
        counts = ", ".join(f"{s.value} {n}" for s, n in progress.counts.items() if n)
        self._say(f"{describe(progress)}; {counts or 'nothing yet'}")

    def end(self) -> None:
        """Nothing to tidy: every line is whole."""
