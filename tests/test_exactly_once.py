"""Exactly once, end to end: lost answers, kills, lost ledgers and refused lookups.

Everything goes through the real CLI (in-process for fast cases, a real process for SIGKILL)
against a real emulator on a loopback socket, and is counted where it counts: at the emulator.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import Result

from provisioner.emulator import Emulator, Fault
from provisioner.ledger import open_ledger
from provisioner.options import LOOKUP_LAG
from provisioner.rows import derive_identity
from tests.conftest import (
    CUSTOMER_HEADER,
    LAG_WAIT,
    SECRET,
    Cli,
    SleepsUntilReady,
    customers,
    read_csv,
    read_summary,
    sid,
    write_csv,
)
from tests.hostile import (
    Behaviour,
    HostileServer,
    created,
    created_body,
    cut,
    hostile_server,  # noqa: F401  (the `hostile` fixture)
    json_reply,
    lookup_page,
    participant_conversation,
    status_line_only,
    web_chat_sid,
)
from tests.run_checks import wait_until

SEED = 20261125  # every random choice here (when a kill comes) is drawn from this seed
TIMEOUT = "0.5"  # --timeout in runs with a delayed answer: far above a loopback answer
SLOW_ANSWER = 1.5  # seconds the emulator takes over a delayed create: well over TIMEOUT
INDEX_LAG = 5.0  # seconds the emulator's index lags behind a creation: within --lookup-lag (10 s)
LATE_INDEX_LAG = 15.0  # an index slower than --lookup-lag (10 s): the documented limit
FAST = ("--rate", "0", "--concurrency", "4")  # no rate waits; a few rows in flight at once
KILL_ROWS = 600  # rows of the SIGKILL rounds: enough that no round finishes the job
KILL_ROUNDS = 3
KILL_AFTER = (20, 120)  # a round is killed after this many more web chats, drawn from SEED
HELD_ROWS = 400  # rows of the reconcile-after-kill runs
START_LIMIT = 30.0  # seconds a subprocess may take to reach a given point before the test fails
POLL = 0.01  # seconds between looks at the emulator while waiting for a process
QUIET_FOR = 0.1  # seconds without a new request before the emulator counts as drained
CREATE_PATH = "/v2/WebChats"
LOOKUP_PATH = "/v1/ParticipantConversations"
PERMISSION = "read access to Conversations"  # what the refused-lookup message must name


# ---------------------------------------------------------------- helpers


def unique_customers(count: int) -> list[list[str]]:
    """Rows whose AddressSids differ, so a fault scripted for one meets that row only."""
    return [[f"C{n}", sid(100 + n), f"Customer {n}"] for n in range(1, count + 1)]


def identity_of(cli: Cli, key: str) -> str:
    """The identity the tool derives for a row key against this emulator."""
    return derive_identity(cli.scope, key)


def assert_each_row_has_its_one_web_chat(cli: Cli, rows: list[dict[str, str]]) -> None:
    """Every row created (or existing) once, with the SID the emulator created for its identity."""
    for row in rows:
        assert row["status"] in ("created", "existing"), row
        chats = cli.emulator.conversations_for(row["identity"])
        assert len(chats) == 1, (row["row_key"], [chat.conversation_sid for chat in chats])
        (chat,) = chats
        assert row["conversation_sid"] == chat.conversation_sid, row
        assert chat.parameters["CustomerFriendlyName"] == row["CustomerFriendlyName"]


def creations_per_customer(emulator: Emulator) -> Counter[str]:
    """Web chats created per CustomerFriendlyName (one customer's name per row)."""
    return Counter(chat.parameters["CustomerFriendlyName"] for chat in list(emulator.created))


def unsettled(cli: Cli) -> int:
    """Rows `provisioner status --json` shows unsettled, all scopes together."""
    result = cli("status", "--out", str(cli.out), "--json")
    return sum(json.loads(result.stdout)["unsettled"].values())


def reconcile_files(cli: Cli) -> list[dict[str, str]]:
    """The rows of the newest reconcile.csv."""
    newest = max(cli.out.glob("reconcile-*/reconcile.csv"), key=lambda path: path.parent.name)
    return read_csv(newest)


class IndexClock:
    """The emulator's wall clock: real time, moved on by the lag waits the tool sleeps."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.offset += seconds


@dataclass
class IndexCatchesUp(SleepsUntilReady):
    """A lag wait lasts until `ready()`, then moves the emulator's clock on by what it waited."""

    clock: IndexClock | None = None

    def __call__(self, seconds: float) -> None:
        super().__call__(seconds)
        if seconds > LAG_WAIT and self.clock is not None:
            self.clock.advance(seconds)


@pytest.fixture
def lagging(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    """A Cli against an emulator whose index lags by `request.param` seconds of its clock."""
    clock = IndexClock()
    with Emulator(secret=SECRET, seed=2, lookup_lag=request.param, clock=clock) as emulator:
        yield Cli(emulator, IndexCatchesUp(clock=clock), tmp_path)


class Gate(threading.Event):
    """Holds a request in the emulator until the test opens it; knows when one arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.arrived.set()
        return super().wait(timeout)


def start_create(cli: Cli, source: Path, run_id: str) -> subprocess.Popen[str]:
    """`provisioner create` as a real process against the in-process emulator."""
    command = [sys.executable, "-m", "provisioner", "create", str(source), "--out", str(cli.out)]
    command += ["--run-id", run_id, "--base-url", cli.emulator.url, *FAST, "--lookup-lag", "0"]
    env = {**os.environ, **cli.emulator.credentials_env()}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_creations(emulator: Emulator, count: int, process: subprocess.Popen[str]) -> None:
    """Wait until the emulator has created `count` web chats in all."""
    wait_until(lambda: len(emulator.created) >= count, process, f"to {count} web chats")


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL: no handler runs, nothing is flushed or recorded."""
    process.kill()
    process.communicate(timeout=START_LIMIT)
    assert process.returncode == -signal.SIGKILL


def drain(emulator: Emulator) -> None:
    """Wait until the emulator has answered what a killed process left in flight, as Twilio does:
    every connection it had ended (a request the kernel holds for the emulator is read first)."""
    deadline = time.monotonic() + START_LIMIT
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = time.monotonic()
        busy = emulator.faults.cap.in_flight or emulator.open_connections
        if emulator.requests != seen or busy:
            seen, quiet_since = emulator.requests, now
        elif now - quiet_since >= QUIET_FOR:
            return
        time.sleep(POLL)
    raise AssertionError("the emulator never drained")


# ---------------------------------------------------------------- 1. answers lost after creating


@pytest.mark.parametrize("lagging", [0.0, INDEX_LAG], indirect=True, ids=["no-lag", "index-lag"])
def test_answers_lost_after_creating_are_found_and_never_sent_again(
    lagging: Cli, tmp_path: Path
) -> None:
    cli = lagging
    emulator = cli.emulator
    emulator.script(sid(101), Fault(drop=True, create=True))  # created, then the line drops
    emulator.script(sid(102), Fault(delay=SLOW_ANSWER))  # created after the client gave up
    emulator.script(sid(103), Fault(drop=True))  # dropped before creating anything
    emulator.script(sid(104), Fault(drop=True), Fault(drop=True, create=True))  # both, in turn
    assert isinstance(cli.sleeps, SleepsUntilReady)
    cli.sleeps.ready = lambda: emulator.creations("AddressSid", sid(102)) > 0
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, unique_customers(8))
    cli.knows_the_scope()

    result = cli("create", str(source), "--run-id", "r1", *FAST, "--timeout", TIMEOUT)

    rows = read_csv(cli.run_dir("r1") / "results.csv")
    assert [(r["status"], r["attempts"], r["ambiguous_attempts"], r["lookup"]) for r in rows] == [
        ("created", "1", "1", "found"),
        ("created", "1", "1", "found"),
        ("created", "2", "1", "absent"),
        ("created", "2", "2", "found"),
        *[("created", "1", "0", "")] * 4,
    ]
    assert_each_row_has_its_one_web_chat(cli, rows)
    assert [r["identity"] for r in rows] == [identity_of(cli, f"C{n}") for n in range(1, 9)]
    assert creations_per_customer(emulator) == Counter({f"Customer {n}": 1 for n in range(1, 9)})
    assert emulator.requests == 8 + 2  # rows 3 and 4 were sent again after an absent lookup
    assert emulator.closed == set()
    summary = read_summary(cli.run_dir("r1"))
    assert (summary["exit_code"], summary["ambiguous_rows"]) == (0, 4)
    assert summary["lookups"] == {"found": 3, "absent": 1, "duplicates": 0, "failed": 0}
    assert summary["duplicates"] == []
    assert "lost answers settled by looking them up at Twilio: 3 found, 1 absent" in result.stderr
    # The tool waited out the lag (10 s) before each lookup (rows 1, 2, 3 once, row 4 twice)
    # and before the final check.
    lag_waits = [seconds for seconds in cli.sleeps.calls if seconds > LAG_WAIT]
    assert len(lag_waits) == 6
    assert all(seconds <= LOOKUP_LAG for seconds in lag_waits)


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_after_creating_is_looked_up_not_blindly_sent_again(
    provisioner: Cli, tmp_path: Path, status: int
) -> None:
    # A proxy in front of Twilio may answer 502/504 after Twilio created the web chat.
    provisioner.emulator.script(sid(2), Fault(status=status, code=status * 100, create=True))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    provisioner("create", str(source), "--run-id", "r1")

    (row,) = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert (row["status"], row["attempts"], row["ambiguous_attempts"], row["lookup"]) == (
        "created",
        "1",
        "1",
        "found",
    )
    (chat,) = provisioner.emulator.created
    assert row["conversation_sid"] == chat.conversation_sid


@pytest.mark.parametrize("lagging", [LATE_INDEX_LAG], indirect=True, ids=["late-index"])
def test_an_index_slower_than_lookup_lag_makes_a_duplicate_that_the_final_check_names(
    lagging: Cli, tmp_path: Path
) -> None:
    # The documented limit: the index must show a creation within --lookup-lag. When it does
    # not, the row is sent again, and the final check finds and names both web chats.
    cli = lagging
    cli.emulator.script(sid(101), Fault(drop=True, create=True))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, unique_customers(2))

    result = cli("create", str(source), "--run-id", "r1", *FAST)

    first, second = read_csv(cli.run_dir("r1") / "results.csv")
    chats = cli.emulator.conversations_for(first["identity"])
    assert len(chats) == 2
    assert (first["status"], first["attempts"], first["lookup"]) == ("created", "2", "duplicates")
    assert first["conversation_sid"] == chats[1].conversation_sid  # the one the 201 named
    assert first["duplicate_sids"] == chats[0].conversation_sid
    assert_each_row_has_its_one_web_chat(cli, [second])
    summary = read_summary(cli.run_dir("r1"))
    assert summary["lookups"]["duplicates"] == 1
    assert summary["duplicates"] == [
        {
            "row_key": "C1",
            "conversation_sid": chats[1].conversation_sid,
            "others": [chats[0].conversation_sid],
        }
    ]
    assert f"row key C1 has more than one web chat: {chats[1].conversation_sid}" in result.stderr


