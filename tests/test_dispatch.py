"""The dispatcher with real worker threads and a fake sender: limits, batches, stops."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from provisioner import dispatch
from provisioner.dispatch import WINDOW_PER_WORKER, Dispatcher
from provisioner.stopping import Stopping

THREAD_WAIT = 5.0  # seconds a test waits for another thread: only a bug takes this long
JOBS = 60


@pytest.fixture(autouse=True)
def quick_collect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check for a stop every 10 ms instead of every 0.2 s, so that the tests stay quick."""
    monkeypatch.setattr(dispatch, "COLLECT_EVERY", 0.01)


@dataclass
class FakeSender:
    """Work that counts how many jobs run at once; `hold` lets a test block chosen jobs."""

    hold: Callable[[int], object] = lambda job: None
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: int = 0
    most_running: int = 0
    worked: list[int] = field(default_factory=list)
    returned: int = 0

    def __call__(self, job: int) -> str:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.worked.append(job)
        try:
            self.hold(job)
        finally:
            with self.lock:
                self.running -= 1
                self.returned += 1
        return f"done {job}"


def make(
    sender: FakeSender,
    stopping: Stopping,
    *,
    concurrency: int = 3,
    ready: Callable[[int], str | None] = lambda job: None,
    on_start: Callable[[list[int]], bool] = lambda jobs: True,
    backlog: Callable[[], int] = lambda: 0,
    backlog_limit: int = 10_000,
) -> Dispatcher[int, str]:
    return Dispatcher(
        sender,
        concurrency=concurrency,
        stopping=stopping,
        ready=ready,
        not_sent=lambda job: f"not sent {job}",
        cut_off=lambda job: f"cut off {job}",
        on_start=on_start,
        backlog=backlog,
        backlog_limit=backlog_limit,
    )


def run_all(dispatcher: Dispatcher[int, str], jobs: Iterable[int]) -> dict[int, str]:
    """Every job's result; fails if a job comes out twice."""
    results: dict[int, str] = {}
    for batch in dispatcher.run(jobs):
        assert batch, "an empty batch"
        for job, result in batch:
            assert job not in results, f"job {job} came out twice"
            results[job] = result
    return results


def test_never_more_than_concurrency_jobs_run_at_once() -> None:
    concurrency = 3
    # The first jobs meet at a barrier: proof that `concurrency` of them really run together.
    together = threading.Barrier(concurrency, timeout=THREAD_WAIT)
    sender = FakeSender(hold=lambda job: together.wait() if job < concurrency else None)

    results = run_all(make(sender, Stopping(), concurrency=concurrency), range(JOBS))

    assert sender.most_running == concurrency
    assert results == {job: f"done {job}" for job in range(JOBS)}


@pytest.mark.parametrize("concurrency", [1, 2, 5])
def test_every_job_comes_out_exactly_once(concurrency: int) -> None:
    sender = FakeSender()

    def ready(job: int) -> str | None:
        return f"ready {job}" if job % 3 == 0 else None

    results = run_all(make(sender, Stopping(), concurrency=concurrency, ready=ready), range(JOBS))

    assert results == {
        job: f"ready {job}" if job % 3 == 0 else f"done {job}" for job in range(JOBS)
    }
    assert Counter(sender.worked) == Counter(job for job in range(JOBS) if job % 3 != 0)
    assert sender.most_running <= concurrency


def test_ready_jobs_pass_through_at_once_in_their_own_batch() -> None:
    sender = FakeSender()
    dispatcher = make(sender, Stopping(), ready=lambda job: f"ready {job}")

    batches = list(dispatcher.run(range(5)))

    assert batches == [[(job, f"ready {job}")] for job in range(5)]
    assert sender.worked == []


