"""Work done by concurrent workers, handed on in the order it came: the Dispatcher's window in
front of a reorder buffer.

For work whose results are written in input order (reconcile.csv, lookups ahead of sending):
`in_order(jobs, work, ...)` yields every job with its result, the first job first, while up to
`concurrency` jobs are worked on at once. The account's limits are the work's own business
(send.Lookups takes a slot of them per request); this part bounds only the threads.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from provisioner.dispatch import Dispatcher
from provisioner.stopping import Stopping

Job = TypeVar("Job")
Result = TypeVar("Result")
Item = TypeVar("Item")

# Results held back for an earlier, slower job before no more jobs are handed out: a slow
# answer costs memory for the results that overtook it, never more than this many.
HELD_LIMIT = 10_000


class InOrder(Generic[Item]):
    """A reorder buffer: items numbered 0, 1, 2 ... arrive in any order and leave in order."""

    def __init__(self) -> None:
        self._held: list[tuple[int, int, Item]] = []  # (number, arrival, item): a heap
        self._arrivals = 0  # a tie-break, so that items themselves are never compared
        self._next = 0

    @property
    def held(self) -> int:
        """Items waiting for an earlier one."""
        return len(self._held)

    def add(self, number: int, item: Item) -> list[Item]:
        """Accept the `number`-th item (0-based); returns the items now in order, oldest first."""
        heapq.heappush(self._held, (number, self._arrivals, item))
        self._arrivals += 1
        ready = []
        while self._held and self._held[0][0] == self._next:
            ready.append(heapq.heappop(self._held)[2])
            self._next += 1
        return ready


def in_order(
    jobs: Iterable[Job],
    work: Callable[[Job], Result],
    *,
    concurrency: int,
    stopping: Stopping,
    not_done: Callable[[Job], Result],
    cut_off: Callable[[Job], Result],
    held_limit: int = HELD_LIMIT,
) -> Iterator[tuple[Job, Result]]:
    """Every job with `work`'s result, in the jobs' order, at most `concurrency` worked on at
    once. Once `stopping` is set, jobs not yet handed out get `not_done(job)`; once it is
    abandoned, jobs still being worked on get `cut_off(job)` (see dispatch.Dispatcher)."""
    buffer: InOrder[tuple[Job, Result]] = InOrder()
    dispatcher: Dispatcher[tuple[int, Job], Result] = Dispatcher(
        lambda numbered: work(numbered[1]),
        concurrency=concurrency,
        stopping=stopping,
        ready=lambda numbered: None,
        not_sent=lambda numbered: not_done(numbered[1]),
        cut_off=lambda numbered: cut_off(numbered[1]),
        backlog=lambda: buffer.held,
        backlog_limit=held_limit,
    )
    for finished in dispatcher.run(enumerate(jobs)):
        for (number, job), result in finished:
            yield from buffer.add(number, (job, result))