def _now_iso() -> str:
    """Now, as Twilio writes conversation_date_created."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _unreadable_2xx(kind: str, sid_sent: str, identity: str) -> Behaviour:
    """A 2xx whose web chat may exist but whose answer does not say which one."""
    if kind == "cut":
        return cut(201, created_body(sid_sent, identity), after=10)
    if kind == "no-sid":
        return json_reply(201, {"identity": identity})
    if kind == "bad-sid":
        return created("CH-not-a-conversation-sid", identity)
    return status_line_only(201)


@pytest.mark.parametrize(
    ("kind", "created_first"),
    [
        ("cut", True),
        ("no-sid", True),
        ("bad-sid", True),
        ("status-line-only", True),
        ("cut", False),
    ],
)
def test_a_2xx_that_cannot_be_read_is_looked_up_not_blindly_sent_again(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path, kind: str, created_first: bool
) -> None:
    identity = derive_identity(
        f"{provisioner.emulator.username}@{urlsplit(hostile.url).netloc}", "C1"
    )
    sent_first, sent_again = web_chat_sid(1), web_chat_sid(2)
    hostile.script(_unreadable_2xx(kind, sent_first, identity), path=CREATE_PATH)
    hostile.script(created(sent_again, identity), path=CREATE_PATH)
    found = participant_conversation(sent_first, identity, _now_iso())
    again = participant_conversation(sent_again, identity, _now_iso())
    pages = [[found]] if created_first else [[], [again]]
    for page in pages:
        hostile.script(lookup_page(hostile.url, page, identity=identity), path=LOOKUP_PATH)
    hostile.always(LOOKUP_PATH, lookup_page(hostile.url, pages[-1], identity=identity))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    provisioner(
        "create", str(source), "--run-id", "r1", "--rate", "0", "--base-url", hostile.url,
        base_url=False,
    )  # fmt: skip

    (row,) = read_csv(provisioner.run_dir("r1") / "results.csv")
    received = [(r.method, r.path, r.query.get("Identity")) for r in hostile.received]
    post, get = ("POST", CREATE_PATH, None), ("GET", LOOKUP_PATH, identity)
    if created_first:
        # One POST: its answer could not be read, the lookup found the web chat; the final check.
        assert received == [post, get, get]
        assert (row["status"], row["attempts"], row["lookup"]) == ("created", "1", "found")
        assert row["conversation_sid"] == sent_first
    else:
        # The lookup found nothing: sending again was safe, and only then was it sent again.
        assert received == [post, get, post, get]
        assert (row["status"], row["attempts"], row["lookup"]) == ("created", "2", "absent")
        assert row["conversation_sid"] == sent_again
    assert (row["ambiguous_attempts"], row["identity"], row["duplicate_sids"]) == (
        "1",
        identity,
        "",
    )
    summary = read_summary(provisioner.run_dir("r1"))
    assert (summary["exit_code"], summary["ambiguous_rows"]) == (0, 1)


# ---------------------------------------------------------------- 2. SIGKILL, several times


@pytest.mark.slow
def test_sigkill_at_random_moments_then_a_rerun_creates_every_customer_exactly_once(
    provisioner: Cli, tmp_path: Path
) -> None:
    emulator = provisioner.emulator
    emulator.latency = 0.002  # a request takes a little while: kills find some in flight
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(KILL_ROWS))
    draw = random.Random(SEED)
    # Killed runs never run to their end: a new ledger would stay new, and look every row up.
    provisioner.knows_the_scope()

    for round_number in range(1, KILL_ROUNDS + 1):
        process = start_create(provisioner, source, f"k{round_number}")
        wait_for_creations(emulator, len(emulator.created) + draw.randint(*KILL_AFTER), process)
        kill(process)
        drain(emulator)
        assert max(creations_per_customer(emulator).values()) == 1, f"round {round_number}"
        with open_ledger(provisioner.out / "ledger.sqlite", provisioner.scope) as ledger:
            assert ledger.in_flight_count() > 0  # the kill came with rows in flight
    assert len(emulator.created) < KILL_ROWS  # no round finished the job

    emulator.latency = 0
    provisioner("create", str(source), "--run-id", "final", "--rate", "0", "--lookup-lag", "0")

    rows = read_csv(provisioner.run_dir("final") / "results.csv")
    assert creations_per_customer(emulator) == Counter(
        {f"Customer {n}": 1 for n in range(1, KILL_ROWS + 1)}
    )
    assert_each_row_has_its_one_web_chat(provisioner, rows)
    assert len(emulator.created) == KILL_ROWS
    summary = read_summary(provisioner.run_dir("final"))
    assert summary["duplicates"] == []
    lookups = summary["lookups"]
    assert (lookups["duplicates"], lookups["failed"]) == (0, 0)
    # every row the last kill left in flight was looked up, found or absent, before any send
    assert summary["in_flight_from_earlier_runs"] > 0
    assert lookups["found"] + lookups["absent"] == summary["in_flight_from_earlier_runs"]
    assert unsettled(provisioner) == 0


# ---------------------------------------------------------------- 3 and 8. reconcile after a kill


@dataclass
class Killed:
    """A run killed with two requests held in the emulator: one then creates, one drops."""

    cli: Cli
    source: Path
    requests: int  # creates the emulator had received once the held ones were answered


@pytest.fixture
def killed(provisioner: Cli, tmp_path: Path) -> Killed:
    emulator = provisioner.emulator
    emulator.latency = 0.002
    creates, drops = Gate(), Gate()
    emulator.script(sid(101), Fault(hold=creates))  # answered after the kill: created
    emulator.script(sid(102), Fault(hold=drops, drop=True))  # never creates anything
    rows = [*unique_customers(2), *customers(HELD_ROWS - 2, start=3)]
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows)
    target = random.Random(SEED + 1).randint(*KILL_AFTER)

    process = start_create(provisioner, source, "k1")
    wait_until(lambda: creates.arrived.is_set() and drops.arrived.is_set(), process, "held")
    wait_for_creations(emulator, target, process)
    kill(process)
    creates.set()
    drops.set()
    drain(emulator)
    assert emulator.creations("AddressSid", sid(101)) == 1
    assert emulator.creations("AddressSid", sid(102)) == 0
    return Killed(provisioner, source, emulator.requests)


@pytest.mark.slow
def test_reconcile_after_sigkill_sends_no_post_and_the_rerun_sends_only_the_absent_rows(
    killed: Killed,
) -> None:
    cli, emulator = killed.cli, killed.cli.emulator
    with open_ledger(cli.out / "ledger.sqlite", cli.scope) as ledger:
        in_flight = {entry.row_key: entry for entry in ledger.unsettled()}
    assert {"C1", "C2"} <= set(in_flight)
    assert {entry.status for entry in in_flight.values()} == {"in_flight"}
    assert unsettled(cli) == len(in_flight)
    lookups = emulator.lookups

    result = cli("reconcile", "--out", str(cli.out), "--base-url", emulator.url, "--rate", "0")

    assert emulator.requests == killed.requests  # not one POST to /v2/WebChats
    assert emulator.lookups == lookups + len(in_flight)
    lines = reconcile_files(cli)
    assert {line["row_key"] for line in lines} == set(in_flight)
    for line in lines:
        chats = emulator.conversations_for(line["identity"])
        assert line["identity"] == identity_of(cli, line["row_key"])
        if chats:
            assert (line["lookup"], line["conversation_sid"]) == (
                "found",
                chats[0].conversation_sid,
            )
        else:
            assert (line["lookup"], line["conversation_sid"]) == ("absent", "")
        assert (line["other_sids"], line["closed"]) == ("", "")
    by_key = {line["row_key"]: line for line in lines}
    assert by_key["C1"]["lookup"] == "found"
    assert by_key["C2"]["lookup"] == "absent"
    found = {line["row_key"] for line in lines if line["lookup"] == "found"}
    absent = {line["row_key"] for line in lines if line["lookup"] == "absent"}
    counts = ", ".join(
        f"{n} {name}" for name, n in (("absent", len(absent)), ("found", len(found)))
    )
    assert f"looked up {len(lines)} rows: {counts}" in result.stderr
    with open_ledger(cli.out / "ledger.sqlite", cli.scope) as ledger:
        for key in found:
            entry = ledger.lookup(key)
            assert entry is not None
            assert (entry.status, entry.conversation_sid) == (
                "created",
                by_key[key]["conversation_sid"],
            )
        for key in absent:  # no longer in flight: the next run may send it
            entry = ledger.lookup(key)
            assert entry is None or entry.status != "in_flight"

    not_created = {f"Customer {n}" for n in range(1, HELD_ROWS + 1)} - set(
        creations_per_customer(emulator)
    )
    assert {f"Customer {key[1:]}" for key in absent} <= not_created
    before = emulator.requests
    cli("create", str(killed.source), "--run-id", "r2", "--rate", "0", "--lookup-lag", "0")

    rows = read_csv(cli.run_dir("r2") / "results.csv")
    assert emulator.requests - before == len(not_created)  # only what was never created
    assert creations_per_customer(emulator) == Counter(
        {f"Customer {n}": 1 for n in range(1, HELD_ROWS + 1)}
    )
    assert_each_row_has_its_one_web_chat(cli, rows)
    statuses = {row["row_key"]: row["status"] for row in rows}
    assert all(statuses[key] == "existing" for key in found)
    assert all(statuses[key] == "created" for key in absent)
    assert unsettled(cli) == 0


@pytest.mark.slow
def test_status_shows_unsettled_rows_after_a_kill_and_none_after_reconcile(
    killed: Killed,
) -> None:
    cli = killed.cli
    shown = cli("status", "--out", str(cli.out))
    assert "rows unsettled for" in shown.stdout
    assert "k1  " in shown.stdout
    assert "did not finish (killed or crashed)" in shown.stdout
    assert unsettled(cli) >= 2  # the two held rows at least

    cli("reconcile", "--out", str(cli.out), "--base-url", cli.emulator.url, "--rate", "0")

    with open_ledger(cli.out / "ledger.sqlite", cli.scope) as ledger:
        left = [(entry.row_key, entry.status, entry.lookup) for entry in ledger.unsettled()]
    assert left == []  # observed: every absent row, as (key, 'failed', 'absent')
    assert unsettled(cli) == 0
    assert "unsettled for" not in cli("status", "--out", str(cli.out)).stdout


# ---------------------------------------------------------------- 4. a deleted ledger


def test_a_deleted_ledger_is_rebuilt_by_reconcile_input_and_nothing_is_created_twice(
    provisioner: Cli, tmp_path: Path
) -> None:
    emulator = provisioner.emulator
    first = write_csv(tmp_path / "first.csv", CUSTOMER_HEADER, customers(5))
    provisioner("create", str(first), "--run-id", "r1", "--rate", "0")
    created = read_csv(provisioner.run_dir("r1") / "results.csv")
    for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
        (provisioner.out / name).unlink(missing_ok=True)
    assert not (provisioner.out / "ledger.sqlite").exists()
    whole = write_csv(tmp_path / "whole.csv", CUSTOMER_HEADER, customers(7))
    requests, lookups = emulator.requests, emulator.lookups

    result = provisioner(
        "reconcile", str(whole), "--out", str(provisioner.out), "--base-url", emulator.url,
        "--rate", "0",
    )  # fmt: skip

    assert emulator.requests == requests
    assert emulator.lookups == lookups + 7
    assert "looked up 7 rows: 2 absent, 5 found" in result.stderr
    lines = reconcile_files(provisioner)
    assert [(line["row_key"], line["lookup"]) for line in lines] == [
        *[(f"C{n}", "found") for n in range(1, 6)],
        ("C6", "absent"),
        ("C7", "absent"),
    ]
    assert [line["conversation_sid"] for line in lines[:5]] == [
        row["conversation_sid"] for row in created
    ]

    provisioner("create", str(whole), "--run-id", "r2", "--rate", "0")

    rows = read_csv(provisioner.run_dir("r2") / "results.csv")
    assert [r["status"] for r in rows] == ["existing"] * 5 + ["created"] * 2
    assert [r["conversation_sid"] for r in rows[:5]] == [r["conversation_sid"] for r in created]
    assert emulator.requests == requests + 2
    assert creations_per_customer(emulator) == Counter({f"Customer {n}": 1 for n in range(1, 8)})
    assert_each_row_has_its_one_web_chat(provisioner, rows)


# ---------------------------------------------------------------- 5. duplicates closed


def _make_a_duplicate(provisioner: Cli, tmp_path: Path) -> tuple[Path, str, str]:
    """--no-lookup against an answer lost after creating: two web chats for C1."""
    provisioner.emulator.script(sid(101), Fault(drop=True, create=True))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, unique_customers(2))
    provisioner("create", str(source), "--run-id", "r1", "--rate", "0", "--no-lookup")
    blind, recorded = provisioner.emulator.conversations_for(identity_of(provisioner, "C1"))
    return source, blind.conversation_sid, recorded.conversation_sid


def test_reconcile_names_a_duplicate_and_exits_1_without_close_duplicates(
    provisioner: Cli, tmp_path: Path
) -> None:
    source, blind, recorded = _make_a_duplicate(provisioner, tmp_path)
    requests = provisioner.emulator.requests

    result = provisioner(
        "reconcile", str(source), "--out", str(provisioner.out),
        "--base-url", provisioner.emulator.url, "--rate", "0", expect=1,
    )  # fmt: skip

    lines = reconcile_files(provisioner)
    assert [(line["row_key"], line["lookup"]) for line in lines] == [
        ("C1", "duplicates"),
        ("C2", "found"),
    ]
    assert (lines[0]["conversation_sid"], lines[0]["other_sids"], lines[0]["closed"]) == (
        recorded,
        blind,
        "",
    )
    assert "pass --close-duplicates" in result.stderr
    assert provisioner.emulator.closed == set()
    assert provisioner.emulator.closes == 0
    assert provisioner.emulator.requests == requests


@pytest.mark.parametrize("with_input", [True, False], ids=["input", "ledger"])
def test_reconcile_close_duplicates_closes_the_extra_and_keeps_the_ledgers_sid(
    provisioner: Cli, tmp_path: Path, with_input: bool
) -> None:
    source, blind, recorded = _make_a_duplicate(provisioner, tmp_path)
    requests = provisioner.emulator.requests
    target = [str(source)] if with_input else []

    result = provisioner(
        "reconcile", *target, "--out", str(provisioner.out), "--base-url",
        provisioner.emulator.url, "--rate", "0", "--close-duplicates",
    )  # fmt: skip

    assert provisioner.emulator.closed == {blind}
    assert provisioner.emulator.closes == 1
    assert provisioner.emulator.requests == requests
    lines = {line["row_key"]: line for line in reconcile_files(provisioner)}
    c1 = lines["C1"]
    assert (c1["lookup"], c1["conversation_sid"], c1["other_sids"], c1["closed"]) == (
        "duplicates",
        recorded,
        blind,
        blind,
    )
    assert "closed 1 extra web chat" in result.stderr
    with open_ledger(provisioner.out / "ledger.sqlite", provisioner.scope) as ledger:
        entry = ledger.lookup("C1")
    assert entry is not None
    assert (entry.status, entry.conversation_sid, entry.duplicate_sids) == ("created", recorded, "")
    assert unsettled(provisioner) == 0

    again = provisioner("create", str(source), "--run-id", "r2", "--rate", "0")
    rows = read_csv(provisioner.run_dir("r2") / "results.csv")
    assert [r["status"] for r in rows] == ["existing", "existing"]
    assert rows[0]["conversation_sid"] == recorded
    assert provisioner.emulator.requests == requests
    assert again.exit_code == 0


def test_after_closing_a_duplicate_the_next_reconcile_is_settled(
    provisioner: Cli, tmp_path: Path
) -> None:
    source, blind, recorded = _make_a_duplicate(provisioner, tmp_path)
    endpoint = ["--out", str(provisioner.out), "--base-url", provisioner.emulator.url]
    provisioner("reconcile", str(source), *endpoint, "--rate", "0", "--close-duplicates")

    provisioner("reconcile", str(source), *endpoint, "--rate", "0")

    lines = {line["row_key"]: line for line in reconcile_files(provisioner)}
    assert (lines["C1"]["lookup"], lines["C1"]["conversation_sid"]) == ("found", recorded)
    assert (lines["C1"]["other_sids"], lines["C1"]["closed"]) == ("", "")
    assert provisioner.emulator.closed == {blind}
    assert provisioner.emulator.closes == 1  # nothing closed twice
    assert unsettled(provisioner) == 0


def test_a_duplicate_stays_named_when_the_ledgers_web_chat_has_closed(
    provisioner: Cli, tmp_path: Path
) -> None:
    # Web chats close when the chat ends. The customer's recorded one ending does not make the
    # extra one, still open, the customer's web chat: it is a duplicate to close.
    source, blind, recorded = _make_a_duplicate(provisioner, tmp_path)
    provisioner.emulator.service.set_state(recorded, "closed")
    endpoint = ["--out", str(provisioner.out), "--base-url", provisioner.emulator.url]

    provisioner("reconcile", str(source), *endpoint, "--rate", "0", expect=None)

    with open_ledger(provisioner.out / "ledger.sqlite", provisioner.scope) as ledger:
        entry = ledger.lookup("C1")
    assert entry is not None
    assert entry.conversation_sid == recorded  # observed: the extra one's SID
    c1 = {line["row_key"]: line for line in reconcile_files(provisioner)}["C1"]
    assert (c1["lookup"], c1["conversation_sid"], c1["other_sids"]) == (
        "duplicates",
        recorded,
        blind,
    )  # observed: ("found", blind, "")


# ---------------------------------------------------------------- 6. lookups refused


REFUSED = Fault(status=403, code=20003)  # what Twilio answers credentials without the permission
LOST = ("C1", "C2", "C3")  # rows whose answer is lost after creating, in _refused_run


def _refused_run(provisioner: Cli, tmp_path: Path) -> tuple[Path, Result]:
    """Three answers lost after creating, and every identity's lookup refused once."""
    for n in range(1, 6):  # every identity refuses, as credentials without Conversations would
        provisioner.emulator.script_lookup(identity_of(provisioner, f"C{n}"), REFUSED)
        if f"C{n}" in LOST:
            provisioner.emulator.script(sid(100 + n), Fault(drop=True, create=True))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, unique_customers(5))
    provisioner.knows_the_scope()  # refused lookups before a first send: test_prelookup.py
    # One worker: the rows meet the refusal one after another, so exactly one lookup is asked.
    run = provisioner("create", str(source), "--run-id", "r1", "--rate", "0", "--concurrency", "1",
                      expect=1)  # fmt: skip
    return source, run


