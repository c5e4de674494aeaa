"""Throttling end to end: 429s and Retry-After from a real server on loopback, the real CLI.

The run's clock and sleep are dilated (`DilatedTime`): they run `SPEED` times faster than real
time, so a 30-second pause takes 0.6 s, while sleeping threads still sleep side by side as
they really do. The run's own `duration_seconds` is then in the run's (dilated) seconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from provisioner.cli import cli
from provisioner.client import WEB_CHATS_PATH
from provisioner.runtime import Runtime
from tests.conftest import CUSTOMER_HEADER, customers, read_csv, read_summary, write_csv
from tests.hostile import (
    HostileServer,
    Received,
    created,
    hostile_server,  # noqa: F401  (the `hostile` fixture)
    throttled,
    twilio_error,
    web_chat_sid,
)

SPEED = 50.0  # dilated seconds per real second
ACCOUNT = "AC" + "0" * 32
ENV = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": "t" * 32}
JITTER_SEED = 16
CAP = 30.0  # the README: Retry-After is honoured up to 30 seconds
# The issue's case: 5 rows, 4 in flight, each row's first try answered 429 with a Retry-After
# far beyond the cap. One pause is honoured; it must not be one pause per row.
ISSUE_OPTIONS = ("--rate", "50", "--concurrency", "4", "--max-attempts", "3", "--timeout", "2")
OVERSIZED = ["999999", "inf", "Fri, 31 Dec 9999 23:59:59 GMT"]
# Real seconds a gathered first try waits for the others: far more than sending them takes
# under any load, less than the client's --timeout (a run that never sends them together
# fails its assertions instead of hanging).
GATHER_LIMIT = 1.0


class DilatedTime:
    """A clock and a sleep `SPEED` times faster than real time, shared by the run's threads."""

    def __init__(self) -> None:
        self.origin = time.monotonic()

    def clock(self) -> float:
        return self.origin + (time.monotonic() - self.origin) * SPEED

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / SPEED)


@dataclass
class FirstTryRefused:
    """Answers each identity's first create with `refusal`, every later one with a 201.

    `hold` (real seconds) delays every answer. The first `together` first tries are answered
    only once all of them arrived (or `GATHER_LIMIT` passed): in flight together for certain,
    where a hold alone leaves it to how soon each worker thread runs.
    """

    refusal: object
    hold: float = 0.0
    together: int = 0
    seen: Counter[str] = field(default_factory=Counter)
    lock: threading.Condition = field(default_factory=threading.Condition)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each request

    def answer(self, writer: object, request: Received) -> bool:
        identity = request.form.get("Identity", "")
        with self.lock:
            self.arrivals.append(time.monotonic())
            self.seen[identity] += 1
            first = self.seen[identity] == 1
            number = sum(self.seen.values())
            if first and len(self.seen) <= self.together:
                self.lock.notify_all()
                self.lock.wait_for(lambda: len(self.seen) >= self.together, GATHER_LIMIT)
        if self.hold:
            writer.pause(self.hold)  # type: ignore[attr-defined]
        reply = self.refusal if first else created(web_chat_sid(number), identity)
        return reply.answer(writer, request)  # type: ignore[attr-defined,no-any-return]


def run(server: HostileServer, source: Path, out: Path, *options: str) -> tuple[Result, Path]:
    """`provisioner create` in dilated time against `server`; the result and the run folder."""
    dilated = DilatedTime()
    runtime = Runtime(
        sleep=dilated.sleep, clock=dilated.clock, env=dict(ENV), jitter=random.Random(JITTER_SEED)
    )
    arguments = ["create", str(source), "--base-url", server.url, "--out", str(out)]
    arguments += ["--run-id", "r1", "--no-lookup", *options]
    result = CliRunner().invoke(cli, arguments, obj=runtime, catch_exceptions=False)
    return result, out / "r1"


def creates(server: HostileServer) -> Counter[str]:
    """How many creates each identity received."""
    return Counter(
        r.form["Identity"]
        for r in server.received
        if r.method == "POST" and r.path == WEB_CHATS_PATH
    )


