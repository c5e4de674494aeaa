"""The Twilio client against a hostile server: every answer and failure becomes a typed value."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from provisioner.attempts import (
    MAX_RETRY_AFTER,
    Attempt,
    FoundConversation,
    Lookup,
    parse_error_body,
    parse_retry_after,
)
from provisioner.client import MAX_LOOKUP_PAGES, TwilioClient
from provisioner.endpoints import (
    CA_BUNDLE_VARIABLES,
    Credentials,
    ca_bundle,
    proxy_for,
    resolve_base_url,
    resolve_conversations_url,
)
from provisioner.errors import ConfigError
from provisioner.retry import retryable
from provisioner.transport import MAX_MESSAGE_CHARS
from tests.hostile import (
    Behaviour,
    Drop,
    Hang,
    HostileServer,
    Huge,
    Raw,
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
    make_certificate,
    many_headers,
    participant_conversation,
    redirect,
    status_line_only,
    throttled,
    tls_context,
    trickled,
    twilio_error,
    web_chat_sid,
)

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # shaped like an Auth Token
CREDENTIALS = Credentials("AC" + "1" * 32, SECRET, "AC" + "1" * 32)
PARAMETERS = {"AddressSid": "IG" + "0" * 32, "CustomerFriendlyName": "Ada", "Identity": "prv-test"}
BASIC = "Basic " + base64.b64encode(f"{CREDENTIALS.username}:{SECRET}".encode()).decode()
GENEROUS = 5.0  # seconds: a bound that only a hang or a read of gigabytes would pass


def client_for(
    server: HostileServer, timeout: float = 2.0, env: dict[str, str] | None = None
) -> TwilioClient:
    root = server.url
    return TwilioClient(root, root, CREDENTIALS, timeout=timeout, pool_size=4, env=env or {})


@pytest.fixture
def client(hostile: HostileServer) -> Iterator[TwilioClient]:
    twilio = client_for(hostile)
    yield twilio
    twilio.close()


@pytest.fixture
def other() -> Iterator[HostileServer]:
    """A second server: where a redirect or a foreign next page would lead."""
    with HostileServer() as server:
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def no_secret_in(value: Attempt | Lookup) -> bool:
    text = repr(value)
    forms = (SECRET, BASIC.split()[1], quote(SECRET), base64.b64encode(SECRET.encode()).decode())
    return not any(form.lower() in text.lower() for form in forms)


# ---------------------------------------------------------------- creating web chats


def test_a_web_chat_is_created_with_what_was_sent(
    client: TwilioClient, hostile: HostileServer
) -> None:
    hostile.script(created(web_chat_sid(7), "prv-test"))

    attempt = client.create_web_chat(PARAMETERS)

    assert attempt.created
    assert (attempt.http_status, attempt.conversation_sid, attempt.identity) == (
        201,
        web_chat_sid(7),
        "prv-test",
    )
    assert (attempt.ambiguous, attempt.error_code, attempt.error_message) == (False, "", "")
    assert attempt.latency > 0
    (request,) = hostile.received
    assert (request.method, request.path, request.form) == ("POST", "/v2/WebChats", PARAMETERS)
    assert request.header("Authorization") == BASIC
    assert request.header("Accept") == "application/json"
    assert (request.header("User-Agent") or "").startswith("provisioner/")


def test_a_200_with_a_valid_sid_is_created_and_noted(
    client: TwilioClient, hostile: HostileServer
) -> None:
    hostile.script(created(web_chat_sid(3), status=200))

    attempt = client.create_web_chat(PARAMETERS)

    assert attempt.created
    assert attempt.conversation_sid == web_chat_sid(3)
    assert attempt.error_message == "HTTP 200 where Twilio answers 201; created"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (html_page(200), "not a JSON object (text/html; charset=utf-8)"),
        (html_page(201), "not a JSON object (text/html; charset=utf-8)"),
        (json_reply(201, {"identity": "prv-test"}), "has no SID"),
        (json_reply(201, ["CH" + "0" * 32]), "not a JSON object"),
        (json_reply(201, {"conversation_sid": "CH123"}), "not a Conversation SID"),
        (json_reply(201, {"conversation_sid": "CH" + "g" * 32}), "not a Conversation SID"),
        (json_reply(201, {"conversation_sid": "XX" + "0" * 32}), "not a Conversation SID"),
        (json_reply(201, {"conversation_sid": 42}), "not a Conversation SID"),
        (json_reply(201, {"conversation_sid": None}), "has no SID"),
        (json_reply(201, {"conversation_sid": "CH" + SECRET}), "not a Conversation SID"),
        (json_reply(204, {}), "has no body"),  # http.client reads no body after a 204
        (Reply(201, b""), "has no body"),
        (Reply(201, b'{"conversation_sid": "CH0000'), "not a JSON object"),
        (Reply(201, created_body()[:-1], length=False), "not a JSON object"),
        (cut(201, created_body(), after=10), "cut short"),
        (cut(200, created_body(), after=0), "cut short"),
        (status_line_only(201), "has no body"),
        (gzip_bomb_reply(201), "longer than 65536 bytes"),
        (Huge(201), "longer than 65536 bytes"),
        (Reply(201, b"\x1f\x8b not gzip", (("Content-Encoding", "gzip"),)), "cut short"),
        (Reply(201, b"{}"), "has no SID"),
        (Raw(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), "cut short"),
        (Raw(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{}"), "cut short"),
        (Raw(b"HTTP/1.1 201 OK\r\nContent-Encoding: " + b"gzip, " * 6 + b"gzip\r\n\r\n"), "cut"),
    ],
)
def test_a_2xx_that_does_not_prove_a_creation_is_ambiguous(
    client: TwilioClient, hostile: HostileServer, answer: Behaviour, reason: str
) -> None:
    hostile.script(answer)

    attempt = client.create_web_chat(PARAMETERS)

    assert not attempt.created
    assert (attempt.ambiguous, retryable(attempt)) == (True, True)
    assert attempt.error_code == "unreadable_answer"
    assert attempt.conversation_sid == ""
    assert reason in attempt.error_message
    assert attempt.error_message.endswith("the web chat may exist")
    assert no_secret_in(attempt)


def test_a_gzip_bomb_is_not_inflated(client: TwilioClient, hostile: HostileServer) -> None:
    hostile.script(gzip_bomb_reply(201))  # about 1 MB that inflates to 1 GiB
    tracemalloc.start()
    started = time.monotonic()
    try:
        attempt = client.create_web_chat(PARAMETERS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert attempt.error_code == "unreadable_answer"
    assert time.monotonic() - started < GENEROUS
    assert peak < 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (Drop(), "connection_lost"),
        (many_headers(150), "unreadable_answer"),
        (long_header(70_000), "unreadable_answer"),
        (Reply(201, reason="Created\x00" + "x" * 70_000), "unreadable_answer"),
        (Raw(b"HTTP/1.1 abc\r\n\r\n"), "unreadable_answer"),
        (Raw(b"garbage\r\n\r\n"), "unreadable_answer"),
        (
            Raw(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            "unreadable_answer",
        ),
    ],
)
def test_an_answer_lost_or_unreadable_before_its_status_is_ambiguous(
    client: TwilioClient, hostile: HostileServer, answer: Behaviour, code: str
) -> None:
    hostile.script(answer)

    attempt = client.create_web_chat(PARAMETERS)

    assert attempt.http_status is None
    assert (attempt.error_code, attempt.ambiguous, retryable(attempt)) == (code, True, True)
    assert attempt.error_message.endswith("the web chat may exist")
    assert len(hostile.received) == 1


def test_a_refused_connection_is_not_ambiguous() -> None:
    root = f"http://127.0.0.1:{free_port()}"
    twilio = TwilioClient(root, root, CREDENTIALS, timeout=1.0, pool_size=1, env={})
    try:
        attempt = twilio.create_web_chat(PARAMETERS)
    finally:
        twilio.close()

    assert (attempt.error_code, attempt.ambiguous, retryable(attempt)) == (
        "connection_failed",
        False,
        True,
    )


@pytest.mark.parametrize(
    ("answer", "timeout", "code"),
    [
        (trickled(created(), 0.05), 0.5, "timeout"),  # the status line itself, byte by byte
        (Hang(10.0), 0.25, "timeout"),
        (trickled(created(), 0.02, after_head=True), 0.25, "unreadable_answer"),
        # cut at the deadline: in the headers (timeout) or after them, as the machine's load has it
        (trickled(many_headers(90), 0.001), 0.25, "timeout|unreadable_answer"),
    ],
)
def test_the_timeout_bounds_the_whole_answer(
    hostile: HostileServer, answer: Reply | Hang, timeout: float, code: str
) -> None:
    hostile.script(answer)
    twilio = client_for(hostile, timeout=timeout)
    started = time.monotonic()
    try:
        attempt = twilio.create_web_chat(PARAMETERS)
    finally:
        twilio.close()

    assert time.monotonic() - started < timeout + 1.0
    assert attempt.error_code in code.split("|")
    assert (attempt.ambiguous, retryable(attempt)) == (True, True)
    assert attempt.error_message.endswith("the web chat may exist")


def test_a_pooled_connection_outlives_its_attempts_deadline(hostile: HostileServer) -> None:
    hostile.script(created(web_chat_sid(1)), created(web_chat_sid(2)))
    twilio = client_for(hostile, timeout=0.2)
    try:
        first = twilio.create_web_chat(PARAMETERS)
        time.sleep(0.3)  # past the first attempt's deadline, with its connection in the pool
        second = twilio.create_web_chat(PARAMETERS)
    finally:
        twilio.close()

    assert (first.created, second.created) == (True, True)
    assert [r.connection for r in hostile.received] == [1, 1]


def test_concurrent_creates_share_the_pool(client: TwilioClient, hostile: HostileServer) -> None:
    hostile.script(*(created(web_chat_sid(n)) for n in range(40)))
    attempts: list[Attempt] = []
    lock = threading.Lock()

    def create_ten() -> None:
        for _ in range(10):
            attempt = client.create_web_chat(PARAMETERS)
            with lock:
                attempts.append(attempt)

    threads = [threading.Thread(target=create_ten) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GENEROUS)

    assert sorted(a.conversation_sid for a in attempts) == [web_chat_sid(n) for n in range(40)]
    assert len({r.connection for r in hostile.received}) <= 4


# ---------------------------------------------------------------- redirects


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_refused_and_not_followed(
    client: TwilioClient, hostile: HostileServer, other: HostileServer, status: int
) -> None:
    hostile.script(redirect(f"{other.url}/v2/WebChats", status))  # its body is a gzip bomb
    started = time.monotonic()

    attempt = client.create_web_chat(PARAMETERS)

    assert time.monotonic() - started < GENEROUS
    assert (attempt.http_status, attempt.error_code) == (status, "redirect_refused")
    assert (attempt.created, attempt.ambiguous, retryable(attempt)) == (False, False, False)
    assert f"redirect to 127.0.0.1:{other.port};" in attempt.error_message
    assert len(hostile.received) == 1
    assert other.received == []


def test_a_redirect_on_the_same_origin_is_not_followed_either(
    client: TwilioClient, hostile: HostileServer
) -> None:
    hostile.script(redirect("/v2/WebChats/", 307))

    attempt = client.create_web_chat(PARAMETERS)

    assert attempt.error_code == "redirect_refused"
    assert "(same origin)" in attempt.error_message
    assert len(hostile.received) == 1


# ---------------------------------------------------------------- errors and Retry-After


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        ("0", 0.0),
        ("2.5", 2.5),
        ("-3", 0.0),
        ("1e999", MAX_RETRY_AFTER),
        ("inf", MAX_RETRY_AFTER),
        ("99999999999", MAX_RETRY_AFTER),
        (http_date(10 * 365 * 86400), MAX_RETRY_AFTER),
        (http_date(-3600), 0.0),
        ("nan", None),
        ("soon", None),
        ("", None),
        ("Wed, 99 Foo 2026 99:99:99 GMT", None),
        ("9" * 5000, None),
    ],
)
def test_retry_after_is_honoured_up_to_its_cap(
    client: TwilioClient, hostile: HostileServer, header: str, expected: float | None
) -> None:
    hostile.script(throttled(header))

    attempt = client.create_web_chat(PARAMETERS)

    assert (attempt.http_status, attempt.error_code, retryable(attempt)) == (429, "20429", True)
    assert not attempt.ambiguous
    if expected is None:
        assert attempt.retry_after is None
    else:
        assert attempt.retry_after == pytest.approx(expected, abs=2.0)


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (twilio_error(400, 21211, "Invalid AddressSid"), "21211", "Invalid AddressSid ("),
        (twilio_error(404, "20404", ["not", "a", "string"]), "20404", "HTTP 404 Not Found ("),
        (twilio_error(400, {"x": 1}, None, more_info=7), "", "HTTP 400 Bad Request"),
        (twilio_error(400, 20001.0, "float code"), "20001", "float code"),
        (twilio_error(400, True, "bool code"), "", "bool code"),
        (twilio_error(401, 20003, "Authenticate"), "20003", "Authenticate"),
        (twilio_error(400, 1, "a\x1b[31m red\r\nline"), "1", "a [31m red line"),
        (html_page(502), "", "HTTP 502 Bad Gateway"),
        (Reply(500, b"[" * 100_000), "", "HTTP 500 Internal Server Error"),
        (gzip_bomb_reply(503), "", "HTTP 503 Service Unavailable (the answer was cut short"),
        (cut(500, b'{"code": 20500, "message": "boom"}', after=5), "", "cut short"),
    ],
)
def test_error_bodies_are_read_defensively(
    client: TwilioClient, hostile: HostileServer, answer: Reply, code: str, message: str
) -> None:
    hostile.script(answer)

    attempt = client.create_web_chat(PARAMETERS)

    assert not attempt.created
    assert attempt.ambiguous == (attempt.http_status in (502, 504))  # a gateway may have sent it on
    assert attempt.error_code == code
    assert message in attempt.error_message
    assert attempt.credentials_rejected == (attempt.http_status == 401)


@pytest.mark.parametrize(
    "quoted",
    [
        SECRET,
        SECRET.upper(),
        quote(SECRET),
        BASIC,
        f"https://{CREDENTIALS.username}:{SECRET}@api.twilio.com/",
        base64.b64encode(SECRET.encode()).decode(),
    ],
)
def test_a_server_quoting_the_secret_back_is_redacted(
    client: TwilioClient, hostile: HostileServer, quoted: str
) -> None:
    hostile.script(
        twilio_error(401, 20003, f"bad credentials {quoted} " + "x" * 2000),
        Reply(401, reason=f"No {quoted}", body=b"{}"),
    )

    first = client.create_web_chat(PARAMETERS)
    second = client.create_web_chat(PARAMETERS)

    assert "[redacted]" in first.error_message
    assert "[redacted]" in second.error_message
    assert len(first.error_message) <= MAX_MESSAGE_CHARS
    assert no_secret_in(first)
    assert no_secret_in(second)


def test_a_lookup_quoting_the_secret_back_is_redacted(
    client: TwilioClient, hostile: HostileServer
) -> None:
    entry = participant_conversation(web_chat_sid(1))
    entry["conversation_friendly_name"] = f"chat of {SECRET}"
    hostile.script(twilio_error(403, 20403, f"no {SECRET}"), lookup_page(hostile.url, [entry]))

    refused = client.find_conversations("prv-test")
    found = client.find_conversations("prv-test")

    assert refused.refused
    assert found.conversations[0].friendly_name == "chat of [redacted]"
    assert no_secret_in(refused)
    assert no_secret_in(found)


# ---------------------------------------------------------------- lookups


def test_a_lookup_reads_one_identitys_conversations(
    client: TwilioClient, hostile: HostileServer
) -> None:
    entries = [
        participant_conversation(web_chat_sid(1), "a b&c=d"),
        participant_conversation(web_chat_sid(2), "a b&c=d", "2026-11-25T11:00:00Z"),
        participant_conversation("CH-not-a-sid", "a b&c=d"),
        participant_conversation(web_chat_sid(3), "someone else"),
        "not an object",
    ]
    hostile.script(lookup_page(hostile.url, entries))

    lookup = client.find_conversations("a b&c=d")

    assert lookup.ok
    assert lookup.conversations == (
        FoundConversation(web_chat_sid(1), "2026-11-25T10:00:00Z", "active", "Chat"),
        FoundConversation(web_chat_sid(2), "2026-11-25T11:00:00Z", "active", "Chat"),
    )
    assert lookup.error_message == "3 entries without this identity's conversation SID ignored"
    assert (lookup.pages, lookup.refused, retryable(lookup)) == (1, False, False)
    (request,) = hostile.received
    assert (request.method, request.path) == ("GET", "/v1/ParticipantConversations")
    assert request.query == {"Identity": "a b&c=d", "PageSize": "50"}
    assert request.header("Authorization") == BASIC


@pytest.mark.parametrize(
    "who",
    [None, "", "PRV-TEST", "prv-test ", 7, ["prv-test"]],
    ids=["missing", "empty", "other-case", "trailing-space", "number", "list"],
)
def test_a_lookup_entry_counts_only_if_it_names_the_identity_asked_for(
    client: TwilioClient, hostile: HostileServer, who: object
) -> None:
    entry = participant_conversation(web_chat_sid(1))
    if who is None:
        del entry["participant_identity"]
    else:
        entry["participant_identity"] = who
    hostile.script(lookup_page(hostile.url, [entry, participant_conversation(web_chat_sid(2))]))

    lookup = client.find_conversations("prv-test")

    assert lookup.ok
    assert [found.sid for found in lookup.conversations] == [web_chat_sid(2)]


def test_scripts_per_path_and_standing_answers(
    client: TwilioClient, hostile: HostileServer
) -> None:
    hostile.always("/v1/ParticipantConversations", lookup_page(hostile.url, []))
    hostile.script(Drop(), created(web_chat_sid(2)), path="/v2/WebChats")

    first = client.create_web_chat(PARAMETERS)
    lookup = client.find_conversations("prv-test")
    second = client.create_web_chat(PARAMETERS)

    assert (first.error_code, lookup.ok, second.conversation_sid) == (
        "connection_lost",
        True,
        web_chat_sid(2),
    )


def test_a_lookup_follows_next_pages_on_its_own_origin(
    client: TwilioClient, hostile: HostileServer
) -> None:
    page_two = f"{hostile.url}/v1/ParticipantConversations?Identity=prv-test&Page=1&PageToken=PA1"
    hostile.script(
        lookup_page(hostile.url, [participant_conversation(web_chat_sid(1))], page_two),
        lookup_page(
            hostile.url,
            [participant_conversation(web_chat_sid(1)), participant_conversation(web_chat_sid(2))],
        ),
    )

    lookup = client.find_conversations("prv-test")

    assert lookup.ok
    assert [found.sid for found in lookup.conversations] == [web_chat_sid(1), web_chat_sid(2)]
    assert lookup.pages == 2
    assert hostile.received[1].query["PageToken"] == "PA1"


def test_an_empty_lookup_is_ok(client: TwilioClient, hostile: HostileServer) -> None:
    hostile.script(lookup_page(hostile.url, []))

    lookup = client.find_conversations("prv-test")

    assert (lookup.ok, lookup.conversations, lookup.error_message) == (True, (), "")


def test_a_next_page_on_another_origin_is_not_followed(
    client: TwilioClient, hostile: HostileServer, other: HostileServer
) -> None:
    elsewhere = f"{other.url}/v1/ParticipantConversations?Identity=prv-test&Page=1"
    hostile.script(lookup_page(hostile.url, [participant_conversation(web_chat_sid(1))], elsewhere))

    lookup = client.find_conversations("prv-test")

    assert not lookup.ok
    assert lookup.error_code == "redirect_refused"
    assert f"127.0.0.1:{other.port}" in lookup.error_message
    assert not retryable(lookup)
    assert other.received == []


def test_a_lookup_reads_at_most_its_page_limit(
    client: TwilioClient, hostile: HostileServer
) -> None:
    again = f"{hostile.url}/v1/ParticipantConversations?Identity=prv-test&Page=1"
    hostile.script(*[lookup_page(hostile.url, [], again)] * (MAX_LOOKUP_PAGES + 5))

    lookup = client.find_conversations("prv-test")

    assert (lookup.ok, lookup.error_code, retryable(lookup)) == (False, "too_many_pages", False)
    assert len(hostile.received) == lookup.pages == MAX_LOOKUP_PAGES


@pytest.mark.parametrize(
    ("answer", "refused", "throttled", "worth_retrying"),
    [
        (twilio_error(401, 20003, "Authenticate"), True, False, False),
        (twilio_error(403, 20403, "Forbidden"), True, False, False),
        (throttled("3"), False, True, True),
        (twilio_error(500, 20500, "Internal"), False, False, True),
        (twilio_error(503, 20503, "Unavailable"), False, False, True),
        (twilio_error(404, 20404, "Not found"), False, False, False),
        (html_page(200), False, False, True),
        (json_reply(200, {"conversations": "nope", "meta": {}}), False, False, True),
        (json_reply(200, {"conversations": [], "meta": {"next_page_url": 5}}), False, False, True),
        (cut(200, b'{"conversations": [], "meta": {}}', after=8), False, False, True),
        (gzip_bomb_reply(200), False, False, True),
        (Drop(), False, False, True),
        (redirect("https://elsewhere.example/v1/ParticipantConversations"), False, False, False),
    ],
)
def test_a_lookup_that_cannot_answer_says_why(
    client: TwilioClient,
    hostile: HostileServer,
    answer: Reply | Drop,
    refused: bool,
    throttled: bool,
    worth_retrying: bool,
) -> None:
    hostile.script(answer)

    lookup = client.find_conversations("prv-test")

    assert not lookup.ok
    assert (lookup.refused, lookup.throttled, retryable(lookup)) == (
        refused,
        throttled,
        worth_retrying,
    )
    assert lookup.error_message
    if throttled:
        assert lookup.retry_after == 3.0


# ---------------------------------------------------------------- closing conversations


def test_a_conversation_is_closed_never_deleted(
    client: TwilioClient, hostile: HostileServer
) -> None:
    sid = web_chat_sid(9)
    hostile.script(json_reply(200, {"sid": sid, "state": "closed"}))

    attempt = client.close_conversation(sid)

    assert attempt.created
    assert attempt.conversation_sid == sid
    (request,) = hostile.received
    assert (request.method, request.path, request.form) == (
        "POST",
        f"/v1/Conversations/{sid}",
        {"State": "closed"},
    )


@pytest.mark.parametrize(
    "answer",
    [json_reply(200, {"sid": web_chat_sid(8)}), html_page(200), cut(200, b'{"sid": "CH', 4)],
)
def test_a_close_whose_answer_proves_nothing_is_ambiguous(
    client: TwilioClient, hostile: HostileServer, answer: Reply
) -> None:
    hostile.script(answer)

    attempt = client.close_conversation(web_chat_sid(9))

    assert (attempt.created, attempt.ambiguous, retryable(attempt)) == (False, True, True)
    assert attempt.error_code == "unreadable_answer"


@pytest.mark.parametrize("sid", ["CH123", "../../v2/WebChats", "CH" + "0" * 31 + "/", ""])
def test_closing_an_invalid_sid_sends_nothing(
    client: TwilioClient, hostile: HostileServer, sid: str
) -> None:
    attempt = client.close_conversation(sid)

    assert (attempt.error_code, retryable(attempt)) == ("invalid_sid", False)
    assert hostile.received == []


# ---------------------------------------------------------------- what a session must not do


def test_a_netrc_never_replaces_the_credentials(
    hostile: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login intruder password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    for variable in CA_BUNDLE_VARIABLES:  # this test reads the real environment
        monkeypatch.delenv(variable, raising=False)
    hostile.script(created())
    twilio = TwilioClient(hostile.url, hostile.url, CREDENTIALS, timeout=2.0, pool_size=1)
    try:
        assert twilio.create_web_chat(PARAMETERS).created
    finally:
        twilio.close()

    assert hostile.received[0].header("Authorization") == BASIC


def test_cookies_are_never_sent_back(client: TwilioClient, hostile: HostileServer) -> None:
    set_cookie = (("Content-Type", "application/json"), ("Set-Cookie", "track=1; Path=/"))
    hostile.script(Reply(201, created_body(), set_cookie), created())

    client.create_web_chat(PARAMETERS)
    client.create_web_chat(PARAMETERS)

    assert hostile.received[1].header("Cookie") is None


def test_an_ordinary_http_server_is_served_as_twilio_would_be() -> None:
    """A stdlib server, not ours: the client works with an ordinary HTTP/1.0 implementation."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v2/WebChats":
                self.answer(201, {"conversation_sid": web_chat_sid(5), "identity": "prv-x"})
            else:
                self.answer(200, {"sid": self.path.rsplit("/", 1)[1], "state": "closed"})

        def do_GET(self) -> None:
            identity = parse_qs(urlsplit(self.path).query)["Identity"][0]
            entry = participant_conversation(web_chat_sid(5), identity)
            self.answer(200, {"conversations": [entry], "meta": {"next_page_url": None}})

        def answer(self, status: int, document: object) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    root = f"http://127.0.0.1:{server.server_address[1]}"
    twilio = TwilioClient(root, root, CREDENTIALS, timeout=2.0, pool_size=2, env={})
    try:
        attempt = twilio.create_web_chat(PARAMETERS)
        lookup = twilio.find_conversations("prv-x")
        closed = twilio.close_conversation(attempt.conversation_sid)
    finally:
        twilio.close()
        server.shutdown()
        server.server_close()
        thread.join(GENEROUS)

    assert (attempt.created, attempt.conversation_sid) == (True, web_chat_sid(5))
    assert lookup.ok
    assert [found.sid for found in lookup.conversations] == [web_chat_sid(5)]
    assert closed.created


