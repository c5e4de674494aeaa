"""One row -> one Outcome: a slot from the account's limits, the client, retries, lookups.

Exactly once: an attempt whose answer was lost (a timeout, a dropped connection, a 2xx that
could not be read) may have created a web chat, so before any further attempt the row's
identity is looked up at Twilio. Found: the row is created, never sent again. Absent: sending
again is safe. The lookup cannot answer: the row is not sent again blindly.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from tenacity import RetryCallState

from provisioner.attempts import Attempt, FoundConversation, Lookup
from provisioner.limits import AccountLimits
from provisioner.limits_permits import Answer
from provisioner.options import LOOKUP_LAG, MAX_ATTEMPTS
from provisioner.outcome import Outcome
from provisioner.plan import Decision
from provisioner.retry import retry_policy, retryable, should_retry
from provisioner.rows import Row
from provisioner.runtime import Sleep
from provisioner.stopping import Stopping
from provisioner.timestamps import epoch_seconds
from provisioner.vocabulary import ErrorCode, LookupResult, Status

log = logging.getLogger("provisioner")

LOOKUP_TRIES = 4  # a lookup that fails transiently is tried this often (retry.py's backoff)
# Conversations created this long before a row's first attempt are not its web chat (clock
# skew between this machine and Twilio is allowed for).
CLOCK_SKEW = 300.0
LOOKUP_PERMISSION = (
    "these credentials cannot read Conversations. Grant the API key read access to "
    "Conversations (ParticipantConversations), or use the Account SID and Auth Token"
)
CLOSED = "closed"  # Twilio's conversation_state of a closed conversation
TOO_MANY_REQUESTS = 429  # HTTP's status for an answer throttled by the account's limits


class WebChatApi(Protocol):
    """What the sender needs of the client (client.TwilioClient; a fake in tests)."""

    def create_web_chat(self, parameters: Mapping[str, str]) -> Attempt:
        """POST one web chat."""

    def find_conversations(self, identity: str) -> Lookup:
        """The conversations an identity takes part in."""


@dataclass(frozen=True)
class SendSettings:
    """How rows are sent."""

    max_attempts: int = MAX_ATTEMPTS
    lookups: bool = True  # False (--no-lookup): rows with a lost answer are sent again blindly
    lookup_lag: float = LOOKUP_LAG


@dataclass(frozen=True)
class Settlement:
    """What a lookup made of a row whose earlier attempt may have created a web chat."""

    result: LookupResult
    conversations: tuple[FoundConversation, ...] = ()  # the one kept first, then open extras
    message: str = ""
    stopped: bool = False  # FAILED because a stop cut the lookup short, not for want of an answer

    @property
    def kept(self) -> str:
        """The SID of the web chat the row keeps; "" when none was found."""
        return self.conversations[0].sid if self.conversations else ""

    @property
    def others(self) -> tuple[str, ...]:
        """The SIDs of the open extra web chats (duplicates), oldest first."""
        return tuple(found.sid for found in self.conversations[1:])


@dataclass(frozen=True)
class LookupFailure:
    """Why a lookup has no answer: Twilio's (refused, failing) or a stop that cut it short."""

    message: str
    stopped: bool = False


@dataclass
class RowHistory:
    """Everything that happened to one row in this run (one worker thread owns it)."""

    row: Row
    prior_ambiguous: int = 0
    unsettled: bool = False  # an attempt may have created a web chat that is not recorded
    since: float | None = None  # wall time of the row's first attempt, if known
    last_sent: float | None = None  # monotonic time of the last attempt
    attempts: list[Attempt] = field(default_factory=list)
    settlements: list[Settlement] = field(default_factory=list)

    @property
    def ambiguous(self) -> int:
        """Lost answers, earlier runs' included."""
        return self.prior_ambiguous + sum(1 for attempt in self.attempts if attempt.ambiguous)


Step = Attempt | Settlement | None  # None: the run is stopping


