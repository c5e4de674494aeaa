"""The SQLite ledger's entries on real files: transactions, restore, unsettled rows."""

from __future__ import annotations

import itertools
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner import timestamps
from provisioner.errors import LedgerError
from provisioner.ledger import Entry, Ledger, open_ledger
from provisioner.ledger_lock import IDENTITY_CHECK_EVERY
from provisioner.vocabulary import EntryStatus, LookupResult
from tests.conftest import conversation_sid_of

SCOPE = "AC123@flex-api.twilio.com"
OTHER_SCOPE = "AC999@flex-api.twilio.com"
SID = "CH" + "a" * 32


OTHER_SID = "CH" + "b" * 32


@pytest.fixture(autouse=True)
def counting_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write gets a distinct, increasing time, so a restored time is told from a new one."""
    ticks = itertools.count(1)
    monkeypatch.setattr(
        timestamps, "utc_now", lambda: f"2026-11-25T10:00:{next(ticks):02d}.000000Z"
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.db"


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    with open_ledger(path, SCOPE) as opened:
        yield opened


def created(
    ledger: Ledger,
    key: str,
    *,
    lookup: LookupResult = LookupResult.NONE,
    duplicate_sids: str = "",
    key_fingerprint: str | None = None,
) -> None:
    ledger.record_created(
        key,
        "run-1",
        conversation_sid=conversation_sid_of(key),
        identity=f"prv-{key}",
        request_id="RQ1",
        ambiguous_attempts=0,
        lookup=lookup,
        duplicate_sids=duplicate_sids,
        key_fingerprint=key_fingerprint,
    )


def test_a_new_ledger_is_made_private_with_its_folder(path: Path) -> None:
    with open_ledger(path, SCOPE) as opened:
        assert opened.lookup("c-1") is None

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_writes_in_a_transaction_are_kept_after_reopening(path: Path) -> None:
    with open_ledger(path, SCOPE) as opened, opened.transaction():
        opened.mark_in_flight("c-1", "run-1", "prv-c-1")
        created(opened, "c-2")

    with open_ledger(path, SCOPE) as reopened:
        assert reopened.lookup("c-1") == Entry(
            "c-1",
            EntryStatus.IN_FLIGHT,
            "",
            "prv-c-1",
            "",
            "run-1",
            0,
            first_sent_at="2026-11-25T10:00:01.000000Z",
            updated_at="2026-11-25T10:00:01.000000Z",
        )
        assert reopened.lookup("c-2") == Entry(
            "c-2",
            EntryStatus.CREATED,
            conversation_sid_of("c-2"),
            "prv-c-2",
            "RQ1",
            "run-1",
            0,
            updated_at="2026-11-25T10:00:02.000000Z",
        )


def write_then_fail(ledger: Ledger) -> None:
    with ledger.transaction():
        ledger.mark_in_flight("c-1", "run-1", "prv-c-1")
        created(ledger, "c-2")
        raise RuntimeError("boom")


def test_a_failed_transaction_leaves_nothing(path: Path) -> None:
    with open_ledger(path, SCOPE) as opened:
        with pytest.raises(RuntimeError, match="boom"):
            write_then_fail(opened)

        assert opened.lookup("c-1") is None
        assert opened.lookup("c-2") is None
        with opened.transaction():  # the connection is usable again
            created(opened, "c-3")

    with open_ledger(path, SCOPE) as reopened:
        assert reopened.lookup("c-1") is None
        assert reopened.lookup("c-3") is not None


@pytest.mark.parametrize("status", ["created", "failed"])
def test_restore_puts_a_prior_entry_back(ledger: Ledger, status: str) -> None:
    with ledger.transaction():
        ledger.mark_in_flight("c-1", "run-1", "prv-c-1")
        if status == "created":
            created(ledger, "c-1")
        else:
            ledger.record_failed("c-1", "run-1", ambiguous_attempts=1)
    prior = ledger.lookup("c-1")
    assert prior is not None
    assert prior.status == status

    with ledger.transaction():
        ledger.mark_in_flight("c-1", "run-2", "prv-c-1")
    marked = ledger.lookup("c-1")
    assert marked is not None
    assert (marked.status, marked.run_id) == ("in_flight", "run-2")
    assert marked.updated_at != prior.updated_at

    with ledger.transaction():
        ledger.restore("c-1", prior)

    assert ledger.lookup("c-1") == prior


def test_restore_without_a_prior_entry_removes_the_mark(ledger: Ledger) -> None:
    with ledger.transaction():
        ledger.mark_in_flight("c-1", "run-1", "prv-c-1")
    with ledger.transaction():
        ledger.restore("c-1", None)

    assert ledger.lookup("c-1") is None


def test_restore_without_a_prior_entry_keeps_a_row_that_finished(ledger: Ledger) -> None:
    with ledger.transaction():
        ledger.mark_in_flight("c-1", "run-1", "prv-c-1")
        created(ledger, "c-1")
        ledger.restore("c-1", None)

    entry = ledger.lookup("c-1")
    assert entry is not None
    assert entry.status == "created"


def test_the_first_send_time_survives_retries_but_not_a_forced_resend(ledger: Ledger) -> None:
    with ledger.transaction():
        ledger.mark_in_flight("failed-row", "run-1")
        ledger.record_failed("failed-row", "run-1", ambiguous_attempts=1)
        ledger.mark_in_flight("created-row", "run-1")
        created(ledger, "created-row")
    with ledger.transaction():
        ledger.mark_in_flight("failed-row", "run-2")
        ledger.mark_in_flight("created-row", "run-2")

    failed_again = ledger.lookup("failed-row")
    forced = ledger.lookup("created-row")
    assert failed_again is not None
    assert forced is not None
    assert failed_again.first_sent_at == "2026-11-25T10:00:01.000000Z"
    assert forced.first_sent_at == "2026-11-25T10:00:06.000000Z"


def test_a_ledger_deleted_during_the_run_fails_a_transaction_within_a_second(
    path: Path,
) -> None:
    now = [100.0]
    with open_ledger(path, SCOPE, clock=lambda: now[0]) as ledger:
        with ledger.transaction():
            ledger.mark_in_flight("c-1", "run-1")
        path.unlink()
        with ledger.transaction():  # checked at most once a second: a stat costs a commit
            ledger.mark_in_flight("c-2", "run-1")
        now[0] += IDENTITY_CHECK_EVERY

        with (
            pytest.raises(LedgerError, match="deleted or replaced during the run"),
            ledger.transaction(),
        ):
            created(ledger, "c-1")


def test_a_ledger_replaced_during_the_run_fails_the_next_transaction(
    ledger: Ledger, path: Path
) -> None:
    copy = path.with_name("copy.db")
    shutil.copyfile(path, copy)
    os.replace(copy, path)

    with (
        pytest.raises(LedgerError, match="deleted or replaced during the run"),
        ledger.transaction(),
    ):
        created(ledger, "c-1")


def test_record_failed_never_downgrades_a_created_entry(ledger: Ledger) -> None:
    with ledger.transaction():
        created(ledger, "c-1")
    before = ledger.lookup("c-1")

    with ledger.transaction():
        ledger.record_failed("c-1", "run-2", ambiguous_attempts=3, lookup=LookupResult.FAILED)

    assert ledger.lookup("c-1") == before


def test_record_failed_replaces_an_in_flight_mark(ledger: Ledger) -> None:
    with ledger.transaction():
        ledger.mark_in_flight("c-1", "run-1", "prv-c-1")
        ledger.record_failed("c-1", "run-1", ambiguous_attempts=2, lookup=LookupResult.FAILED)

    entry = ledger.lookup("c-1")
    assert entry is not None
    assert (entry.status, entry.ambiguous_attempts, entry.lookup) == ("failed", 2, "failed")


def test_unsettled_lists_what_may_exist_at_twilio_unrecorded(path: Path) -> None:
    with open_ledger(path, SCOPE) as opened, opened.transaction():
        opened.mark_in_flight("in-flight", "run-1")
        opened.record_failed("lost-answer", "run-1", ambiguous_attempts=1)
        opened.record_failed("plain-failure", "run-1", ambiguous_attempts=0)
        created(opened, "duplicates", lookup=LookupResult.DUPLICATES, duplicate_sids=OTHER_SID)
        created(opened, "lookup-failed", lookup=LookupResult.FAILED)
        created(opened, "found", lookup=LookupResult.FOUND)
        created(opened, "created")
    with open_ledger(path, OTHER_SCOPE) as other, other.transaction():
        other.mark_in_flight("other-scope", "run-2")

    with open_ledger(path, SCOPE) as opened:
        keys = sorted(entry.row_key for entry in opened.unsettled())
        in_flight = opened.in_flight_count()

    assert keys == ["duplicates", "in-flight", "lookup-failed", "lost-answer"]
    assert in_flight == 1


def test_created_with_fingerprint_finds_created_entries_of_this_scope(path: Path) -> None:
    with open_ledger(path, OTHER_SCOPE) as other, other.transaction():
        created(other, "00123", key_fingerprint="fp-123")
    with open_ledger(path, SCOPE) as opened:
        with opened.transaction():
            created(opened, "00123", key_fingerprint="fp-123")
            created(opened, "0000123", key_fingerprint="fp-123")
            created(opened, "456", key_fingerprint="fp-456")
            opened.record_failed("123", "run-1", ambiguous_attempts=0)

        found, nothing = opened.created_with_fingerprints_in(
            [("fp-123", "fp-123"), ("fp-789", "fp-789")]
        )

    assert sorted(entry.row_key for entry in found) == ["0000123", "00123"]
    assert all(entry.status == "created" for entry in found)
    assert nothing == []
