"""The sending rate over time as an inline SVG chart: requests/s, 429s, the limits learnt."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from provisioner.limits_timeline import TimelinePoint

# The chart's geometry in SVG user units; the SVG scales to the page's width.
CHART_WIDTH, CHART_HEIGHT = 960, 320
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 64, 16, 48
PLOT_WIDTH = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
PLOT_HEIGHT = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
Y_TICKS = 5  # about this many gridlines on the vertical axes
X_TICKS = 8  # about this many time labels
MAX_CHART_POINTS = 400  # about two pixels a point: more is a zigzag no one can read
MIN_BAR_WIDTH = 1.0  # a 429 in a narrow bucket still shows as a visible bar
NICE_STEPS = (1.0, 2.0, 2.5, 5.0, 10.0)  # axis steps people read at a glance
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)
COLOURS = {
    "sent": "#1f5fbf",
    "throttled": "#d03030",
    "others": "#8040c0",
    "rate": "#e08000",
    "concurrency": "#208040",
}
# What each colour means; the same for every chart.
LEGEND = "".join(
    f'<li><span class="swatch{extra}" style="{style}"></span>{text}</li>'
    for extra, style, text in (
        ("", f"border-color:{COLOURS['sent']}", "requests sent per second"),
        (" box", f"background:{COLOURS['throttled']}", "429 answers per second"),
        (
            "",
            f"border-color:{COLOURS['rate']};border-top-style:dashed",
            "rate limit learnt (requests/s)",
        ),
        (
            "",
            f"border-color:{COLOURS['concurrency']}",
            "concurrency learnt (requests in flight, right axis)",
        ),
    )
)
# Drawn only when the run met other traffic on the account (limits_others.OtherTraffic).
OTHERS_LEGEND = (
    f'<li><span class="swatch box" style="background:{COLOURS["others"]}"></span>'
    "429s from other traffic on the account: the run slowed to leave it room</li>"
)


def escape(value: object) -> str:
    """Text safe anywhere in HTML or SVG, quotes included."""
    return html.escape(str(value), quote=True)


def finite(value: object) -> float | None:
    """A number that can be drawn, or None (booleans, text, NaN and infinities are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class _Bucket:
    start: float
    end: float
    sent: float
    throttled: float
    rate: float | None
    concurrency: float | None
    others: float = 0.0  # of the 429s, those other traffic on the account drew

    @property
    def width(self) -> float:
        return self.end - self.start


def _buckets(timeline: Sequence[TimelinePoint]) -> list[_Bucket]:
    """Timeline points as time buckets, merged down to at most MAX_CHART_POINTS.

    A point (limits_timeline.Timeline) counts what was sent and throttled from its `t` until the
    next point's, and holds the limits as they were at the end of that span.
    """
    points = sorted(
        ((t, point) for point in timeline if (t := finite(point.t)) is not None),
        key=lambda pair: pair[0],
    )
    starts = [t for t, _ in points]
    gaps = [later - earlier for earlier, later in pairwise(starts) if later > earlier]
    typical = sorted(gaps)[len(gaps) // 2] if gaps else 1.0  # the median bucket's width
    buckets = [
        _Bucket(
            start=t,
            end=max(next_start, t + typical) if next_start is not None else t + typical,
            sent=max(finite(point.sent) or 0.0, 0.0),
            throttled=max(finite(point.throttled) or 0.0, 0.0),
            rate=finite(point.rate),
            concurrency=finite(point.concurrency),
            others=max(finite(point.others) or 0.0, 0.0),
        )
        for (t, point), next_start in zip(points, [*starts[1:], None][: len(points)], strict=True)
    ]
    group = math.ceil(len(buckets) / MAX_CHART_POINTS)
    if group <= 1:
        return buckets
    return [_merged(buckets[index : index + group]) for index in range(0, len(buckets), group)]


def _merged(buckets: Sequence[_Bucket]) -> _Bucket:
    """Adjacent buckets as one; the limits keep their lowest value, so a dip stays visible."""
    rates = [b.rate for b in buckets if b.rate is not None]
    limits = [b.concurrency for b in buckets if b.concurrency is not None]
    return _Bucket(
        start=buckets[0].start,
        end=buckets[-1].end,
        sent=sum(b.sent for b in buckets),
        throttled=sum(b.throttled for b in buckets),
        rate=min(rates) if rates else None,
        concurrency=min(limits) if limits else None,
        others=sum(b.others for b in buckets),
    )


def _nice_ceiling(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^k that is at least `value`, for an axis's top."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    # A hair under `value` still counts, so float noise never pushes 5.0 up to 10.
    tops = (float(step * magnitude) for step in NICE_STEPS)
    return next(top for top in tops if top >= value * (1 - 1e-9))


def _time_label(seconds: float) -> str:
    whole = round(seconds)
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}"
    if whole >= 60:
        return f"{whole // 60}m{whole % 60:02d}s" if whole % 60 else f"{whole // 60}m"
    return f"{whole}s"


@dataclass(frozen=True)
class _Scales:
    """Where a time or a value is drawn: time across, requests/s on the left, in flight right."""

    start: float
    end: float
    left_top: float
    right_top: float

    def x(self, t: float) -> float:
        return MARGIN_LEFT + (t - self.start) / (self.end - self.start) * PLOT_WIDTH

    def y_left(self, value: float) -> float:
        return MARGIN_TOP + PLOT_HEIGHT * (1 - value / self.left_top)

    def y_right(self, value: float) -> float:
        return MARGIN_TOP + PLOT_HEIGHT * (1 - value / self.right_top)


def _per_second(amount: float, bucket: _Bucket) -> float:
    return amount / bucket.width if bucket.width > 0 else amount


def render_chart(timeline: Sequence[TimelinePoint]) -> str:
    """The timeline as an inline SVG: requests/s, 429s, the rate and concurrency learnt."""
    buckets = _buckets(timeline)
    if not buckets:
        return '<p class="muted">No requests were sent in this run: nothing to chart.</p>'
    per_second = [_per_second(b.sent, b) for b in buckets]
    throttled_per_second = [_per_second(b.throttled, b) for b in buckets]
    scales = _scales(buckets, per_second, throttled_per_second)
    shapes = [
        _axes(scales),
        _bars(buckets, throttled_per_second, scales),
        _lines(buckets, per_second, scales),
    ]
    description = _description(buckets, per_second, scales)
    others = any(b.others for b in buckets)
    return (
        f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" '
        'aria-labelledby="chart-title chart-desc">'
        '<title id="chart-title">Requests per second, 429 answers and the limits learnt over '
        f'time</title><desc id="chart-desc">{escape(description)}</desc>'
        + "".join(shapes)
        + "</svg>"
        + f'<ul class="legend">{LEGEND}{OTHERS_LEGEND if others else ""}</ul>'
        + f'<p class="muted">{escape(description)}.</p>'
    )


def _scales(
    buckets: Sequence[_Bucket], per_second: Sequence[float], throttled_per_second: Sequence[float]
) -> _Scales:
    """From the run's start (or the first bucket, if earlier) to its end; a nice top per axis."""
    start = min(0.0, buckets[0].start)
    end = max(buckets[-1].end, start + 1.0)
    rates = [b.rate for b in buckets if b.rate is not None]
    left_top = _nice_ceiling(max([*per_second, *throttled_per_second, *rates, 1.0]))
    concurrencies = [b.concurrency for b in buckets if b.concurrency is not None]
    right_top = _nice_ceiling(max([*concurrencies, 1.0]))
    return _Scales(start, end, left_top, right_top)


def _bars(
    buckets: Sequence[_Bucket], throttled_per_second: Sequence[float], scales: _Scales
) -> str:
    """A bar across each bucket with 429s, as high as their number per second; those other
    traffic drew, in their own colour at the bar's foot."""
    bars = []
    for bucket, value in zip(buckets, throttled_per_second, strict=True):
        if value > 0:
            left = scales.x(max(bucket.start, scales.start))
            width = max(scales.x(bucket.end) - left, MIN_BAR_WIDTH)
            for name, height in (
                ("throttled", value),
                ("others", _per_second(bucket.others, bucket)),
            ):
                if height <= 0:
                    continue
                top = scales.y_left(min(height, value))
                bars.append(
                    f'<rect class="{name}" x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" '
                    f'height="{MARGIN_TOP + PLOT_HEIGHT - top:.1f}" fill="{COLOURS[name]}" '
                    'fill-opacity="0.6"/>'
                )
    return "".join(bars)


def _lines(buckets: Sequence[_Bucket], per_second: Sequence[float], scales: _Scales) -> str:
    """Throughput at the middle of its bucket; the limits as steps across each bucket."""
    x, y_left, y_right = scales.x, scales.y_left, scales.y_right
    sent_points = [
        (x((b.start + b.end) / 2), y_left(v)) for b, v in zip(buckets, per_second, strict=True)
    ]
    rate_heights = [None if b.rate is None else y_left(b.rate) for b in buckets]
    concurrency_heights = [
        None if b.concurrency is None else y_right(b.concurrency) for b in buckets
    ]
    return (
        _line("sent", [sent_points], width=2)
        + _line("rate", _steps(buckets, rate_heights, x), width=2, dashed=True)
        + _line("concurrency", _steps(buckets, concurrency_heights, x), width=2)
    )


def _description(buckets: Sequence[_Bucket], per_second: Sequence[float], scales: _Scales) -> str:
    """The chart in one sentence, for screen readers and under the chart."""
    duration = scales.end - scales.start
    sent = sum(b.sent for b in buckets)
    others = sum(b.others for b in buckets)
    return (
        f"{sent:,.0f} requests over {_time_label(duration)}: on average "
        f"{sent / duration:.1f} requests/s, at most {max(per_second):.1f} requests/s; "
        f"{sum(b.throttled for b in buckets):,.0f} answered 429"
        + (f", {others:,.0f} of them because other traffic was busy" if others else "")
    )


def _axes(scales: _Scales) -> str:
    """The plot's frame, gridlines and tick labels on three axes, and the axes' titles."""
    middle = MARGIN_TOP + PLOT_HEIGHT / 2
    return (
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" '
        'fill="#fbfbfb" stroke="#bbb"/>'
        + _value_ticks(scales)
        + _time_ticks(scales)
        + f'<text x="{MARGIN_LEFT + PLOT_WIDTH / 2}" y="{CHART_HEIGHT - 8}" text-anchor="middle">'
        "time since the run started</text>"
        f'<text transform="translate(16 {middle}) rotate(-90)" text-anchor="middle">'
        "requests per second</text>"
        f'<text transform="translate({CHART_WIDTH - 12} {middle}) rotate(-90)" '
        'text-anchor="middle">requests in flight</text>'
    )


def _value_ticks(scales: _Scales) -> str:
    """A gridline per step of both vertical axes, labelled left (requests/s) and right."""
    right = MARGIN_LEFT + PLOT_WIDTH
    parts = []
    for index in range(Y_TICKS + 1):
        value = scales.left_top * index / Y_TICKS
        in_flight = scales.right_top * index / Y_TICKS
        y = scales.y_left(value)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e4e4e4"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick(value)}</text>'
            f'<text x="{right + 6}" y="{y + 4:.1f}">{_tick(in_flight)}</text>'
        )
    return "".join(parts)


def _time_ticks(scales: _Scales) -> str:
    """A tick and a time label every round step (1s... 1 day), about X_TICKS of them."""
    start, end, x = scales.start, scales.end, scales.x
    bottom = MARGIN_TOP + PLOT_HEIGHT
    step = next((s for s in TIME_STEPS if (end - start) / s <= X_TICKS), TIME_STEPS[-1])
    parts = []
    t = math.ceil(start / step) * step
    while t <= end + 1e-9:
        parts.append(
            f'<line x1="{x(t):.1f}" y1="{bottom}" x2="{x(t):.1f}" y2="{bottom + 5}" stroke="#888"/>'
            f'<text x="{x(t):.1f}" y="{bottom + 18}" text-anchor="middle">{_time_label(t)}</text>'
        )
        t += step
    return "".join(parts)


def _tick(value: float) -> str:
    return f"{value:g}" if value < 1000 else f"{value:,.0f}"


def _steps(
    buckets: Sequence[_Bucket], heights: Sequence[float | None], x: Callable[[float], float]
) -> list[list[tuple[float, float]]]:
    """A staircase across the buckets; a bucket with no value (no limit) breaks the line."""
    runs: list[list[tuple[float, float]]] = [[]]
    for bucket, y in zip(buckets, heights, strict=True):
        if y is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1] += [(x(bucket.start), y), (x(bucket.end), y)]
    return [run for run in runs if run]


def _line(
    name: str,
    runs: Sequence[Sequence[tuple[float, float]]],
    *,
    width: float,
    dashed: bool = False,
) -> str:
    """A polyline per run of points; a lone point as a dot so it stays visible."""
    colour = COLOURS[name]
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    parts = []
    for run in runs:
        if len(run) == 1:
            ((px, py),) = run
            parts.append(
                f'<circle class="{name}" cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>'
            )
            continue
        coordinates = [f"{px:.1f},{py:.1f}" for px, py in run]
        parts.append(
            f'<polyline class="{name}" points="{" ".join(coordinates)}" fill="none" '
            f'stroke="{colour}" stroke-width="{width}"{dash} stroke-linejoin="round"/>'
        )
    return "".join(parts)
