"""Sending one row: outcome_of as a pure function, and RowSender against a scripted fake API."""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provisioner import send as send_module
from provisioner.attempts import Attempt, FoundConversation, Lookup
from provisioner.causes import explain
from provisioner.emulator import Fault
from provisioner.ledger import Entry
from provisioner.limits import AccountLimits
from provisioner.options import LOOKUP_LAG
from provisioner.outcome import Outcome
from provisioner.plan import Decision
from provisioner.retry import BACKOFF_BASE, BACKOFF_FLOOR, MAX_BACKOFF, retry_policy
from provisioner.rows import Row, derive_identity
from provisioner.send import (
    CLOCK_SKEW,
    LOOKUP_TRIES,
    Lookups,
    RowHistory,
    RowSender,
    SendSettings,
    Settlement,
    outcome_of,
    recheck_outcome,
    settlement_of,
)
from provisioner.stopping import Stopping
from provisioner.vocabulary import EntryStatus, ErrorCode, LookupResult, Status
from tests.conftest import CUSTOMER_HEADER, Cli, read_csv, said, sid, write_csv

SEED = 20261125
START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
IDENTITY = "prv-0123456789abcdef0123456789abcdef"
NOT_SENT = "not sent: the run stopped (test)"


def chat_sid(number: int) -> str:
    return f"CH{number:032x}"


SID, SID_2, SID_3 = chat_sid(1), chat_sid(2), chat_sid(3)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def row(number: int = 1, identity: str = IDENTITY) -> Row:
    address = f"IG{number:032x}"
    parameters = {"AddressSid": address, "Identity": identity}
    return Row(number, (address,), parameters, f"c-{number}")


def found(sid: str, created: datetime = START) -> FoundConversation:
    return FoundConversation(sid=sid, date_created=iso(created), state="active")


CREATED = Attempt(http_status=201, conversation_sid=SID, identity=IDENTITY, request_id="RQ1")
LOST = Attempt(
    error_code="timeout",
    error_message="no answer within 30s; the web chat may exist",
    ambiguous=True,
)
BUSY = Attempt(http_status=503, error_code="20503", error_message="Service unavailable")
BAD = Attempt(http_status=400, error_code="20001", error_message="Missing parameter")
REJECTED = Attempt(http_status=401, error_code="20003", error_message="Authenticate")
ABSENT = Lookup(http_status=200)
REFUSED = Lookup(http_status=403, error_code="20003", error_message="Permission denied")
LOOKUP_DOWN = Lookup(http_status=503, error_code="20503", error_message="Service unavailable")


# ---------------------------------------------------------------- outcome_of, a pure function


def history(
    attempts: list[Attempt], settlements: list[Settlement] | None = None, prior: int = 0
) -> RowHistory:
    return RowHistory(
        row(), prior_ambiguous=prior, attempts=attempts, settlements=settlements or []
    )


def test_a_created_row() -> None:
    outcome = outcome_of(history([CREATED]), 5, NOT_SENT)

    assert outcome == Outcome(
        Status.CREATED,
        conversation_sid=SID,
        identity=IDENTITY,
        attempts=1,
        http_status=201,
        request_id="RQ1",
    )


def test_created_after_a_lost_answer_and_an_absent_lookup() -> None:
    outcome = outcome_of(
        history([LOST, CREATED], [Settlement(LookupResult.ABSENT)], prior=1), 5, NOT_SENT
    )

    assert outcome.status is Status.CREATED
    assert outcome.conversation_sid == SID
    assert (outcome.attempts, outcome.ambiguous_attempts) == (2, 2)
    assert outcome.lookup is LookupResult.ABSENT


def test_found_by_a_lookup_is_created_with_the_found_sid() -> None:
    settled = Settlement(LookupResult.FOUND, (found(SID_2),))

    outcome = outcome_of(history([LOST], [settled]), 5, NOT_SENT)

    assert outcome == Outcome(
        Status.CREATED,
        conversation_sid=SID_2,
        identity=IDENTITY,
        attempts=1,
        ambiguous_attempts=1,
        error_message=(
            "an earlier answer was lost; the lookup found its web chat, so it was not sent again"
        ),
        lookup=LookupResult.FOUND,
    )


