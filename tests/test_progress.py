"""What people see while a run goes on: the text, the plain lines' pace, the terminal bar."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest

from provisioner.progress import (
    BAR_REDRAW_EVERY,
    BAR_WIDTH,
    PLAIN_PROGRESS_EVERY,
    SPEED_WINDOW,
    ProgressBar,
    ProgressLines,
    Speed,
    describe,
    duration,
    timestamp,
)
from provisioner.runtime import Progress
from provisioner.vocabulary import Status

START = 1_795_600_800.0  # 2026-11-25 10:00:00 UTC


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def progress(
    done: int,
    total: int = 1000,
    *,
    elapsed: float = 24.0,
    requests: int = 130,
    stopped: bool = False,
    throttled: int = 0,
    rate: float | None = None,
    concurrency: int = 0,
) -> Progress:
    counts = {Status.CREATED: done}
    return Progress(
        done,
        total,
        counts,
        requests,
        elapsed,
        throttled=throttled,
        rate=rate,
        concurrency=concurrency,
        stopped=stopped,
    )


def test_describe_shows_speed_and_eta() -> None:
    assert describe(progress(120)) == ("120/1000 rows (12.0%), 5.0 rows/s, ETA 2m56s; 130 requests")


def test_describe_shows_429s_and_the_limits_once_there_were_some() -> None:
    throttled = progress(120, throttled=3, rate=4.5, concurrency=2)
    unlimited = progress(120, throttled=1, rate=None, concurrency=8)

    assert describe(throttled) == (
        "120/1000 rows (12.0%), 5.0 rows/s, ETA 2m56s; 130 requests, 3 throttled (429); "
        "rate 4.5/s, 2 in flight at most"
    )
    assert describe(unlimited).endswith("1 throttled (429); no rate limit, 8 in flight at most")
    assert "429" not in describe(progress(120, throttled=0, rate=4.5, concurrency=2))


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        (progress(1000), "1000/1000 rows (100.0%), 41.7 rows/s; 130 requests"),
        (progress(0, elapsed=0.0), "0/1000 rows (0.0%), 0.0 rows/s; 130 requests"),
        (progress(0, total=0, elapsed=1.0), "0/0 rows (0.0%), 0.0 rows/s; 130 requests"),
        (
            progress(120, stopped=True),
            "120/1000 rows (12.0%), 5.0 rows/s, stopping; 130 requests",
        ),
    ],
    ids=["finished", "at-the-start", "empty-input", "stopping"],
)
def test_describe_without_an_eta(snapshot: Progress, expected: str) -> None:
    assert describe(snapshot) == expected


def stopped_with_rows_never_sent() -> Progress:
    """What run.py reports once a stop has given the rows it never sent their outcome."""
    counts = {Status.CREATED: 40, Status.NOT_ATTEMPTED: 60}
    return Progress(100, 100, counts, 40, 10.0, stopped=True)


def test_a_stopped_run_never_shows_100_percent() -> None:
    text = describe(stopped_with_rows_never_sent())

    assert "100.0%" not in text
    assert text.startswith("40/100 rows (40.0%)")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (42.9, "42s"), (60, "1m00s"), (185, "3m05s"), (3600, "1h00m"), (3720, "1h02m")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.usefixtures("utc")
def test_timestamp_has_date_time_and_zone() -> None:
    assert timestamp(lambda: START + 9) == "2026-11-25 10:00:09 +0000"


def test_plain_lines_come_at_most_every_few_seconds_and_once_at_the_end() -> None:
    clock = FakeClock()
    said: list[str] = []
    lines = ProgressLines(said.append, clock)
    total = 10

    for moment, done in [
        (0.0, 1),
        (PLAIN_PROGRESS_EVERY - 0.1, 2),
        (PLAIN_PROGRESS_EVERY, 3),  # printed
        (PLAIN_PROGRESS_EVERY + 1, 4),
        (2 * PLAIN_PROGRESS_EVERY + 0.5, 5),  # printed
        (2 * PLAIN_PROGRESS_EVERY + 0.6, 10),  # the end: printed however soon
        (2 * PLAIN_PROGRESS_EVERY + 9, 10),  # nothing after the end
    ]:
        clock.now = moment
        lines(progress(done, total, elapsed=moment or 1.0))
    lines.end()

    assert [line.split(" rows ")[0] for line in said] == ["3/10", "5/10", "10/10"]
    assert said[-1] == (
        "10/10 rows (100.0%), 0.9 rows/s; 130 requests, 0 throttled (429); no rate limit, "
        "0 in flight at most; created 10"
    )


def test_plain_lines_name_each_status_seen() -> None:
    clock = FakeClock()
    said: list[str] = []
    lines = ProgressLines(said.append, clock)
    counts = {Status.CREATED: 3, Status.FAILED: 1, Status.INVALID: 0}

    clock.now += PLAIN_PROGRESS_EVERY
    lines(Progress(4, 10, counts, 5, 2.0))
    lines(Progress(5, 10, counts, 6, 2.5))  # too soon after the last line

    assert said == [
        "4/10 rows (40.0%), 2.0 rows/s, ETA 3s; 5 requests, 0 throttled (429); no rate limit, "
        "0 in flight at most; created 3, failed 1"
    ]


def test_plain_lines_always_show_429s_rate_and_concurrency() -> None:
    said: list[str] = []
    lines = ProgressLines(said.append, FakeClock())

    lines(progress(10, 10, throttled=0, rate=5.0, concurrency=8))

    (line,) = said
    assert ", 0 throttled (429); rate 5.0/s, 8 in flight at most;" in line


def test_the_speed_and_eta_follow_the_rate_achieved_lately() -> None:
    speed = Speed()
    total = 10_000
    # 10 rows/s for a minute, then the account slows the run to 1 row/s for a window's length.
    for second in range(61):
        speed(progress(10 * second, total, elapsed=float(second)))
    for second in range(1, int(SPEED_WINDOW) + 1):
        lately = speed(progress(600 + second, total, elapsed=60.0 + second))

    assert lately == pytest.approx(1.0)
    snapshot = progress(600 + int(SPEED_WINDOW), total, elapsed=60.0 + SPEED_WINDOW)
    assert f"ETA {duration(total - 630)}" in describe(snapshot, lately)


def test_the_speed_of_a_run_shorter_than_the_window_is_its_whole_runs() -> None:
    speed = Speed()

    assert speed(progress(0, elapsed=0.0)) == 0.0
    assert speed(progress(12, elapsed=4.0)) == pytest.approx(3.0)
    assert speed(progress(20, elapsed=5.0)) == pytest.approx(4.0)


def bar(done: int, total: int) -> str:
    filled = BAR_WIDTH * done // total
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


def test_the_bar_is_redrawn_in_place_at_most_every_tenth_and_ends_on_its_own_line() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    progress_bar = ProgressBar(stream, clock)
    total = 8

    for moment, done in [
        (0.0, 1),  # drawn: the first
        (BAR_REDRAW_EVERY / 2, 2),  # too soon
        (BAR_REDRAW_EVERY, 4),  # drawn
        (BAR_REDRAW_EVERY * 1.5, 8),  # the end: drawn however soon
    ]:
        clock.now = moment
        progress_bar(progress(done, total, elapsed=1.0))
    progress_bar.end()
    progress_bar.end()  # a second end adds nothing

    redraw = "\r\x1b[2K"
    assert stream.getvalue() == (
        f"{redraw}{bar(1, 8)} {describe(progress(1, total, elapsed=1.0))}"
        f"{redraw}{bar(4, 8)} {describe(progress(4, total, elapsed=1.0))}"
        f"{redraw}{bar(8, 8)} {describe(progress(8, total, elapsed=1.0))}"
        "\n"
    )


def test_a_bar_never_drawn_ends_without_a_blank_line() -> None:
    stream = io.StringIO()

    ProgressBar(stream, FakeClock()).end()

    assert stream.getvalue() == ""


def test_a_stopped_bar_ends_on_how_far_the_run_got() -> None:
    stream = io.StringIO()
    progress_bar = ProgressBar(stream, FakeClock())

    progress_bar(stopped_with_rows_never_sent())
    progress_bar.end()

    last = stream.getvalue().split("\r\x1b[2K")[-1]
    assert last.startswith(bar(40, 100))
