"""plan(): a row and the ledger's entry -> what to do with it, as a value."""

from __future__ import annotations

import pytest

from provisioner.ledger import Entry
from provisioner.outcome import Outcome
from provisioner.plan import Decision, plan
from provisioner.rows import Row
from provisioner.vocabulary import EntryStatus, Status

SID = "CH" + "a" * 32


def row(key: str = "c-1", problem: str | None = None, code: str = "") -> Row:
    return Row(1, ("IG" + "0" * 32,), {"AddressSid": "IG" + "0" * 32}, key, problem, code)


def entry(
    status: str, *, ambiguous: int = 0, key: str = "c-1", run_id: str = "run-1", sid: str = ""
) -> Entry:
    return Entry(
        row_key=key,
        status=EntryStatus(status),
        conversation_sid=sid,
        identity="prv-identity",
        request_id="RQ1",
        run_id=run_id,
        ambiguous_attempts=ambiguous,
        first_sent_at="2026-11-25T10:00:00.000000Z",
        updated_at="2026-11-25T10:00:05.000000Z",
    )


@pytest.mark.parametrize(
    ("prior", "force"),
    [
        (None, False),
        (None, True),
        (entry("in_flight"), False),
        (entry("in_flight"), True),
        (entry("created", sid=SID), True),  # --force never sends invalid values
    ],
)
def test_an_invalid_row_is_invalid_unless_its_key_was_created(
    prior: Entry | None, force: bool
) -> None:
    decision = plan(
        row(problem="AddressSid is empty", code="missing_address_sid"), prior, force=force
    )

    assert decision.outcome == Outcome(
        Status.INVALID, error_code="missing_address_sid", error_message="AddressSid is empty"
    )
    assert not decision.to_send
    assert not decision.unsettled


def test_a_new_row_is_sent() -> None:
    decision = plan(row(), None, force=False)

    assert decision == Decision(row())
    assert decision.to_send
    assert not decision.unsettled
    assert decision.prior_ambiguous == 0


def test_a_created_row_is_existing() -> None:
    prior = entry("created", ambiguous=1, sid=SID, run_id="run-7")

    decision = plan(row(), prior, force=False)

    assert not decision.to_send
    assert decision.prior is prior
    assert decision.outcome == Outcome(
        Status.EXISTING,
        conversation_sid=SID,
        identity="prv-identity",
        ambiguous_attempts=1,
        request_id="RQ1",
        error_message="created earlier, by run run-7",
    )


def test_force_sends_a_created_row_again_without_a_lookup() -> None:
    prior = entry("created", ambiguous=2, sid=SID)

    decision = plan(row(), prior, force=True)

    assert decision.to_send
    assert decision.forced
    assert decision.prior is prior
    assert not decision.unsettled  # it exists: looking it up would only find it
    assert decision.prior_ambiguous == 0


def test_a_key_changed_by_a_spreadsheet_is_invalid() -> None:
    original = entry("created", key="00123", run_id="run-3", sid=SID)

    decision = plan(row("123"), None, force=False, changed_from=original)

    assert not decision.to_send
    assert decision.changed_from is original
    assert decision.outcome is not None
    assert decision.outcome.status is Status.INVALID
    assert decision.outcome.error_code == "key_changed"
    assert decision.outcome.error_message == (
        "row key '123' looks like '00123' changed by a spreadsheet, which run run-3 created; "
        "restore the original ID (keep it as text), or pass --force to create it anyway"
    )


def test_force_sends_a_changed_key() -> None:
    original = entry("created", key="00123", sid=SID)

    decision = plan(row("123"), None, force=True, changed_from=original)

    assert decision.to_send
    assert not decision.forced  # forced means "created before under this very key"


def test_a_changed_key_with_its_own_entry_follows_that_entry() -> None:
    original = entry("created", key="00123", sid=SID)
    own = entry("failed", key="123")

    decision = plan(row("123"), own, force=False, changed_from=original)

    assert decision.to_send
    assert decision.prior is own


@pytest.mark.parametrize(
    ("status", "ambiguous", "unsettled", "prior_ambiguous"),
    [
        ("in_flight", 0, True, 1),  # a killed run: its request may have gone out
        ("in_flight", 2, True, 3),
        ("failed", 2, True, 2),  # lost answers: the web chat may exist
        ("failed", 0, False, 0),  # every answer read: nothing to look up
    ],
)
def test_rows_an_earlier_run_may_have_created_are_unsettled(
    status: str, ambiguous: int, unsettled: bool, prior_ambiguous: int
) -> None:
    prior = entry(status, ambiguous=ambiguous)

    decision = plan(row(), prior, force=False)

    assert decision.to_send
    assert decision.prior is prior
    assert decision.unsettled is unsettled
    assert decision.prior_ambiguous == prior_ambiguous


def test_force_does_not_skip_the_lookup_of_an_unsettled_row() -> None:
    decision = plan(row(), entry("in_flight", ambiguous=1), force=True)

    assert decision.to_send
    assert not decision.forced
    assert decision.unsettled
    assert decision.prior_ambiguous == 2


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("missing_address_sid", Status.EXISTING),
        ("invalid_address_sid", Status.EXISTING),
        ("not_text", Status.EXISTING),
        ("duplicate_customer_id", Status.INVALID),  # another customer given the same ID?
        ("duplicate_row_key", Status.INVALID),
        ("duplicate_identity", Status.INVALID),
    ],
)
def test_a_created_key_is_existing_whatever_its_values_say_now(code: str, status: Status) -> None:
    created = entry("created", sid=SID)

    decision = plan(row(problem="stale", code=code), created, force=False)

    assert decision.outcome is not None
    assert decision.outcome.status is status
    assert not decision.to_send
    if status is Status.EXISTING:
        assert decision.outcome.conversation_sid == SID


def test_keys_that_differ_only_as_a_spreadsheet_changes_them_are_key_changed_unless_forced() -> (
    None
):
    twin = Row(3, (), {"AddressSid": "IG" + "0" * 32}, "2004", twin=(2, "002004"))

    flagged = plan(twin, None, force=False)
    forced = plan(twin, None, force=True)
    created = plan(twin, entry("created", key="2004", sid=SID), force=False)

    assert flagged.outcome is not None
    assert (flagged.outcome.status, flagged.outcome.error_code) == (Status.INVALID, "key_changed")
    assert "002004" in flagged.outcome.error_message
    assert "row 2" in flagged.outcome.error_message
    assert forced.to_send
    assert forced.outcome is None
    assert created.outcome is not None
    assert created.outcome.status is Status.EXISTING