def test_refused_lookups_flag_the_rows_never_resend_them_and_say_why_once(
    provisioner: Cli, tmp_path: Path
) -> None:
    emulator = provisioner.emulator

    _, result = _refused_run(provisioner, tmp_path)

    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [
        (r["status"], r["lookup"], r["error_code"], r["attempts"], r["ambiguous_attempts"])
        for r in rows
    ] == [("failed", "failed", "lookup_failed", "1", "1")] * 3 + [("created", "", "", "1", "0")] * 2
    assert all("not sent again" in r["error_message"] for r in rows[:3])
    assert all(r["conversation_sid"] == "" for r in rows[:3])
    assert_each_row_has_its_one_web_chat(provisioner, rows[3:])
    assert emulator.requests == 5  # never sent again
    assert creations_per_customer(emulator) == Counter({f"Customer {n}": 1 for n in range(1, 6)})
    assert emulator.lookups == 1  # refused once: the other rows are not asked
    (warning,) = [line for line in result.stderr.splitlines() if "refused the lookup" in line]
    assert "warning: Twilio refused the lookup (HTTP 403)" in warning
    assert PERMISSION in warning
    assert "(ParticipantConversations)" in warning
    summary = read_summary(provisioner.run_dir("r1"))
    assert PERMISSION in summary["lookups_refused"]
    assert "HTTP 403" in summary["lookups_refused"]
    assert summary["lookups"] == {"found": 0, "absent": 0, "duplicates": 0, "failed": 3}
    assert (summary["exit_code"], summary["counts"]["failed"]) == (1, 3)
    errors = read_csv(provisioner.run_dir("r1") / "errors.csv")
    assert [e["row_key"] for e in errors] == list(LOST)
    assert unsettled(provisioner) == 3  # the next run or reconcile looks them up again


