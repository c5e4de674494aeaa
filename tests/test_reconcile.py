"""reconcile: the settlement it shares with create, lookups in order at a bounded concurrency,
and the command's cases (no ledger, a new ledger, a slow server, a hostile one)."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.attempts import Attempt, FoundConversation, Lookup
from provisioner.cells import escape_key
from provisioner.emulator import Emulator
from provisioner.endpoints import scope_of
from provisioner.ledger import open_ledger
from provisioner.limits_permits import Answer
from provisioner.ordered import InOrder, in_order
from provisioner.retry import retryable
from provisioner.rows import derive_identity
from provisioner.send import CLOCK_SKEW, CLOSED, Settlement, answer_of, settlement_of
from provisioner.stopping import Stopping
from provisioner.vocabulary import LookupResult
from provisioner.words import plural
from tests.conftest import (
    CUSTOMER_HEADER,
    SECRET,
    Cli,
    Sleeps,
    customers,
    read_csv,
    said,
    sid,
    write_csv,
)

START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LATENCY = 0.2  # seconds the slow emulator takes over every lookup
SLOW_ROWS = 40  # one at a time: 8 s; eight at a time: about 1 s
HOSTILE_HOLD = 0.05  # seconds the hostile server holds each lookup, so that they overlap
# Seconds a lookup is held at most while the hostile server waits for its first burst: a client
# that never sends so many at once fails the test's counts instead of hanging it.
BURST_LIMIT = 10.0


def found(number: int, state: str = "active", minutes: int = 0) -> FoundConversation:
    """Conversation CH..number, created `minutes` after START."""
    created = (START + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return FoundConversation(f"CH{number:032x}", created, state)


def reconcile_lines(out: Path) -> list[dict[str, str]]:
    """The rows of the newest reconcile.csv under `out`."""
    newest = max(out.glob("reconcile-*/reconcile.csv"), key=lambda path: path.parent.name)
    return read_csv(newest)


# ---------------------------------------------------------------- one settlement


def test_the_ledgers_web_chat_is_kept_even_when_closed_and_an_open_one_is_a_duplicate() -> None:
    recorded, newer = found(1, CLOSED), found(2, minutes=1)

    settlement = settlement_of((newer, recorded), None, recorded.sid)

    assert settlement.result is LookupResult.DUPLICATES
    assert (settlement.kept, settlement.others) == (recorded.sid, (newer.sid,))


def test_without_the_ledgers_web_chat_the_oldest_open_one_is_kept() -> None:
    closed, older, newer = found(1, CLOSED), found(2, minutes=1), found(3, minutes=2)

    settlement = settlement_of((newer, closed, older), None, "CH" + "f" * 32)

    assert settlement.result is LookupResult.DUPLICATES
    assert (settlement.kept, settlement.others) == (older.sid, (newer.sid,))


def test_closed_conversations_alone_are_the_rows_web_chat_not_duplicates() -> None:
    first, second = found(1, CLOSED), found(2, CLOSED, minutes=1)

    assert settlement_of((second, first), None) == Settlement(LookupResult.FOUND, (first,))
    assert settlement_of((second, first), None, second.sid) == Settlement(
        LookupResult.FOUND, (second,)
    )


def test_conversations_older_than_the_first_attempt_are_not_the_rows() -> None:
    old = found(1, minutes=0)
    since = (START + timedelta(seconds=CLOCK_SKEW + 60)).timestamp()

    assert settlement_of((old,), since, old.sid) == Settlement(LookupResult.ABSENT)
    assert settlement_of((), None, old.sid) == Settlement(LookupResult.ABSENT)


CONVERSATIONS = st.lists(
    st.builds(
        found,
        st.integers(1, 40),
        st.sampled_from(["active", "inactive", CLOSED]),
        st.integers(0, 60),
    ),
    max_size=8,
    unique_by=lambda conversation: conversation.sid,
)


@given(CONVERSATIONS, st.data())
def test_a_settlement_keeps_one_web_chat_and_names_every_other_open_one(
    conversations: list[FoundConversation], data: st.DataObject
) -> None:
    sids = [conversation.sid for conversation in conversations]
    recorded = data.draw(st.sampled_from([*sids, ""]))

    settlement = settlement_of(tuple(conversations), None, recorded)

    if not conversations:
        assert settlement == Settlement(LookupResult.ABSENT)
        return
    open_sids = {c.sid for c in conversations if c.state != CLOSED}
    assert settlement.kept in sids
    if recorded:
        assert settlement.kept == recorded
    elif open_sids:
        assert settlement.kept in open_sids
    assert set(settlement.others) == open_sids - {settlement.kept}
    assert len(settlement.others) == len(set(settlement.others))
    expected = LookupResult.DUPLICATES if settlement.others else LookupResult.FOUND
    assert settlement.result is expected


# ---------------------------------------------------------------- one classification of answers


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        (Attempt(), Answer.NO_ANSWER),  # a close whose answer was lost: says nothing of limits
        (Attempt(error_code="timeout", ambiguous=True), Answer.NO_ANSWER),
        (Attempt(http_status=429, error_code="20429"), Answer.THROTTLED),
        (Attempt(http_status=200, conversation_sid="CH" + "0" * 32), Answer.ACCEPTED),
        (Attempt(http_status=404), Answer.ACCEPTED),
        (Lookup(), Answer.NO_ANSWER),
        (Lookup(http_status=429), Answer.THROTTLED),
        (Lookup(http_status=503), Answer.ACCEPTED),
    ],
)
def test_every_reply_is_classified_for_the_limits_one_way(
    reply: Attempt | Lookup, answer: Answer
) -> None:
    assert answer_of(reply) is answer


@pytest.mark.parametrize(
    ("http_status", "error_code", "worth_another_try"),
    [
        (None, "connection_failed", True),
        (None, "tls_untrusted", False),
        (429, "20429", True),
        (503, "20503", True),
        (501, "", False),  # not in Twilio's guidance: asking again will not help
        (404, "20404", False),
    ],
)
def test_attempts_and_lookups_agree_on_what_is_worth_another_try(
    http_status: int | None, error_code: str, worth_another_try: bool
) -> None:
    attempt = Attempt(http_status=http_status, error_code=error_code)
    lookup = Lookup(http_status=http_status, error_code=error_code)

    assert retryable(attempt) == retryable(lookup) == worth_another_try


def test_an_answer_that_could_not_be_read_is_worth_another_try_for_both() -> None:
    assert retryable(Attempt(http_status=200, error_code="unreadable_answer", ambiguous=True))
    assert retryable(Lookup(http_status=200, error_code="unreadable_answer"))


# ---------------------------------------------------------------- in order, bounded


@given(st.permutations(range(30)))
def test_items_leave_in_order_whatever_order_they_arrive_in(arrivals: list[int]) -> None:
    buffer: InOrder[str] = InOrder()
    left = []
    for number in arrivals:
        left += buffer.add(number, f"item {number}")

    assert left == [f"item {number}" for number in range(30)]
    assert buffer.held == 0


class Overlap:
    """Work that takes a random moment and counts how many run at once."""

    def __init__(self, seed: int) -> None:
        self.running = self.most = 0
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def __call__(self, job: int) -> str:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            pause = self._random.uniform(0, 0.01)
        time.sleep(pause)  # real work on a real thread: the overlap is what is measured
        with self._lock:
            self.running -= 1
        return f"done {job}"


def test_in_order_works_at_most_concurrency_jobs_at_once_and_hands_them_on_in_order() -> None:
    work = Overlap(seed=3)

    results = list(
        in_order(
            range(60),
            work,
            concurrency=4,
            stopping=Stopping(),
            not_done=lambda job: "not done",
            cut_off=lambda job: "cut off",
        )
    )

    assert results == [(job, f"done {job}") for job in range(60)]
    assert work.most == 4


def test_after_a_stop_jobs_not_handed_out_are_not_done_and_still_in_order() -> None:
    stopping = Stopping()

    def work(job: int) -> str:
        if job == 5:
            stopping.stop("test")
        return f"done {job}"

    results = list(
        in_order(
            range(40),
            work,
            concurrency=2,
            stopping=stopping,
            not_done=lambda job: "not done",
            cut_off=lambda job: "cut off",
        )
    )

    assert [job for job, _ in results] == list(range(40))
    assert results[5] == (5, "done 5")
    assert results[-1] == (39, "not done")  # handed out after the stop: never worked on
    done = [result for _, result in results if result.startswith("done")]
    assert len(done) < 40


# ---------------------------------------------------------------- the command: no ledger


@pytest.mark.parametrize("where", ["out", "ledger"])
def test_with_no_ledger_and_no_input_it_says_where_it_looked_exits_2_and_makes_nothing(
    provisioner: Cli, tmp_path: Path, where: str
) -> None:
    ledger = provisioner.out / "ledger.sqlite"
    arguments = ["--out", str(provisioner.out), "--base-url", provisioner.emulator.url]
    if where == "ledger":
        ledger = tmp_path / "elsewhere" / "book.sqlite"
        arguments += ["--ledger", str(ledger)]

    result = provisioner("reconcile", *arguments, expect=2)

    error_lines = [line for line in said(result.stderr) if line.startswith("error:")]
    assert len(error_lines) == 1
    assert str(ledger) in error_lines[0]
    assert not provisioner.out.exists()
    assert not ledger.parent.exists() or list(ledger.parent.iterdir()) == []
    assert provisioner.emulator.lookups == 0


def test_with_no_ledger_and_an_input_it_looks_rows_up_and_says_the_ledger_is_new(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))

    result = provisioner(
        "reconcile", str(source), "--out", str(provisioner.out),
        "--base-url", provisioner.emulator.url, "--rate", "0",
    )  # fmt: skip

    ledger = provisioner.out / "ledger.sqlite"
    assert ledger.exists()
    assert any(
        "the ledger is new" in line and str(ledger) in line for line in result.stderr.splitlines()
    )
    assert [line["lookup"] for line in reconcile_lines(provisioner.out)] == ["absent"] * 3
    assert provisioner.emulator.lookups == 3


def test_a_second_reconcile_on_that_ledger_does_not_call_it_new(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    endpoint = ["--out", str(provisioner.out), "--base-url", provisioner.emulator.url]
    provisioner("reconcile", str(source), *endpoint, "--rate", "0")

    result = provisioner("reconcile", *endpoint)

    assert "the ledger is new" not in result.stderr


def test_the_reconcile_folder_is_its_owners_only(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    provisioner(
        "reconcile", str(source), "--out", str(provisioner.out),
        "--base-url", provisioner.emulator.url,
    )  # fmt: skip

    (folder,) = provisioner.out.glob("reconcile-*")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_reconcile_folder_that_cannot_be_made_is_one_error_line(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")

    result = provisioner(
        "reconcile", str(source), "--out", str(blocked), "--ledger", str(tmp_path / "l.sqlite"),
        "--base-url", provisioner.emulator.url,
        expect=2,
    )  # fmt: skip

    assert len([line for line in said(result.stderr) if line.startswith("error:")]) == 1
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- the command: concurrency


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    with Emulator(secret=SECRET, seed=1, latency=LATENCY) as running:
        yield running


def test_a_slow_server_is_looked_up_concurrency_rows_at_a_time_in_input_order(
    slow_emulator: Emulator, tmp_path: Path
) -> None:
    provisioner = Cli(slow_emulator, Sleeps(), tmp_path)
    rows = customers(SLOW_ROWS)
    existing = {3, 17, 31}  # web chats that exist already: found, between absent rows
    for number in existing:
        identity = provisioner_identity(provisioner, f"C{number}")
        slow_emulator.service.create(
            {"AddressSid": rows[number - 1][1], "Identity": identity}, "RQ"
        )
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows)
    concurrency = 8

    began = time.monotonic()
    provisioner(
        "reconcile", str(source), "--out", str(provisioner.out),
        "--base-url", slow_emulator.url, "--rate", "0", "--concurrency", str(concurrency),
    )  # fmt: skip
    took = time.monotonic() - began

    one_at_a_time = SLOW_ROWS * LATENCY
    assert took < one_at_a_time / 2  # about one_at_a_time / concurrency: 1 s, not 8 s
    lines = reconcile_lines(provisioner.out)
    assert [line["row_key"] for line in lines] == [f"C{n}" for n in range(1, SLOW_ROWS + 1)]
    assert [line["lookup"] for line in lines] == [
        "found" if n in existing else "absent" for n in range(1, SLOW_ROWS + 1)
    ]
    assert slow_emulator.lookups == SLOW_ROWS


def provisioner_identity(provisioner: Cli, key: str) -> str:
    """The identity reconcile derives for `key` against this emulator."""
    return derive_identity(provisioner.scope, key)


class CountingServer(ThreadingHTTPServer):
    """A lookup server that holds each lookup a moment and counts the most held at once; with
    `cap`, it refuses (429, Twilio's 20429) a lookup beyond that many, as Twilio does; with
    `sid`, every identity asked for takes part in that one conversation.

    With `burst`, the lookups it accepts are held until that many lookups have arrived (the
    first burst, refused ones included): that they meet at the server is then a fact, not a
    bet that the client's threads all send within HOSTILE_HOLD on a busy machine."""

    daemon_threads = True

    def __init__(self, cap: int | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _CountingHandler)
        self.cap = cap
        self.sid = ""
        self.burst = 0
        self.in_flight = self.most = self.throttled = self.answered = self.arrived = 0
        self.lock = threading.Lock()
        self.gathered = threading.Event()  # the first `burst` lookups have arrived

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _CountingHandler(BaseHTTPRequestHandler):
    server: CountingServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        counts = self.server
        with counts.lock:
            counts.arrived += 1
            if counts.arrived >= counts.burst:
                counts.gathered.set()
            refused = counts.cap is not None and counts.in_flight >= counts.cap
            if refused:
                counts.throttled += 1
            else:
                counts.in_flight += 1
                counts.most = max(counts.most, counts.in_flight)
        if refused:
            body = {"code": 20429, "message": "Too many concurrent requests", "status": 429}
            self._send(429, body)
            return
        counts.gathered.wait(BURST_LIMIT)
        time.sleep(HOSTILE_HOLD)
        with counts.lock:
            counts.in_flight -= 1
            counts.answered += 1
        identity = parse_qs(urlsplit(self.path).query).get("Identity", [""])[0]
        entries = [
            {
                "conversation_sid": counts.sid,
                "participant_identity": identity,
                "conversation_state": "active",
                "conversation_date_created": "2026-11-25T10:00:00Z",
            }
        ]
        page = {"conversations": entries if counts.sid else [], "meta": {"next_page_url": None}}
        self._send(200, page)

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def counting() -> Iterator[CountingServer]:
    server = CountingServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_hostile_server_never_sees_more_lookups_at_once_than_concurrency(
    provisioner: Cli, counting: CountingServer, tmp_path: Path, concurrency: int
) -> None:
    counting.burst = concurrency  # the first lookups are held until this many are out at once
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(24))

    provisioner(
        "reconcile", str(source), "--out", str(provisioner.out), "--base-url", counting.url,
        "--rate", "0", "--concurrency", str(concurrency),
    )  # fmt: skip

    assert counting.most == concurrency
    assert counting.answered == 24
    assert [line["lookup"] for line in reconcile_lines(provisioner.out)] == ["absent"] * 24


