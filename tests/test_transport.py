"""The HTTP exchange against a hostile server: what an `Answer` holds, redaction.

What each answer means (an Attempt, a Lookup) is tested in test_client.py, through the client.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.endpoints import Credentials
from provisioner.transport import MAX_MESSAGE_CHARS, USER_AGENT, Redactor, Transport
from tests.hostile import (
    Drop,
    HostileServer,
    Raw,
    created,
    created_body,
    gzip_bomb_reply,
    hostile_server,  # noqa: F401  (the `hostile` fixture)
    redirect,
    trickled,
)

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # shaped like an Auth Token
CREDENTIALS = Credentials("AC" + "1" * 32, SECRET, "AC" + "1" * 32)
BASIC = "Basic " + base64.b64encode(f"{CREDENTIALS.username}:{SECRET}".encode()).decode()
CAP = 64 * 1024
DEADLINE_THREAD = "provisioner-deadlines"


def transport_for(root: str, timeout: float = 2.0) -> Transport:
    return Transport((root,), CREDENTIALS, timeout, pool_size=2, env={})


@pytest.fixture
def transport(hostile: HostileServer) -> Iterator[Transport]:
    exchanges = transport_for(hostile.url)
    yield exchanges
    exchanges.close()


def deadline_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == DEADLINE_THREAD}


def test_an_answer_holds_its_status_headers_and_whole_body(
    transport: Transport, hostile: HostileServer
) -> None:
    hostile.script(created())
    url = f"{hostile.url}/v2/WebChats"

    answer = transport.exchange("POST", url, data={"Identity": "prv-1"}, cap=CAP)

    assert (answer.url, answer.status, answer.reason) == (url, 201, "Created")
    assert (answer.body, answer.failure, answer.complete, answer.reached) == (
        created_body(),
        "",
        True,
        True,
    )
    assert answer.headers["content-type"] == "application/json"  # any case, as HTTP has it
    (request,) = hostile.received
    assert (request.method, request.path, request.form) == (
        "POST",
        "/v2/WebChats",
        {"Identity": "prv-1"},
    )
    assert [request.header(name) for name in ("Authorization", "User-Agent", "Accept")] == [
        BASIC,
        USER_AGENT,
        "application/json",
    ]


def test_requests_leave_as_session_request_would_send_them(
    transport: Transport, hostile: HostileServer
) -> None:
    """The transport prepares requests itself (for speed): the bytes on the wire are the same."""
    form = {"AddressSid": "IG" + "a" * 32, "CustomerFriendlyName": "Zoë & Co = 100% +1", "X": ""}
    params: dict[str, str | int] = {"Identity": "prv-ü 1&2", "PageSize": 50}
    hostile.script(created(), created(), created(), created())
    transport.exchange("POST", f"{hostile.url}/v2/WebChats", data=form, cap=CAP)
    transport.exchange("GET", f"{hostile.url}/v1/P", params=params, cap=CAP)
    session = requests.Session()
    session.auth = (CREDENTIALS.username, SECRET)
    session.headers.update(
        {"Accept": "application/json", "Accept-Encoding": "gzip", "User-Agent": USER_AGENT}
    )
    session.post(f"{hostile.url}/v2/WebChats", data=form).close()
    session.get(f"{hostile.url}/v1/P", params=params).close()

    ours, theirs = hostile.received[:2], hostile.received[2:]
    assert [(r.method, r.target, sorted(r.headers), r.body) for r in ours] == [
        (r.method, r.target, sorted(r.headers), r.body) for r in theirs
    ]  # the same headers; Content-Type comes before Content-Length, which HTTP allows
    assert ours[0].body == urlencode(form).encode()


def test_the_cap_counts_bytes_after_decompression(
    transport: Transport, hostile: HostileServer
) -> None:
    hostile.script(gzip_bomb_reply(201, inflated=64 * 1024 * 1024))

    answer = transport.exchange("GET", hostile.url + "/", cap=1000)

    assert (answer.status, answer.failure, answer.detail) == (
        201,
        "too_large",
        "longer than 1000 bytes",
    )
    assert len(answer.body) <= 1000
    assert not answer.complete


def test_a_redirects_body_is_never_read(transport: Transport, hostile: HostileServer) -> None:
    hostile.script(redirect("https://elsewhere.example/v2/WebChats", 307))  # a gzip bomb body

    answer = transport.exchange("POST", hostile.url + "/v2/WebChats", cap=CAP)

    assert (answer.status, answer.body, answer.complete) == (307, b"", True)
    assert answer.headers["Location"] == "https://elsewhere.example/v2/WebChats"
    assert len(hostile.received) == 1


def test_a_body_still_coming_at_the_deadline_is_cut_there(hostile: HostileServer) -> None:
    hostile.script(trickled(created(), 0.02, after_head=True))
    transport = transport_for(hostile.url, timeout=0.25)
    try:
        answer = transport.exchange("POST", hostile.url + "/v2/WebChats", cap=CAP)
    finally:
        transport.close()

    assert (answer.status, answer.failure, answer.detail) == (
        201,
        "timeout",
        "not complete within 0.25s",
    )
    assert created_body().startswith(answer.body)
    assert len(answer.body) < len(created_body())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_request_never_sent_is_told_from_one_that_may_have_arrived(
    transport: Transport, hostile: HostileServer
) -> None:
    refused_host = f"127.0.0.1:{free_port()}"
    hostile.script(Drop(), Raw(b"garbage\r\n\r\n"))
    refused = transport_for(f"http://{refused_host}")
    try:
        never_sent = refused.exchange("POST", f"http://{refused_host}/v2/WebChats", cap=CAP)
    finally:
        refused.close()
    lost = transport.exchange("POST", hostile.url + "/v2/WebChats", cap=CAP)
    garbled = transport.exchange("POST", hostile.url + "/v2/WebChats", cap=CAP)

    assert (never_sent.status, never_sent.failure, never_sent.reached) == (
        None,
        "connection_failed",
        False,
    )
    assert never_sent.detail.startswith(f"could not connect to {refused_host} (")
    assert (lost.status, lost.failure, lost.reached) == (None, "connection_lost", True)
    assert (garbled.status, garbled.failure, garbled.reached) == (None, "unreadable_answer", True)


def test_closing_stops_the_deadline_thread(hostile: HostileServer) -> None:
    hostile.script(created())
    before = deadline_threads()
    transport = transport_for(hostile.url)

    transport.exchange("POST", hostile.url + "/v2/WebChats", cap=CAP)
    (started,) = deadline_threads() - before  # one thread per transport, started by its first
    transport.close()

    assert not started.is_alive()


def test_redaction_cuts_long_texts_to_one_line() -> None:
    redact = Redactor(CREDENTIALS, {"https": f"http://user:{quote('p@ss w')}@proxy:3128"})

    assert redact(f"token {SECRET}\r\nproxy p@ss w, p%40ss%20w") == (
        "token [redacted] proxy [redacted], [redacted]"
    )
    assert redact("x" * 1000) == "x" * (MAX_MESSAGE_CHARS - 3) + "..."
    assert redact("abcdef", limit=5) == "ab..."


@settings(max_examples=200, deadline=None)
@given(
    st.text("0123456789abcdef", min_size=16, max_size=40),
    st.lists(st.sampled_from(["plain", "quoted", "basic", "upper", "text"]), max_size=6),
    st.text(max_size=30),
)
def test_redaction_leaves_no_form_of_the_secret(secret: str, pieces: list[str], text: str) -> None:
    credentials = Credentials("AC1", secret, "AC1")
    basic = base64.b64encode(f"AC1:{secret}".encode()).decode()
    forms = {"plain": secret, "quoted": quote(secret), "basic": basic, "upper": secret.upper()}
    message = text.join(forms.get(piece, text) for piece in pieces)

    cleaned = Redactor(credentials, {})(message, limit=100_000)

    assert secret not in cleaned.lower()
    assert basic not in cleaned
