"""A ledger new to an account and host: rows are looked up at Twilio before their first send.

A ledger starts empty in a new folder (`--out` defaults to `./outputs`) or on another host,
while Twilio may already hold web chats made for these rows from elsewhere. A row's identity is
derived from the account, host and row key, so Twilio can tell: each row the ledger has not
seen is looked up (GET /v1/ParticipantConversations) before it is sent; a web chat found is
recorded as `existing`, with its SID, so later runs skip it without asking again.

The lookups go to the Conversations API, not to the web chat endpoint: they do not count
against its 5 creations a second, nor its cap in flight. They run on threads of their own, a
bounded number of rows ahead of the sends, so that once they have caught up the sends never
wait for them.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from provisioner.dispatch import IDLE, Idle
from provisioner.ledger import Entry
from provisioner.outcome import Outcome
from provisioner.plan import Decision
from provisioner.rows import Row
from provisioner.send import Lookups, Settlement, look_up
from provisioner.stopping import Stopping
from provisioner.vocabulary import EntryStatus, ErrorCode, LookupResult, Status

log = logging.getLogger("provisioner")

# Lookups in flight at once, at least: at Twilio's usual answer time they make about 13 a
# second, well ahead of the web chat endpoint's 5 creations a second. A run allowed more
# requests in flight (--concurrency) looks up as many at once, so that lookups keep pace with
# sends that are not held to a rate.
MIN_LOOKUP_WORKERS = 4
# Rows looked up ahead of the sends, as a multiple of the dispatch window (rows handed to the
# workers at once): the window refills from rows already looked up, and no more lookups are
# made than a stop would waste.
LOOKAHEAD_WINDOWS = 2
TYPICAL_ANSWER = 0.3  # seconds: Twilio's usual answer to a lookup, for the estimate people see
IDLE_POLL = 0.05  # seconds the next row's lookup is waited for before the sends get a turn
HTTP_UNAUTHORIZED = 401  # the credentials themselves were rejected, not only for lookups


@dataclass(frozen=True)
class Job:
    """A row on its way to the workers: its place in the input, its plan, and what its first
    lookup found (`looked_up`), or settled without sending (`outcome`: existing, or failed)."""

    sequence: int
    decision: Decision
    looked_up: Settlement | None = None
    outcome: Outcome | None = None

    @property
    def known(self) -> Outcome | None:
        """The row's outcome when it needs no sending."""
        return self.outcome or self.decision.outcome


def needs_first_lookup(decision: Decision, new_ledger: bool) -> bool:
    """A row to look up before its first send: one a new ledger has not seen, or one whose
    first lookup failed in an earlier run (it was not sent then)."""
    if not decision.to_send or decision.forced:
        return False
    prior = decision.prior
    if prior is None:
        return new_ledger
    return first_lookup_failed(prior)


def first_lookup_failed(entry: Entry) -> bool:
    """The entry of a row never sent because its first lookup failed."""
    return (
        entry.status is EntryStatus.FAILED
        and entry.lookup == LookupResult.FAILED
        and not (entry.ambiguous_attempts)
    )


def first_lookup_outcome(row: Row, settlement: Settlement) -> Outcome | None:
    """What a first lookup settles without sending: a web chat found (existing), or a lookup
    that failed (the row is not sent blindly); None when the row is to be sent (absent)."""
    if settlement.result is LookupResult.ABSENT:
        return None
    if settlement.result is LookupResult.FAILED:
        return Outcome(
            Status.FAILED,
            identity=row.identity,
            error_code=ErrorCode.LOOKUP_FAILED,
            error_message=(
                "not sent: this ledger is new to this account and host, so the row was looked "
                "up first, in case another folder or host created it, and "
                f"{settlement.message}; the next run looks it up again"
            ),
            lookup=settlement.result,
        )
    first, *others = settlement.conversations
    message = "found at Twilio by a lookup (created from another ledger: a folder or host)"
    if others:
        message += (
            f"; {len(others) + 1} web chats exist for this identity: "
            "`provisioner reconcile --close-duplicates` closes all but the first"
        )
    return Outcome(
        Status.EXISTING,
        conversation_sid=first.sid,
        identity=row.identity,
        error_message=message + "; recorded, not sent",
        lookup=settlement.result,
        duplicate_sids=tuple(found.sid for found in others),
    )


def added_seconds(rows: int, rate: float | None, concurrency: int) -> float:
    """Roughly how long looking `rows` up first adds to a run, at Twilio's usual answer time:
    one answer while the lookups keep ahead of the sends, more when they cannot."""
    lookups_per_second = lookup_workers(concurrency) / TYPICAL_ANSWER
    sends_per_second = min(rate or math.inf, concurrency / TYPICAL_ANSWER)
    behind = rows / lookups_per_second - rows / sends_per_second
    return TYPICAL_ANSWER + max(0.0, behind)