@dataclass
class RealSleeps(Sleeps):
    """Records sleeps and really sleeps: a backoff gives the requests in flight time to end."""

    def __call__(self, seconds: float) -> None:
        super().__call__(seconds)
        time.sleep(seconds)


def test_lookups_learn_the_accounts_cap_in_flight_as_create_does(
    emulator: Emulator, counting: CountingServer, tmp_path: Path
) -> None:
    provisioner = Cli(emulator, RealSleeps(), tmp_path)  # the emulator only for credentials
    cap, concurrency = 2, 8
    counting.cap = cap
    # The two accepted are held until one more came: the client did send more than the cap at
    # once, and was refused, however its threads were scheduled.
    counting.burst = cap + 1
    rows = 60
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))

    result = provisioner(
        "reconcile", str(source), "--out", str(provisioner.out), "--base-url", counting.url,
        "--rate", "0", "--concurrency", str(concurrency),
    )  # fmt: skip

    assert [line["lookup"] for line in reconcile_lines(provisioner.out)] == ["absent"] * rows
    assert counting.answered == rows
    throttled = [line for line in said(result.stderr) if "(429)" in line]
    (line,) = throttled
    assert plural(counting.throttled, "request") in line  # "1 request" when one was refused
    learnt = line.split("--concurrency ")[1].split(":")[0]  # said as create says it
    assert 1 <= int(learnt) <= counting.cap
    # Eight at once against a cap of two would be refused about three times in four, every
    # row; learning the cap, few are.
    assert counting.throttled < rows / 2