def test_on_start_gets_each_batch_before_its_jobs_run() -> None:
    concurrency = 2
    started: list[list[int]] = []
    early: list[int] = []  # jobs that ran before on_start was told of them
    lock = threading.Lock()

    def on_start(jobs: list[int]) -> bool:
        with lock:
            started.append(list(jobs))
        return True

    def hold(job: int) -> None:
        with lock:
            if not any(job in batch for batch in started):
                early.append(job)

    sender = FakeSender(hold=hold)
    results = run_all(
        make(sender, Stopping(), concurrency=concurrency, on_start=on_start), range(JOBS)
    )

    assert early == []
    assert sorted(job for batch in started for job in batch) == list(range(JOBS))
    assert all(len(batch) <= WINDOW_PER_WORKER * concurrency for batch in started)
    assert set(results.values()) == {f"done {job}" for job in range(JOBS)}


def test_a_batch_on_start_refuses_is_not_sent_and_never_worked() -> None:
    calls: list[list[int]] = []

    def on_start(jobs: list[int]) -> bool:
        calls.append(list(jobs))
        return len(calls) != 2  # refuse the second batch only

    sender = FakeSender()
    results = run_all(make(sender, Stopping(), concurrency=2, on_start=on_start), range(20))

    refused = calls[1]
    assert refused
    assert {job: results[job] for job in refused} == {job: f"not sent {job}" for job in refused}
    assert not set(refused) & set(sender.worked)
    assert sorted(sender.worked) == sorted(set(range(20)) - set(refused))


def test_when_every_batch_is_refused_nothing_is_worked() -> None:
    sender = FakeSender()
    results = run_all(make(sender, Stopping(), on_start=lambda jobs: False), range(JOBS))

    assert results == {job: f"not sent {job}" for job in range(JOBS)}
    assert sender.worked == []


def test_a_stop_mid_way_leaves_the_rest_not_sent() -> None:
    concurrency = 2
    stopping = Stopping()

    def hold(job: int) -> None:
        if job == 0:
            stopping.stop("test")
        else:  # no other job finishes before the stop: which jobs were handed out is exact
            assert stopping.event.wait(THREAD_WAIT)

    sender = FakeSender(hold=hold)
    results = run_all(make(sender, stopping, concurrency=concurrency), range(JOBS))

    window = WINDOW_PER_WORKER * concurrency
    assert results == {
        job: f"done {job}" if job < window else f"not sent {job}" for job in range(JOBS)
    }
    assert sorted(sender.worked) == list(range(window))


def test_a_stop_before_a_partial_last_batch_sends_none_of_it() -> None:
    stopping = Stopping()

    def jobs() -> Iterable[int]:
        yield 0
        yield 1
        stopping.stop("test")  # after two jobs are batched but before the window filled

    sender = FakeSender()
    results = run_all(make(sender, stopping, concurrency=3), jobs())

    assert results == {0: "not sent 0", 1: "not sent 1"}
    assert sender.worked == []


def test_abandon_gives_running_jobs_back_cut_off_without_waiting() -> None:
    concurrency = 2
    stopping = Stopping()
    release = threading.Event()
    both_running = threading.Barrier(concurrency + 1, timeout=THREAD_WAIT)

    def hold(job: int) -> None:
        both_running.wait()
        release.wait(THREAD_WAIT)  # a request that never answers, until the test ends

    def abandon_once_running() -> None:
        both_running.wait()
        stopping.abandon("test")

    sender = FakeSender(hold=hold)
    dispatcher = make(sender, stopping, concurrency=concurrency)
    try:
        abandoner = threading.Thread(target=abandon_once_running)
        abandoner.start()
        results = run_all(dispatcher, range(10))
        abandoner.join(THREAD_WAIT)

        assert not release.is_set()  # the run ended while its workers were still blocked
        assert sender.running == concurrency
    finally:
        release.set()

    window = WINDOW_PER_WORKER * concurrency
    assert sorted(sender.worked) == [0, 1]
    assert results == {
        job: f"cut off {job}" if job < window else f"not sent {job}" for job in range(10)
    }


