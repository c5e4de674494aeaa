"""Issue 10 end to end: hostile servers, broken files, failing machines, through the real CLI.

Every test drives `provisioner` itself (in-process through CliRunner, or as a real process
where a real exit, signal or resource limit is needed) and checks what a user would: the exit
code, a status on every row of results.csv, the files written, what the server received and
created, and that the secret appears nowhere.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from click.testing import CliRunner, Result
from openpyxl import Workbook

from provisioner.cli import cli
from provisioner.client import PARTICIPANT_CONVERSATIONS_PATH, WEB_CHATS_PATH
from provisioner.emulator import Emulator
from provisioner.ledger import read_status
from provisioner.outcome import RESULT_COLUMNS
from provisioner.run import Runtime
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
from tests.hostile import (
    GIB,
    Behaviour,
    Drop,
    HostileServer,
    Huge,
    Received,
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

STATUSES = {"created", "existing", "invalid", "failed", "not_attempted"}
ERROR_STATUSES = {"invalid", "failed", "not_attempted"}
RUN_FILES = {"results.csv", "errors.csv", "summary.json", "report.html", "run.log", "input.csv"}
MAX_RETRY_AFTER = 30.0  # the README's documented cap on an honoured Retry-After
STREAK = 20  # the README: a run stops after this many rows in a row fail the same way
SEED = 20261125  # every random choice (when a process is stopped, a long note) comes from it
PROCESS_WAIT = 30.0  # seconds a started process may take before the test gives up on it
POLL = 0.01  # seconds between looks at a running process or server


# ---------------------------------------------------------------- helpers


FAR_HOST = "flex-api.example.test"  # never resolved: the guard below refuses every name


@pytest.fixture
def no_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse name resolution for anything but loopback; the names asked for, in order."""
    asked: list[str] = []
    resolve = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(str(host))
        if host not in ("127.0.0.1", "localhost", b"127.0.0.1"):
            raise socket.gaierror(socket.EAI_NONAME, "name resolution is refused in this test")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return asked