# ---------------------------------------------------------------- the command: a stop


@pytest.mark.slow
def test_an_interrupted_reconcile_lists_what_it_looked_up_in_order_and_exits_3(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows = 200
    provisioner.emulator.latency = 0.05
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))
    process = subprocess.Popen(
        [
            sys.executable, "-m", "provisioner", "reconcile", str(source),
            "--out", str(provisioner.out), "--base-url", provisioner.emulator.url,
            "--rate", "0", "--concurrency", "4",
        ],
        env={**os.environ, **provisioner.emulator.credentials_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while provisioner.emulator.lookups < 12:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "reconcile did not get going"
        time.sleep(0.01)

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 3, stderr
    lines = reconcile_lines(provisioner.out)
    numbers = [int(line["row_key"][1:]) for line in lines]
    assert numbers == list(range(1, len(numbers) + 1))  # in input order, none skipped
    assert 12 <= len(numbers) < rows
    assert {line["lookup"] for line in lines} == {"absent"}  # none cut short counted as failed

    provisioner.emulator.latency = 0.0
    provisioner(
        "reconcile", str(source), "--out", str(provisioner.out),
        "--base-url", provisioner.emulator.url, "--rate", "0",
    )  # fmt: skip

    assert [line["lookup"] for line in reconcile_lines(provisioner.out)] == ["absent"] * rows


def test_one_web_chat_never_settles_two_rows_in_reconcile(
    provisioner: Cli, counting: CountingServer, tmp_path: Path
) -> None:
    counting.sid = "CH" + "ab" * 16  # a server whose every lookup names the same conversation
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))

    result = provisioner(
        "reconcile", str(source), "--out", str(provisioner.out), "--base-url", counting.url,
        "--rate", "0", expect=1,
    )  # fmt: skip

    lines = reconcile_lines(provisioner.out)
    assert [line["lookup"] for line in lines] == ["found", "failed", "failed"]
    assert lines[0]["conversation_sid"] == counting.sid
    assert all(counting.sid in line["message"] and "'C1'" in line["message"] for line in lines[1:])
    scope = scope_of(provisioner.emulator.username, counting.url)
    with open_ledger(provisioner.out / "ledger.sqlite", scope) as ledger:
        entries = ledger.lookup_all(["C1", "C2", "C3"])
    assert {key: entry.conversation_sid for key, entry in entries.items()} == {"C1": counting.sid}
    assert "2 failed" in result.stderr


