"""The SQLite ledger on real files: transactions, restore, unsettled rows, status, the lock."""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner import ledger as ledger_module
from provisioner.errors import LedgerError
from provisioner.ledger import (
    IDENTITY_CHECK_EVERY,
    Entry,
    Ledger,
    lock_holder,
    open_ledger,
    read_status,
)

SCOPE = "AC123@flex-api.twilio.com"
OTHER_SCOPE = "AC999@flex-api.twilio.com"
SID = "CH" + "a" * 32
OTHER_SID = "CH" + "b" * 32


@pytest.fixture(autouse=True)
def counting_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write gets a distinct, increasing time, so a restored time is told from a new one."""
    ticks = itertools.count(1)
    monkeypatch.setattr(
        ledger_module, "utc_now", lambda: f"2026-11-25T10:00:{next(ticks):02d}.000000Z"
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
    lookup: str = "",
    duplicate_sids: str = "",
    key_fingerprint: str | None = None,
) -> None:
    ledger.record_created(
        key,
        "run-1",
        conversation_sid=SID,
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


def test_a_file_that_is_not_a_ledger_is_refused(path: Path) -> None:
    path.parent.mkdir()
    path.write_text("customer_id,AddressSid\n")

    with pytest.raises(LedgerError, match="not a provisioner ledger"), open_ledger(path, SCOPE):
        pass


def test_writes_in_a_transaction_are_kept_after_reopening(path: Path) -> None:
    with open_ledger(path, SCOPE) as opened, opened.transaction():
        opened.mark_in_flight("c-1", "run-1", "prv-c-1")
        created(opened, "c-2")

    with open_ledger(path, SCOPE) as reopened:
        assert reopened.lookup("c-1") == Entry(
            "c-1",
            "in_flight",
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
            "created",
            SID,
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
        ledger.record_failed("c-1", "run-2", ambiguous_attempts=3, lookup="failed")

    assert ledger.lookup("c-1") == before


def test_record_failed_replaces_an_in_flight_mark(ledger: Ledger) -> None:
    with ledger.transaction():
        ledger.mark_in_flight("c-1", "run-1", "prv-c-1")
        ledger.record_failed("c-1", "run-1", ambiguous_attempts=2, lookup="failed")

    entry = ledger.lookup("c-1")
    assert entry is not None
    assert (entry.status, entry.ambiguous_attempts, entry.lookup) == ("failed", 2, "failed")


def test_unsettled_lists_what_may_exist_at_twilio_unrecorded(path: Path) -> None:
    with open_ledger(path, SCOPE) as opened, opened.transaction():
        opened.mark_in_flight("in-flight", "run-1")
        opened.record_failed("lost-answer", "run-1", ambiguous_attempts=1)
        opened.record_failed("plain-failure", "run-1", ambiguous_attempts=0)
        created(opened, "duplicates", lookup="duplicates", duplicate_sids=OTHER_SID)
        created(opened, "lookup-failed", lookup="failed")
        created(opened, "found", lookup="found")
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

        found = opened.created_with_fingerprint_between("fp-123", "fp-123")
        nothing = opened.created_with_fingerprint_between("fp-789", "fp-789")

    assert sorted(entry.row_key for entry in found) == ["0000123", "00123"]
    assert all(entry.status == "created" for entry in found)
    assert nothing == []


def fill_for_status(path: Path) -> None:
    with open_ledger(path, SCOPE) as opened, opened.transaction():
        opened.begin_run("run-1", "customers.csv", forced=False)
        created(opened, "c-1")
        created(opened, "c-2")
        opened.record_failed("c-3", "run-1", ambiguous_attempts=1)
        opened.end_run("run-1", exit_code=1, counts={"created": 2, "failed": 1}, stop_reason="")
    with open_ledger(path, OTHER_SCOPE) as other, other.transaction():
        other.begin_run("run-2", "more.csv", forced=False)
        other.mark_in_flight("d-1", "run-2")


def check_status(path: Path) -> None:
    status = read_status(path)
    assert [run.run_id for run in status.runs] == ["run-2", "run-1"]  # newest first
    first = status.runs[1]
    assert (first.scope, first.input, first.exit_code, first.created) == (
        SCOPE,
        "customers.csv",
        1,
        2,
    )
    assert first.counts == {"created": 2, "failed": 1}
    assert status.runs[0].ended_at == ""
    assert status.created == {SCOPE: 2}
    assert status.unsettled == {SCOPE: 1, OTHER_SCOPE: 1}


def test_read_status_counts_runs_created_and_unsettled(path: Path) -> None:
    fill_for_status(path)

    check_status(path)


def test_read_status_of_a_missing_ledger_says_how_one_is_made(path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger here yet"):
        read_status(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the mode; see the next test")
def test_read_status_reads_a_ledger_its_user_may_not_write(path: Path) -> None:
    fill_for_status(path)
    path.chmod(0o400)
    path.parent.chmod(0o500)
    try:
        check_status(path)
    finally:
        path.parent.chmod(0o700)
        path.chmod(0o600)


@pytest.mark.skipif(os.geteuid() != 0, reason="chattr needs root; the test above covers users")
def test_read_status_reads_a_ledger_in_a_folder_even_root_cannot_write(path: Path) -> None:
    """As root, modes stop nothing: an immutable folder makes SQLite's read-only open fail the
    same way (it cannot create the -shm file), so the immutable fallback is what reads it."""
    fill_for_status(path)
    if shutil.which("chattr") is None:
        pytest.skip("no chattr on this system")
    made = subprocess.run(["chattr", "+i", str(path.parent)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"this file system has no immutable flag: {made.stderr.decode().strip()}")
    try:
        with pytest.raises(PermissionError):
            (path.parent / "probe").touch()  # the folder really cannot be written
        check_status(path)
    finally:
        subprocess.run(["chattr", "-i", str(path.parent)], check=True)


def test_lock_holder_names_the_run_holding_the_lock_and_then_nobody(path: Path) -> None:
    assert lock_holder(path) is None  # no lock file yet

    with open_ledger(path, SCOPE):
        assert lock_holder(path) == os.getpid()
        link = path.with_name("link.db")
        link.symlink_to(path)
        assert lock_holder(link) == os.getpid()  # another path to the same ledger
        with (
            pytest.raises(LedgerError, match=rf"another run \(pid {os.getpid()}\)"),
            open_ledger(link, SCOPE),
        ):
            pass

    assert lock_holder(path) is None
    with open_ledger(path, SCOPE):  # the lock was freed
        pass
