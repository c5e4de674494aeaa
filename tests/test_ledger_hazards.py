"""The ledger by two paths or two names, deleted or replaced mid-run, read-only: one ledger,
never two, and status still reads it whole.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import (
    CUSTOMER_HEADER,
    Cli,
    customers,
    read_summary,
    write_csv,
)
from tests.run_checks import (
    SEED,
    assert_no_secret,
    check_run,
    creations_per_customer,
    error_lines,
    finish,
    invoke,
    no_secret_in,
    no_secret_in_any_file,  # noqa: F401  (autouse: no secret in any file a test leaves)
    run_args,
    start,
    wait_until,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "other_path",
    [
        "symlink",
        "dot-slash",
    ],
)
def test_one_ledger_by_two_paths_is_refused_naming_the_pid(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other_path: str
) -> None:
    provisioner.emulator.latency = 0.01
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(400))
    (tmp_path / "ledgers").mkdir()
    first_path, second_path = "./ledgers/ledger.sqlite", "ledgers/ledger.sqlite"
    if other_path == "symlink":
        (tmp_path / "link.sqlite").symlink_to(tmp_path / "ledgers" / "ledger.sqlite")
        first_path, second_path = str(tmp_path / "ledgers" / "ledger.sqlite"), "link.sqlite"
    first = start(
        run_args(provisioner.emulator, source, provisioner.out, "r1", "--ledger", first_path),
        provisioner.env(),
        cwd=tmp_path,
    )
    wait_until(lambda: len(provisioner.emulator.created) >= 5, first)
    monkeypatch.chdir(tmp_path)

    others = write_csv(tmp_path / "others.csv", CUSTOMER_HEADER, customers(5, start=1000))
    second = provisioner("create", str(others), "--run-id", "r2", "--ledger", second_path, expect=2)
    first.send_signal(signal.SIGTERM)
    first_out, first_err = finish(first)

    no_secret_in(provisioner, second.output, first_out, first_err)
    (message,) = error_lines(second)
    assert f"pid {first.pid}" in message
    assert first.returncode == 3
    assert not provisioner.run_dir("r2").exists()
    sent = creations_per_customer(provisioner.emulator)
    assert not any(f"Customer {n}" in sent for n in range(1000, 1005))  # the second sent nothing


@pytest.mark.parametrize("name", ["ledger.sqlite", "other.sqlite"])
def test_a_ledger_with_a_hard_link_is_refused_by_either_name(
    provisioner: Cli, tmp_path: Path, name: str
) -> None:
    # The lock and SQLite's WAL are named after the path: two names for one file would let
    # two runs, or a run and a stale WAL, each see a different ledger.
    ledger = tmp_path / "ledgers" / "ledger.sqlite"
    one = write_csv(tmp_path / "one.csv", CUSTOMER_HEADER, customers(1, start=2000))
    provisioner("create", str(one), "--run-id", "r0", "--ledger", str(ledger))
    os.link(ledger, tmp_path / "ledgers" / "other.sqlite")
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))
    requests = provisioner.emulator.requests

    second = provisioner(
        "create", str(source), "--run-id", "r1", "--ledger", str(tmp_path / "ledgers" / name),
        expect=2,
    )  # fmt: skip

    (message,) = error_lines(second)
    assert str(tmp_path / "ledgers" / name) in message  # the path given is named
    assert provisioner.emulator.requests == requests
    assert not provisioner.run_dir("r1").exists()


def _delete_the_ledger(
    provisioner: Cli, source: Path, replace: bool = False
) -> tuple[subprocess.Popen[str], str, str]:
    """A run against a slow emulator whose ledger is deleted (or replaced) part-way."""
    provisioner.emulator.latency = 0.01
    process = start(
        run_args(provisioner.emulator, source, provisioner.out, "r1", "--concurrency", "2"),
        provisioner.env(),
    )
    created = random.Random(SEED).randint(5, 30)
    wait_until(lambda: len(provisioner.emulator.created) >= created, process)
    ledger = provisioner.out / "ledger.sqlite"
    if replace:  # another file moved over it, as a restore from a backup would
        copy = ledger.with_name("copy.sqlite")
        copy.write_bytes(ledger.read_bytes())
        os.replace(copy, ledger)
    else:
        ledger.unlink()
    stdout, stderr = finish(process)
    return process, stdout, stderr


@pytest.mark.slow
@pytest.mark.parametrize("replace", [False, True], ids=["deleted", "replaced"])
def test_a_ledger_deleted_during_the_run_stops_it(
    provisioner: Cli, tmp_path: Path, replace: bool
) -> None:
    rows = 400
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))

    process, stdout, stderr = _delete_the_ledger(provisioner, source, replace)

    assert process.returncode == 3, stderr
    assert str(provisioner.out / "ledger.sqlite") in stderr  # the ledger that went is named
    assert "Traceback" not in stderr
    assert len(provisioner.emulator.created) < rows / 2  # it stopped, not wrote into nothing
    assert_no_secret(provisioner.emulator.username, [stdout, stderr], provisioner.out)


@pytest.mark.slow
def test_a_ledger_deleted_during_the_run_exits_3_with_every_file(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows = 400
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))

    process, _, stderr = _delete_the_ledger(provisioner, source)

    assert process.returncode == 3, stderr
    results = check_run(provisioner.run_dir("r1"), rows=rows, exit_code=3)
    assert "not_attempted" in {r["status"] for r in results}
    stop_reason = read_summary(provisioner.run_dir("r1"))["stop_reason"]
    assert str(provisioner.out / "ledger.sqlite") in stop_reason


@pytest.mark.parametrize("immutable", ["folder", "ledger"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_status_on_a_ledger_that_cannot_be_written_still_works(
    provisioner: Cli, tmp_path: Path, immutable: str, as_json: bool
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    provisioner("create", str(source), "--run-id", "r1", expect=0)
    ledger = provisioner.out / "ledger.sqlite"
    target = provisioner.out if immutable == "folder" else ledger
    made = subprocess.run(["chattr", "+i", str(target)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {made.stderr.strip()}")
    try:
        result = invoke(
            provisioner, "status", "--out", str(provisioner.out), *(["--json"] * as_json)
        )
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)

    assert result.exit_code == 0, result.output
    assert "move" not in result.output.lower()
    assert error_lines(result) == []
    if as_json:
        document = json.loads(result.stdout)
        assert sum(document["created"].values()) == 2
        assert [run["run_id"] for run in document["runs"]] == ["r1"]
        assert document["runs"][0]["state"] == "exit 0"
    else:
        assert "2 web chats created" in result.stdout
        assert "r1" in result.stdout
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


def test_status_on_a_read_only_copy_shows_the_writes_still_in_its_wal(
    provisioner: Cli, tmp_path: Path
) -> None:
    first = write_csv(tmp_path / "a.csv", CUSTOMER_HEADER, customers(2))
    provisioner("create", str(first), "--run-id", "r1", expect=0)
    ledger = provisioner.out / "ledger.sqlite"
    # Another reader keeps the next run from merging its WAL when it closes, as a killed run
    # would leave it; the ledger is copied then (a backup taken while runs go on).
    holder = sqlite3.connect(ledger)
    try:
        holder.execute("SELECT count(*) FROM sqlite_master").fetchone()
        second = write_csv(tmp_path / "b.csv", CUSTOMER_HEADER, customers(2, start=10))
        provisioner("create", str(second), "--run-id", "r2", expect=0)
        backup = tmp_path / "backup"
        backup.mkdir()
        for name in ("ledger.sqlite", "ledger.sqlite-wal"):
            shutil.copy2(provisioner.out / name, backup / name)
    finally:
        holder.close()
    made = subprocess.run(["chattr", "+i", str(backup)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {made.stderr.strip()}")
    try:
        result = invoke(provisioner, "status", "--ledger", str(backup / "ledger.sqlite"), "--json")
    finally:
        subprocess.run(["chattr", "-i", str(backup)], check=True)

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [run["run_id"] for run in document["runs"]] == ["r2", "r1"]
    assert sum(document["created"].values()) == 4