def test_reconcile_csv_guards_keys_as_results_csv_does(provisioner: Cli, tmp_path: Path) -> None:
    rows = [["00001", sid(1), "Ada"], ["1e5", sid(2), "Bo"], ["C3", sid(3), "Cy"]]
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows)
    provisioner("create", str(source), "--run-id", "r1", "--rate", "0")

    provisioner(
        "reconcile", str(source), "--out", str(provisioner.out),
        "--base-url", provisioner.emulator.url, "--rate", "0",
    )  # fmt: skip

    def raw_keys(path: Path) -> list[str]:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            return [line["row_key"] for line in csv.DictReader(stream)]

    results = raw_keys(provisioner.run_dir("r1") / "results.csv")
    (reconciled,) = provisioner.out.glob("reconcile-*/reconcile.csv")
    assert raw_keys(reconciled) == results
    assert results == [escape_key("00001"), escape_key("1e5"), "C3"]
    assert results[0] != "00001"  # guarded, so a spreadsheet keeps it as text


def test_reconcile_input_counts_and_lists_the_invalid_rows_it_did_not_look_up(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows = [["C1", sid(1), "Ada"], ["C2", "IG123", "Bo"], ["C3", "", "Cy"], ["C4", sid(4), "Di"]]
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows)

    result = provisioner(
        "reconcile", str(source), "--out", str(provisioner.out),
        "--base-url", provisioner.emulator.url, "--rate", "0",
    )  # fmt: skip

    assert provisioner.emulator.lookups == 2  # the valid rows only
    lines = reconcile_lines(provisioner.out)
    assert [line["row_key"] for line in lines] == ["C1", "C2", "C3", "C4"]  # every row, in order
    assert [line["lookup"] for line in lines] == ["absent", "", "", "absent"]
    assert "invalid_address_sid" in lines[1]["message"]
    assert "missing_address_sid" in lines[2]["message"]
    (end,) = [line for line in said(result.stderr) if "invalid_address_sid" in line]
    assert "1 invalid_address_sid" in end  # each counted, by reason
    assert "1 missing_address_sid" in end
