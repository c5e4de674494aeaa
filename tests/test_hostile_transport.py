"""The transport prepares its requests itself (for speed): what leaves must be what
`Session.request` sent, on the same session, request for request, against a real loopback server.

The reference below is the call the transport made before it prepared requests itself; each
test sends through both and compares what the server (or a proxy) read: method, target,
headers and body.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.endpoints import Credentials
from provisioner.transport import Transport
from tests.hostile import HostileServer, Received, Reply, created, created_body

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # shaped like an Auth Token
CREDENTIALS = Credentials("AC" + "1" * 32, SECRET, "AC" + "1" * 32)
CAP = 64 * 1024
TIMEOUT = 2.0  # seconds: loopback answers at once
FAR_ROOT = "https://flex-api.example.test"  # reached only through the proxy, never resolved
SET_COOKIE = (("Content-Type", "application/json"), ("Set-Cookie", "track=1; Path=/"))
# What a spreadsheet cell may hold: accents, emoji, the form's own delimiters, spaces, empty.
ODD_VALUES = ["Zoë 😀", "a&b=c+d%20e", " ", "", "line\nbreak", "~!*'();:@$,/?#[]", "€\u200b"]


Form = Mapping[str, str]
Params = Mapping[str, str | int]


def seen(request: Received) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """What the server read, headers in any order (HTTP gives their order no meaning)."""
    return (request.method, request.target, sorted(request.headers), request.body)


def by_session_request(
    transport: Transport, method: str, url: str, data: Form | None, params: Params | None
) -> None:
    """The exchange as it was made before the transport prepared requests itself."""
    session = transport._session
    with contextlib.suppress(requests.RequestException):  # a proxy's refusal: it was asked
        session.request(
            method,
            url,
            data=data,
            params=params,
            timeout=(transport.timeout, transport.timeout),
            stream=True,
            allow_redirects=False,
            proxies=transport._proxies,
            verify=transport._verify,
        ).close()


def both(
    transport: Transport,
    server: HostileServer,
    method: str,
    url: str,
    data: Form | None = None,
    params: Params | None = None,
) -> tuple[Received, Received]:
    """Send through the transport, then through Session.request: what the server read of each."""
    before = len(server.received)
    transport.exchange(method, url, data=data, params=params, cap=CAP)
    by_session_request(transport, method, url, data, params)
    ours, theirs = server.received[before:]
    return ours, theirs


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer(default=created()) as started:
        yield started


@pytest.fixture
def transport(server: HostileServer) -> Iterator[Transport]:
    exchanges = Transport((server.url,), CREDENTIALS, TIMEOUT, pool_size=2, env={})
    yield exchanges
    exchanges.close()


@pytest.mark.parametrize(
    ("method", "path", "data", "params"),
    [
        ("POST", "/v2/WebChats", {"AddressSid": "IG" + "a" * 32, "Identity": "prv-1"}, None),
        ("POST", "/v2/WebChats", {f"K{i}": value for i, value in enumerate(ODD_VALUES)}, None),
        ("POST", "/v2/WebChats", {"ChatFriendlyName": ""}, None),
        ("POST", "/v1/Conversations/CH" + "0" * 32, {"State": "closed"}, None),
        ("GET", "/v1/ParticipantConversations", None, {"Identity": "prv-ü 1&2", "PageSize": 50}),
        # A next page's URL carries its own query, and no params.
        ("GET", "/v1/ParticipantConversations?PageSize=50&Page=1&PageToken=PT%2Bx", None, None),
        ("GET", "/v1/ParticipantConversations?Identity=a%20b", None, {"PageSize": 50}),
        # Not a request the client makes today (every POST has a form), but the transport's
        # contract: an empty form is no body at all, and so no Content-Type either.
        ("POST", "/v2/WebChats", {}, None),
    ],
    ids=["form", "odd-values", "empty-value", "close", "lookup", "next-page", "query+params", "{}"],
)
def test_what_leaves_is_what_session_request_sent(
    transport: Transport,
    server: HostileServer,
    method: str,
    path: str,
    data: Form | None,
    params: Params | None,
) -> None:
    ours, theirs = both(transport, server, method, server.url + path, data, params)

    assert seen(ours) == seen(theirs)


def test_a_cookie_a_server_sets_is_sent_back_by_neither(
    transport: Transport, server: HostileServer
) -> None:
    server.script(*[Reply(201, created_body(), SET_COOKIE)] * 2)
    both(transport, server, "POST", server.url + "/v2/WebChats", {"Identity": "prv-1"})

    ours, theirs = both(transport, server, "POST", server.url + "/v2/WebChats", {"Identity": "x"})

    assert seen(ours) == seen(theirs)
    assert ours.header("Cookie") is None


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"])
def test_a_proxy_with_credentials_is_asked_the_same(variable: str) -> None:
    with HostileServer(default=Reply(502, b"", ())) as proxy:
        proxy_url = f"http://proxy-user:pr%40xy-pass@127.0.0.1:{proxy.port}"
        exchanges = Transport((FAR_ROOT,), CREDENTIALS, TIMEOUT, 2, env={variable: proxy_url})
        try:
            ours, theirs = both(exchanges, proxy, "POST", FAR_ROOT + "/v2/WebChats", {"A": "é"})
        finally:
            exchanges.close()

    assert seen(ours) == seen(theirs)
    assert (ours.method, ours.target) == ("CONNECT", "flex-api.example.test:443")
    assert ours.header("Proxy-Authorization") is not None
    assert ours.header("Authorization") is None  # the credentials only inside the tunnel


def test_no_proxy_sends_both_direct(server: HostileServer) -> None:
    environment = {"HTTP_PROXY": "http://127.0.0.2:9", "NO_PROXY": "127.0.0.1"}
    exchanges = Transport((server.url,), CREDENTIALS, TIMEOUT, 2, env=environment)
    try:
        ours, theirs = both(exchanges, server, "GET", server.url + "/v1/P", None, {"A": 1})
    finally:
        exchanges.close()

    assert seen(ours) == seen(theirs)


# Lone surrogates cannot be encoded as UTF-8 by either path (both fail alike, before sending).
CELL_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    form=st.dictionaries(CELL_TEXT.filter(bool), CELL_TEXT, max_size=5),
    params=st.dictionaries(CELL_TEXT.filter(bool), CELL_TEXT | st.integers(), max_size=3),
)
def test_any_form_and_params_leave_as_session_request_sent_them(
    transport: Transport, server: HostileServer, form: dict[str, str], params: Params
) -> None:
    url = server.url + "/v2/WebChats"
    posted = both(transport, server, "POST", url, form, None)
    looked_up = both(transport, server, "GET", url, None, params)

    assert [seen(request) for request in posted[:1] + looked_up[:1]] == [
        seen(request) for request in posted[1:] + looked_up[1:]
    ]