def quiet_spells(behaviour: FirstTryRefused) -> list[float]:
    """The run's (dilated) seconds between one request the server saw and the next.

    Pauses are asserted as these silences rather than from the run's duration: that also
    holds whatever the machine's load costs, dilated SPEED times (a 50 ms stall is 2.5 s),
    which made bounds on it flaky on a busy machine.
    """
    arrivals = sorted(behaviour.arrivals)
    return [(later - earlier) * SPEED for earlier, later in pairwise(arrivals)]


def one_pause(behaviour: FirstTryRefused, pause: float) -> bool:
    """Whether the server saw exactly one silence of `pause` or more, and not two on end."""
    silences = [spell for spell in quiet_spells(behaviour) if spell >= pause]
    return len(silences) == 1 and silences[0] < 2 * pause


@pytest.mark.parametrize("retry_after", OVERSIZED)
def test_a_burst_of_oversized_retry_afters_costs_one_pause_not_one_a_row(
    hostile: HostileServer, tmp_path: Path, retry_after: str
) -> None:
    behaviour = FirstTryRefused(throttled(retry_after), together=4)
    hostile.always(WEB_CHATS_PATH, behaviour)
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(5))

    result, run_dir = run(hostile, source, tmp_path / "out", *ISSUE_OPTIONS)

    assert result.exit_code == 0, result.output
    summary = read_summary(run_dir)
    assert summary["duration_seconds"] >= CAP
    assert one_pause(behaviour, CAP)  # one pause honoured, never one per row
    assert [row["status"] for row in read_csv(run_dir / "results.csv")] == ["created"] * 5
    assert sorted(creates(hostile).values()) == [2] * 5  # one 429 and one 201 each: no second
    assert summary["rate"]["throttled_429"] == 5
    assert "Twilio throttled 5 requests (429)" in result.output
    assert "50.0/s" not in result.output  # the rate asked for is not advice: nothing was learnt


def test_a_503s_oversized_retry_after_pauses_the_account_once_too(
    hostile: HostileServer, tmp_path: Path
) -> None:
    unavailable = twilio_error(503, 20503, "Service Unavailable")
    refusal = replace(unavailable, headers=(*unavailable.headers, ("Retry-After", "999999")))
    behaviour = FirstTryRefused(refusal, together=4)
    hostile.always(WEB_CHATS_PATH, behaviour)
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(5))

    result, run_dir = run(hostile, source, tmp_path / "out", *ISSUE_OPTIONS)

    assert result.exit_code == 0, result.output
    assert read_summary(run_dir)["duration_seconds"] >= CAP
    assert one_pause(behaviour, CAP)
    assert sorted(creates(hostile).values()) == [2] * 5


def test_429s_in_flight_together_share_one_pause(hostile: HostileServer, tmp_path: Path) -> None:
    # Four rows in flight together (their first tries answered once all four arrived; each
    # answer held 20 ms, 1 s in the run's time), each answered 429 with Retry-After: `pause`;
    # a fifth row after them. Two pauses in all: one
    # for the four, one for the fifth, whose first try could only go after the first pause.
    # The pauses are the silences the server saw (`quiet_spells`); the run's duration also
    # holds the answers, one at a time once the 429s lowered concurrency.
    pause = 20.0  # under the cap (honoured as it is), and long beside any stall under load
    behaviour = FirstTryRefused(throttled(f"{pause:g}"), hold=0.02, together=4)
    hostile.always(WEB_CHATS_PATH, behaviour)
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(5))

    result, run_dir = run(hostile, source, tmp_path / "out", *ISSUE_OPTIONS)

    assert result.exit_code == 0, result.output
    assert read_summary(run_dir)["duration_seconds"] >= 2 * pause
    silences = [spell for spell in quiet_spells(behaviour) if spell >= pause]
    assert len(silences) == 2, quiet_spells(behaviour)  # two pauses; one per row would be five
    assert max(silences) < 2 * pause  # each one pause, none stacked on another
    assert sorted(creates(hostile).values()) == [2] * 5
