"""Reruns never create a web chat twice: the SQLite ledger, resume, locking, migrations."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli import cli
from provisioner.emulator import Emulator, Fault
from provisioner.ledger import open_ledger
from provisioner.ledger_schema import MIGRATIONS, SCHEMA_VERSION
from provisioner.rows import derive_identity
from provisioner.runtime import Runtime
from tests.conftest import (
    CUSTOMER_HEADER,
    SECRET,
    Cli,
    customers,
    read_csv,
    read_summary,
    sid,
    write_csv,
)


def test_the_same_input_again_sends_nothing(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(5))
    assert provisioner("create", str(source), "--run-id", "r1").exit_code == 0
    first = read_csv(provisioner.run_dir("r1") / "results.csv")
    requests = provisioner.emulator.requests

    result = provisioner("create", str(source), "--run-id", "r2")

    assert result.exit_code == 0
    assert provisioner.emulator.requests == requests
    second = read_csv(provisioner.run_dir("r2") / "results.csv")
    assert [r["status"] for r in second] == ["existing"] * 5
    assert [r["conversation_sid"] for r in second] == [r["conversation_sid"] for r in first]
    assert [r["row_key"] for r in second] == ["C1", "C2", "C3", "C4", "C5"]


def test_fixed_errors_csv_sends_only_those_rows_then_the_original_sends_nothing(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows = customers(4)
    rows[1][1] = "IG-typo"
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows)
    assert provisioner("create", str(source), "--run-id", "r1", expect=1).exit_code == 1
    errors = provisioner.run_dir("r1") / "errors.csv"
    fixed = errors.read_text(encoding="utf-8-sig").replace("IG-typo", sid(9))
    errors.write_text(fixed, encoding="utf-8-sig")
    before = provisioner.emulator.requests

    assert provisioner("create", str(errors), "--run-id", "r2").exit_code == 0
    assert provisioner.emulator.requests == before + 1
    assert provisioner.emulator.creations("AddressSid", sid(9)) == 1

    # The typo is still in the original, but its key was created: existing (issue 24.3).
    rerun = provisioner("create", str(source), "--run-id", "r3")
    statuses = [r["status"] for r in read_csv(provisioner.run_dir("r3") / "results.csv")]
    assert statuses == ["existing"] * 4
    assert rerun.exit_code == 0
    assert provisioner.emulator.requests == before + 1


def test_identical_rows_without_customer_id_each_get_their_own_web_chat(
    provisioner: Cli, tmp_path: Path
) -> None:
    same = [sid(1), "Walk-in"]
    source = write_csv(
        tmp_path / "in.csv",
        ["AddressSid", "CustomerFriendlyName"],
        [same, same, same, [sid(2), "x"]],
    )

    assert provisioner("create", str(source), "--run-id", "r1").exit_code == 0
    assert provisioner.emulator.creations("CustomerFriendlyName", "Walk-in") == 3
    keys = [r["row_key"] for r in read_csv(provisioner.run_dir("r1") / "results.csv")]
    assert len(set(keys)) == 4

    assert provisioner("create", str(source), "--run-id", "r2").exit_code == 0
    assert provisioner.emulator.creations("CustomerFriendlyName", "Walk-in") == 3
    again = read_csv(provisioner.run_dir("r2") / "results.csv")
    assert [r["row_key"] for r in again] == keys
    assert {r["status"] for r in again} == {"existing"}


def test_force_creates_again_and_says_so(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))
    provisioner("create", str(source), "--run-id", "r1")

    result = provisioner("create", str(source), "--run-id", "r2", "--force")

    assert result.exit_code == 0
    assert len(provisioner.emulator.created) == 6
    assert read_summary(provisioner.run_dir("r2"))["forced_rows"] == 3
    assert "--force: 3 rows were created again" in result.stderr


def test_a_second_run_on_a_locked_ledger_refuses_at_once(provisioner: Cli, tmp_path: Path) -> None:
    import os

    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))
    with open_ledger(provisioner.out / "ledger.sqlite", "someone-else"):
        result = provisioner("create", str(source), "--run-id", "r1", expect=2)

    assert result.exit_code == 2
    assert f"another run (pid {os.getpid()})" in result.stderr
    assert provisioner.emulator.requests == 0
    assert not provisioner.run_dir("r1").exists()


@pytest.mark.parametrize("kind", ["garbage", "newer", "foreign"])
def test_a_ledger_that_is_not_one_is_left_untouched(
    provisioner: Cli, tmp_path: Path, kind: str
) -> None:
    ledger = provisioner.out / "ledger.sqlite"
    ledger.parent.mkdir(parents=True)
    if kind == "garbage":
        ledger.write_bytes(b"this is not a database at all" * 100)
    else:
        with sqlite3.connect(ledger) as db:
            db.execute("CREATE TABLE other (x)")
            if kind == "newer":
                db.execute("PRAGMA application_id = 1347573297")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.close()
    before = ledger.read_bytes()
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))

    result = provisioner("create", str(source), expect=2)

    assert result.exit_code == 2
    assert {
        "garbage": "not a provisioner ledger",
        "newer": "is newer than",
        "foreign": "not a provisioner ledger",
    }[kind] in result.stderr
    assert ledger.read_bytes() == before
    assert provisioner.emulator.requests == 0


def test_an_older_ledger_is_migrated_forward_and_keeps_its_rows(
    provisioner: Cli, tmp_path: Path
) -> None:
    ledger = provisioner.out / "ledger.sqlite"
    ledger.parent.mkdir(parents=True)
    scope = provisioner.scope
    db = sqlite3.connect(ledger)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA application_id = 1347573297")
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO entries (scope, row_key, status, conversation_sid, run_id, updated_at)"
        " VALUES (?, 'C1', 'created', 'CH' || hex(zeroblob(16)), 'old', 'then')",
        (scope,),
    )
    db.commit()
    db.close()
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))

    result = provisioner("create", str(source), "--run-id", "r1")

    assert result.exit_code == 0, result.output
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [r["status"] for r in rows] == ["existing", "created"]
    assert rows[0]["conversation_sid"] == "CH" + "0" * 32
    with sqlite3.connect(ledger) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()


def test_keys_created_before_fingerprints_are_still_guarded_against_spreadsheets(
    provisioner: Cli, tmp_path: Path
) -> None:
    ledger = provisioner.out / "ledger.sqlite"
    ledger.parent.mkdir(parents=True)
    db = sqlite3.connect(ledger)
    for migration in MIGRATIONS[:2]:
        for statement in migration:
            db.execute(statement)
    db.execute("PRAGMA application_id = 1347573297")
    db.execute("PRAGMA user_version = 2")
    db.execute(
        "INSERT INTO entries (scope, row_key, status, conversation_sid, run_id, updated_at)"
        " VALUES (?, '00123', 'created', 'CH' || hex(zeroblob(16)), 'old', 'then')",
        (provisioner.scope,),
    )
    db.commit()
    db.close()
    # The same customer, as a spreadsheet saved it: leading zeros gone.
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, [["123", sid(1), "Ana"]])

    provisioner("create", str(source), "--run-id", "r1", expect=1)

    (row,) = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert (row["status"], row["error_code"]) == ("invalid", "key_changed")
    assert "'00123'" in row["error_message"]
    assert provisioner.emulator.created == []


def test_strict_sends_nothing_when_a_key_was_changed_by_a_spreadsheet(
    provisioner: Cli, tmp_path: Path
) -> None:
    first = write_csv(tmp_path / "first.csv", CUSTOMER_HEADER, [["00123", sid(1), "Ana"]])
    provisioner("create", str(first), "--run-id", "r1")
    resaved = write_csv(
        tmp_path / "resaved.csv", CUSTOMER_HEADER, [["123", sid(1), "Ana"], ["C9", sid(2), "Bo"]]
    )

    result = provisioner("create", str(resaved), "--run-id", "r2", "--strict", expect=2)

    assert "key_changed" in result.stderr
    assert len(provisioner.emulator.created) == 1  # only the first run's
    assert not provisioner.run_dir("r2").exists()


def test_a_sandbox_rehearsal_never_makes_a_real_run_skip_rows(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))
    assert provisioner("create", str(source), "--sandbox", "--run-id", "s1").exit_code == 0

    assert provisioner("create", str(source), "--run-id", "r1").exit_code == 0

    assert [r["status"] for r in read_csv(provisioner.run_dir("r1") / "results.csv")] == [
        "created"
    ] * 3
    assert len(provisioner.emulator.created) == 3


def test_another_account_on_the_same_ledger_is_not_existing(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    assert provisioner("create", str(source), "--run-id", "r1").exit_code == 0
    provisioner.emulator.username = "AC" + "9" * 32

    result = provisioner(
        "create",
        str(source),
        "--run-id",
        "r2",
        env=provisioner.env(TWILIO_ACCOUNT_SID="AC" + "9" * 32),
    )

    assert result.exit_code == 0
    assert [r["status"] for r in read_csv(provisioner.run_dir("r2") / "results.csv")] == [
        "created"
    ] * 2


def test_a_row_left_in_flight_is_looked_up_then_sent_again(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    with open_ledger(provisioner.out / "ledger.sqlite", provisioner.scope) as ledger:
        ledger.mark_in_flight("C2", "killed-run")

    result = provisioner("create", str(source), "--run-id", "r1")

    assert result.exit_code == 0
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [(r["status"], r["ambiguous_attempts"]) for r in rows] == [
        ("created", "0"),
        ("created", "1"),
    ]
    # The killed run's request never reached the emulator: the lookup found nothing, so the row
    # was sent again, once, with the identity derived for it.
    identity = derive_identity(provisioner.scope, "C2")
    assert rows[1]["identity"] == identity
    assert rows[1]["lookup"] != ""
    assert provisioner.emulator.lookups >= 1
    (chat,) = provisioner.emulator.conversations_for(identity)
    assert chat.conversation_sid == rows[1]["conversation_sid"]
    assert provisioner.emulator.creations("CustomerFriendlyName", "Customer 2") == 1
    summary = read_summary(provisioner.run_dir("r1"))
    assert (summary["in_flight_from_earlier_runs"], summary["ambiguous_rows"]) == (1, 1)
    assert "they are looked up before any is sent again" in result.stderr


class SteppedTime:
    """Real time plus every second slept: a sleep returns at once and moves the clock on. The
    run and the emulator's index share it, so the run's wait for the index really passes."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.lock = threading.Lock()

    def wall(self) -> float:
        return time.time() + self.offset

    def clock(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.offset += max(0.0, seconds)


@pytest.mark.parametrize("command", ["create", "reconcile"])
def test_a_row_a_killed_run_sent_long_after_marking_it_is_found_not_sent_twice(
    tmp_path: Path, command: str
) -> None:
    """A batch is marked in flight before its rows go out, one by one at the rate: a run killed
    a minute later may have sent one just before it died. The next run must give the index its
    whole lag from then (from its own start), not from when the row was marked."""
    stepped = SteppedTime()
    lag = 10.0
    with Emulator(secret=SECRET, seed=1, lookup_lag=lag, clock=stepped.wall) as emulator:
        scope = f"{emulator.username}@{emulator.url.split('//')[1]}"
        source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))
        out = tmp_path / "outputs"
        with open_ledger(out / "ledger.sqlite", scope) as ledger, ledger.transaction():
            ledger.mark_in_flight("C1", "killed-run", derive_identity(scope, "C1"))
        stepped.sleep(60.0)  # the killed run sent C1 a minute after marking it, then died
        identity = derive_identity(scope, "C1")
        emulator.service.create({"AddressSid": sid(2), "Identity": identity}, "RQkilled")
        runtime = Runtime(
            sleep=stepped.sleep,
            clock=stepped.clock,
            wall_clock=stepped.wall,
            env=emulator.credentials_env(),
        )
        arguments = [command, str(source), "--out", str(out), "--base-url", emulator.url]
        arguments += ["--lookup-lag", str(lag), "--rate", "0"]
        if command == "create":
            arguments += ["--run-id", "r1"]

        result = CliRunner().invoke(cli, arguments, obj=runtime, catch_exceptions=False)

        assert result.exit_code == 0, result.output
        assert len(emulator.conversations_for(identity)) == 1  # found, not created again
        with open_ledger(out / "ledger.sqlite", scope) as ledger:
            entry = ledger.lookup("C1")
        assert entry is not None
        assert (entry.status, entry.lookup) == ("created", "found")
        assert stepped.offset > 60.0 + lag - 1.0  # the run waited the lag (less the real time)


