"""A plot per scenario from the job's own timeline (summary.json): what it sent, and what it learnt."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DPI = 100
SIZE = (9, 5.5)  # inches: two panels that read at the width of a README
HEADROOM = 1.4  # the top panel's height over its highest bar, room for the legend


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