# ---------------------------------------------------------------- corporate networks


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    try:
        return make_certificate(tmp_path_factory.mktemp("tls"))
    except (OSError, subprocess.SubprocessError) as error:  # no usable openssl command
        pytest.skip(f"cannot make a certificate: {error}")


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"])
def test_a_ca_bundle_from_the_environment_is_trusted(
    certificate: tuple[Path, Path], variable: str
) -> None:
    with HostileServer(tls=tls_context(*certificate)) as server:
        server.script(created())
        twilio = client_for(server, env={variable: str(certificate[0])})
        try:
            attempt = twilio.create_web_chat(PARAMETERS)
        finally:
            twilio.close()

    assert attempt.created
    assert server.url.startswith("https://")


def test_an_untrusted_certificate_is_a_final_failure(certificate: tuple[Path, Path]) -> None:
    with HostileServer(tls=tls_context(*certificate)) as server:
        twilio = client_for(server)
        try:
            attempt = twilio.create_web_chat(PARAMETERS)
        finally:
            twilio.close()

    assert (attempt.error_code, attempt.ambiguous, retryable(attempt)) == (
        "tls_untrusted",
        False,
        False,
    )
    assert "REQUESTS_CA_BUNDLE or SSL_CERT_FILE" in attempt.error_message
    assert server.received == []