def secret_forms(username: str, secret: str = SECRET) -> list[bytes]:
    """The secret as it could leak: plain, URL- and HTML-quoted, base64, and as Basic auth."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        html.escape(secret),
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(f"{username}:{secret}".encode()).decode(),
    }
    return [form.encode() for form in sorted(forms)]


def assert_no_secret(
    username: str, texts: Sequence[str], *folders: Path, secret: str = SECRET
) -> None:
    """No form of the secret in the texts (stdout, stderr) nor in any file under the folders."""
    forms = secret_forms(username, secret)
    for text in texts:
        for form in forms:
            assert form.decode() not in text
    for folder in folders:
        if not folder.exists():
            continue
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for form in forms:
                    assert form not in data, f"{form!r} in {path}"


@pytest.fixture(autouse=True)
def no_secret_in_any_file(provisioner: Cli) -> Iterator[None]:
    """After every test, no form of the secret in any file it left: results, logs, ledger."""
    yield
    assert_no_secret(provisioner.emulator.username, [], provisioner.workdir)


def no_secret_in(provisioner: Cli, *texts: str) -> None:
    """No form of the secret in what a run printed."""
    assert_no_secret(provisioner.emulator.username, texts)


def tool_columns(run_dir: Path) -> list[dict[str, str]]:
    """The columns the tool adds to results.csv, by name, for every row: taken from the end, so
    input columns named like them (`row`, `status`) cannot be mistaken for them."""
    with (run_dir / "results.csv").open(encoding="utf-8-sig", newline="") as stream:
        header, *records = list(csv.reader(stream))
    start = len(header) - len(RESULT_COLUMNS)
    return [dict(zip(RESULT_COLUMNS, record[start:], strict=True)) for record in records]


def check_run(run_dir: Path, rows: int, exit_code: int) -> list[dict[str, str]]:
    """Every file written, one result per input row, each with a status; the results."""
    names = {path.name for path in run_dir.iterdir()}
    assert names >= RUN_FILES - {"input.csv"}, sorted(names)
    assert any(name.startswith("input.") for name in names), sorted(names)  # the input's copy
    results = tool_columns(run_dir)
    assert len(results) == rows
    assert all(result["status"] in STATUSES for result in results), results
    errors = read_csv(run_dir / "errors.csv")
    assert len(errors) == sum(result["status"] in ERROR_STATUSES for result in results)
    summary = read_summary(run_dir)
    assert summary["exit_code"] == exit_code
    assert summary["rows"] == rows
    assert summary["counts"] == {
        status: sum(result["status"] == status for result in results)
        for status in ("created", "existing", "invalid", "failed", "not_attempted")
    }
    return results


# An error line: `error: ...` (Click's usage errors: `Error: ...`), after the date, time and
# zone that every line carries when stderr is not a terminal.
ERROR_LINE = re.compile(r"(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} )?error: ", re.IGNORECASE)


def error_lines(result: Result | str) -> list[str]:
    """The lines of stderr that report an error, from `error:` on."""
    text = result if isinstance(result, str) else result.stderr
    return [
        line[match.start(0) :] for line in text.splitlines() if (match := ERROR_LINE.match(line))
    ]


def posts(server: HostileServer) -> list[Received]:
    """The web chat creations the server received."""
    return [r for r in server.received if r.method == "POST" and r.path == WEB_CHATS_PATH]


def against(server: HostileServer, *creates: Behaviour) -> None:
    """Answer the next creations with these, then lookups with "nothing found"."""
    server.script(*creates, path=WEB_CHATS_PATH)
    server.always(PARTICIPANT_CONVERSATIONS_PATH, lookup_page(server.url, []))


def create_on(
    provisioner: Cli,
    server: HostileServer,
    source: Path,
    *extra: str,
    expect: int | None,
    run_id: str = "r1",
) -> Result:
    """`provisioner create` against a hostile server, one request at a time, no rate limit."""
    return provisioner(
        "create",
        str(source),
        "--run-id",
        run_id,
        "--base-url",
        server.url,
        "--concurrency",
        "1",
        "--rate",
        "0",
        *extra,
        base_url=False,
        expect=expect,
    )


def invoke(provisioner: Cli, *args: str, env: dict[str, str] | None = None) -> Result:
    """The CLI with exactly these arguments (no --out or --base-url added)."""
    runtime = Runtime(sleep=provisioner.sleeps, env=provisioner.env() if env is None else env)
    return CliRunner().invoke(cli, list(args), obj=runtime, catch_exceptions=False)


def start(
    arguments: Sequence[str],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    preexec: Callable[[], None] | None = None,
) -> subprocess.Popen[str]:
    """`python -m provisioner ARGUMENTS` as a real process."""
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner", *arguments],
        env={**os.environ, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
    )


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    """Poll until `condition()`; the process must still run meanwhile."""
    deadline = time.monotonic() + PROCESS_WAIT
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(POLL)


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for the process to end; its stdout and stderr."""
    try:
        return process.communicate(timeout=PROCESS_WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        _stdout, stderr = process.communicate()
        pytest.fail(f"the run did not end: {stderr[-2000:]}")


def run_args(emulator: Emulator, source: Path, out: Path, run_id: str, *extra: str) -> list[str]:
    """A create against the in-process emulator."""
    return [
        "create",
        str(source),
        "--out",
        str(out),
        "--run-id",
        run_id,
        "--base-url",
        emulator.url,
        "--rate",
        "0",
        *extra,
    ]


def creations_per_customer(emulator: Emulator) -> Counter[str]:
    """How many web chats the emulator created for each customer name."""
    return Counter(chat.parameters["CustomerFriendlyName"] for chat in list(emulator.created))


# ---------------------------------------------------------------- 1. answers


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
    assert "in time" in row["error_message"] or f"within {TIMEOUT:g}s" in row["error_message"]
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
    assert STREAK <= statuses["failed"] <= STREAK + 2  # at most what was already in flight
    assert [r["status"] for r in results[:STREAK]] == ["failed"] * STREAK
    assert len(posts(hostile)) == statuses["failed"]  # a 404 is never retried
    assert f"{STREAK} rows in a row failed with the same error (20404" in result.stderr
    assert "20404" in read_summary(provisioner.run_dir("r1"))["stop_reason"]
    no_secret_in(provisioner, result.output)


PORTAL_NEVER_STOPS = (
    "bug: FailureStreak.add (run.py:623) never counts rows that failed with lookup_failed, so a "
    "server answering every request 200 with an HTML page (a captive portal, a wrong host) "
    "gets a POST for every row of the file and the run ends exit 1; expected: it stops after "
    "20 such rows in a row (exit 3, the cause named), as for any other failure repeated"
)


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


def test_a_server_quoting_the_credentials_back_is_redacted_everywhere(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path
) -> None:
    username = provisioner.emulator.username
    basic = base64.b64encode(f"{username}:{SECRET}".encode()).decode()
    document = {
        "code": 20003,
        "message": f"Authenticate: token {SECRET} (Basic {basic}) is not valid here",
        "more_info": f"https://www.twilio.com/docs/errors/20003?token={SECRET}",
        "status": 400,
    }
    hostile.always(
        WEB_CHATS_PATH, json_reply(400, document, (("Twilio-Request-Id", f"RQ{SECRET}"),))
    )
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))

    result = create_on(provisioner, hostile, source, "--traceback", "--json", expect=1)

    results = check_run(provisioner.run_dir("r1"), rows=2, exit_code=1)
    assert [r["status"] for r in results] == ["failed", "failed"]
    assert all("[redacted]" in r["error_message"] for r in results)
    assert_no_secret(username, [result.stdout, result.stderr], provisioner.out)


SPECIAL_SECRET = "p@ss+w/rd&<x>=%20;'\"token"  # every character some quoting changes


def test_a_secret_quoted_back_in_any_encoding_is_redacted_everywhere(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path
) -> None:
    username = provisioner.emulator.username
    quoted = [
        SPECIAL_SECRET,
        SPECIAL_SECRET.upper(),
        quote(SPECIAL_SECRET, safe=""),
        quote_plus(SPECIAL_SECRET),
        html.escape(SPECIAL_SECRET),
        base64.b64encode(f"{username}:{SPECIAL_SECRET}".encode()).decode(),
    ]
    hostile.always(
        WEB_CHATS_PATH, twilio_error(400, 21610, "credentials were: " + " | ".join(quoted))
    )
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))
    environment = {"TWILIO_ACCOUNT_SID": username, "TWILIO_AUTH_TOKEN": SPECIAL_SECRET}

    result = provisioner(
        "create",
        str(source),
        "--run-id",
        "r1",
        "--base-url",
        hostile.url,
        env=environment,
        base_url=False,
        expect=1,
    )

    (row,) = check_run(provisioner.run_dir("r1"), rows=1, exit_code=1)
    assert row["status"] == "failed"
    assert row["error_message"].count("[redacted]") == len(quoted)
    (request,) = posts(hostile)
    basic = base64.b64encode(f"{username}:{SPECIAL_SECRET}".encode()).decode()
    assert request.header("Authorization") == f"Basic {basic}"  # it was sent, as it is
    assert_no_secret(username, [result.output], provisioner.out, secret=SPECIAL_SECRET)


