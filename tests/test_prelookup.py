"""A ledger new to an account and host looks rows up before their first send (prelookup.py).

The real CLI against the emulator: a second working folder (a new, empty ledger) must not
create again what the first created; lookups that fail or are refused never let a row be sent
blindly; a stop is not a failed lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from provisioner.attempts import Attempt, Lookup
from provisioner.dispatch import IDLE, Dispatcher
from provisioner.emulator import Fault
from provisioner.errors import ExitCode
from provisioner.ledger import open_ledger
from provisioner.limits import AccountLimits
from provisioner.plan import plan
from provisioner.prelookup import FirstLookups, Job
from provisioner.rows import Columns, RowBuilder, derive_identity
from provisioner.send import LOOKUP_TRIES, Lookups
from provisioner.stopping import Stopping
from provisioner.vocabulary import LookupResult
from tests.conftest import CUSTOMER_HEADER, Cli, customers, read_csv, read_summary, write_csv

ROWS = 6
REFUSED = Fault(status=403, code=20003)  # what Twilio answers credentials without the permission
SERVER_ERROR = Fault(status=500, code=20500)


def second_folder(cli: Cli, name: str = "b") -> Cli:
    """The same emulator and account, run from another working folder (a new ledger)."""
    return Cli(cli.emulator, cli.sleeps, cli.workdir / name)


def identity_of(cli: Cli, key: str) -> str:
    """The identity a run against the fixture's emulator derives for row key `key`."""
    return derive_identity(cli.scope, key)


def statuses(cli: Cli, run_id: str) -> list[tuple[str, str]]:
    """Each row's status and lookup, in order."""
    rows = read_csv(cli.run_dir(run_id) / "results.csv")
    return [(row["status"], row["lookup"]) for row in rows]


def test_a_second_folder_creates_nothing_the_first_created(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    provisioner("create", str(source), "--run-id", "a1", "--rate", "0")
    first = read_csv(provisioner.run_dir("a1") / "results.csv")
    assert [row["status"] for row in first] == ["created"] * ROWS
    other = second_folder(provisioner)

    result = other("create", str(source), "--run-id", "b1", "--rate", "0")

    assert result.exit_code == 0
    assert provisioner.emulator.requests == ROWS  # the second folder created nothing
    rows = read_csv(other.run_dir("b1") / "results.csv")
    assert statuses(other, "b1") == [("existing", "found")] * ROWS
    assert [row["conversation_sid"] for row in rows] == [row["conversation_sid"] for row in first]
    summary = read_summary(other.run_dir("b1"))
    assert summary["counts"]["existing"] == ROWS
    assert summary["lookups"]["found"] == ROWS
    with open_ledger(other.out / "ledger.sqlite", other.scope) as ledger:
        entries = [ledger.lookup(f"C{n}") for n in range(1, ROWS + 1)]
    assert [(e.status, e.conversation_sid) for e in entries if e is not None] == [
        ("created", row["conversation_sid"]) for row in first
    ]
    # The second folder's ledger now knows them: a rerun there skips them without lookups.
    lookups = provisioner.emulator.lookups
    other("create", str(source), "--run-id", "b2", "--rate", "0")
    assert provisioner.emulator.lookups == lookups
    assert [status for status, _ in statuses(other, "b2")] == ["existing"] * ROWS


def test_folders_one_after_the_other_create_each_customer_once(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    other = second_folder(provisioner)

    for run_id in ("1", "2", "3"):
        provisioner("create", str(source), "--run-id", f"a{run_id}", "--rate", "0")
        other("create", str(source), "--run-id", f"b{run_id}", "--rate", "0")

    web_chats = [chat.parameters["CustomerFriendlyName"] for chat in provisioner.emulator.created]
    assert sorted(web_chats) == [f"Customer {n}" for n in range(1, ROWS + 1)]
    assert statuses(other, "b1") == [("existing", "found")] * ROWS
    for cli, run_id in ((provisioner, "a3"), (other, "b3")):
        assert statuses(cli, run_id) == [("existing", "")] * ROWS


@pytest.mark.parametrize(
    ("exit_code", "new"), [(None, True), (int(ExitCode.STOPPED), True), (0, False), (1, False)]
)
def test_a_ledger_stays_new_until_a_run_in_its_scope_runs_to_its_end(
    tmp_path: Path, exit_code: int | None, new: bool
) -> None:
    with open_ledger(tmp_path / "ledger.sqlite", "AC1@api") as ledger, ledger.transaction():
        assert ledger.is_new()
        ledger.begin_run("r1", "in.csv", forced=False)
        ledger.record_failed("C1", "r1", ambiguous_attempts=0)
        if exit_code is not None:  # None: killed, it never ended
            ledger.end_run("r1", exit_code=exit_code, counts={}, stop_reason="")
    with open_ledger(tmp_path / "ledger.sqlite", "AC1@api") as ledger:
        assert ledger.is_new() is new
    with open_ledger(tmp_path / "ledger.sqlite", "AC2@api") as ledger:
        assert ledger.is_new()  # another account: its own scope


def test_the_first_lines_say_rows_are_looked_up_first_and_no_lookup_turns_it_off(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))

    result = provisioner("create", str(source), "--run-id", "a1", "--rate", "0")

    (line,) = [line for line in result.stderr.splitlines() if "--no-lookup skips it" in line]
    assert f"{ROWS} rows" in line
    assert provisioner.emulator.lookups == ROWS  # one each, before its first send
    other = second_folder(provisioner)
    result = other("create", str(source), "--run-id", "b1", "--rate", "0", "--no-lookup")
    assert provisioner.emulator.lookups == ROWS  # none from the second folder
    assert provisioner.emulator.requests == 2 * ROWS  # as documented: created again
    assert any("warning:" in line and "--no-lookup" in line for line in result.stderr.splitlines())


def test_a_dry_run_says_a_real_run_looks_up_first_and_looks_nothing_up(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))

    with_credentials = provisioner("create", str(source), "--run-id", "d1", "--dry-run")
    without = provisioner("create", str(source), "--run-id", "d2", "--dry-run", env={})

    for result in (with_credentials, without):
        assert any("--no-lookup skips it" in line for line in result.stderr.splitlines())
    assert provisioner.emulator.lookups == 0
    assert provisioner.emulator.requests == 0


