"""The window of rows in flight: hands rows to worker threads and gives back what finished.

No ledger and no files in here: the caller marks rows in flight (`on_start`) and records what
finishes, so that this part can be tested with a fake sender.
"""

from __future__ import annotations

import enum
import itertools
import queue
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Literal, TypeVar, cast

from provisioner.stopping import Stopping

Job = TypeVar("Job")
Result = TypeVar("Result")

COLLECT_EVERY = 0.2  # seconds between checks for a stop while every worker is busy
# Rows handed out ahead of the workers: enough that none waits and that the window refills in
# batches (each batch is one ledger transaction marking it in flight, and the rows finished
# meanwhile one more recording them: the main thread wakes and commits per batch, not per
# row), few enough that a hard kill leaves few rows marked in flight.
WINDOW_PER_WORKER = 4


class Idle(enum.Enum):
    """What a job source yields when its next job is not ready yet (a lookup ahead of it)."""

    IDLE = "idle"


IDLE: Literal[Idle.IDLE] = Idle.IDLE


class Dispatcher(Generic[Job, Result]):
    """Runs `work` on at most `concurrency` jobs at once; yields finished jobs in batches.

    Jobs whose result is known without work (`ready`) pass straight through. Once `stopping` is
    set, jobs not yet handed out get `not_sent(job)`; once it is abandoned, jobs still running
    get `cut_off(job)` and are no longer waited for. Results that finish together come as one
    batch, except one that `routine` refuses (a failure, which may stop the run): it comes at
    once, with what finished beside it.
    """

    def __init__(
        self,
        work: Callable[[Job], Result],
        *,
        concurrency: int,
        stopping: Stopping,
        ready: Callable[[Job], Result | None],
        not_sent: Callable[[Job], Result],
        cut_off: Callable[[Job], Result],
        on_start: Callable[[list[Job]], bool] = lambda jobs: True,
        backlog: Callable[[], int] = lambda: 0,
        backlog_limit: int = 10_000,
        routine: Callable[[Result], bool] = lambda result: True,
    ) -> None:
        self.work = work
        self.concurrency = concurrency
        self.stopping = stopping
        self.ready = ready
        self.not_sent = not_sent
        self.cut_off = cut_off
        self.on_start = on_start
        self.backlog = backlog
        self.backlog_limit = backlog_limit
        self.routine = routine
        self._pending: dict[int, Job] = {}  # handed to the workers, by ticket
        self._tickets = itertools.count()
        # Workers put what they finished here: the main thread takes all of it at once, where
        # waiting on futures would cost a pass over every pending one per wake-up.
        self._done: queue.SimpleQueue[tuple[int, Result | BaseException, bool]] = (
            queue.SimpleQueue()
        )
        self._batch: list[Job] = []
        self._raised: BaseException | None = None  # what a worker raised, for the main thread

    def run(self, jobs: Iterable[Job | Idle]) -> Generator[list[tuple[Job, Result]], None, None]:
        """Yield every job with its result, in batches that finished together. A source that
        yields IDLE (its next job is not ready) gets the rows gathered so far handed out at
        once, and what finished meanwhile back, rather than waiting for a full batch."""
        window = WINDOW_PER_WORKER * self.concurrency
        refill_below = self.concurrency + (self.concurrency + 1) // 2
        executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="send")
        try:
            for job in jobs:
                if job is IDLE:
                    yield from self._flush_batch(executor)
                    yield from self._hand_back(self._collect(wait=False))
                    continue
                known = self.ready(job)
                if known is None and self.stopping.is_set:
                    known = self.not_sent(job)
                if known is not None:
                    # Back-pressure for rows that need no sending too: behind a slow row they
                    # would all wait in the reorder buffer.
                    if self.backlog() >= self.backlog_limit:
                        yield from self._flush_batch(executor)
                        yield from self._hold_back()
                    yield [(job, known)]
                    continue
                self._batch.append(job)
                if len(self._pending) + len(self._batch) >= window:
                    refused = self._submit(executor)
                    if refused:
                        yield refused
                    yield from self._refill_wait(refill_below)
                    yield from self._hold_back()
            yield from self._flush_batch(executor)
            while self._pending:
                yield from self._hand_back(self._collect())
        finally:
            executor.shutdown(wait=not self.stopping.abandoned.is_set(), cancel_futures=True)

    def _flush_batch(self, executor: ThreadPoolExecutor) -> Iterator[list[tuple[Job, Result]]]:
        """The partial batch: not sent when stopping, else handed to the workers."""
        if not self._batch:
            return
        if self.stopping.is_set:
            yield [(job, self.not_sent(job)) for job in self._batch]
            self._batch.clear()
            return
        refused = self._submit(executor)
        if refused:
            yield refused

    def _submit(self, executor: ThreadPoolExecutor) -> list[tuple[Job, Result]]:
        """Hand the batch to the workers, unless `on_start` refuses (then none is sent)."""
        batch, self._batch = self._batch, []
        if not self.on_start(list(batch)):
            return [(job, self.not_sent(job)) for job in batch]
        for job in batch:
            ticket = next(self._tickets)
            self._pending[ticket] = job
            executor.submit(self._work, ticket, job)
        return []

    def _work(self, ticket: int, job: Job) -> None:
        """On a worker: do the job, and hand its result (or what it raised) back."""
        try:
            result = self.work(job)
        except BaseException as error:  # raised again on the main thread, as futures do
            self._done.put((ticket, error, False))
        else:
            self._done.put((ticket, result, True))

    def _refill_wait(self, refill_below: int) -> Iterator[list[tuple[Job, Result]]]:
        """Collect until fewer than `refill_below` jobs run; what finished meanwhile comes as
        one batch (one ledger commit), but at once with a result that is not `routine`."""
        finished: list[tuple[Job, Result]] = []
        while len(self._pending) >= refill_below:
            collected = self._collect()
            finished += collected
            if self._raised is not None or not all(self.routine(r) for _, r in collected):
                yield from self._hand_back(finished)
                finished = []
        yield from self._hand_back(finished)

    def _hold_back(self) -> Iterator[list[tuple[Job, Result]]]:
        """Hand out nothing while the files' backlog is full; what finishes comes as it comes,
        since writing it is what lowers the backlog."""
        while self._pending and self.backlog() >= self.backlog_limit:
            yield from self._hand_back(self._collect())

    def _hand_back(self, finished: list[tuple[Job, Result]]) -> Iterator[list[tuple[Job, Result]]]:
        """Yield what finished; then raise what a worker raised, if one did."""
        if finished:
            yield finished
        if self._raised is not None:
            raise self._raised

    def _collect(self, *, wait: bool = True) -> list[tuple[Job, Result]]:
        """What finished by the next answer (or COLLECT_EVERY; without `wait`, what finished
        already); all that is left, if abandoned. The first exception a worker raised is kept
        in `_raised`."""
        self.stopping.announce()  # what a signal handler could not say itself
        finished = []
        try:
            answers = [self._done.get(timeout=COLLECT_EVERY) if wait else self._done.get_nowait()]
            while not self._done.empty():
                answers.append(self._done.get_nowait())
        except queue.Empty:
            answers = []
        for ticket, result, worked in answers:
            job = self._pending.pop(ticket, None)
            if job is None:
                continue  # abandoned before it finished: given back cut off already
            if worked:
                finished.append((job, cast(Result, result)))
            elif self._raised is None:
                self._raised = cast(BaseException, result)
        if self.stopping.abandoned.is_set():
            finished += [(job, self.cut_off(job)) for job in self._pending.values()]
            self._pending.clear()
        return finished
