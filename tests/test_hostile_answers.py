"""What a hostile or broken server answers: a 2xx that proves nothing, any Retry-After, a
redirect, a trickle, the same error on every row, a lookup that is a trap.

Through the real CLI against a server written for the test (tests/hostile.py); every check
is what a user would see: the exit code, a status on every row, what the server received.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from provisioner.client import PARTICIPANT_CONVERSATIONS_PATH, WEB_CHATS_PATH
from provisioner.ledger_runs import read_status
from tests.conftest import (
    CUSTOMER_HEADER,
    Cli,
    customers,
    read_summary,
    write_csv,
)
from tests.hostile import (
    GIB,
    Behaviour,
    Drop,
    HostileServer,
    Huge,
    Reply,
    created,
    created_body,
    cut,
    gzip_bomb_reply,
    hostile_server,  # noqa: F401  (the `hostile` fixture)
    html_page,
    json_reply,
    long_header,
    lookup_page,
    many_headers,
    participant_conversation,
    redirect,
    status_line_only,
    throttled,
    trickled,
    twilio_error,
    web_chat_sid,
)
from tests.run_checks import (
    against,
    assert_no_secret,
    check_run,
    create_on,
    finish,
    no_secret_in,
    no_secret_in_any_file,  # noqa: F401  (autouse: no secret in any file a test leaves)
    posts,
    start,
    wait_until,
)

MAX_RETRY_AFTER = 30.0  # the README's documented cap on an honoured Retry-After
STREAK = 20  # the README: a run stops after this many rows in a row fail the same way


CUT_BODY = created_body(web_chat_sid(9))
AMBIGUOUS_ANSWERS: dict[str, Behaviour] = {
    "2xx-without-sid": json_reply(201, {"identity": "prv-test", "status": "ok"}),
    "2xx-with-a-sid-that-is-not-one": json_reply(201, {"conversation_sid": "CH123"}),
    "2xx-sid-not-a-string": json_reply(201, {"conversation_sid": 12345}),
    "html-page": html_page(200),
    "json-cut-short": Reply(201, b'{"conversation_sid": "CH00000000'),
    "json-array": json_reply(201, [web_chat_sid(5)]),
    "empty-body": Reply(201, b""),
    # the whole SID arrives, the closing brace does not: still not proof of a creation
    "body-cut-by-a-closed-connection": cut(201, CUT_BODY, after=len(CUT_BODY) - 1),
    "status-line-then-closed": status_line_only(201),
    "many-headers": many_headers(150),
    "one-very-long-header": long_header(70_000),
    "huge-body": Huge(201, GIB),
    "gzip-bomb": gzip_bomb_reply(201, GIB),
}


@pytest.mark.parametrize("answer", AMBIGUOUS_ANSWERS.values(), ids=AMBIGUOUS_ANSWERS.keys())
def test_a_2xx_that_proves_nothing_is_looked_up_then_sent_once_more(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path, answer: Behaviour
) -> None:
    against(hostile, answer, created(web_chat_sid(1)), created(web_chat_sid(2)))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))

    started = time.monotonic()
    result = create_on(provisioner, hostile, source, expect=0)

    assert time.monotonic() - started < 10  # nothing huge was read, nothing waited for
    results = check_run(provisioner.run_dir("r1"), rows=2, exit_code=0)
    assert [r["status"] for r in results] == ["created", "created"]
    first, second = results
    assert first["conversation_sid"] == web_chat_sid(1)
    assert (first["attempts"], first["ambiguous_attempts"], first["lookup"]) == ("2", "1", "absent")
    assert second["conversation_sid"] == web_chat_sid(2)
    assert second["ambiguous_attempts"] == "0"
    # the row's identity was looked up before it was sent again
    requests = [(r.method, r.path) for r in hostile.received]
    assert requests[:3] == [
        ("POST", WEB_CHATS_PATH),
        ("GET", PARTICIPANT_CONVERSATIONS_PATH),
        ("POST", WEB_CHATS_PATH),
    ]
    assert len(posts(hostile)) == 3
    assert "Traceback" not in result.output
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


def test_a_200_with_a_valid_sid_is_a_creation_and_is_noted(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path
) -> None:
    against(hostile, created(web_chat_sid(1), status=200))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    result = create_on(provisioner, hostile, source, expect=0)

    (row,) = check_run(provisioner.run_dir("r1"), rows=1, exit_code=0)
    assert (row["status"], row["conversation_sid"], row["attempts"]) == (
        "created",
        web_chat_sid(1),
        "1",
    )
    assert row["http_status"] == "200"
    assert "201" in row["error_message"]  # the odd status is noted, not hidden
    assert len(posts(hostile)) == 1
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


RETRY_AFTERS = [
    "soon",
    "-5",
    "inf",
    "-inf",
    "nan",
    "1e400",
    "99999999999",
    "86400",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "",
    "3, 4",
    "\u00a0" * 100,
]
BEYOND_THE_CAP = {"inf", "1e400", "99999999999", "86400", "Fri, 31 Dec 9999 23:59:59 GMT"}


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("retry_after", RETRY_AFTERS)
def test_any_retry_after_is_honoured_up_to_the_cap_and_never_stalls(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path, retry_after: str, status: int
) -> None:
    value = retry_after.encode("utf-8").decode("latin-1")  # as the header's bytes arrive
    against(hostile, throttled(value, status), created(web_chat_sid(1)))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    started = time.monotonic()
    result = create_on(provisioner, hostile, source, expect=0)

    assert time.monotonic() - started < 5
    (row,) = check_run(provisioner.run_dir("r1"), rows=1, exit_code=0)
    assert (row["status"], row["attempts"]) == ("created", "2")
    assert provisioner.sleeps.calls, "the retry waited for nothing"
    assert all(0 <= wait <= MAX_RETRY_AFTER for wait in provisioner.sleeps.calls), (
        provisioner.sleeps.calls
    )
    if retry_after in BEYOND_THE_CAP:  # honoured, up to the cap
        assert max(provisioner.sleeps.calls) == pytest.approx(MAX_RETRY_AFTER, abs=0.05)
    assert len(posts(hostile)) == 2
    assert "Traceback" not in result.output
    no_secret_in(provisioner, result.output)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_refused_and_never_followed(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path, status: int
) -> None:
    with HostileServer() as elsewhere:
        hostile.always(WEB_CHATS_PATH, redirect(f"{elsewhere.url}{WEB_CHATS_PATH}", status))
        source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))

        result = create_on(provisioner, hostile, source, expect=1)

        assert elsewhere.received == []
        assert elsewhere.connections == 0
    results = check_run(provisioner.run_dir("r1"), rows=2, exit_code=1)
    assert [r["status"] for r in results] == ["failed", "failed"]
    assert {r["error_code"] for r in results} == {"redirect_refused"}
    assert all(f"127.0.0.1:{elsewhere.port}" in r["error_message"] for r in results)
    assert [r["attempts"] for r in results] == ["1", "1"]  # a redirect is not retried
    assert len(posts(hostile)) == 2
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


TIMEOUT = 0.5  # --timeout of the trickling tests
TRICKLE = 0.1  # seconds between bytes: a whole answer would take tens of seconds


@pytest.mark.parametrize(
    ("after_head", "code"),
    # a 2xx whose body did not arrive whole is an answer that cannot be read (the DESIGN)
    [(False, "timeout"), (True, "unreadable_answer")],
    ids=["whole-answer", "body-only"],
)
def test_a_server_that_sends_a_byte_at_a_time_is_cut_at_the_timeout(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path, after_head: bool, code: str
) -> None:
    slow = trickled(created(web_chat_sid(1)), TRICKLE, after_head=after_head)
    hostile.always(WEB_CHATS_PATH, slow)
    against(hostile)
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    started = time.monotonic()
    result = create_on(
        provisioner, hostile, source, "--timeout", str(TIMEOUT), "--max-attempts", "2", expect=1
    )
    elapsed = time.monotonic() - started

    tries = 2
    assert elapsed < tries * TIMEOUT + 2.5, elapsed  # about the timeout per try, not per byte
    (row,) = check_run(provisioner.run_dir("r1"), rows=1, exit_code=1)
    assert (row["status"], row["error_code"], row["attempts"]) == ("failed", code, "2")
    assert row["error_message"]  # the code says what happened; the message says it to people
    assert row["ambiguous_attempts"] == "2"
    assert row["lookup"] == "absent"
    assert len(posts(hostile)) == tries
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


@pytest.mark.slow
def test_sigterm_during_a_trickled_answer_ends_the_run_within_about_the_timeout(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path
) -> None:
    timeout = 2.0
    hostile.always(WEB_CHATS_PATH, trickled(created(web_chat_sid(1)), TRICKLE, after_head=True))
    against(hostile)
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))
    arguments = [
        "create",
        str(source),
        "--out",
        str(provisioner.out),
        "--run-id",
        "r1",
        "--base-url",
        hostile.url,
        "--timeout",
        str(timeout),
        "--concurrency",
        "1",
    ]
    process = start(arguments, provisioner.env())
    wait_until(lambda: bool(posts(hostile)), process)

    process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    stdout, stderr = finish(process)

    assert time.monotonic() - stopped < timeout + 3.0
    assert process.returncode == 3, stderr
    assert "Traceback" not in stderr
    results = check_run(provisioner.run_dir("r1"), rows=3, exit_code=3)
    assert results[1:] == [
        {**results[1], "status": "not_attempted"},
        {**results[2], "status": "not_attempted"},
    ]
    assert len(posts(hostile)) == 1
    assert_no_secret(provisioner.emulator.username, [stdout, stderr], provisioner.out)


def test_the_same_404_on_every_row_stops_the_run_after_the_documented_streak(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.always(
        WEB_CHATS_PATH,
        twilio_error(404, 20404, "The requested resource /v2/WebChats was not found"),
    )
    rows = STREAK + 10
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))

    result = create_on(provisioner, hostile, source, expect=3)

    results = check_run(provisioner.run_dir("r1"), rows=rows, exit_code=3)
    statuses = Counter(r["status"] for r in results)
    assert set(statuses) == {"failed", "not_attempted"}
    # One row in flight at a time, and the streak is counted where the row finishes: the rows
    # handed to the worker meanwhile are not sent, however far behind the main thread is.
    assert statuses["failed"] == STREAK
    assert [r["status"] for r in results[:STREAK]] == ["failed"] * STREAK
    assert len(posts(hostile)) == statuses["failed"]  # a 404 is never retried
    # the line that stops the run names the error and the streak, whatever its words
    assert any("20404" in line and str(STREAK) in line for line in result.stderr.splitlines())
    assert "20404" in read_summary(provisioner.run_dir("r1"))["stop_reason"]
    no_secret_in(provisioner, result.output)


def test_a_captive_portal_answering_everything_stops_the_run_after_the_streak(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows = STREAK + 20
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))
    with HostileServer(default=html_page(200)) as portal:
        result = create_on(provisioner, portal, source, expect=None)

        sent = len(posts(portal))
    assert result.exit_code == 3, result.output
    assert sent <= STREAK + 2
    results = check_run(provisioner.run_dir("r1"), rows=rows, exit_code=3)
    assert "not_attempted" in {r["status"] for r in results}


LOOKUP_TRAPS: dict[str, Callable[[HostileServer, HostileServer], Behaviour]] = {
    "lookup-redirected": lambda server, elsewhere: redirect(
        f"{elsewhere.url}{PARTICIPANT_CONVERSATIONS_PATH}", 302
    ),
    "next-page-on-another-origin": lambda server, elsewhere: lookup_page(
        server.url,
        [participant_conversation(web_chat_sid(3))],
        next_page_url=f"{elsewhere.url}{PARTICIPANT_CONVERSATIONS_PATH}?Page=1",
    ),
    "lookup-gzip-bomb": lambda server, elsewhere: gzip_bomb_reply(200, GIB),
    "lookup-html": lambda server, elsewhere: html_page(200),
    "lookup-dropped": lambda server, elsewhere: Drop(),
}


@pytest.mark.parametrize("trap", LOOKUP_TRAPS.values(), ids=LOOKUP_TRAPS.keys())
def test_a_lost_answer_whose_lookup_is_hostile_is_never_sent_again_blindly(
    provisioner: Cli,
    hostile: HostileServer,
    tmp_path: Path,
    trap: Callable[[HostileServer, HostileServer], Behaviour],
) -> None:
    with HostileServer() as elsewhere:
        hostile.script(html_page(201), path=WEB_CHATS_PATH)  # the answer is lost
        hostile.always(PARTICIPANT_CONVERSATIONS_PATH, trap(hostile, elsewhere))
        source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

        result = create_on(provisioner, hostile, source, expect=1)

        assert elsewhere.received == []
    (row,) = check_run(provisioner.run_dir("r1"), rows=1, exit_code=1)
    assert (row["status"], row["error_code"], row["lookup"]) == (
        "failed",
        "lookup_failed",
        "failed",
    )
    assert row["ambiguous_attempts"] == "1"
    assert len(posts(hostile)) == 1  # the web chat may exist: not sent again
    assert "Traceback" not in result.output
    status = read_status(provisioner.out / "ledger.sqlite")
    assert sum(status.unsettled.values()) == 1  # the next run or reconcile looks it up again
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)