def test_refused_lookups_stop_before_anything_is_sent(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    for n in range(1, ROWS + 1):  # credentials without Conversations: every lookup refused
        provisioner.emulator.script_lookup(identity_of(provisioner, f"C{n}"), REFUSED)

    result = provisioner("create", str(source), "--run-id", "r1", "--rate", "0", expect=3)

    assert provisioner.emulator.requests == 0
    assert statuses(provisioner, "r1") == [("not_attempted", "")] * ROWS
    summary = read_summary(provisioner.run_dir("r1"))
    assert "--no-lookup" in summary["stop_reason"]
    assert "HTTP 403" in summary["stop_reason"]
    assert any("--no-lookup" in line for line in result.stderr.splitlines())
    # Nothing was sent, so nothing is left in flight: the ledger is still new.
    with open_ledger(provisioner.out / "ledger.sqlite", provisioner.scope) as ledger:
        assert ledger.is_new()
        assert ledger.unsettled() == []


def test_a_failed_lookup_keeps_its_row_unsent_until_a_later_lookup_answers(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))
    provisioner.emulator.script_lookup(
        identity_of(provisioner, "C2"), *[SERVER_ERROR] * LOOKUP_TRIES
    )

    result = provisioner("create", str(source), "--run-id", "r1", "--rate", "0", expect=1)

    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [(r["status"], r["lookup"], r["error_code"]) for r in rows] == [
        ("created", "absent", ""),
        ("failed", "failed", "lookup_failed"),
        *[("created", "absent", "")] * (ROWS - 2),
    ]
    assert provisioner.emulator.requests == ROWS - 1  # row 2 was never sent
    assert "lookup_failed" in result.stderr
    # The run finished: the ledger is no longer new, but row 2 is still looked up first.
    lookups = provisioner.emulator.lookups
    provisioner("create", str(source), "--run-id", "r2", "--rate", "0")
    assert provisioner.emulator.lookups == lookups + 1
    assert statuses(provisioner, "r2") == [("existing", "")] + [("created", "absent")] + [
        ("existing", "")
    ] * (ROWS - 2)
    assert provisioner.emulator.requests == ROWS


def test_a_sandbox_run_looks_nothing_up_first(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(ROWS))

    result = provisioner("create", str(source), "--run-id", "s1", "--sandbox")

    assert not any("--no-lookup skips it" in line for line in result.stderr.splitlines())
    assert statuses(provisioner, "s1") == [("created", "")] * ROWS