def lookup_workers(concurrency: int) -> int:
    """Lookups in flight at once for a run allowed `concurrency` requests in flight."""
    return max(MIN_LOOKUP_WORKERS, concurrency)


class FirstLookups:
    """Looks rows up ahead of their first send, in order, a bounded number of rows ahead.

    The lookups start under the Conversations API's own limits (`lookups`). A 429 to one means
    the account counts them with the web chats (one cap on every request, as Twilio's 20429
    counts an account's REST requests): from then on they take their turn under the web chat
    endpoint's limits (`shared`), rather than take the web chats' places and fail for it.

    A lookup refused (401/403: these credentials cannot read Conversations) stops the run
    before anything more is sent: the lookups are what keeps a new ledger from creating every
    web chat again, so the run never goes on without them unless told (`--no-lookup`).
    """

    def __init__(
        self,
        lookups: Lookups,
        stopping: Stopping,
        *,
        shared: Lookups | None = None,
        new_ledger: bool,
        workers: int,
        ahead: int,
    ) -> None:
        self.lookups = lookups
        self.shared = shared
        self.stopping = stopping
        self.new_ledger = new_ledger
        self.workers = workers
        self.ahead = ahead
        self.looked_up = 0

    def jobs(self, decisions: Iterable[tuple[int, Decision]]) -> Generator[Job | Idle, None, None]:
        """Every row as a Job, in order; IDLE while the next row's lookup is not back yet."""
        pending: deque[tuple[Job, Future[Settlement] | None]] = deque()
        source = iter(decisions)
        executor = ThreadPoolExecutor(self.workers, thread_name_prefix="lookup")
        try:
            while True:
                while len(pending) < self.ahead:
                    taken = next(source, None)
                    if taken is None:
                        break
                    job = Job(*taken)
                    future = None
                    if not self.stopping.is_set and needs_first_lookup(
                        job.decision, self.new_ledger
                    ):
                        future = executor.submit(self._look_up, job.decision.row)
                    pending.append((job, future))
                if not pending:
                    return
                job, future = pending[0]
                if future is not None and not future.done() and not self.stopping.is_set:
                    wait([future], timeout=IDLE_POLL)
                    if not future.done():
                        yield IDLE  # the sends get a turn while the lookup is out
                        continue
                pending.popleft()
                yield self._settled(job, future)
        finally:
            executor.shutdown(wait=not self.stopping.abandoned.is_set(), cancel_futures=True)

    def _look_up(self, row: Row) -> Settlement:
        """On a lookup thread: the row's first lookup; a refusal stops the run."""
        if self.stopping.is_set:
            return Settlement(LookupResult.FAILED, message="the run stopped", stopped=True)
        lookups = self._lookups()
        settlement = look_up(lookups, row, since=None)
        if settlement.result is LookupResult.FAILED and lookups is not self._lookups():
            # Throttled out while taking the web chats' places: once more, taking turns.
            lookups = self._lookups()
            settlement = look_up(lookups, row, since=None)
        if lookups.refused and not self.stopping.is_set:
            self.stopping.stop(self._refusal(lookups))
        return settlement

    def _lookups(self) -> Lookups:
        """The Conversations API's own limits; the web chat endpoint's once a lookup was
        answered 429 (the account counts lookups with the web chats)."""
        if self.shared is not None and self.lookups.limits.state().throttled:
            return self.shared
        return self.lookups

    @property
    def refused(self) -> str:
        """Why Twilio refused these lookups, once it did."""
        return self.lookups.refused or (self.shared.refused if self.shared else "")

    def _refusal(self, lookups: Lookups) -> str:
        """Why the run stops when Twilio refuses the lookups, and how to go on."""
        if lookups.refused_status == HTTP_UNAUTHORIZED:  # as a create's 401 says it
            return (
                f"Twilio rejected the credentials (HTTP {HTTP_UNAUTHORIZED}, looking rows up "
                "before their first send); check them"
            )
        return (
            f"{lookups.refused}. This ledger is new to this account and host, so every "
            "row is looked up before it is sent; nothing more is sent. To send without "
            "looking up, pass --no-lookup (web chats created from another folder or host are "
            "then created again)"
        )

    def _settled(self, job: Job, future: Future[Settlement] | None) -> Job:
        """The job with what its lookup found; as it was when the lookup did not answer."""
        if future is None or not future.done() or future.cancelled():
            return job  # not looked up: when the run is stopping, the dispatcher says not sent
        settlement = future.result()
        if settlement.result is LookupResult.FAILED and (settlement.stopped or self.refused):
            # Cut short by a stop, or refused (which stops the run): not a failed lookup of
            # this row; nothing was sent, so the dispatcher says it was not (not_attempted).
            return job
        self.looked_up += 1
        row = job.decision.row
        outcome = first_lookup_outcome(row, settlement)
        if outcome is not None:
            log.info("row %d (%s): first lookup: %s", row.number, row.key, settlement.result)
        return Job(job.sequence, job.decision, looked_up=settlement, outcome=outcome)