def test_rows_with_refused_lookups_are_settled_by_reconcile_once_lookups_are_allowed(
    provisioner: Cli, tmp_path: Path
) -> None:
    emulator = provisioner.emulator
    source, _ = _refused_run(provisioner, tmp_path)
    emulator.script_lookup(identity_of(provisioner, "C1"), REFUSED)  # C1 used its refusal
    endpoint = ["--out", str(provisioner.out), "--base-url", emulator.url, "--rate", "0"]
    requests = emulator.requests

    refused = provisioner("reconcile", *endpoint, expect=1)

    lines = reconcile_files(provisioner)
    assert [(line["row_key"], line["lookup"], line["conversation_sid"]) for line in lines] == [
        (key, "failed", "") for key in LOST
    ]
    assert "3 rows not settled" in refused.stderr
    assert unsettled(provisioner) == 3  # a refusal is never taken for `absent`

    emulator.forget_scripts()  # the permission granted: every lookup answers
    provisioner("reconcile", *endpoint)

    lines = reconcile_files(provisioner)
    assert [(line["row_key"], line["lookup"]) for line in lines] == [(k, "found") for k in LOST]
    for line in lines:
        (chat,) = emulator.conversations_for(line["identity"])
        assert line["conversation_sid"] == chat.conversation_sid
    assert unsettled(provisioner) == 0
    provisioner("create", str(source), "--run-id", "r2", "--rate", "0")
    rows = read_csv(provisioner.run_dir("r2") / "results.csv")
    assert [r["status"] for r in rows] == ["existing"] * 5
    assert_each_row_has_its_one_web_chat(provisioner, rows)
    assert emulator.requests == requests  # not one POST since the refused run