def test_https_goes_through_the_proxy_without_the_credentials(hostile: HostileServer) -> None:
    hostile.script(Reply(403, b"", reason="Forbidden by policy"))
    root = "https://flex-api.twilio.com"  # never reached: the proxy refuses the tunnel
    env = {"HTTPS_PROXY": f"http://proxyuser:proxy-{SECRET[:8]}@127.0.0.1:{hostile.port}"}
    twilio = TwilioClient(root, root, CREDENTIALS, timeout=2.0, pool_size=1, env=env)
    try:
        attempt = twilio.create_web_chat(PARAMETERS)
    finally:
        twilio.close()

    (request,) = hostile.received
    assert (request.method, request.target) == ("CONNECT", "flex-api.twilio.com:443")
    assert request.header("Authorization") is None  # Twilio's credentials stay in the tunnel
    assert request.header("Proxy-Authorization") is not None
    assert (attempt.error_code, attempt.ambiguous) == ("proxy_failed", False)
    assert f"proxy-{SECRET[:8]}" not in repr(attempt)


@pytest.mark.parametrize(
    ("url", "env", "proxy"),
    [
        ("https://flex-api.twilio.com", {}, None),
        ("https://flex-api.twilio.com", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
        ("https://flex-api.twilio.com", {"https_proxy": "p:3128"}, "http://p:3128"),
        (
            "https://flex-api.twilio.com",
            {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:1"},
            "http://lower:1",
        ),
        ("https://flex-api.twilio.com", {"ALL_PROXY": "http://all:1"}, "http://all:1"),
        ("https://flex-api.twilio.com", {"HTTP_PROXY": "http://p:1"}, None),
        ("https://flex-api.twilio.com", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
        (
            "https://flex-api.twilio.com",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com, .twilio.com"},
            None,
        ),
        (
            "https://flex-api.twilio.com",
            {"HTTPS_PROXY": "http://p:1", "no_proxy": "twilio.com:443"},
            None,
        ),
        (
            "https://flex-api.twilio.com",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "twilio.com:8443"},
            "http://p:1",
        ),
        (
            "https://flex-api.twilio.com",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.twilio.com"},
            "http://p:1",
        ),
        ("https://10.1.2.3", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, None),
        ("http://127.0.0.1:8765", {"HTTP_PROXY": "http://p:1"}, None),
        ("https://localhost:8765", {"HTTPS_PROXY": "http://p:1"}, None),
    ],
)
def test_proxies_as_curl_and_urllib_read_them(
    url: str, env: dict[str, str], proxy: str | None
) -> None:
    assert proxy_for(url, env) == proxy


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HTTPS_PROXY": "socks5://p:1080"}, "HTTPS_PROXY"),
        ({"HTTPS_PROXY": "http://p:99999"}, "HTTPS_PROXY"),
        ({"https_proxy": "http://"}, "https_proxy"),
    ],
)
def test_an_unusable_proxy_is_a_configuration_error(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        proxy_for("https://flex-api.twilio.com", env)


def test_ca_bundle_variables_in_order(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert = str(certificate[0])
    assert ca_bundle({}) is True
    assert ca_bundle({"SSL_CERT_FILE": cert}) == cert
    assert ca_bundle({"SSL_CERT_DIR": str(tmp_path)}) == str(tmp_path)
    with pytest.raises(ConfigError, match=r"REQUESTS_CA_BUNDLE=.*no such file"):
        ca_bundle({"REQUESTS_CA_BUNDLE": str(tmp_path / "missing.pem"), "SSL_CERT_FILE": cert})
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"SSL_CERT_FILE=.*not a PEM file"):
        ca_bundle({"SSL_CERT_FILE": str(garbage)})


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TWILIO_ACCOUNT_SID": "AC1"}, "TWILIO_AUTH_TOKEN is not set (TWILIO_ACCOUNT_SID is)"),
        ({"TWILIO_AUTH_TOKEN": SECRET}, "TWILIO_ACCOUNT_SID is not set (TWILIO_AUTH_TOKEN is)"),
        ({"TWILIO_API_KEY": "SK1"}, "TWILIO_API_SECRET is not set (TWILIO_API_KEY is)"),
        ({"TWILIO_API_SECRET": SECRET}, "TWILIO_API_KEY is not set (TWILIO_API_SECRET is)"),
        ({"TWILIO_ACCOUNT_SID": "  "}, "no Twilio credentials"),
        ({}, "no Twilio credentials"),
    ],
)
def test_missing_credentials_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Credentials.from_env(env)

    assert named in str(raised.value)
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "sécrét-tøken"}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "tok€n-quoted”"}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "tok\nen"}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "tok\x00en"}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": "AC:1", "TWILIO_AUTH_TOKEN": "token"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_ACCOUNT_SID": "ÄC1", "TWILIO_AUTH_TOKEN": "token"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_API_KEY": "SK:1", "TWILIO_API_SECRET": "secret"}, "TWILIO_API_KEY"),
        ({"TWILIO_API_KEY": "SK1", "TWILIO_API_SECRET": "s\u200becret"}, "TWILIO_API_SECRET"),
    ],
)
def test_credentials_basic_auth_cannot_carry_are_refused_without_showing_them(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Credentials.from_env(env)

    message = str(raised.value)
    assert message.startswith(named)
    secret = env.get("TWILIO_AUTH_TOKEN") or env["TWILIO_API_SECRET"]
    assert not any(char in message for char in secret if not char.isascii() or char == "\n")
    assert secret.strip() not in message


def test_an_api_key_pair_wins_and_keeps_the_account() -> None:
    credentials = Credentials.from_env(
        {"TWILIO_API_KEY": "SK1", "TWILIO_API_SECRET": SECRET, "TWILIO_ACCOUNT_SID": "AC2"}
    )
    assert (credentials.username, credentials.account) == ("SK1", "AC2")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://user:hunter2@flex-api.twilio.com", "user name or password"),
        ("https://user@flex-api.twilio.com", "user name or password"),
        ("https://flex-api.twilio.com?x=1", "query string or fragment"),
        ("https://flex-api.twilio.com/?", "query string or fragment"),
        ("https://flex-api.twilio.com#top", "query string or fragment"),
        ("https://flex-api.twilio.com/v2", "without a path"),
        ("https://flex-api.twilio.com/v2/WebChats", "without a path"),
        ("https://flex-api.twilio.com:99999", "port must be a number"),
        ("https://flex-api.twilio.com:0", "port must be a number"),
        ("https://flex-api.twilio.com:abc", "port must be a number"),
        ("https://flex-api.twilio.com:", "port must be a number"),
        ("ftp://flex-api.twilio.com", "expected https://HOST[:PORT]"),
        ("flex-api.twilio.com", "expected https://HOST[:PORT]"),
        ("https://", "expected https://HOST[:PORT]"),
        ("https://flex api.twilio.com", "spaces or control characters"),
        ("https://flex-\napi.twilio.com", "spaces or control characters"),
        ("http://10.0.0.5:8765", "plain http is allowed only to a loopback host"),
    ],
)
def test_unusable_roots_are_refused_naming_the_option(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_base_url(url, {})

    message = str(raised.value)
    assert message.startswith("--base-url")
    assert says in message
    assert "hunter2" not in message
    with pytest.raises(ConfigError, match=r"^--conversations-url"):
        resolve_conversations_url(url, None, {})


def test_a_root_from_the_environment_is_named_by_its_variable() -> None:
    # PROVISIONER_BASE_URL is --base-url's variable: Click reads it and names it
    # (test_config); the library is given it as --base-url, and reads only Twilio's own.
    with pytest.raises(ConfigError, match=r"^--base-url"):
        resolve_base_url("https://h/v2", {"PROVISIONER_BASE_URL": "https://elsewhere"})
    with pytest.raises(ConfigError, match=r"^TWILIO_REGION"):
        resolve_base_url(None, {"TWILIO_REGION": "ie1.evil.example/"})


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("https://flex-api.twilio.com/", "https://flex-api.twilio.com"),
        ("HTTPS://flex-api.twilio.com:8443", "https://flex-api.twilio.com:8443"),
        ("  http://localhost:8765//  ", "http://localhost:8765"),
        ("http://[::1]:8765", "http://[::1]:8765"),
    ],
)
def test_usable_roots_are_normalised(url: str, root: str) -> None:
    assert resolve_base_url(url, {}) == root


