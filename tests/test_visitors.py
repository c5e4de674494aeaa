"""The website's visitors on the emulator's account (--live-rate, --sandbox-live-rate)."""

from __future__ import annotations

import functools
import itertools
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from provisioner.emulator import (
    VISITOR_PREFIX,
    Emulator,
    Fault,
    FaultPlan,
    Limit,
    VisitorCounts,
    Visitors,
    WebChatService,
    spawn,
)
from provisioner.emulator.service import Ids
from provisioner.emulator.visitors import Releases
from provisioner.rows import IDENTITY_PREFIX
from tests.conftest import CUSTOMER_HEADER, Cli, customers, read_csv, read_summary, write_csv
from tests.run_checks import wait_until

SECRET = "visitors-test-secret"
LATENCY = 0.3


class FakeClock:
    """Seconds, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Holds:
    """An injected hold: each served visitor's release, kept until the test lets it go."""

    def __init__(self) -> None:
        self.held: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, seconds: float, release: Callable[[], None]) -> None:
        self.held.append((seconds, release))

    def release_first(self) -> None:
        self.held.pop(0)[1]()


def visitors_on(
    *, rate_limit: float | None = None, cap: int | None = None
) -> tuple[Visitors, WebChatService, FakeClock, Holds, FaultPlan]:
    clock, holds = FakeClock(), Holds()
    plan = FaultPlan(seed=1, rate_limit=rate_limit, max_concurrent=cap, clock=clock)
    service = WebChatService("AC" + "1" * 32, SECRET, ids=Ids(1), clock=clock)
    visitors = Visitors(plan, service, latency=lambda: LATENCY, seed=1, clock=clock, hold=holds)
    return visitors, service, clock, holds, plan


def test_visitors_take_tokens_and_are_refused_when_the_bucket_is_empty() -> None:
    visitors, service, clock, holds, plan = visitors_on(rate_limit=2.0)

    first = [visitors.arrive() for _ in range(3)]  # a burst of 2 tokens
    clock.now += 0.5  # one more token
    later = visitors.arrive()

    assert [visit.refused_by for visit in [*first, later]] == [None, None, Limit.RATE, None]
    assert [visit.arrived for visit in [*first, later]] == [1000.0, 1000.0, 1000.0, 1000.5]
    assert visitors.counts() == VisitorCounts(arrived=4, refused_by_rate_limit=1)
    assert len(service.visitor_chats) == 3
    assert service.created == []
    assert all(chat.identity.startswith(VISITOR_PREFIX) for chat in service.visitor_chats)
    assert [seconds for seconds, _ in holds.held] == [LATENCY] * 3
    assert plan.throttled == 0  # the batch's 429s are counted apart


def test_visitors_hold_a_place_in_flight_for_the_latency_and_meet_the_cap() -> None:
    visitors, service, _, holds, plan = visitors_on(rate_limit=5.0, cap=1)

    served = visitors.arrive()
    capped = visitors.arrive()  # the first is still in flight
    holds.release_first()  # its answer left, 300 ms later
    after = visitors.arrive()

    assert [served.served, capped.refused_by, after.served] == [True, Limit.CAP, True]
    assert plan.cap.in_flight == 1
    # A visitor refused by the cap took no token: 5 tokens, 2 spent, so 3 more are served.
    holds.release_first()
    outcomes = []
    for _ in range(4):
        outcomes.append(visitors.arrive().refused_by)
        if holds.held:
            holds.release_first()
    assert outcomes == [None, None, None, Limit.RATE]
    assert len(service.visitor_chats) == 5


def test_a_batch_request_in_flight_refuses_a_visitor_and_visitors_spend_the_batchs_tokens() -> None:
    clock, gate = FakeClock(), threading.Event()
    with Emulator(secret=SECRET, seed=3, max_concurrent=1, rate_limit=1.0, clock=clock) as api:
        api.script("IG" + "1" * 32, Fault(hold=gate))
        answers: list[int] = []

        def send() -> None:
            answers.append(
                requests.post(
                    f"{api.url}/v2/WebChats",
                    data={"AddressSid": "IG" + "1" * 32},
                    auth=(api.username, SECRET),
                ).status_code
            )

        sender = threading.Thread(target=send)
        sender.start()
        wait_until(lambda: api.faults.cap.in_flight == 1)
        capped = api.visitors.arrive()
        gate.set()
        sender.join()
        wait_until(lambda: api.faults.cap.in_flight == 0)
        clock.now += 1.0  # one token again
        served = api.visitors.arrive()
        wait_until(lambda: api.faults.cap.in_flight == 0)  # its 0 s latency is over
        refused = requests.post(
            f"{api.url}/v2/WebChats",
            data={"AddressSid": "IG" + "2" * 32},
            auth=(api.username, SECRET),
        )

    assert capped.refused_by is Limit.CAP
    assert served.served
    assert answers == [201]
    assert refused.status_code == 429  # the visitor took the token the batch wanted
    assert all(not chat.identity.startswith(VISITOR_PREFIX) for chat in api.created)
    assert len(api.created) == 1
    assert (api.requests, api.throttled) == (2, 1)
    assert api.visitor_counts() == VisitorCounts(arrived=2, refused_by_concurrency_cap=1)