class StopsWhileLooking:
    """A client whose lookup is answered 500 just as the run is stopped (a signal mid-lookup)."""

    def __init__(self, stopping: Stopping) -> None:
        self.stopping = stopping
        self.lookups = 0
        self.lock = threading.Lock()

    def create_web_chat(self, parameters: Mapping[str, str]) -> Attempt:
        raise AssertionError("nothing is sent by the lookups")

    def find_conversations(self, identity: str) -> Lookup:
        with self.lock:
            self.lookups += 1
        self.stopping.stop("interrupted (SIGINT)")
        return Lookup(http_status=500, error_code="20500", error_message="server error")


def test_a_lookup_cut_short_by_a_stop_is_not_a_failed_lookup() -> None:
    stopping = Stopping()
    client = StopsWhileLooking(stopping)
    lookups = Lookups(client, AccountLimits(None, 4), stopping, sleep=lambda seconds: None)
    first = FirstLookups(lookups, stopping, new_ledger=True, workers=4, ahead=8)
    columns = Columns.resolve(CUSTOMER_HEADER, {})
    builder = RowBuilder(columns)
    decisions = [
        (number, plan(builder.build(number + 2, cells).with_identity("AC@x"), None, force=False))
        for number, cells in enumerate(customers(3))
    ]

    jobs = [job for job in first.jobs(decisions) if job is not IDLE]

    assert client.lookups >= 1
    assert all(isinstance(job, Job) for job in jobs)
    assert [(job.outcome, job.looked_up) for job in jobs if isinstance(job, Job)] == [
        (None, None)
    ] * 3  # not looked up, not failed: the dispatcher marks them not sent
    assert first.looked_up == 0


def test_an_idle_source_gets_its_gathered_rows_handed_out_at_once() -> None:
    """IDLE from the job source: the rows gathered so far go to the workers without waiting for
    a full batch (a lookup is out for the next row)."""
    stopping = Stopping()
    worked: list[int] = []
    second_ready = threading.Event()

    def work(job: int) -> int:
        worked.append(job)
        second_ready.set()
        return job

    def source() -> object:
        yield 1
        yield IDLE  # row 2's lookup is out: row 1 must be handed out meanwhile
        assert second_ready.wait(5.0), "row 1 was not sent while row 2 waited"
        yield 2

    dispatcher: Dispatcher[int, int] = Dispatcher(
        work,
        concurrency=4,
        stopping=stopping,
        ready=lambda job: None,
        not_sent=lambda job: -job,
        cut_off=lambda job: -job,
    )
    finished = [pair for batch in dispatcher.run(source()) for pair in batch]  # type: ignore[arg-type]

    assert sorted(finished) == [(1, 1), (2, 2)]
    assert worked[0] == 1


class ThrottlesOnce:
    """A client whose first lookup is answered 429 (one cap for every request), then none."""

    def __init__(self) -> None:
        self.lookups = 0
        self.lock = threading.Lock()

    def create_web_chat(self, parameters: Mapping[str, str]) -> Attempt:
        raise AssertionError("nothing is sent by the lookups")

    def find_conversations(self, identity: str) -> Lookup:
        with self.lock:
            self.lookups += 1
            first = self.lookups == 1
        if first:
            return Lookup(http_status=429, error_code="20429", error_message="Too many")
        return Lookup(http_status=200)


def test_after_a_429_first_lookups_take_turns_under_the_web_chat_limits() -> None:
    stopping = Stopping()
    client = ThrottlesOnce()
    sleep = lambda seconds: None  # noqa: E731
    own = Lookups(client, AccountLimits(None, 4), stopping, sleep)
    shared = Lookups(client, AccountLimits(None, 1), stopping, sleep)
    first = FirstLookups(own, stopping, shared=shared, new_ledger=True, workers=1, ahead=1)
    builder = RowBuilder(Columns.resolve(CUSTOMER_HEADER, {}))
    decisions = [
        (number, plan(builder.build(number + 2, cells).with_identity("AC@x"), None, force=False))
        for number, cells in enumerate(customers(4))
    ]

    jobs = [job for job in first.jobs(decisions) if isinstance(job, Job)]

    assert [job.looked_up.result if job.looked_up else None for job in jobs] == [
        LookupResult.ABSENT
    ] * 4
    assert own.limits.state().throttled == 1
    assert own.limits.state().sent == 2  # the 429, and the same row's next try
    assert shared.limits.state().sent == 3  # every later row, under the web chat limits