def test_duplicates_keep_the_first_and_name_the_others() -> None:
    settled = Settlement(LookupResult.DUPLICATES, (found(SID), found(SID_2), found(SID_3)))

    outcome = outcome_of(history([LOST, LOST], [settled]), 5, NOT_SENT)

    assert outcome.status is Status.CREATED
    assert outcome.conversation_sid == SID
    assert outcome.duplicate_sids == (SID_2, SID_3)
    assert outcome.lookup is LookupResult.DUPLICATES
    assert outcome.ambiguous_attempts == 2
    assert "found 3 web chats" in outcome.error_message


def test_a_failed_lookup_fails_the_row_and_says_why() -> None:
    settled = Settlement(LookupResult.FAILED, message="the lookup failed: Service unavailable")

    outcome = outcome_of(history([LOST], [settled]), 5, NOT_SENT)

    assert outcome == Outcome(
        Status.FAILED,
        identity=IDENTITY,
        attempts=1,
        ambiguous_attempts=1,
        error_code="lookup_failed",
        error_message=(
            "an earlier answer was lost and the web chat may exist; not sent again because "
            "the lookup failed: Service unavailable"
        ),
        lookup=LookupResult.FAILED,
    )
    assert not outcome.exhausted


def test_retries_exhausted_count_towards_stopping() -> None:
    outcome = outcome_of(history([BUSY, BUSY, BUSY]), 3, NOT_SENT)

    assert outcome.status is Status.FAILED
    assert outcome.exhausted
    assert outcome.error_code == "20503"
    assert outcome.http_status == 503
    assert outcome.error_message == "Service unavailable (gave up after 3 tries)"


def test_a_stop_before_the_next_try_is_not_exhaustion() -> None:
    outcome = outcome_of(history([BUSY, BUSY]), 3, NOT_SENT)

    assert outcome.status is Status.FAILED
    assert not outcome.exhausted
    assert outcome.error_message == "Service unavailable (the run stopped before the next try)"


def test_a_final_error_is_neither_exhausted_nor_retried() -> None:
    outcome = outcome_of(history([BAD]), 3, NOT_SENT)

    assert (outcome.status, outcome.exhausted, outcome.error_message) == (
        Status.FAILED,
        False,
        "Missing parameter",
    )


def test_never_attempted_keeps_the_lost_answers_of_earlier_runs() -> None:
    outcome = outcome_of(history([], prior=2), 5, NOT_SENT)

    assert outcome == Outcome(
        Status.NOT_ATTEMPTED, identity=IDENTITY, ambiguous_attempts=2, error_message=NOT_SENT
    )


# ---------------------------------------------------------------- settlement_of, recheck_outcome


def test_settlement_of_ignores_conversations_from_before_the_first_attempt() -> None:
    since = START.timestamp()
    old = found(SID, START - timedelta(seconds=CLOCK_SKEW + 1))  # an earlier web chat
    skewed = found(SID_2, START - timedelta(seconds=CLOCK_SKEW - 1))  # our clock is ahead
    undated = FoundConversation(sid=SID_3, date_created="", state="active")

    assert settlement_of((old,), since) == Settlement(LookupResult.ABSENT)
    assert settlement_of((old, skewed), since) == Settlement(LookupResult.FOUND, (skewed,))
    assert settlement_of((old,), None) == Settlement(LookupResult.FOUND, (old,))
    assert settlement_of((undated,), since) == Settlement(LookupResult.FOUND, (undated,))


def test_settlement_of_orders_duplicates_oldest_first() -> None:
    newer = found(SID, START + timedelta(seconds=5))
    older = found(SID_2, START + timedelta(seconds=1))

    assert settlement_of((newer, older), START.timestamp()) == Settlement(
        LookupResult.DUPLICATES, (older, newer)
    )
    assert settlement_of((), START.timestamp()) == Settlement(LookupResult.ABSENT)


CREATED_OUTCOME = Outcome(
    Status.CREATED, conversation_sid=SID, identity=IDENTITY, attempts=1, ambiguous_attempts=1
)