def test_visitors_arrive_at_the_rate_set_and_stop_when_it_is_zero() -> None:
    with Emulator(secret=SECRET, seed=5, live_rate=200.0) as api:
        wait_until(lambda: len(api.visits) >= 10)
        api.live_rate = 0
        time.sleep(0.05)  # a visitor arriving as the rate changed is recorded by then
        stopped_at = len(api.visits)
        time.sleep(0.2)  # at 200/s, some forty visitors would have come meanwhile
        still = len(api.visits)
        api.live_rate = 200.0
        wait_until(lambda: len(api.visits) > still)

    assert still == stopped_at
    assert len(api.service.visitor_chats) == api.visitor_counts().served == len(api.visits)
    assert api.created == []
    assert api.requests == 0
    times = [visit.arrived for visit in api.visits]
    assert times == sorted(times)


@pytest.mark.slow
def test_the_emulator_command_prints_the_visitors_when_it_stops() -> None:
    options = ["--live-rate", "40", "--rate-limit", "5", "--seed", "1"]
    with spawn(options) as process:
        time.sleep(1.0)  # some forty visitors against five tokens a second
        exit_code = process.stop()

    assert exit_code == 0
    line = next(line for line in process.said.splitlines() if "visitors" in line)
    arrived, served, refused = (int(n) for n in re.findall(r"\d+", line.split("visitors")[1])[:3])
    assert arrived == served + refused
    assert refused > 0  # forty a second against five tokens a second
    assert served >= 5


def test_a_sandbox_run_reports_its_visitors_in_summary_json(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(8))
    # A bucket far above what anyone sends: every visitor is served, and the batch never waits.
    arguments = ["create", str(source), "--sandbox", "--sandbox-live-rate", "100"]
    provisioner(*arguments, "--rate", "1000", "--run-id", "s1", env={})

    run_dir = provisioner.run_dir("s1")
    visitors = read_summary(run_dir)["visitors"]
    assert visitors["rate"] == 100
    assert visitors["arrived"] > 0
    assert visitors["arrived"] == visitors["served"] + visitors["refused"]
    assert visitors["refused"] == 0
    results = read_csv(run_dir / "results.csv")
    assert [row["status"] for row in results] == ["created"] * 8
    assert all(row["identity"].startswith(IDENTITY_PREFIX) for row in results)
    assert read_summary(run_dir)["requests_sent"] == 8  # visitors are not the batch's requests
    assert 'id="visitors"' in (run_dir / "report.html").read_text()


def test_a_sandbox_run_without_visitors_reports_none(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    provisioner("create", str(source), "--sandbox", "--run-id", "s1", env={})

    assert read_summary(provisioner.run_dir("s1"))["visitors"] is None


@pytest.mark.parametrize("given", ["option", "environment"])
def test_sandbox_live_rate_without_sandbox_is_refused(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    arguments = ["create", str(source)]
    if given == "option":
        arguments += ["--sandbox-live-rate", "2"]
    else:
        monkeypatch.setenv("PROVISIONER_SANDBOX_LIVE_RATE", "2")  # Click reads os.environ

    result = provisioner(*arguments, expect=2)

    assert "--sandbox-live-rate" in result.output
    assert not provisioner.out.exists()
    assert provisioner.emulator.requests == 0


def test_places_in_flight_are_released_by_one_thread_in_order_of_due_time() -> None:
    releases, released = Releases(), list[int]()
    before = set(threading.enumerate())
    hold_for = [0.06, 0.02, 0.04] * 300  # 900 visitors in flight at once: not 900 threads
    due = []
    for index, seconds in enumerate(hold_for):
        due.append(time.monotonic() + seconds)  # a moment before Releases reads the clock
        releases(seconds, functools.partial(released.append, index))
    started = set(threading.enumerate()) - before
    releases(0, lambda: released.append(-1))  # no latency: released at once, on this thread
    assert released[0] == -1 or len(released) > 1  # at once (unless a due one came first)
    assert len(started) <= 1  # one thread for them all (none left if every one was due)
    deadline = time.monotonic() + 10
    while len(released) < len(hold_for) + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    order = [index for index in released if index >= 0]
    assert sorted(order) == list(range(len(hold_for)))
    # Each released when its own time came: never one before another that was due sooner
    # by more than the clock's step between two holds.
    assert all(due[a] <= due[b] + 0.005 for a, b in itertools.pairwise(order))
