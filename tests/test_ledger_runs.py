"""The ledger's runs table and `provisioner status` on real files."""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from provisioner import timestamps
from provisioner.errors import LedgerError
from provisioner.ledger import Ledger, open_ledger
from provisioner.ledger_runs import DID_NOT_FINISH, IN_PROGRESS, RunRecord, read_status, run_state
from provisioner.ledger_schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from tests.conftest import conversation_sid_of

SCOPE = "AC123@flex-api.twilio.com"
OTHER_SCOPE = "AC999@flex-api.twilio.com"
SID = "CH" + "a" * 32


@pytest.fixture(autouse=True)
def counting_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write, of a run or an entry, gets a distinct and increasing time."""
    ticks = itertools.count(1)

    def now() -> str:
        return f"2026-11-25T10:00:{next(ticks):02d}.000000Z"

    monkeypatch.setattr(timestamps, "utc_now", now)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.db"


def created(ledger: Ledger, key: str) -> None:
    ledger.record_created(
        key,
        "run-1",
        conversation_sid=conversation_sid_of(key),
        identity=f"prv-{key}",
        request_id="RQ1",
        ambiguous_attempts=0,
    )


def record(pid: int, exit_code: int | None) -> RunRecord:
    return RunRecord("r1", SCOPE, "in.csv", pid, "2026-11-25T10:00:00Z", "", exit_code, {}, "", 0)


@pytest.mark.parametrize(
    ("exit_code", "holder", "state"),
    [
        (0, None, "exit 0"),
        (3, 41, "exit 3"),  # ended: its exit code, whoever holds the lock now
        (None, 41, IN_PROGRESS),  # its process holds the lock
        (None, 42, DID_NOT_FINISH),  # another run holds it
        (None, None, DID_NOT_FINISH),  # nobody holds it: killed or crashed
    ],
)
def test_a_run_s_state_is_its_exit_or_whether_its_process_holds_the_lock(
    exit_code: int | None, holder: int | None, state: str
) -> None:
    assert run_state(record(41, exit_code), holder) == state


def test_a_run_is_remembered_from_its_start_to_its_end(path: Path) -> None:
    with open_ledger(path, SCOPE) as opened:
        with opened.transaction():
            opened.begin_run("run-1", "customers.csv", forced=True)
            created(opened, "c-1")
        with opened.transaction():
            opened.end_run(
                "run-1", exit_code=3, counts={"created": 1, "failed": 0}, stop_reason="interrupted"
            )

    assert read_status(path).runs == [
        RunRecord(
            run_id="run-1",
            scope=SCOPE,
            input="customers.csv",
            pid=os.getpid(),
            started_at="2026-11-25T10:00:01.000000Z",
            ended_at="2026-11-25T10:00:03.000000Z",
            exit_code=3,
            counts={"created": 1, "failed": 0},
            stop_reason="interrupted",
            created=1,
        )
    ]


def test_read_status_of_an_older_ledger_says_create_migrates_it(path: Path) -> None:
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        for statement in MIGRATIONS[0]:
            db.execute(statement)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("PRAGMA user_version = 1")
    db.close()

    with pytest.raises(LedgerError) as raised:
        read_status(path)

    assert str(raised.value) == (
        f"{path}: ledger schema 1 is older than this version's {SCHEMA_VERSION}; "
        "the next `provisioner create` migrates it"
    )


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