@pytest.mark.parametrize(
    ("explicit", "base_url", "env", "root"),
    [
        ("https://c.example", "http://127.0.0.1:1", {}, "https://c.example"),
        (None, "http://127.0.0.1:8765/", {}, "http://127.0.0.1:8765"),
        (None, None, {}, "https://conversations.twilio.com"),
        (None, None, {"TWILIO_REGION": "ie1"}, "https://conversations.ie1.twilio.com"),
        (None, None, {"TWILIO_EDGE": "dublin"}, "https://conversations.dublin.us1.twilio.com"),
        (
            None,
            None,
            {"TWILIO_REGION": "au1", "TWILIO_EDGE": "sydney"},
            "https://conversations.sydney.au1.twilio.com",
        ),
    ],
)
def test_the_conversations_root(
    explicit: str | None, base_url: str | None, env: dict[str, str], root: str
) -> None:
    assert resolve_conversations_url(explicit, base_url, env) == root


def test_attempts_say_what_they_mean() -> None:
    assert Attempt(http_status=201).created
    assert not Attempt(http_status=201, ambiguous=True).created
    assert retryable(Attempt(http_status=201, ambiguous=True))
    assert not retryable(Attempt(http_status=404))
    assert not retryable(Attempt(error_code="invalid_sid"))
    assert retryable(Attempt(error_code="connection_failed"))
    assert Lookup(http_status=200).ok
    assert not Lookup(http_status=200, error_code="too_many_pages").ok


# ---------------------------------------------------------------- parsers never raise


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=80)), st.floats(0, 4e9))
@example("nan", 0.0)
@example("-inf", 0.0)
@example("Fri, 31 Dec 9999 23:59:59 GMT", 0.0)
@example("Mon, 01 Jan 0001 00:00:00 GMT", 0.0)
@example("Mon, 01 Jan 1970 00:00:00 -9999", 0.0)
def test_retry_after_never_raises_and_stays_in_bounds(value: str | None, now: float) -> None:
    seconds = parse_retry_after(value, now=now, cap=MAX_RETRY_AFTER)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["code", "message", "more_info", "status"]), JSON))
def test_error_bodies_of_any_shape_never_raise(document: dict[str, object]) -> None:
    error = parse_error_body(json.dumps(document))
    assert isinstance(error.code, str)
    assert isinstance(error.message, str)
    assert error.more_info == "" or error.more_info.startswith("http")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
@example(b"[" * 100_000)
@example(b'{"code": ' + b"9" * 5000 + b"}")
@example(b'{"code": 1e999}')
@example(b"\xff\xfe{\x00}\x00")
def test_error_bodies_of_any_bytes_never_raise(body: bytes) -> None:
    error = parse_error_body(body)
    assert isinstance(error.code, str)
