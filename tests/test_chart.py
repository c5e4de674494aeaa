"""chart.py: the exact SVG for fixed timelines, so a change to the drawing is always seen.

The expected files in tests/data/chart/ were written by `render_chart` before it was split
into its parts (scales, bars, lines, description, legend). Rewrite them only for a change
to the drawing that is meant, and read the diff: `PROVISIONER_WRITE_CHARTS=1 pytest ...`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from provisioner.chart import MAX_CHART_POINTS, render_chart
from provisioner.limits_timeline import TimelinePoint

EXPECTED = Path(__file__).parent / "data" / "chart"
SEED = 20261125  # the long timeline's traffic is the same on every run
# A figure a point leaves out: no time (the point is not drawn), no limit, nothing counted.
LEFT_OUT: dict[str, Any] = {"t": None, "sent": 0, "throttled": 0, "others": 0}


def points(timeline: list[dict[str, Any]]) -> list[TimelinePoint]:
    """The points of a timeline written as summary.json's; figures left out as LEFT_OUT says,
    and values no run writes (text, booleans, NaN) kept as they are, for the chart to skip."""
    return [
        TimelinePoint(**{"rate": None, "concurrency": None, **LEFT_OUT, **point})
        for point in timeline
    ]


def long_timeline(points: int) -> list[dict[str, Any]]:
    """A seeded run with 429s, the limits backing off and recovering, merged when drawn."""
    randomness = random.Random(SEED)
    timeline: list[dict[str, Any]] = []
    rate, concurrency = 5.0, 4
    for second in range(points):
        throttled = 1 if second % 97 in (40, 41) else 0
        if throttled:
            rate, concurrency = rate * 0.7, max(1, concurrency - 1)
        else:
            rate, concurrency = min(5.0, rate + 0.05), min(4, concurrency + second % 2)
        sent = max(0, round(rate + randomness.uniform(-1, 1)))
        timeline.append(
            {"t": second * 0.5, "sent": sent, "throttled": throttled, "rate": rate}
            | ({"concurrency": concurrency} if second % 50 else {})
        )
    return timeline


TIMELINES: dict[str, list[dict[str, Any]]] = {
    "one-point": [{"t": 0.0, "sent": 3, "throttled": 1, "rate": 5.0, "concurrency": 2}],
    "a-gap-in-the-rate": [
        {
            "t": float(t),
            "sent": 3 + t % 4,
            "throttled": int(t % 3 == 0),
            "rate": None if 3 <= t < 5 else 5.0 - t / 10,
            "concurrency": 2 if t != 6 else None,
        }
        for t in range(8)
    ],
    "unordered-and-unreadable": [
        {"t": 12.5, "sent": 40, "throttled": 2, "rate": 9.5, "concurrency": 7},
        {"t": 3, "sent": -4, "throttled": "x", "rate": float("nan"), "concurrency": True},
        {"t": None, "sent": 100},
        {"t": 7, "sent": 2.5, "throttled": 0, "rate": float("inf"), "concurrency": 3},
        {"t": 7, "sent": 1, "throttled": 1, "rate": 2, "concurrency": 3},
        {"t": 3700, "sent": 1500, "throttled": 0, "rate": 1200.0, "concurrency": 1800},
    ],
    "hours-merged": long_timeline(3 * MAX_CHART_POINTS + 7),
    "other-traffic": [  # a busy spell: the rate yields, some 429s are the others' doing
        {
            "t": float(t),
            "sent": 4 if t < 10 else 2,
            "throttled": int(t in (10, 12, 30)),
            "others": int(t in (10, 30)),
            "rate": 4.0 if t < 10 else 2.0 + t / 100,
            "concurrency": 8,
        }
        for t in range(40)
    ],
}


@pytest.mark.parametrize("name", sorted(TIMELINES))
def test_the_chart_of_a_fixed_timeline_is_exactly_the_same(name: str) -> None:
    drawn = render_chart(points(TIMELINES[name]))
    expected = EXPECTED / f"{name}.html"
    if os.environ.get("PROVISIONER_WRITE_CHARTS") == "1":
        expected.write_text(drawn, encoding="utf-8")

    assert drawn == expected.read_text(encoding="utf-8")


def test_nothing_sent_is_said_not_drawn() -> None:
    expected = '<p class="muted">No requests were sent in this run: nothing to chart.</p>'

    assert render_chart([]) == expected
    assert render_chart(points([{"sent": 5}, {"t": float("nan")}])) == expected


def test_429s_from_other_traffic_are_marked_and_named() -> None:
    drawn = render_chart(points(TIMELINES["other-traffic"]))

    assert drawn.count('<rect class="others"') == 2
    assert drawn.count('<rect class="throttled"') == 3
    assert "other traffic" in drawn  # in the legend and the description
    assert "other traffic" not in render_chart(points(TIMELINES["a-gap-in-the-rate"]))
