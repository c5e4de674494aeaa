"""A plot per scenario from the job's own timeline (summary.json): what it sent, and what it learnt."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DPI = 100
SIZE = (9, 5.5)  # inches: two panels that read at the width of a README
HEADROOM = 1.4  # the top panel's height over its highest bar, room for the legend
COTENANT_TOP = 2.0  # a co-tenant panel's height over the server's limit: marks, then legend
MARK_AT = 1.4  # refused visitors are marked at this multiple of the limit, above the bars
SMOOTHING = 10  # seconds a co-tenant panel's rate line averages over: the phases' trend


@dataclass(frozen=True)
class ServerLimits:
    """What the server allowed, drawn as dashed lines beside what the job learnt."""

    rate: float | None = None  # requests a second
    concurrency: int | None = None  # requests in flight


def plot_timeline(
    timeline: list[dict[str, Any]], server: ServerLimits, title: str, path: Path
) -> bool:
    """Requests/s and 429s/s (bars), the rate and concurrency learnt (lines); False without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return False
    if not timeline:
        print(f"no timeline in the summary: no {path.name}", file=sys.stderr)
        return False
    # Buckets are a second wide until a long run merges them; rates are per second whatever.
    width = timeline[1]["t"] - timeline[0]["t"] if len(timeline) > 1 else 1.0
    times = [point["t"] for point in timeline]
    throttled = [point["throttled"] / width for point in timeline]
    accepted = [(point["sent"] - point["throttled"]) / width for point in timeline]
    rate = [math.nan if point["rate"] is None else point["rate"] for point in timeline]
    concurrency = [point["concurrency"] for point in timeline]

    figure, (top, bottom) = plt.subplots(2, 1, figsize=SIZE, sharex=True, height_ratios=(2, 1))
    top.bar(times, accepted, width=width, align="edge", color="#2a7", label="sent, not 429")
    top.bar(times, throttled, width=width, align="edge", bottom=accepted, color="#d43", label="429")
    # Each point's limits are those at the end of its bucket; the last step spans its bucket too.
    edges = [*times, times[-1] + width]
    top.step(
        edges,
        [*rate, rate[-1]],
        where="post",
        color="#14c",
        linewidth=2,
        zorder=3,  # over the server's dashed line when the two agree
        label="rate the job allowed itself",
    )
    if server.rate is not None:
        top.axhline(server.rate, color="black", linestyle="--", label=f"server: {server.rate:g}/s")
    # A rate far above what was sent (--rate 500) would flatten the bars: it is drawn clipped.
    highest = max([a + t for a, t in zip(accepted, throttled, strict=True)] + [server.rate or 0])
    top.set_ylim(0, highest * HEADROOM)
    top.set_ylabel("requests per second")
    top.set_title(title)
    top.legend(loc="upper right", fontsize="small")
    bottom.step(
        edges,
        [*concurrency, concurrency[-1]],
        where="post",
        color="#14c",
        linewidth=2,
        zorder=3,
        label="in flight allowed",
    )
    if server.concurrency is not None:
        bottom.axhline(
            server.concurrency,
            color="black",
            linestyle="--",
            label=f"server: {server.concurrency} in flight",
        )
    bottom.set_ylabel("concurrency")
    bottom.set_xlabel("seconds since the run started")
    bottom.set_ylim(bottom=0)
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    print(f"  plot: {path}")
    return True


@dataclass(frozen=True)
class CotenantPanel:
    """One batch beside the website's visitors, in seconds since the batch's first request."""

    label: str
    created: Sequence[float]  # when each row created was sent
    throttled: Sequence[float]  # when each request answered 429 was sent
    refused: Sequence[float]  # when each visitor refused arrived
    switch: float  # when the busy phase began


def plot_cotenant(panels: Sequence[CotenantPanel], limit: float, title: str, path: Path) -> bool:
    """Per panel: the batch's rows/s and 429s/s (bars), visitors refused (marks), the phases."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return False
    figure, axes = plt.subplots(len(panels), 1, figsize=SIZE, sharex=True, squeeze=False)
    for axis, panel in zip(axes[:, 0], panels, strict=True):
        end = math.ceil(max([*panel.created, *panel.throttled, *panel.refused, 1.0]))
        seconds = range(end)
        created, throttled = [0] * end, [0] * end
        for moment in panel.created:
            created[min(int(moment), end - 1)] += 1
        for moment in panel.throttled:
            throttled[min(int(moment), end - 1)] += 1
        axis.bar(seconds, created, width=1.0, align="edge", color="#2a7", label="rows created")
        axis.bar(
            seconds, throttled, width=1.0, align="edge", bottom=created, color="#d43", label="429"
        )
        smoothed = [
            sum(created[max(0, second - SMOOTHING + 1) : second + 1]) / min(second + 1, SMOOTHING)
            for second in seconds
        ]
        axis.plot(
            [second + 1 for second in seconds],
            smoothed,
            color="#14c",
            linewidth=2,
            label=f"rows/s, last {SMOOTHING} s",
        )
        axis.axhline(limit, color="black", linestyle="--", label=f"server: {limit:g}/s")
        axis.axvline(panel.switch, color="#888", linestyle=":", label="busy hour begins")
        axis.plot(
            panel.refused,
            [limit * MARK_AT] * len(panel.refused),
            linestyle="none",
            marker="v",
            color="#d43",
            label=f"visitor refused ({len(panel.refused)})",
        )
        axis.set_ylim(0, limit * COTENANT_TOP)
        axis.set_ylabel("per second")
        axis.set_title(panel.label, fontsize="medium")
        axis.legend(loc="upper left", fontsize="x-small", ncol=3)
    axes[-1, 0].set_xlabel("seconds since the batch's first request")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    print(f"  plot: {path}")
    return True
