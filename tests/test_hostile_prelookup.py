"""Hostile cases for a new ledger's first lookups (issue 22 item 6, prelookup.py).

The real CLI against a server written for the test on 127.0.0.1 (tests/hostile.py): lookups
that hang, fail forever, are refused half-way, or page without end. Whatever they do, no row
is sent blindly, every row ends with one status, and the run ends in bounded time.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from provisioner.client import PARTICIPANT_CONVERSATIONS_PATH, WEB_CHATS_PATH
from provisioner.emulator import Emulator
from tests.conftest import (
    CUSTOMER_HEADER,
    SECRET,
    Cli,
    customers,
    read_csv,
    read_summary,
    write_csv,
)
from tests.hostile import (
    Behaviour,
    Hang,
    HostileServer,
    created,
    hostile_server,  # noqa: F401  (the `hostile` fixture)
    lookup_page,
    twilio_error,
)
from tests.run_checks import creations_per_customer, finish, run_args, start, wait_until

ROWS = 5
TIME_LIMIT = 30.0  # seconds a run against these servers may take (sleeps are injected)


def first_run(cli: Cli, hostile: HostileServer, source: Path, *args: str) -> tuple[int, float]:
    """A create against the hostile server from a new ledger; its exit code and duration."""
    started = time.monotonic()
    result = cli(
        "create",
        str(source),
        "--base-url",
        hostile.url,
        "--run-id",
        "r1",
        "--timeout",
        "0.5",
        *args,
        base_url=False,
        known_scope=False,
        expect=None,
    )
    assert "Traceback" not in result.output
    return result.exit_code, time.monotonic() - started


def sent(hostile: HostileServer) -> int:
    return sum(1 for r in hostile.received if r.method == "POST" and r.path == WEB_CHATS_PATH)


def lookups(hostile: HostileServer) -> int:
    return sum(1 for r in hostile.received if r.path == PARTICIPANT_CONVERSATIONS_PATH)


def every_row_has_one_status(cli: Cli) -> list[dict[str, str]]:
    rows = read_csv(cli.run_dir("r1") / "results.csv")
    assert [row["customer_id"] for row in rows] == [f"C{n}" for n in range(1, ROWS + 1)]
    assert all(row["status"] for row in rows)
    counts = read_summary(cli.run_dir("r1"))["counts"]
    assert sum(counts.values()) == ROWS
    return rows


NO_ANSWER: dict[str, Behaviour] = {
    "hang": Hang(5.0),
    "500-forever": twilio_error(500, 20500, "server error"),
    "503-forever": twilio_error(503, 20503, "unavailable"),
}


@pytest.mark.parametrize("answer", NO_ANSWER.values(), ids=NO_ANSWER.keys())
def test_lookups_that_never_answer_send_nothing_and_end(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path, answer: Behaviour
) -> None:
    hostile.always(PARTICIPANT_CONVERSATIONS_PATH, answer)
    hostile.always(WEB_CHATS_PATH, created())
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))

    exit_code, took = first_run(provisioner, hostile, source)

    assert took < TIME_LIMIT
    assert exit_code in (1, 3)
    assert sent(hostile) == 0  # no row sent blindly
    rows = every_row_has_one_status(provisioner)
    assert {row["status"] for row in rows} <= {"failed", "not_attempted"}


def test_lookups_refused_half_way_stop_the_sends_and_every_row_has_a_status(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.script(
        *[lookup_page(hostile.url, [])] * 2,
        *[twilio_error(403, 20003, "Permission denied")] * 20,
        path=PARTICIPANT_CONVERSATIONS_PATH,
    )
    hostile.always(WEB_CHATS_PATH, created())
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))

    exit_code, took = first_run(provisioner, hostile, source)

    assert exit_code == 3
    assert took < TIME_LIMIT
    rows = every_row_has_one_status(provisioner)
    assert sent(hostile) <= 2  # only rows looked up and found absent
    for row in rows:
        assert row["status"] in ("created", "not_attempted", "failed")
        if row["status"] == "created":
            assert row["lookup"] == "absent"
    assert "--no-lookup" in read_summary(provisioner.run_dir("r1"))["stop_reason"]


def test_a_lookup_whose_pages_never_end_sends_nothing(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path
) -> None:
    endless = lookup_page(
        hostile.url, [], next_page_url=hostile.url + PARTICIPANT_CONVERSATIONS_PATH
    )
    hostile.always(PARTICIPANT_CONVERSATIONS_PATH, endless)
    hostile.always(WEB_CHATS_PATH, created())
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))

    exit_code, took = first_run(provisioner, hostile, source)

    assert took < TIME_LIMIT
    assert exit_code == 1
    assert sent(hostile) == 0
    rows = every_row_has_one_status(provisioner)
    assert [row["error_code"] for row in rows] == ["lookup_failed"] * ROWS


def test_a_stop_during_the_first_lookups_then_a_rerun_creates_each_customer_once(
    tmp_path: Path,
) -> None:
    rows = 60
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))
    with Emulator(secret=SECRET, seed=1, latency=0.2) as emulator:
        out = tmp_path / "out"
        process = start(run_args(emulator, source, out, "r1"), emulator.credentials_env())
        wait_until(lambda: emulator.lookups >= 2, process)
        process.send_signal(signal.SIGINT)
        finish(process)
        assert process.returncode == 3
        first = read_csv(out / "r1" / "results.csv")
        assert len(first) == rows
        assert all(row["status"] for row in first)
        # A ledger in another folder too: it looks every row up, and creates none again.
        for folder, run_id in ((out, "r2"), (tmp_path / "other", "r3")):
            rerun = start(run_args(emulator, source, folder, run_id), emulator.credentials_env())
            finish(rerun)
            assert rerun.returncode == 0
        assert creations_per_customer(emulator) == {f"Customer {n}": 1 for n in range(1, rows + 1)}
        statuses = [row["status"] for row in read_csv(tmp_path / "other" / "r3" / "results.csv")]
        assert statuses == ["existing"] * rows


def test_a_ledger_deleted_between_runs_creates_nothing_again(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    provisioner("create", str(source), "--run-id", "a1", "--rate", "0")
    for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
        (provisioner.out / name).unlink(missing_ok=True)

    provisioner("create", str(source), "--run-id", "a2", "--rate", "0")

    assert provisioner.emulator.requests == ROWS  # the second run created nothing
    rows = read_csv(provisioner.run_dir("a2") / "results.csv")
    assert [(row["status"], row["lookup"]) for row in rows] == [("existing", "found")] * ROWS