def test_recheck_confirms_a_single_web_chat() -> None:
    after = recheck_outcome(CREATED_OUTCOME, Settlement(LookupResult.FOUND, (found(SID),)))

    assert after == CREATED_OUTCOME  # exactly the recorded web chat: nothing to amend


def test_recheck_names_the_other_web_chats() -> None:
    settled = Settlement(LookupResult.DUPLICATES, (found(SID_3), found(SID), found(SID_2)))

    after = recheck_outcome(CREATED_OUTCOME, settled)

    assert after.conversation_sid == SID  # the ledger's one stays
    assert after.lookup is LookupResult.DUPLICATES
    assert after.duplicate_sids == (SID_2, SID_3)
    assert after.error_message == (
        f"3 web chats exist for this identity; the ledger keeps {SID}; "
        "`provisioner reconcile --close-duplicates` closes the others"
    )


def test_recheck_keeps_what_the_run_knows_when_the_index_lags_or_fails() -> None:
    assert recheck_outcome(CREATED_OUTCOME, Settlement(LookupResult.ABSENT)) == CREATED_OUTCOME
    failed = recheck_outcome(CREATED_OUTCOME, Settlement(LookupResult.FAILED, message="503"))
    assert failed == Outcome(
        Status.CREATED,
        conversation_sid=SID,
        identity=IDENTITY,
        attempts=1,
        ambiguous_attempts=1,
        lookup=LookupResult.FAILED,
    )


# ---------------------------------------------------------------- RowSender with a fake API


@dataclass
class Clocks:
    """Both clocks, moved only by the injected sleep, which records every wait."""

    monotonic: float = 1000.0
    wall: float = START.timestamp()
    sleeps: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.monotonic += seconds
        self.wall += seconds

    def clock(self) -> float:
        return self.monotonic

    def wall_clock(self) -> float:
        return self.wall