def test_a_401_quoting_the_secret_stops_the_run_at_once_redacted(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.always(WEB_CHATS_PATH, twilio_error(401, 20003, f"Authenticate: bad token {SECRET}"))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(5))

    result = create_on(provisioner, hostile, source, expect=3)

    results = check_run(provisioner.run_dir("r1"), rows=5, exit_code=3)
    assert results[0]["status"] == "failed"
    assert {r["status"] for r in results[1:]} <= {"failed", "not_attempted"}
    assert "not_attempted" in {r["status"] for r in results}
    assert len(posts(hostile)) <= 2  # at most what was already in flight
    assert "credentials" in read_summary(provisioner.run_dir("r1"))["stop_reason"]
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


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


# ---------------------------------------------------------------- 2. files


OPEN_QUOTES = {
    "in-the-middle": (["C1,{1},Customer 1", 'C2,{2},"Customer 2', "C3,{3},Customer 3"], 3),
    "in-the-last-row": (["C1,{1},Customer 1", "C2,{2},Customer 2", 'C3,{3},"Customer 3'], 4),
    "closed-by-a-later-row": (
        ["C1,{1},Customer 1", 'C2,{2},"Customer 2', 'C3,{3},Customer 3"', "C4,{4},Customer 4"],
        3,
    ),
}


@pytest.mark.parametrize(("lines", "line"), OPEN_QUOTES.values(), ids=OPEN_QUOTES.keys())
def test_a_quote_left_open_is_refused_naming_its_line_and_nothing_is_sent(
    provisioner: Cli, tmp_path: Path, lines: list[str], line: int
) -> None:
    body = [text.format(*(sid(n) for n in range(5))) for text in lines]
    source = tmp_path / "in.csv"
    source.write_text("\n".join([",".join(CUSTOMER_HEADER), *body]) + "\n")

    result = provisioner("create", str(source), expect=2)

    (message,) = error_lines(result)
    assert f"line {line}" in message
    assert "quote" in message
    assert provisioner.emulator.requests == 0
    assert not (provisioner.out / "ledger.sqlite").exists()
    assert "Traceback" not in result.output
    no_secret_in(provisioner, result.output)


def test_a_cell_longer_than_the_csv_modules_default_limit_is_read(
    provisioner: Cli, tmp_path: Path
) -> None:
    generator = random.Random(SEED)
    inside = "".join(generator.choice('abcdef \n,"') for _ in range(200_000))
    long_note = f"[{inside}]"  # > 128 kB, with no surrounding space to trim
    header = [*CUSTOMER_HEADER, "Notes"]
    rows = [[*row, long_note if n == 0 else "short"] for n, row in enumerate(customers(2))]
    source = write_csv(tmp_path / "in.csv", header, rows)

    result = provisioner("create", str(source), "--run-id", "r1", expect=0)

    no_secret_in(provisioner, result.output)
    results = check_run(provisioner.run_dir("r1"), rows=2, exit_code=0)
    assert [r["status"] for r in results] == ["created", "created"]
    assert [r["Notes"] for r in read_csv(provisioner.run_dir("r1") / "results.csv")] == [
        long_note,
        "short",
    ]
    assert provisioner.emulator.requests == 2
    assert all("Notes" not in chat.parameters for chat in provisioner.emulator.created)