class Lookups:
    """Lookups at Twilio under the account's limits (they count against them too): transient
    failures tried again by retry.py's policy; after a refusal (credentials that cannot read
    Conversations), said once, no further request is made. Shared by threads."""

    def __init__(
        self,
        client: WebChatApi,
        limits: AccountLimits,
        stopping: Stopping,
        sleep: Sleep,
        jitter: random.Random | None = None,
    ) -> None:
        self.client, self.limits, self.stopping, self.sleep = client, limits, stopping, sleep
        self.refused = ""
        self.refused_status: int | None = None  # 401 (credentials) or 403 (permission)
        self._lock = threading.Lock()
        self.policy = retry_policy(
            LOOKUP_TRIES,
            sleep,
            stopping.event,
            retry=should_retry,
            source=jitter,
            pause_left=limits.pause_left,
        )

    def find(self, identity: str) -> Lookup | LookupFailure:
        """The complete answer for `identity`, or why there is none."""
        if self.refused:
            return LookupFailure(self.refused)
        lookup = self.policy(self._try, identity)
        if lookup is not None and lookup.ok:
            return lookup
        if lookup is not None and lookup.refused:
            return LookupFailure(self._refuse(lookup))
        tries = self.policy.statistics.get("attempt_number", 0)  # this thread's call's
        if lookup is None or (
            self.stopping.is_set and should_retry(lookup) and tries < LOOKUP_TRIES
        ):
            # A try was due when the stop came: the stop cut the lookup short, not Twilio.
            return LookupFailure("the run stopped before the lookup could answer", stopped=True)
        return LookupFailure(f"the lookup failed: {lookup.error_message}")

    def settle(self, identity: str, since: float | None, recorded: str = "") -> Settlement:
        """Look `identity` up and say what that means for its row (see `settlement_of`)."""
        found = self.find(identity)
        if isinstance(found, LookupFailure):
            return Settlement(LookupResult.FAILED, message=found.message, stopped=found.stopped)
        return settlement_of(found.conversations, since, recorded)

    def _try(self, identity: str) -> Lookup | None:
        """One request, within the account's limits; None when the run is stopping."""
        return within_limits(
            self.limits,
            self.sleep,
            self.stopping.event,
            lambda: self.client.find_conversations(identity),
        )

    def _refuse(self, lookup: Lookup) -> str:
        with self._lock:
            if not self.refused:
                self.refused_status = lookup.http_status
                self.refused = (
                    f"Twilio refused the lookup (HTTP {lookup.http_status}): {LOOKUP_PERMISSION}"
                )
                log.warning("%s", self.refused)
        return self.refused