def test_reconcile_with_lookups_refused_names_the_permission(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))
    provisioner("create", str(source), "--run-id", "r1", "--rate", "0")
    lookups = provisioner.emulator.lookups  # the new ledger's, before the first sends
    for n in range(1, 4):
        provisioner.emulator.script_lookup(identity_of(provisioner, f"C{n}"), REFUSED)

    result = provisioner(
        "reconcile", str(source), "--out", str(provisioner.out),
        "--base-url", provisioner.emulator.url, "--rate", "0", expect=1,
    )  # fmt: skip

    lines = reconcile_files(provisioner)
    assert [line["lookup"] for line in lines] == ["failed"] * 3
    assert all(PERMISSION in line["message"] for line in lines)
    (said,) = [line for line in result.stderr.splitlines() if "rows not settled" in line]
    assert "HTTP 403" in said
    assert PERMISSION in said
    assert 1 <= provisioner.emulator.lookups - lookups <= 3  # a 403 is never tried again
    with open_ledger(provisioner.out / "ledger.sqlite", provisioner.scope) as ledger:
        entries = [ledger.lookup(f"C{n}") for n in range(1, 4)]
    # As the create left them: each looked up (absent) before its first send, then created.
    assert [(e.status, e.lookup) for e in entries if e is not None] == [("created", "absent")] * 3