@pytest.mark.slow
@pytest.mark.parametrize("change", ["truncated", "rewritten"])
def test_an_input_changed_during_the_run_does_not_change_it(
    provisioner: Cli, tmp_path: Path, change: str
) -> None:
    rows = 200
    provisioner.emulator.latency = 0.01
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))
    original = source.read_bytes()
    arguments = run_args(provisioner.emulator, source, provisioner.out, "r1", "--concurrency", "2")
    process = start(arguments, provisioner.env())
    wait_until(lambda: len(provisioner.emulator.created) >= 10, process)

    if change == "truncated":
        source.write_bytes(original[: len(original) // 3])
    else:
        write_csv(source, CUSTOMER_HEADER, customers(rows, start=1000))
    stdout, stderr = finish(process)

    assert process.returncode == 0, stderr
    results = check_run(provisioner.run_dir("r1"), rows=rows, exit_code=0)
    assert {r["status"] for r in results} == {"created"}
    assert creations_per_customer(provisioner.emulator) == Counter(
        {f"Customer {n}": 1 for n in range(1, rows + 1)}
    )
    assert (provisioner.run_dir("r1") / "input.csv").read_bytes() == original
    assert_no_secret(provisioner.emulator.username, [stdout, stderr], provisioner.out)


def test_a_repeated_row_key_is_sent_once_and_the_second_is_invalid(
    provisioner: Cli, tmp_path: Path
) -> None:
    header = ["row_key", "AddressSid", "CustomerFriendlyName"]
    rows = [["K1", sid(1), "First"], ["K1", sid(2), "Joined twice"], ["K2", sid(3), "Other"]]
    source = write_csv(tmp_path / "in.csv", header, rows)

    result = provisioner("create", str(source), "--run-id", "r1", expect=1)

    no_secret_in(provisioner, result.output)
    results = check_run(provisioner.run_dir("r1"), rows=3, exit_code=1)
    assert [r["status"] for r in results] == ["created", "invalid", "created"]
    assert results[1]["error_code"] == "duplicate_row_key"
    sent = Counter(chat.parameters["CustomerFriendlyName"] for chat in provisioner.emulator.created)
    assert sent == Counter({"First": 1, "Other": 1})  # in any order: rows go concurrently


def test_headers_named_row_status_identity_are_the_users_own_columns(
    provisioner: Cli, tmp_path: Path
) -> None:
    header = ["AddressSid", "row", "status", "identity"]
    rows = [[sid(1), "7", "vip", "customer-one"], [sid(2), "8", "new", "customer-two"]]
    source = write_csv(tmp_path / "in.csv", header, rows)

    result = provisioner("create", str(source), "--run-id", "r1", expect=0)

    no_secret_in(provisioner, result.output)
    results = check_run(provisioner.run_dir("r1"), rows=2, exit_code=0)
    assert [r["status"] for r in results] == ["created", "created"]
    assert [r["identity"] for r in results] == ["customer-one", "customer-two"]
    with (provisioner.run_dir("r1") / "results.csv").open(encoding="utf-8-sig") as stream:
        written = list(csv.reader(stream))
    assert written[0] == [*header, *RESULT_COLUMNS]
    assert [record[: len(header)] for record in written[1:]] == rows
    sent = Counter(chat.parameters.get("Identity") for chat in provisioner.emulator.created)
    assert sent == Counter({"customer-one": 1, "customer-two": 1})


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    """A named pipe that a writer thread fills with a CSV once the run opens it."""
    path = tmp_path / "in.csv"
    os.mkfifo(path)
    data = write_csv(tmp_path / "data.csv", CUSTOMER_HEADER, customers(3)).read_bytes()

    def feed() -> None:
        with path.open("wb") as stream:  # blocks until the run opens the pipe
            stream.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    yield path, data
    if writer.is_alive():  # the run never opened it: open the reading end so the writer ends
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        writer.join(5)
        os.close(descriptor)


def test_a_named_pipe_is_read_whole(provisioner: Cli, fifo: tuple[Path, bytes]) -> None:
    path, data = fifo

    result = provisioner("create", str(path), "--run-id", "r1", expect=0)

    results = check_run(provisioner.run_dir("r1"), rows=3, exit_code=0)
    assert {r["status"] for r in results} == {"created"}
    assert (provisioner.run_dir("r1") / "input.csv").read_bytes() == data
    assert provisioner.emulator.requests == 3
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused_at_once(provisioner: Cli, device: str) -> None:
    if not Path(device).exists():
        pytest.skip(f"{device} does not exist here")
    started = time.monotonic()

    result = provisioner("create", device, expect=2)

    assert time.monotonic() - started < 5
    (message,) = error_lines(result)
    assert device in message
    assert "device" in message
    no_secret_in(provisioner, result.output)
    assert provisioner.emulator.requests == 0
    assert not provisioner.out.exists()


def test_standard_input_is_read_whole(provisioner: Cli, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "data.csv", CUSTOMER_HEADER, customers(3)).read_bytes()
    runtime = Runtime(sleep=provisioner.sleeps, env=provisioner.env(), stdin=io.BytesIO(data))
    arguments = ["create", "-", "--out", str(provisioner.out), "--run-id", "r1"]
    arguments += ["--base-url", provisioner.emulator.url]

    result = CliRunner().invoke(cli, arguments, obj=runtime, catch_exceptions=False)

    assert result.exit_code == 0, result.output
    results = check_run(provisioner.run_dir("r1"), rows=3, exit_code=0)
    assert {r["status"] for r in results} == {"created"}
    assert (provisioner.run_dir("r1") / "input.csv").read_bytes() == data
    no_secret_in(provisioner, result.output)


def test_a_named_pipe_nobody_writes_to_is_refused_without_hanging(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("provisioner.table.FIFO_WRITER_WAIT_SECONDS", 0.2)
    path = tmp_path / "in.csv"
    os.mkfifo(path)
    started = time.monotonic()

    result = provisioner("create", str(path), expect=2)

    assert time.monotonic() - started < 5
    (message,) = error_lines(result)
    assert "FIFO" in message
    no_secret_in(provisioner, result.output)
    assert provisioner.emulator.requests == 0
    assert not provisioner.out.exists()


def test_a_socket_is_refused_at_once(provisioner: Cli, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        result = provisioner("create", str(path), expect=2)

    (message,) = error_lines(result)
    assert "socket" in message
    no_secret_in(provisioner, result.output)
    assert provisioner.emulator.requests == 0


# ---------------------------------------------------------------- 3. options and configuration


NOT_LATIN_1 = "s3cr3t-t\u00f6k\u00e9n-\u20ac-\u2713"  # characters Basic auth cannot carry
WITH_CONTROL = "s3cr3t-tok\x07en-bell"
BAD_SETTINGS: dict[str, tuple[list[str], dict[str, str], str, str]] = {
    # name: (arguments, environment added, what the message names (| between alternatives),
    # what it must not show)
    "timeout-nan": (["--timeout", "nan"], {}, "--timeout", ""),
    "timeout-inf": (["--timeout", "inf"], {}, "--timeout", ""),
    "timeout-nan-from-env": (
        [],
        {"PROVISIONER_TIMEOUT": "nan"},
        "PROVISIONER_TIMEOUT|--timeout",
        "",
    ),
    "rate-nan": (["--rate", "nan"], {}, "--rate", ""),
    "rate-inf": (["--rate", "inf"], {}, "--rate", ""),
    "lookup-lag-nan": (["--lookup-lag", "nan"], {}, "--lookup-lag", ""),
    "delimiter-two-characters": (["--delimiter", ";;"], {}, "--delimiter", ""),
    "encoding-unknown": (["--encoding", "nope"], {}, "--encoding", ""),
    "base-url-with-user-info": (
        ["--base-url", "https://user:hunter2pw@flex-api.twilio.com"],
        {},
        "--base-url",
        "hunter2pw",
    ),
    "base-url-with-query": (["--base-url", "https://h.example?x=1"], {}, "--base-url", ""),
    "base-url-impossible-port": (["--base-url", "https://h.example:99999"], {}, "--base-url", ""),
    "base-url-from-env-with-user-info": (
        [],
        {"PROVISIONER_BASE_URL": "https://u:hunter2pw@flex-api.twilio.com"},
        "PROVISIONER_BASE_URL|--base-url",  # the variable, or the option it sets
        "hunter2pw",
    ),
    "token-not-latin-1": ([], {"TWILIO_AUTH_TOKEN": NOT_LATIN_1}, "TWILIO_AUTH_TOKEN", NOT_LATIN_1),
    "token-with-a-control-character": (
        [],
        {"TWILIO_AUTH_TOKEN": WITH_CONTROL},
        "TWILIO_AUTH_TOKEN",
        WITH_CONTROL,
    ),
    "api-secret-with-a-line-break": (
        [],
        {"TWILIO_API_KEY": "SK" + "1" * 32, "TWILIO_API_SECRET": "abc\ndef-key-secret"},
        "TWILIO_API_SECRET",
        "def-key-secret",
    ),
    "account-sid-not-latin-1": (
        [],
        {"TWILIO_ACCOUNT_SID": "AC\u0416" + "0" * 31},
        "TWILIO_ACCOUNT_SID",
        "",
    ),
}


@pytest.mark.parametrize(
    ("arguments", "environment", "named", "hidden"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys()
)
def test_an_unusable_setting_is_one_error_line_exit_2_and_nothing_sent_or_marked(
    provisioner: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_names: list[str],
    arguments: list[str],
    environment: dict[str, str],
    named: str,
    hidden: str,
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    provisioner("create", str(source), "--run-id", "r0", expect=0)  # an earlier run's ledger
    before = provisioner.emulator.requests
    no_names.clear()
    for name, value in environment.items():
        if name.startswith("PROVISIONER_"):  # Click reads options' variables from os.environ
            monkeypatch.setenv(name, value)

    has_base_url = "--base-url" in arguments or "PROVISIONER_BASE_URL" in environment
    result = provisioner(
        "create",
        str(source),
        "--run-id",
        "r1",
        *arguments,
        *([] if has_base_url else ["--base-url", provisioner.emulator.url]),
        env=provisioner.env(**environment),
        base_url=False,
        expect=2,
    )

    (message,) = error_lines(result)
    assert any(name in message for name in named.split("|")), result.stderr
    assert "Traceback" not in result.output
    if hidden:
        assert hidden not in result.output
        unusual = {char for char in hidden if not char.isascii() or not char.isprintable()}
        assert not unusual & set(result.output.replace("\n", "")), unusual
        assert_no_secret(provisioner.emulator.username, [], provisioner.out, secret=hidden)
    assert provisioner.emulator.requests == before
    assert no_names == []  # no host was even looked up: nothing went anywhere
    assert not provisioner.run_dir("r1").exists()
    ledger = read_status(provisioner.out / "ledger.sqlite")
    assert ledger.unsettled == {}  # nothing in flight
    assert [run.run_id for run in ledger.runs] == ["r0"]
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


NETWORK_SETTINGS: dict[str, tuple[dict[str, str], str, str]] = {
    # name: (environment added, the variable the message names, what it must not show)
    "https-proxy-not-http": (
        {"HTTPS_PROXY": "socks5://u:proxy-pass-word@127.0.0.1:1"},
        "HTTPS_PROXY",
        "proxy-pass-word",
    ),
    "https-proxy-impossible-port": ({"HTTPS_PROXY": "http://127.0.0.1:99999"}, "HTTPS_PROXY", ""),
    "ca-bundle-missing": ({"REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem"}, "REQUESTS_CA_BUNDLE", ""),
    "ca-bundle-not-pem": ({"SSL_CERT_FILE": "/etc/hostname"}, "SSL_CERT_FILE", ""),
}
LEFT_BEHIND = (
    "bug: HTTPS_PROXY and the CA bundle are checked only when TwilioClient is built "
    "(run.py:175, client.py TwilioClient.__init__), after the ledger is opened and the run "
    "folder made (run.py:163-169): exit 2 leaves OUT/<run-id>/ with input.csv, run.log and a "
    "results.csv of 0 of the input's rows, and the same --run-id is refused next time; "
    "expected: checked with the other settings, before anything is made"
)


def _refused_network_setting(
    provisioner: Cli, tmp_path: Path, environment: dict[str, str]
) -> Result:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    return provisioner(
        "create",
        str(source),
        "--run-id",
        "r1",
        "--base-url",
        f"https://{FAR_HOST}",
        env=provisioner.env(**environment),
        base_url=False,
        expect=2,
    )


@pytest.mark.parametrize(
    ("environment", "named", "hidden"), NETWORK_SETTINGS.values(), ids=NETWORK_SETTINGS.keys()
)
def test_an_unusable_proxy_or_ca_bundle_is_one_error_line_and_nothing_sent(
    provisioner: Cli,
    tmp_path: Path,
    no_names: list[str],
    environment: dict[str, str],
    named: str,
    hidden: str,
) -> None:
    result = _refused_network_setting(provisioner, tmp_path, environment)

    (message,) = error_lines(result)
    assert named in message
    assert "Traceback" not in result.output
    if hidden:
        assert hidden not in result.output
    assert FAR_HOST not in no_names  # nothing was sent anywhere
    ledger = provisioner.out / "ledger.sqlite"
    if ledger.exists():
        assert read_status(ledger).unsettled == {}
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


@pytest.mark.parametrize("environment", [NETWORK_SETTINGS["ca-bundle-missing"][0]])
def test_an_unusable_proxy_or_ca_bundle_leaves_no_run_folder(
    provisioner: Cli, tmp_path: Path, no_names: list[str], environment: dict[str, str]
) -> None:
    _refused_network_setting(provisioner, tmp_path, environment)

    assert not provisioner.run_dir("r1").exists()


# ---------------------------------------------------------------- 4. output folder and disk


@pytest.mark.parametrize("ledger_elsewhere", [False, True], ids=["default-ledger", "own-ledger"])
def test_an_output_folder_that_cannot_be_made_is_refused_before_any_request(
    provisioner: Cli, tmp_path: Path, ledger_elsewhere: bool
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    blocker = tmp_path / "somefile"
    blocker.write_text("a regular file, so nothing can be made under it\n")
    ledger = ["--ledger", str(tmp_path / "ledgers" / "ledger.sqlite")] if ledger_elsewhere else []

    result = invoke(
        provisioner,
        "create",
        str(source),
        "--out",
        str(blocker / "sub"),
        "--base-url",
        provisioner.emulator.url,
        *ledger,
    )

    assert result.exit_code == 2, result.output
    (message,) = error_lines(result)
    assert str(blocker / "sub") in message
    assert "Traceback" not in result.output
    no_secret_in(provisioner, result.output)
    assert provisioner.emulator.requests == 0
    if ledger_elsewhere:
        status = read_status(tmp_path / "ledgers" / "ledger.sqlite")
        assert (status.runs, status.unsettled) == ([], {})


def test_a_ledger_that_cannot_be_made_is_refused_before_any_request(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    blocker = tmp_path / "somefile"
    blocker.write_text("a regular file\n")

    result = provisioner(
        "create", str(source), "--ledger", str(blocker / "ledger.sqlite"), expect=2
    )

    (message,) = error_lines(result)
    assert "ledger" in message
    assert str(blocker) in message
    no_secret_in(provisioner, result.output)
    assert provisioner.emulator.requests == 0


FILE_SIZE_LIMIT = 96 * 1024  # bytes any one file may grow to: the ledger's WAL passes it soon


def _limit_file_size() -> None:
    """In the child: files stop growing past FILE_SIZE_LIMIT, and writes then fail (EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


LEDGER_FAILS_MID_RUN = (
    "bug: a LedgerError raised mid-run escapes send_all (run.py:428, the transaction that "
    "records finished rows; also _final_check at run.py:464 and _finish's end_run at "
    "run.py:531), so the CLI exits 2 ('nothing was sent') with results.csv cut short and no "
    "summary.json or report.html; expected: the run stops (exit 3), writes every file, every "
    "row a status"
)


def _fill_the_disk(provisioner: Cli, source: Path) -> tuple[subprocess.Popen[str], str, str]:
    """A run whose files cannot grow past FILE_SIZE_LIMIT: the ledger's WAL fills part-way."""
    assert source.stat().st_size < FILE_SIZE_LIMIT  # the input's copy fits
    arguments = run_args(provisioner.emulator, source, provisioner.out, "r1", "--concurrency", "4")
    process = start(arguments, provisioner.env(), preexec=_limit_file_size)
    stdout, stderr = finish(process)
    return process, stdout, stderr


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_keeps_every_answer_and_the_rerun_creates_nothing_twice(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows = 400
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))

    process, stdout, stderr = _fill_the_disk(provisioner, source)

    assert process.returncode == 3, stderr
    assert "cannot write the ledger" in stderr
    assert "Traceback" not in stderr
    assert "internal error" not in stderr
    created_first = len(provisioner.emulator.created)
    assert 0 < created_first < rows  # it did stop part-way
    status = read_status(provisioner.out / "ledger.sqlite")
    # every web chat the server made is recorded, or in flight: looked up before any resend
    assert sum(status.created.values()) + sum(status.unsettled.values()) >= created_first

    provisioner("create", str(source), "--run-id", "r2", "--rate", "0", expect=0)

    check_run(provisioner.run_dir("r2"), rows=rows, exit_code=0)
    assert creations_per_customer(provisioner.emulator) == Counter(
        {f"Customer {n}": 1 for n in range(1, rows + 1)}
    )
    assert_no_secret(provisioner.emulator.username, [stdout, stderr], provisioner.out)


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_stops_it_with_exit_3_and_every_file(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows = 200  # results.csv stays under the file limit; the ledger's WAL does not
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))

    process, _, stderr = _fill_the_disk(provisioner, source)

    assert process.returncode == 3, stderr
    results = check_run(provisioner.run_dir("r1"), rows=rows, exit_code=3)
    assert "not_attempted" in {r["status"] for r in results}
    assert "cannot write the ledger" in read_summary(provisioner.run_dir("r1"))["stop_reason"]


RESULTS_SIZE_LIMIT = 160 * 1024  # bytes: two rows of results, while the ledger stays far below
WIDE_NOTE = 30_000  # characters per note: under Excel's 32,767 per cell, so a real workbook
RESULTS_FULL = (
    "bug: a result file that cannot be written mid-run (EFBIG/ENOSPC from CsvWriter.write, "
    "writers.py:96, via report.py:169 and run.py:439 in send_all) is an 'internal error', exit 4; "
    "expected: the run stops cleanly, exit 3, naming the disk (README: exit 3 'the ledger or "
    "disk failed mid-run')"
)


def _limit_results(provisioner: Cli, tmp_path: Path) -> tuple[subprocess.Popen[str], str, Path]:
    """A workbook (small, compressed) whose results.csv (its text) outgrows the file limit."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append([*CUSTOMER_HEADER, "Note A", "Note B", "Note C"])
    for row in customers(12):
        sheet.append([*row, *(letter * WIDE_NOTE for letter in "abc")])
    source = tmp_path / "in.xlsx"
    book.save(source)
    assert source.stat().st_size < RESULTS_SIZE_LIMIT

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (RESULTS_SIZE_LIMIT, RESULTS_SIZE_LIMIT))

    arguments = run_args(provisioner.emulator, source, provisioner.out, "r1", "--concurrency", "1")
    process = start(arguments, provisioner.env(), preexec=limit)
    _, stderr = finish(process)
    return process, stderr, source


@pytest.mark.slow
def test_results_that_cannot_be_written_mid_run_lose_no_answer(
    provisioner: Cli, tmp_path: Path
) -> None:
    process, stderr, source = _limit_results(provisioner, tmp_path)

    assert process.returncode != 0, stderr
    assert "Traceback" not in stderr
    no_secret_in(provisioner, stderr)
    created_first = len(provisioner.emulator.created)
    assert 0 < created_first < 12
    status = read_status(provisioner.out / "ledger.sqlite")
    assert sum(status.created.values()) + sum(status.unsettled.values()) >= created_first

    provisioner("create", str(source), "--run-id", "r2", "--rate", "0", expect=0)

    check_run(provisioner.run_dir("r2"), rows=12, exit_code=0)
    assert creations_per_customer(provisioner.emulator) == Counter(
        {f"Customer {n}": 1 for n in range(1, 13)}
    )


@pytest.mark.slow
def test_results_that_cannot_be_written_mid_run_stop_it_with_exit_3(
    provisioner: Cli, tmp_path: Path
) -> None:
    process, stderr, _ = _limit_results(provisioner, tmp_path)

    assert "internal error" not in stderr
    assert process.returncode == 3, stderr


# ---------------------------------------------------------------- 5. one ledger, two paths


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
    assert "hard link" in message
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
    assert "deleted or replaced" in stderr
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
    assert "deleted or replaced" in read_summary(provisioner.run_dir("r1"))["stop_reason"]


# ---------------------------------------------------------------- 6. SIGHUP


@pytest.mark.slow
def test_sighup_is_handled_like_sigterm(provisioner: Cli, tmp_path: Path) -> None:
    rows = 400
    provisioner.emulator.latency = 0.005
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(rows))
    process = start(
        run_args(provisioner.emulator, source, provisioner.out, "r1", "--concurrency", "2"),
        provisioner.env(),
    )
    wait_until(
        lambda: len(provisioner.emulator.created) >= random.Random(SEED + 1).randint(5, 50),
        process,
    )

    process.send_signal(signal.SIGHUP)
    stdout, stderr = finish(process)

    assert process.returncode == 3, stderr
    assert "interrupted by SIGHUP" in stderr
    results = check_run(provisioner.run_dir("r1"), rows=rows, exit_code=3)
    statuses = Counter(r["status"] for r in results)
    assert set(statuses) <= {"created", "not_attempted"}
    assert statuses["not_attempted"] > 0
    assert statuses["created"] == len(provisioner.emulator.created)
    assert read_status(provisioner.out / "ledger.sqlite").unsettled == {}
    assert_no_secret(provisioner.emulator.username, [stdout, stderr], provisioner.out)


EARLY_SIGNAL = (
    "bug: SIGTERM and SIGHUP are handled only once sending starts (stopping.py on_signals, "
    "entered in run.py send_all); while a large input is read and checked they kill the "
    "process (exit -SIG, shells see 143/129, not 3) and the TemporaryDirectory cleanup of "
    "run.py:158 never runs, leaving a copy of the customer data in /tmp/provisioner-*; "
    "expected: handled like Ctrl-C there (exit 3, 'interrupted', staging copy removed), e.g. "
    "cli.main installing signal.default_int_handler for SIGTERM and SIGHUP"
)
BIG_INPUT_ROWS = 200_000  # seconds to read and check: time for a signal to land in that phase


def _staging_copy(pid: int) -> Path | None:
    """The input copy a run is reading in its staging folder, from its open files."""
    try:
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return None
    return next((Path(t) for t in targets if "provisioner-" in t and t.endswith("input.csv")), None)


@pytest.mark.slow
@pytest.mark.parametrize(
    "signal_number", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"]
)
def test_a_signal_while_the_input_is_checked_exits_3_and_leaves_no_copy(
    provisioner: Cli, tmp_path: Path, signal_number: signal.Signals
) -> None:
    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc to see the run's open files")
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(BIG_INPUT_ROWS))
    process = start(
        run_args(provisioner.emulator, source, provisioner.out, "r1"), provisioner.env()
    )
    copies: list[Path] = []

    def reading() -> bool:
        copy = _staging_copy(process.pid)
        if copy is not None:
            copies.append(copy)
        return bool(copies)

    wait_until(reading, process)

    process.send_signal(signal_number)
    _, stderr = finish(process)
    left_behind = copies[0].exists()
    shutil.rmtree(copies[0].parent, ignore_errors=True)  # never leave the test's copy behind

    assert provisioner.emulator.requests == 0
    assert not left_behind, "a copy of the customer data was left in the staging folder"
    assert process.returncode == 3, stderr
    assert "interrupted" in stderr


# ---------------------------------------------------------------- 7. permissions


def _no_umask() -> None:
    """In the child: a umask that takes no permission away."""
    os.umask(0)


@pytest.mark.slow
def test_with_umask_0_every_file_is_the_owners_only(provisioner: Cli, tmp_path: Path) -> None:
    provisioner.emulator.latency = 0.01
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(100))
    ledger = provisioner.out / "ledger.sqlite"
    wal = ledger.with_name("ledger.sqlite-wal")
    process = start(
        run_args(provisioner.emulator, source, provisioner.out, "r1", "--concurrency", "2"),
        provisioner.env(),
        preexec=_no_umask,
    )
    wait_until(lambda: len(provisioner.emulator.created) >= 5 and wal.exists(), process)
    modes_during = {
        path.name: path.stat().st_mode & 0o777
        for path in provisioner.out.glob("ledger.sqlite*")
        if path.exists()
    }
    stdout, stderr = finish(process)

    assert process.returncode == 0, stderr
    run_dir = provisioner.run_dir("r1")
    assert run_dir.stat().st_mode & 0o777 == 0o700
    assert provisioner.out.stat().st_mode & 0o777 == 0o700
    modes = {path.name: path.stat().st_mode & 0o777 for path in run_dir.iterdir()}
    assert set(modes) >= RUN_FILES
    assert modes == dict.fromkeys(modes, 0o600)
    assert {"ledger.sqlite", "ledger.sqlite-wal"} <= set(modes_during)
    assert modes_during == dict.fromkeys(modes_during, 0o600)
    after = {path.name: path.stat().st_mode & 0o777 for path in provisioner.out.glob("ledger*")}
    assert after == dict.fromkeys(after, 0o600)
    assert_no_secret(provisioner.emulator.username, [stdout, stderr], provisioner.out)


# ---------------------------------------------------------------- 8. corporate networks


@pytest.mark.parametrize(
    ("no_proxy", "proxied"),
    [
        ("", True),
        ("other.test", True),
        ("example.test", False),
        (".example.test", False),
        ("other.test, flex-api.example.test", False),
        ("*", False),
    ],
)
def test_https_proxy_is_used_for_an_https_root_and_no_proxy_honoured(
    provisioner: Cli, tmp_path: Path, no_names: list[str], no_proxy: str, proxied: bool
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))
    with HostileServer(default=Reply(502, b"", ())) as proxy:
        environment = {"HTTPS_PROXY": proxy.url, **({"NO_PROXY": no_proxy} if no_proxy else {})}
        result = provisioner(
            "create",
            str(source),
            "--run-id",
            "r1",
            "--base-url",
            f"https://{FAR_HOST}",
            "--max-attempts",
            "2",
            env=provisioner.env(**environment),
            base_url=False,
            expect=1,
        )
        received = proxy.received

    (row,) = check_run(provisioner.run_dir("r1"), rows=1, exit_code=1)
    assert row["status"] == "failed"
    assert "Traceback" not in result.output
    if proxied:
        assert [(r.method, r.target) for r in received] == [("CONNECT", f"{FAR_HOST}:443")] * 2
        assert all(r.header("Authorization") is None for r in received)  # only inside the tunnel
        assert row["error_code"] == "proxy_failed"
        assert "proxy" in row["error_message"]
        assert FAR_HOST not in no_names  # the proxy resolves the name, not us
    else:
        assert received == []
        assert FAR_HOST in no_names  # went direct (and the guard refused the name)
        assert row["error_code"] == "connection_failed"
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


def test_a_netrc_never_replaces_the_credentials(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(
        "machine 127.0.0.1 login intruder password netrc-password\n"
        "default login intruder password netrc-password\n"
    )
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(netrc))
    against(hostile, created(web_chat_sid(1)))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    result = create_on(provisioner, hostile, source, expect=0)

    (row,) = check_run(provisioner.run_dir("r1"), rows=1, exit_code=0)
    assert row["status"] == "created"
    (request,) = posts(hostile)
    basic = base64.b64encode(f"{provisioner.emulator.username}:{SECRET}".encode()).decode()
    assert request.header("Authorization") == f"Basic {basic}"
    assert "netrc-password" not in result.output
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


# ---------------------------------------------------------------- 9. a read-only ledger


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


STALE_READ = (
    "bug: with the ledger's folder read-only, status falls back to SQLite's immutable=1 "
    "(ledger.py:514), which ignores ledger.sqlite-wal: writes not yet merged into the main "
    "file (a killed run, a copy taken while a run held it) are silently missing, so status "
    "shows fewer web chats and runs than the ledger holds; expected: the ledger's whole "
    "content (e.g. copy ledger.sqlite and its -wal into a private temporary folder and read "
    "that), or a clear error that it cannot be read whole"
)


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