def test_the_backlog_limit_stops_the_refill_until_the_window_drains() -> None:
    outstanding_at_start: list[int] = []
    sender = FakeSender()

    def on_start(jobs: list[int]) -> bool:
        with sender.lock:
            outstanding_at_start.append(len(sender.worked) - sender.returned)
        return True

    dispatcher = make(
        sender, Stopping(), concurrency=2, on_start=on_start, backlog=lambda: 5, backlog_limit=5
    )
    results = run_all(dispatcher, range(JOBS))

    assert len(outstanding_at_start) == math.ceil(
        JOBS / (WINDOW_PER_WORKER * 2)
    )  # a batch a window
    assert outstanding_at_start == [0] * len(outstanding_at_start)
    assert len(results) == JOBS


def test_without_a_backlog_the_window_refills_while_jobs_still_run() -> None:
    second_batch = threading.Event()
    outstanding_at_start: list[int] = []
    sender = FakeSender(hold=lambda job: second_batch.wait(THREAD_WAIT) if job == 0 else None)

    def on_start(jobs: list[int]) -> bool:
        with sender.lock:
            outstanding_at_start.append(len(sender.worked) - sender.returned)
        if len(outstanding_at_start) == 2:
            second_batch.set()
        return True

    dispatcher = make(
        sender, Stopping(), concurrency=2, on_start=on_start, backlog=lambda: 4, backlog_limit=5
    )
    results = run_all(dispatcher, range(JOBS))

    assert outstanding_at_start[1] >= 1  # job 0 was still running when the refill came
    assert len(results) == JOBS


def assert_job_0_comes_out_while_job_1_runs(
    build: Callable[[FakeSender, threading.Event], Dispatcher[int, str]],
) -> None:
    """Job 1 runs until the caller has job 0's result (`received`): a dispatcher that held job 0
    back until job 1 finished would keep job 1 waiting THREAD_WAIT, and fail here."""
    received = threading.Event()
    waited: list[bool] = []
    sender = FakeSender(
        hold=lambda job: waited.append(received.wait(THREAD_WAIT)) if job == 1 else None
    )

    results: dict[int, str] = {}
    for batch in build(sender, received).run(range(JOBS)):
        results.update(batch)
        if 0 in results:
            received.set()

    assert waited == [True]  # job 1 was still running when job 0 came out
    assert results == {job: f"done {job}" for job in range(JOBS)}


def test_a_full_backlog_gets_each_finished_job_as_it_comes() -> None:
    """Writing what finished is what lowers the backlog: it must not wait for the window."""
    assert_job_0_comes_out_while_job_1_runs(
        lambda sender, received: make(
            sender,
            Stopping(),
            concurrency=2,
            backlog=lambda: 0 if received.is_set() else 5,
            backlog_limit=5,
        )
    )


def test_jobs_finished_beside_one_that_raised_come_out_before_the_error() -> None:
    def hold(job: int) -> None:
        if job == 2:
            raise RuntimeError("a bug in the sender")

    # One worker: jobs 0 and 1 finish, then 2 raises, while the window still waits to refill.
    dispatcher = make(FakeSender(hold=hold), Stopping(), concurrency=1)
    results: dict[int, str] = {}

    with pytest.raises(RuntimeError, match="a bug in the sender"):
        results.update(pair for batch in dispatcher.run(range(JOBS)) for pair in batch)

    # Job 3 may finish before the error is read: then it comes out too. Nothing is lost.
    assert {0, 1} <= results.keys() <= {0, 1, 3}
    assert all(result == f"done {job}" for job, result in results.items())


def test_a_result_that_is_not_routine_comes_out_at_once() -> None:
    """A failure may stop the run: the caller counts it before more of the window is sent."""

    def build(sender: FakeSender, received: threading.Event) -> Dispatcher[int, str]:
        dispatcher = make(sender, Stopping(), concurrency=1)
        dispatcher.routine = lambda result: result != "done 0"
        return dispatcher

    assert_job_0_comes_out_while_job_1_runs(build)
