"""Requests sent and 429s per second, with the limits at the end of each second (`Timeline`):
what report.html's chart draws."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TIMELINE_POINTS = 2000  # points kept for report.html's chart; adjacent seconds merge beyond this
RATE_DIGITS = 3  # a point's rate limit to a thousandth of a request a second: finer is noise


@dataclass(frozen=True)
class TimelinePoint:
    """What was sent and throttled from `t` (seconds since the start) until the next point
    (`others`: the 429s other traffic drew), and the limits at the end of that span
    (summary.json's timeline)."""

    t: float
    sent: int
    throttled: int
    others: int
    rate: float | None
    concurrency: int


class Timeline:
    """Requests sent and 429s per second, with the limits at the end of each second."""

    def __init__(self, start: float) -> None:
        self._start = start
        self._width = 1.0  # seconds per bucket; doubles when the buckets would pass the cap
        self._buckets: list[list[Any]] = []  # [sent, throttled, others, rate, concurrency]

    def count(
        self,
        now: float,
        sent: int,
        throttled: int,
        rate: float | None,
        limit: int,
        others: int = 0,
    ) -> None:
        """Add to the bucket of `now`, and note the limits as they are now; `others` of the
        429s were other traffic's doing."""
        index = max(0, int((now - self._start) / self._width))
        while index >= TIMELINE_POINTS:
            self._merge()
            index = int((now - self._start) / self._width)
        while len(self._buckets) <= index:
            self._buckets.append([0, 0, 0, rate, limit])
        bucket = self._buckets[index]
        bucket[0] += sent
        bucket[1] += throttled
        bucket[2] += others
        bucket[3], bucket[4] = rate, limit

    def _merge(self) -> None:
        """Halve the points: pairs of buckets add up, and keep the later limits."""
        pairs = (self._buckets[index : index + 2] for index in range(0, len(self._buckets), 2))
        self._buckets = [
            [*(sum(b[n] for b in pair) for n in range(3)), *pair[-1][3:]] for pair in pairs
        ]
        self._width *= 2

    def points(self) -> list[TimelinePoint]:
        """One point a bucket, from the start."""
        return [
            TimelinePoint(
                t=index * self._width,
                sent=sent,
                throttled=throttled,
                others=others,
                rate=None if rate is None else round(rate, RATE_DIGITS),
                concurrency=limit,
            )
            for index, (sent, throttled, others, rate, limit) in enumerate(self._buckets)
        ]