class RowSender:
    """Sends rows; shared by the worker threads (each row's state lives in its RowHistory)."""

    def __init__(
        self,
        client: WebChatApi,
        limits: AccountLimits,
        stopping: Stopping,
        settings: SendSettings,
        *,
        sleep: Sleep,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        jitter: random.Random | None = None,
    ) -> None:
        self.client = client
        self.limits = limits
        self.stopping = stopping
        self.settings = settings
        self.sleep = sleep
        self.clock = clock
        self.wall_clock = wall_clock
        self.started = wall_clock()  # after this run took the ledger: earlier runs had ended
        self.lookups = Lookups(client, limits, stopping, sleep, jitter)
        # Rows with a request sent in this run, until the main thread takes their outcomes:
        # a row cut off by a second signal may exist at Twilio only if it is here (a batch is
        # marked in flight before its rows are sent one by one). The lock makes "not stopping,
        # so send" one step against the main thread's reading after a stop.
        self._posted: set[str] = set()
        self._posting = threading.Lock()
        self.policy = retry_policy(
            settings.max_attempts,
            sleep,
            stopping.event,
            after=self._log_try,
            source=jitter,
            pause_left=limits.pause_left,
        )

    def send(self, decision: Decision, looked_up: Settlement | None = None) -> Outcome:
        """Send one row with retries and lookups; runs on a worker thread, touches no file.
        `looked_up`: what a lookup before its first send found (prelookup.py): nothing."""
        prior = decision.prior
        history = RowHistory(
            decision.row,
            prior_ambiguous=decision.prior_ambiguous,
            unsettled=decision.unsettled,
            since=epoch_seconds(prior.first_sent_at) if prior and prior.first_sent_at else None,
            settlements=[looked_up] if looked_up is not None else [],
        )
        if decision.unsettled and prior is not None:
            # The index has had time since then unless that run ended moments ago.
            last_sent = prior.last_sent_by(self.started)
            history.last_sent = self.clock() - max(0.0, self.wall_clock() - last_sent)
        self.policy(self._step, history)
        if (
            history.unsettled
            and history.attempts
            and self.settings.lookups
            and not self.stopping.abandoned.is_set()
        ):
            history.settlements.append(self._settle(history))
        return outcome_of(history, self.settings.max_attempts, self.stopping.not_sent_message)

    def may_have_sent(self, row_key: str) -> bool:
        """A request for this row went out in this run, so its web chat may exist; asked on
        the main thread of a row still in a worker's hands when the run stopped at once."""
        with self._posting:
            return row_key in self._posted

    def taken(self, row_key: str) -> None:
        """The main thread has the row's outcome: no need to remember it was sent."""
        with self._posting:
            self._posted.discard(row_key)

    def _may_post(self, row_key: str) -> bool:
        """Record that a request for the row goes out, unless the run is stopping."""
        with self._posting:
            if self.stopping.is_set:
                return False
            self._posted.add(row_key)
            return True

    def recheck(self, row: Row, outcome: Outcome, since: float | None) -> Outcome:
        """The final check of a created row that had a lost answer: one web chat, or more?"""
        history = RowHistory(row, since=since)
        settlement = self._look_up(history)
        return recheck_outcome(outcome, settlement)

    def _step(self, history: RowHistory) -> Step:
        """One try: settle an earlier lost answer first, then take a slot and send."""
        if self.stopping.is_set:
            return None
        if history.unsettled and self.settings.lookups:
            settlement = self._settle(history)
            history.settlements.append(settlement)
            history.unsettled = False
            if settlement.result is not LookupResult.ABSENT:
                return settlement
        permit = self.limits.acquire(self.sleep, self.stopping.event)
        if permit is None:
            return None
        if not self._may_post(history.row.key):  # the run stopped while a slot was awaited
            self.limits.release(permit, Answer.NO_ANSWER, 0.0, None)
            return None
        if history.since is None:
            history.since = self.wall_clock()
        answer, latency, retry_after = Answer.NO_ANSWER, 0.0, None
        try:  # whatever happens, the slot goes back, or a leaked slot would starve the workers
            attempt = self.client.create_web_chat(history.row.parameters)
            answer, latency, retry_after = answer_of(attempt), attempt.latency, attempt.retry_after
        finally:
            self.limits.release(permit, answer, latency, retry_after)
        history.attempts.append(attempt)
        history.last_sent = self.clock()
        if attempt.ambiguous:
            history.unsettled = True
        if attempt.credentials_rejected:
            self.stopping.stop(
                f"Twilio rejected the credentials (HTTP {attempt.http_status}); check them"
            )
        return attempt

    def _settle(self, history: RowHistory) -> Settlement:
        """Look the row up once the index has had time to show an earlier creation."""
        if history.last_sent is not None:
            wait = history.last_sent + self.settings.lookup_lag - self.clock()
            if wait > 0:
                self.sleep(wait)
        return self._look_up(history)

    def _look_up(self, history: RowHistory) -> Settlement:
        return look_up(self.lookups, history.row, history.since)

    @property
    def lookups_refused(self) -> str:
        """Why lookups cannot be made, once Twilio refused one."""
        return self.lookups.refused

    def _log_try(self, retry_state: RetryCallState) -> None:
        """tenacity's after= hook: a line in run.log for every try that did not succeed."""
        outcome = retry_state.outcome
        step = outcome.result() if outcome is not None and not outcome.failed else None
        if not isinstance(step, Attempt) or step.created:
            return
        history = retry_state.args[0]
        assert isinstance(history, RowHistory)
        log.info(
            "row %d (%s) try %d: %s %s %s%s",
            history.row.number,
            history.row.key,
            retry_state.attempt_number,
            step.http_status or "no answer",
            step.error_code,
            step.error_message,
            f" [{step.request_id}]" if step.request_id else "",
        )