# ---------------------------------------------------------------- 7. --no-lookup


def test_no_lookup_sends_a_lost_answer_again_blindly_and_flags_it(
    provisioner: Cli, tmp_path: Path
) -> None:
    provisioner.emulator.script(sid(101), Fault(drop=True, create=True))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, unique_customers(2))

    provisioner("create", str(source), "--run-id", "r1", "--rate", "0", "--no-lookup")

    first, second = read_csv(provisioner.run_dir("r1") / "results.csv")
    chats = provisioner.emulator.conversations_for(first["identity"])
    assert len(chats) == 2  # what --no-lookup risks, and says it does
    assert (first["status"], first["attempts"], first["ambiguous_attempts"], first["lookup"]) == (
        "created",
        "2",
        "1",
        "",
    )
    assert first["conversation_sid"] == chats[1].conversation_sid
    assert_each_row_has_its_one_web_chat(provisioner, [second])
    assert provisioner.emulator.lookups == 0
    assert provisioner.emulator.requests == 3
    summary = read_summary(provisioner.run_dir("r1"))
    assert summary["ambiguous_rows"] == 1
    assert summary["lookups"] == {"found": 0, "absent": 0, "duplicates": 0, "failed": 0}
    assert summary["settings"]["no_lookup"]["value"] is True