@dataclass
class FakeApi:
    """Answers from scripts; the last answer of a script repeats. Records when each call came."""

    clocks: Clocks
    creates: list[Attempt] = field(default_factory=list)
    lookups: list[Lookup] = field(default_factory=list)
    create_calls: list[tuple[float, str]] = field(default_factory=list)
    lookup_calls: list[tuple[float, str]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # "create" and "lookup", as they came

    def create_web_chat(self, parameters: Mapping[str, str]) -> Attempt:
        self.create_calls.append((self.clocks.monotonic, parameters["Identity"]))
        self.order.append("create")
        return self.creates.pop(0) if len(self.creates) > 1 else self.creates[0]

    def find_conversations(self, identity: str) -> Lookup:
        self.lookup_calls.append((self.clocks.monotonic, identity))
        self.order.append("lookup")
        return self.lookups.pop(0) if len(self.lookups) > 1 else self.lookups[0]


@pytest.fixture(autouse=True)
def seeded_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry policy's jitter draws from a seeded source, so every wait is reproducible."""
    monkeypatch.setattr(
        send_module, "retry_policy", functools.partial(retry_policy, source=random.Random(SEED))
    )


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def stopping() -> Stopping:
    return Stopping()


def sender(
    api: FakeApi, clocks: Clocks, stopping: Stopping, settings: SendSettings | None = None
) -> RowSender:
    return RowSender(
        api,
        AccountLimits(None, 4, clock=clocks.clock),
        stopping,
        settings or SendSettings(),
        sleep=clocks.sleep,
        clock=clocks.clock,
        wall_clock=clocks.wall_clock,
        jitter=random.Random(SEED),
    )


def jittered(*tries: int) -> list[float]:
    """The backoffs retry.py's policy draws after these tries, in this order, from a source
    seeded as sender()'s is (its create retries and lookups share it)."""
    source = random.Random(SEED)
    return [
        max(BACKOFF_FLOOR, source.uniform(0, min(MAX_BACKOFF, BACKOFF_BASE * 2 ** (n - 1))))
        for n in tries
    ]


def test_a_lost_answer_then_found_is_created_with_one_create(
    clocks: Clocks, stopping: Stopping
) -> None:
    api = FakeApi(clocks, creates=[LOST], lookups=[Lookup((found(SID_2),), http_status=200)])

    outcome = sender(api, clocks, stopping).send(Decision(row()))

    assert len(api.create_calls) == 1
    assert outcome.status is Status.CREATED
    assert outcome.conversation_sid == SID_2
    assert outcome.lookup is LookupResult.FOUND
    assert (outcome.attempts, outcome.ambiguous_attempts) == (1, 1)
    assert api.lookup_calls[0][1] == IDENTITY


def test_a_found_row_is_not_looked_up_again(clocks: Clocks, stopping: Stopping) -> None:
    api = FakeApi(
        clocks, creates=[LOST], lookups=[Lookup((found(SID_2),), http_status=200), LOOKUP_DOWN]
    )

    outcome = sender(api, clocks, stopping).send(Decision(row()))

    assert outcome.status is Status.CREATED
    assert outcome.conversation_sid == SID_2
    assert len(api.lookup_calls) == 1


def test_a_lost_answer_then_absent_is_sent_again(clocks: Clocks, stopping: Stopping) -> None:
    api = FakeApi(clocks, creates=[LOST, CREATED], lookups=[ABSENT])

    outcome = sender(api, clocks, stopping).send(Decision(row()))

    assert api.order == ["create", "lookup", "create"]
    assert outcome.status is Status.CREATED
    assert outcome.conversation_sid == SID
    assert outcome.lookup is LookupResult.ABSENT
    assert (outcome.attempts, outcome.ambiguous_attempts) == (2, 1)


def test_the_lookup_waits_for_the_index_to_catch_up(clocks: Clocks, stopping: Stopping) -> None:
    api = FakeApi(clocks, creates=[LOST, CREATED], lookups=[ABSENT])

    sender(api, clocks, stopping).send(Decision(row()))

    backoff, lag_wait = clocks.sleeps[:2]
    assert lag_wait == pytest.approx(LOOKUP_LAG - backoff)
    assert api.lookup_calls[0][0] - api.create_calls[0][0] >= LOOKUP_LAG


@pytest.mark.parametrize(
    ("status", "ambiguous", "lag_wait"),
    [
        # Killed (or cut off) in flight: the run may have sent it until it died, seconds after
        # marking it, and it died before this run began: a whole lag from this run's start.
        ("in_flight", 0, LOOKUP_LAG),
        # A lost answer recorded after its last try: only the rest of the lag since then.
        ("failed", 1, LOOKUP_LAG - 3.0),
    ],
    ids=["left-in-flight", "lost-answer-recorded"],
)
def test_a_row_an_earlier_run_may_have_sent_is_looked_up_first_once_the_index_had_time(
    clocks: Clocks, stopping: Stopping, status: str, ambiguous: int, lag_wait: float
) -> None:
    elapsed = 3.0  # since the earlier run last wrote the row
    prior = Entry(
        row_key="c-1",
        status=EntryStatus(status),
        conversation_sid="",
        identity=IDENTITY,
        request_id="",
        run_id="run-1",
        ambiguous_attempts=ambiguous,
        first_sent_at=iso(START - timedelta(seconds=elapsed)),
        updated_at=iso(START - timedelta(seconds=elapsed)),
    )
    api = FakeApi(clocks, creates=[CREATED], lookups=[ABSENT])

    outcome = sender(api, clocks, stopping).send(Decision(row(), prior))

    assert clocks.sleeps[0] == pytest.approx(lag_wait)
    assert api.order == ["lookup", "create"]
    assert outcome.status is Status.CREATED
    assert outcome.lookup is LookupResult.ABSENT
    assert (outcome.attempts, outcome.ambiguous_attempts) == (1, 1)  # the earlier lost answer


def test_an_old_conversation_of_the_same_identity_is_not_the_rows(
    clocks: Clocks, stopping: Stopping
) -> None:
    prior = Entry(
        "c-1", EntryStatus.IN_FLIGHT, "", IDENTITY, "", "run-1", 0, iso(START), iso(START)
    )
    long_before = found(SID_2, START - timedelta(days=30))
    api = FakeApi(clocks, creates=[CREATED], lookups=[Lookup((long_before,), http_status=200)])

    outcome = sender(api, clocks, stopping).send(Decision(row(), prior))

    assert outcome.conversation_sid == SID  # sent, not taken for the old conversation
    assert outcome.lookup is LookupResult.ABSENT


def test_refused_lookups_are_reported_once_and_never_retried(
    clocks: Clocks, stopping: Stopping, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeApi(clocks, creates=[LOST], lookups=[REFUSED])
    rows_sender = sender(api, clocks, stopping)

    with caplog.at_level(logging.WARNING, logger="provisioner"):
        first = rows_sender.send(Decision(row(1)))
        second = rows_sender.send(Decision(row(2, identity="prv-other")))

    assert len(api.create_calls) == 2  # each row once: neither is sent again
    assert len(api.lookup_calls) == 1  # the second row is not looked up at all
    for outcome in (first, second):
        assert outcome.status is Status.FAILED
        assert outcome.error_code == "lookup_failed"
        assert outcome.lookup is LookupResult.FAILED
        assert "Twilio refused the lookup (HTTP 403)" in outcome.error_message
    refusals = [r for r in caplog.records if "refused the lookup" in r.getMessage()]
    assert len(refusals) == 1
    assert "ParticipantConversations" in rows_sender.lookups_refused


def test_a_lookup_that_keeps_failing_is_tried_with_backoff_then_fails_the_row(
    clocks: Clocks, stopping: Stopping
) -> None:
    api = FakeApi(clocks, creates=[LOST], lookups=[LOOKUP_DOWN])

    outcome = sender(api, clocks, stopping).send(Decision(row()))

    assert len(api.create_calls) == 1  # never sent again blindly
    assert outcome.status is Status.FAILED
    assert outcome.error_code == "lookup_failed"
    assert outcome.error_message.endswith("the lookup failed: Service unavailable")
    # The create's retry wait, the lag, then a jittered backoff between lookup tries.
    retry_wait, *backoffs = jittered(1, *range(1, LOOKUP_TRIES))
    assert clocks.sleeps[0] == retry_wait
    assert clocks.sleeps[2 : 2 + len(backoffs)] == backoffs


def test_a_lookup_that_keeps_failing_is_tried_lookup_tries_times(
    clocks: Clocks, stopping: Stopping
) -> None:
    api = FakeApi(clocks, creates=[LOST], lookups=[LOOKUP_DOWN])

    sender(api, clocks, stopping).send(Decision(row()))

    assert len(api.lookup_calls) == LOOKUP_TRIES


def test_no_backoff_after_the_last_lookup_try(clocks: Clocks, stopping: Stopping) -> None:
    api = FakeApi(clocks, lookups=[LOOKUP_DOWN])

    sender(api, clocks, stopping).recheck(row(), CREATED_OUTCOME, START.timestamp())

    assert len(api.lookup_calls) == LOOKUP_TRIES
    assert clocks.sleeps == jittered(*range(1, LOOKUP_TRIES))


def test_a_throttled_lookup_pauses_for_its_retry_after(clocks: Clocks, stopping: Stopping) -> None:
    retry_after = 5.0  # more than any first backoff, so only the limits' pause can explain it
    throttled = Lookup(http_status=429, error_code="20429", retry_after=retry_after)
    api = FakeApi(clocks, creates=[LOST, CREATED], lookups=[throttled, ABSENT])

    outcome = sender(api, clocks, stopping).send(Decision(row()))

    assert outcome.status is Status.CREATED
    first, second = (moment for moment, _ in api.lookup_calls[:2])
    assert second - first >= retry_after


def test_a_last_lost_answer_is_settled_before_the_row_ends(
    clocks: Clocks, stopping: Stopping
) -> None:
    api = FakeApi(clocks, creates=[LOST], lookups=[ABSENT])

    outcome = sender(api, clocks, stopping, SendSettings(max_attempts=2)).send(Decision(row()))

    assert len(api.create_calls) == 2
    assert len(api.lookup_calls) == 2  # before the second try, and after it
    assert outcome.status is Status.FAILED
    assert outcome.lookup is LookupResult.ABSENT
    assert outcome.ambiguous_attempts == 2


def test_without_lookups_a_lost_answer_is_sent_again(clocks: Clocks, stopping: Stopping) -> None:
    api = FakeApi(clocks, creates=[LOST, CREATED], lookups=[ABSENT])

    outcome = sender(api, clocks, stopping, SendSettings(lookups=False)).send(Decision(row()))

    assert api.lookup_calls == []
    assert len(api.create_calls) == 2
    assert outcome.status is Status.CREATED


def test_retries_exhausted(clocks: Clocks, stopping: Stopping) -> None:
    api = FakeApi(clocks, creates=[BUSY])

    outcome = sender(api, clocks, stopping, SendSettings(max_attempts=3)).send(Decision(row()))

    assert len(api.create_calls) == 3
    assert len(clocks.sleeps) == 2  # a backoff between tries, none after the last
    assert outcome.exhausted
    assert outcome.error_message == "Service unavailable (gave up after 3 tries)"


def test_rejected_credentials_stop_the_run(clocks: Clocks, stopping: Stopping) -> None:
    api = FakeApi(clocks, creates=[REJECTED])

    outcome = sender(api, clocks, stopping).send(Decision(row()))

    assert len(api.create_calls) == 1
    assert outcome.status is Status.FAILED
    assert stopping.reason == "Twilio rejected the credentials (HTTP 401); check them"


def test_a_stopped_run_sends_nothing(clocks: Clocks, stopping: Stopping) -> None:
    api = FakeApi(clocks, creates=[CREATED])
    stopping.stop("test")

    outcome = sender(api, clocks, stopping).send(Decision(row()))

    assert api.create_calls == []
    assert outcome == Outcome(Status.NOT_ATTEMPTED, identity=IDENTITY, error_message=NOT_SENT)


def test_recheck_looks_the_row_up_once(clocks: Clocks, stopping: Stopping) -> None:
    api = FakeApi(clocks, lookups=[Lookup((found(SID), found(SID_2)), http_status=200)])

    after = sender(api, clocks, stopping).recheck(row(), CREATED_OUTCOME, START.timestamp())

    assert len(api.lookup_calls) == 1
    assert api.create_calls == []
    assert after.lookup is LookupResult.DUPLICATES
    assert after.duplicate_sids == (SID_2,)


# ---------------------------------------------------------------- a stop cuts a lookup short


@pytest.mark.parametrize("stop_at", ["the retry wait", "the lag wait"])
def test_a_lookup_a_stop_cuts_short_is_stopped_not_a_failed_lookup(
    clocks: Clocks, stopping: Stopping, stop_at: str
) -> None:
    api = FakeApi(clocks, creates=[LOST], lookups=[ABSENT])
    waits = {"the retry wait": 1, "the lag wait": 2}[stop_at]

    def sleep(seconds: float) -> None:  # Ctrl-C while the row waits
        clocks.sleep(seconds)
        if len(clocks.sleeps) == waits:
            stopping.stop("interrupted by SIGINT")

    rows_sender = RowSender(
        api,
        AccountLimits(None, 4, clock=clocks.clock),
        stopping,
        SendSettings(),
        sleep=sleep,
        clock=clocks.clock,
        wall_clock=clocks.wall_clock,
    )

    outcome = rows_sender.send(Decision(row()))

    assert len(clocks.sleeps) == 2  # the retry wait, then the lag wait: nothing after the stop
    assert (outcome.status, outcome.error_code) == (Status.FAILED, ErrorCode.STOPPED)
    assert outcome.lookup is LookupResult.NONE  # no lookup failed: none could be made
    assert outcome.ambiguous_attempts == 1  # the ledger keeps it unsettled: looked up next run
    assert len(api.create_calls) == 1  # never sent again blindly
    assert api.lookup_calls == []


def test_a_stop_during_a_lookups_backoff_is_stopped_not_a_failed_lookup(
    clocks: Clocks, stopping: Stopping
) -> None:
    api = FakeApi(clocks, lookups=[LOOKUP_DOWN])

    def sleep(seconds: float) -> None:  # Ctrl-C while the lookup waits to try again
        clocks.sleep(seconds)
        stopping.stop("interrupted by SIGINT")

    lookups = Lookups(api, AccountLimits(None, 4, clock=clocks.clock), stopping, sleep)

    settlement = lookups.settle(IDENTITY, None)

    assert len(api.lookup_calls) == 1  # no try after the stop
    assert (settlement.result, settlement.stopped) == (LookupResult.FAILED, True)


def test_a_lookup_that_failed_every_try_is_failed_not_stopped(
    clocks: Clocks, stopping: Stopping
) -> None:
    api = FakeApi(clocks, lookups=[LOOKUP_DOWN])
    lookups = Lookups(api, AccountLimits(None, 4, clock=clocks.clock), stopping, clocks.sleep)

    settlement = lookups.settle(IDENTITY, None)

    assert len(api.lookup_calls) == LOOKUP_TRIES
    assert (settlement.result, settlement.stopped) == (LookupResult.FAILED, False)
    assert settlement.message == "the lookup failed: Service unavailable"


def test_a_final_check_a_stop_cuts_short_keeps_what_the_run_knows(
    clocks: Clocks, stopping: Stopping
) -> None:
    api = FakeApi(clocks, lookups=[ABSENT])
    stopping.stop("interrupted by SIGTERM")

    checked = sender(api, clocks, stopping).recheck(row(), CREATED_OUTCOME, START.timestamp())

    assert checked == CREATED_OUTCOME
    assert api.lookup_calls == []


@pytest.mark.parametrize(
    ("lookups", "permission_named"), [([REFUSED], True), ([LOOKUP_DOWN], False)]
)
def test_the_permission_is_named_only_after_twilio_refused_a_lookup(
    clocks: Clocks, stopping: Stopping, lookups: list[Lookup], permission_named: bool
) -> None:
    api = FakeApi(clocks, creates=[LOST], lookups=lookups)
    rows_sender = sender(api, clocks, stopping)

    outcome = rows_sender.send(Decision(row()))

    assert (outcome.error_code, outcome.lookup) == ("lookup_failed", LookupResult.FAILED)
    cause = explain(outcome.error_code, outcome.status.value, outcome.error_message)
    said = " ".join([cause.meaning, cause.next_step, outcome.error_message])
    assert ("Conversations" in said) is permission_named
    assert bool(rows_sender.lookups_refused) is permission_named


def test_a_failed_lookup_is_said_once_in_the_log_and_at_reconcile_s_end(
    provisioner: Cli, tmp_path: Path
) -> None:
    provisioner.knows_the_scope()  # no lookup before the first send: the one scripted below
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, [["C1", sid(101), "Ada"]])
    provisioner.emulator.script(sid(101), Fault(drop=True))  # the answer is lost
    identity = derive_identity(provisioner.scope, "C1")
    server_error = Fault(status=500, code=20500)
    provisioner.emulator.script_lookup(identity, *[server_error] * LOOKUP_TRIES)

    provisioner("create", str(source), "--run-id", "r1", "--rate", "0", expect=1)

    (row,) = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert (row["status"], row["error_code"], row["lookup"]) == (
        "failed",
        "lookup_failed",
        "failed",
    )
    log = (provisioner.run_dir("r1") / "run.log").read_text().lower().splitlines()
    about_the_lookup = [line for line in log if "lookup failed" in line]
    assert about_the_lookup  # the log says it
    assert all(line.count("lookup") == 1 for line in about_the_lookup)  # once a line

    provisioner.emulator.script_lookup(identity, *[server_error] * LOOKUP_TRIES)
    endpoint = ["--out", str(provisioner.out), "--base-url", provisioner.emulator.url]
    result = provisioner("reconcile", *endpoint, "--rate", "0", expect=1)

    ended = [line.lower() for line in said(result.stderr) if "fail" in line.lower()]
    assert ended  # the end says a row is not settled, and why
    assert all(line.count("failed") == 1 for line in ended)