def look_up(lookups: Lookups, row: Row, since: float | None) -> Settlement:
    """What looking `row` up says of it, for a first attempt at `since` (wall time; None: any
    web chat of its identity counts)."""
    settlement = lookups.settle(row.identity, since)
    if settlement.result is LookupResult.FAILED:
        # The message says what failed ("the lookup failed: ...", "the run stopped ..."): once.
        log.info("row %d: %s", row.number, settlement.message)
    return settlement


def recent(
    conversations: tuple[FoundConversation, ...], since: float | None
) -> tuple[FoundConversation, ...]:
    """The conversations that can be a row's web chat: none older than its first attempt (at
    `since`, wall time; clock skew allowed for). Undated ones are kept, to be safe."""
    if since is None:
        return conversations
    return tuple(
        found
        for found in conversations
        if (created := epoch_seconds(found.date_created)) is None or created >= since - CLOCK_SKEW
    )


def settlement_of(
    conversations: tuple[FoundConversation, ...], since: float | None, recorded: str = ""
) -> Settlement:
    """What a complete lookup means for a row whose first attempt was at `since` (wall time).

    The row keeps the web chat the ledger records (`recorded`) when it is there, open or
    closed; else its oldest open one; else its oldest. A closed conversation still exists (a
    chat that ended, or a duplicate closed by reconcile): the row has its web chat, but only
    open ones count as duplicates.
    """
    conversations = tuple(
        sorted(recent(conversations, since), key=lambda found: found.date_created)
    )
    if not conversations:
        return Settlement(LookupResult.ABSENT)
    open_ones = tuple(found for found in conversations if found.state != CLOSED)
    kept = next((found for found in conversations if recorded and found.sid == recorded), None)
    kept = kept or (open_ones or conversations)[0]
    others = tuple(found for found in open_ones if found.sid != kept.sid)
    result = LookupResult.DUPLICATES if others else LookupResult.FOUND
    return Settlement(result, (kept, *others))


def outcome_of(history: RowHistory, max_attempts: int, not_sent_message: str) -> Outcome:
    """What a row's attempts and lookups came to (a pure function of its history)."""
    row, attempts = history.row, history.attempts
    settlement = history.settlements[-1] if history.settlements else None
    last = attempts[-1] if attempts else None
    if settlement is not None and settlement.result in (
        LookupResult.FOUND,
        LookupResult.DUPLICATES,
    ):
        return _found_outcome(history, settlement)
    lookup = settlement.result if settlement is not None else LookupResult.NONE
    if last is not None and last.created:
        return Outcome(
            Status.CREATED,
            conversation_sid=last.conversation_sid,
            identity=last.identity or row.identity,
            attempts=len(attempts),
            ambiguous_attempts=history.ambiguous,
            http_status=last.http_status,
            error_message=last.error_message,
            request_id=last.request_id,
            lookup=lookup,
        )
    if settlement is not None and settlement.result is LookupResult.FAILED:
        return _lookup_failed_outcome(history, settlement)
    if last is None:
        return Outcome(
            Status.NOT_ATTEMPTED,
            identity=row.identity,
            ambiguous_attempts=history.ambiguous,
            error_message=not_sent_message,
            lookup=lookup,
        )
    return _refused_outcome(history, last, max_attempts, lookup)


def _found_outcome(history: RowHistory, settlement: Settlement) -> Outcome:
    """A lookup found the row's web chat (or several): created, never sent again."""
    first, *others = settlement.conversations
    return Outcome(
        Status.CREATED,
        conversation_sid=first.sid,
        identity=history.row.identity,
        attempts=len(history.attempts),
        ambiguous_attempts=history.ambiguous,
        error_message=_found_message(settlement),
        lookup=settlement.result,
        duplicate_sids=tuple(found.sid for found in others),
    )