def test_failed_rows_are_sent_again_on_rerun(provisioner: Cli, tmp_path: Path) -> None:
    provisioner.emulator.script(sid(2), *[Fault(status=503)] * 2)
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    assert (
        provisioner(
            "create", str(source), "--run-id", "r1", "--max-attempts", "2", expect=1
        ).exit_code
        == 1
    )

    assert provisioner("create", str(source), "--run-id", "r2").exit_code == 0

    rows = read_csv(provisioner.run_dir("r2") / "results.csv")
    assert [r["status"] for r in rows] == ["created", "existing"]
    assert len(provisioner.emulator.created) == 2


def test_status_shows_what_the_ledger_knows(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))
    provisioner("create", str(source), "--run-id", "r1")
    provisioner("create", str(source), "--run-id", "r2")

    result = provisioner("status", "--out", str(provisioner.out))

    assert result.exit_code == 0
    assert "3 web chats created for" in result.output
    lines = result.output.splitlines()
    r1 = next(line for line in lines if line.strip().startswith("r1 "))
    r2 = next(line for line in lines if line.strip().startswith("r2 "))
    assert "exit 0" in r1
    assert "created 3" in r1
    assert "created 0" in r2
    assert "3 existing" in r2
    assert lines.index(r2) < lines.index(r1)


def test_status_without_a_ledger_says_so(provisioner: Cli) -> None:
    result = provisioner("status", "--out", str(provisioner.out), expect=2)

    assert result.exit_code == 2
    assert "no ledger here yet" in result.stderr