def _lookup_failed_outcome(history: RowHistory, settlement: Settlement) -> Outcome:
    """An answer was lost and the lookup could not tell: failed, not sent again. A lookup a
    stop cut short is no failed lookup (`lookup` stays empty): the next run looks it up."""
    last = history.attempts[-1] if history.attempts else None
    return Outcome(
        Status.FAILED,
        identity=history.row.identity,
        attempts=len(history.attempts),
        ambiguous_attempts=history.ambiguous,
        http_status=last.http_status if last else None,
        error_code=ErrorCode.STOPPED if settlement.stopped else ErrorCode.LOOKUP_FAILED,
        error_message=(
            f"an earlier answer was lost and the web chat may exist; not sent again "
            f"because {settlement.message}"
            + ("; the next run looks it up first" if settlement.stopped else "")
        ),
        request_id=last.request_id if last else "",
        lookup=LookupResult.NONE if settlement.stopped else settlement.result,
    )


def _refused_outcome(
    history: RowHistory, last: Attempt, max_attempts: int, lookup: LookupResult
) -> Outcome:
    """Twilio's last answer refused the row: whether retries ran out or the run stopped."""
    attempts = len(history.attempts)
    exhausted = retryable(last)
    message = last.error_message
    if exhausted and attempts < max_attempts:
        message += " (the run stopped before the next try)"
        exhausted = False
    elif exhausted:
        message += f" (gave up after {attempts} tries)"
    return Outcome(
        Status.FAILED,
        identity=history.row.identity,
        attempts=attempts,
        ambiguous_attempts=history.ambiguous,
        http_status=last.http_status,
        error_code=last.error_code,
        error_message=message,
        request_id=last.request_id,
        lookup=lookup,
        more_info=last.more_info,
        exhausted=exhausted,
    )


def recheck_outcome(outcome: Outcome, settlement: Settlement) -> Outcome:
    """A created row after its final lookup: confirmed, or its duplicates named."""
    if settlement.stopped:  # no answer, and no failure of Twilio's: what the run knows stays
        return outcome
    if settlement.result is LookupResult.FAILED:
        return _replace_lookup(outcome, LookupResult.FAILED, outcome.duplicate_sids)
    found = {conversation.sid for conversation in settlement.conversations}
    others = tuple(sorted(found - {outcome.conversation_sid}))
    if others:
        return _replace_lookup(outcome, LookupResult.DUPLICATES, others)
    # Exactly the recorded web chat (what the earlier lookup said stays), or nothing in the
    # index yet (it lags): keep what the run knows.
    return outcome


def _replace_lookup(outcome: Outcome, lookup: LookupResult, others: tuple[str, ...]) -> Outcome:
    message = outcome.error_message
    if others:
        message = (
            f"{len(others) + 1} web chats exist for this identity; the ledger keeps "
            f"{outcome.conversation_sid}; `provisioner reconcile --close-duplicates` "
            "closes the others"
        )
    return replace(outcome, lookup=lookup, duplicate_sids=others, error_message=message)


def _found_message(settlement: Settlement) -> str:
    if settlement.result is LookupResult.FOUND:
        return "an earlier answer was lost; the lookup found its web chat, so it was not sent again"
    return (
        f"an earlier answer was lost; the lookup found {len(settlement.conversations)} web chats "
        "for this identity; `provisioner reconcile --close-duplicates` closes all but the first"
    )


Reply = TypeVar("Reply", Attempt, Lookup)


def within_limits(
    limits: AccountLimits, sleep: Sleep, stop: threading.Event, request: Callable[[], Reply]
) -> Reply | None:
    """One request other than a create (a lookup, a close), within the account's limits; None
    when the run is stopping. Its latency is another endpoint's: kept out of the latency signal.
    """
    permit = limits.acquire(sleep, stop)
    if permit is None:
        return None
    answer, retry_after = Answer.NO_ANSWER, None
    try:  # whatever happens, the slot goes back, or a leaked slot would starve the workers
        reply = request()
        answer, retry_after = answer_of(reply), reply.retry_after
    finally:
        limits.release(permit, answer, 0.0, retry_after)
    return reply


def answer_of(reply: Attempt | Lookup) -> Answer:
    """What a request's reply tells the account's limits: throttled (429), accepted (any other
    HTTP answer), or nothing (no answer came)."""
    if reply.http_status == TOO_MANY_REQUESTS:
        return Answer.THROTTLED
    return Answer.NO_ANSWER if reply.http_status is None else Answer.ACCEPTED
