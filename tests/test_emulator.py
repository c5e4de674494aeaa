"""The emulator over real HTTP on 127.0.0.1: creates, lookups, closes, faults, limits, process."""

from __future__ import annotations

import base64
import csv
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provisioner.emulator import (
    SANDBOX_ACCOUNT_SID,
    STANDALONE_SECRET,
    Emulator,
    EmulatorError,
    Fault,
    FaultPlan,
    Reply,
    WebChatService,
    spawn,
    summary,
)
from provisioner.emulator.routes import Request, Routes
from provisioner.emulator.service import Ids
from tests.run_checks import wait_until

SECRET = "emulator-test-secret"
ISO_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
CONVERSATION_SID = re.compile(r"^CH[0-9a-f]{32}$")
LOOKUP = "/v1/ParticipantConversations"


class FakeClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_795_000_000.0

    def __call__(self) -> float:
        return self.now


def sid(number: int) -> str:
    return f"IG{number:032x}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator(clock: FakeClock) -> Iterator[Emulator]:
    with Emulator(secret=SECRET, seed=3, clock=clock) as running:
        yield running


@pytest.fixture
def http(emulator: Emulator) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = (emulator.username, emulator.secret)
        yield session


def create(http: requests.Session, emulator: Emulator, **form: str) -> requests.Response:
    return http.post(f"{emulator.url}/v2/WebChats", data={"AddressSid": sid(1), **form})


def lookup(http: requests.Session, emulator: Emulator, identity: str, **query: str) -> Any:
    answer = http.get(f"{emulator.url}{LOOKUP}", params={"Identity": identity, **query})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_created_web_chat_is_found_by_its_identity_in_twilios_shape(
    emulator: Emulator, http: requests.Session
) -> None:
    created = create(http, emulator, Identity="prv-1", ChatFriendlyName="Onboarding")
    found = lookup(http, emulator, "prv-1")

    assert created.status_code == 201
    chat = emulator.created[0]
    assert created.json() == {"conversation_sid": chat.conversation_sid, "identity": "prv-1"}
    assert created.headers["Twilio-Request-Id"] == chat.request_id
    assert CONVERSATION_SID.match(chat.conversation_sid)
    [entry] = found["conversations"]
    assert entry["account_sid"] == SANDBOX_ACCOUNT_SID
    assert entry["participant_identity"] == "prv-1"
    assert entry["participant_sid"] == chat.participant_sid
    assert entry["conversation_sid"] == chat.conversation_sid
    assert entry["conversation_friendly_name"] == "Onboarding"
    assert entry["conversation_state"] == "active"
    assert entry["conversation_date_created"] == "2026-11-18T11:06:40Z"  # the fake clock
    assert ISO_DATE.match(entry["conversation_date_updated"])
    first = f"{emulator.url}{LOOKUP}?Identity=prv-1&PageSize=50&Page=0"
    assert found["meta"] == {
        "page": 0,
        "page_size": 50,
        "first_page_url": first,
        "previous_page_url": None,
        "url": first,
        "next_page_url": None,
        "key": "conversations",
    }
    assert emulator.conversations_for("prv-1") == [chat]
    assert (emulator.requests, emulator.lookups) == (1, 1)


def test_a_create_without_identity_gets_one_that_finds_it(
    emulator: Emulator, http: requests.Session
) -> None:
    identity = create(http, emulator).json()["identity"]

    assert identity
    assert [c["conversation_sid"] for c in lookup(http, emulator, identity)["conversations"]] == [
        emulator.created[0].conversation_sid
    ]
    assert lookup(http, emulator, "someone-else")["conversations"] == []


def test_lookups_page_by_fifty_and_the_next_page_urls_lead_through_all(
    emulator: Emulator, http: requests.Session
) -> None:
    for _ in range(120):
        create(http, emulator, Identity="shared")
    page = lookup(http, emulator, "shared", PageSize="500")  # Twilio's maximum is 50
    pages = [page]
    while page["meta"]["next_page_url"] is not None:
        answer = http.get(page["meta"]["next_page_url"])
        assert answer.status_code == 200
        page = answer.json()
        pages.append(page)

    sids = [c["conversation_sid"] for p in pages for c in p["conversations"]]
    assert [len(p["conversations"]) for p in pages] == [50, 50, 20]
    assert [p["meta"]["page"] for p in pages] == [0, 1, 2]
    assert sids == sorted(chat.conversation_sid for chat in emulator.created)
    assert all(p["meta"]["next_page_url"].startswith(emulator.url) for p in pages[:2])
    back = http.get(pages[2]["meta"]["previous_page_url"]).json()
    assert back["conversations"] == pages[1]["conversations"]
    assert back["meta"]["page"] == 1


def test_page_urls_follow_the_host_the_client_used(
    emulator: Emulator, http: requests.Session
) -> None:
    for _ in range(51):
        create(http, emulator, Identity="via-localhost")
    port = emulator.url.rsplit(":", 1)[1]

    page = http.get(f"http://localhost:{port}{LOOKUP}", params={"Identity": "via-localhost"}).json()

    assert page["meta"]["next_page_url"].startswith(f"http://localhost:{port}{LOOKUP}?")


def test_a_smaller_page_size_is_kept(emulator: Emulator, http: requests.Session) -> None:
    for _ in range(5):
        create(http, emulator, Identity="few")

    first = lookup(http, emulator, "few", PageSize="2")
    second = http.get(first["meta"]["next_page_url"]).json()

    assert (first["meta"]["page_size"], len(first["conversations"])) == (2, 2)
    assert (
        second["conversations"][0]["conversation_sid"]
        > (first["conversations"][-1]["conversation_sid"])
    )


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"Identity": "x", "PageSize": "0"},
        {"Identity": "x", "PageSize": "ten"},
        {"Identity": "x", "PageToken": "XX123"},
        {"Identity": "x", "Page": "-1"},
    ],
)
def test_a_lookup_with_bad_parameters_is_a_400(
    emulator: Emulator, http: requests.Session, query: dict[str, str]
) -> None:
    answer = http.get(f"{emulator.url}{LOOKUP}", params=query)

    assert (answer.status_code, answer.json()["code"]) == (400, 70002)


def test_a_new_conversation_shows_in_the_index_after_the_lookup_lag(
    clock: FakeClock,
) -> None:
    with Emulator(secret=SECRET, seed=3, clock=clock, lookup_lag=5.0) as emulator:
        http = requests.Session()
        http.auth = (emulator.username, SECRET)
        create(http, emulator, Identity="late")
        shown = [len(lookup(http, emulator, "late")["conversations"])]
        clock.now += 4.9
        shown.append(len(lookup(http, emulator, "late")["conversations"]))
        clock.now += 0.1
        shown.append(len(lookup(http, emulator, "late")["conversations"]))

        assert shown == [0, 0, 1]
        assert len(emulator.conversations_for("late")) == 1  # it existed all along


def test_closing_a_conversation_answers_it_closed_and_the_index_shows_it(
    emulator: Emulator, http: requests.Session, clock: FakeClock
) -> None:
    create(http, emulator, Identity="dup")
    create(http, emulator, Identity="dup")
    extra = emulator.created[1].conversation_sid
    clock.now += 60

    closed = http.post(f"{emulator.url}/v1/Conversations/{extra}", data={"State": "closed"})

    assert closed.status_code == 200
    body = closed.json()
    assert (body["sid"], body["state"]) == (extra, "closed")
    assert body["date_updated"] == "2026-11-18T11:07:40Z"
    assert body["url"] == f"{emulator.url}/v1/Conversations/{extra}"
    assert emulator.closed == {extra}
    states = {
        c["conversation_sid"]: c["conversation_state"]
        for c in lookup(http, emulator, "dup")["conversations"]
    }
    assert states == {emulator.created[0].conversation_sid: "active", extra: "closed"}
    assert emulator.closes == 1


@pytest.mark.parametrize(
    ("target", "form", "status", "code"),
    [
        ("/v1/Conversations/CH" + "0" * 32, {"State": "closed"}, 404, 20404),
        ("/v1/Conversations/{sid}", {"State": "deleted"}, 400, 70002),
    ],
)
def test_closing_what_cannot_be_closed_is_refused(
    emulator: Emulator,
    http: requests.Session,
    target: str,
    form: dict[str, str],
    status: int,
    code: int,
) -> None:
    create(http, emulator)
    path = target.format(sid=emulator.created[0].conversation_sid)

    answer = http.post(f"{emulator.url}{path}", data=form)

    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert emulator.closed == set()


@pytest.mark.parametrize("third", ["create", "lookup"])
def test_over_the_concurrency_cap_a_request_is_answered_20429_at_once(third: str) -> None:
    gate = threading.Event()
    with Emulator(secret=SECRET, seed=3, max_concurrent=2) as emulator:
        http = requests.Session()
        http.auth = (emulator.username, SECRET)
        emulator.script(sid(1), Fault(hold=gate), Fault(hold=gate))
        held: list[int] = []

        def send_held() -> None:  # a session of its own: sessions are not shared across threads
            with requests.Session() as own:
                own.auth = http.auth
                held.append(create(own, emulator).status_code)

        threads = [threading.Thread(target=send_held) for _ in range(2)]
        for thread in threads:
            thread.start()
        wait_until(lambda: emulator.faults.cap.in_flight == 2)

        if third == "create":
            answer = http.post(f"{emulator.url}/v2/WebChats", data={"AddressSid": sid(2)})
        else:
            answer = http.get(f"{emulator.url}{LOOKUP}", params={"Identity": "x"})
        gate.set()
        for thread in threads:
            thread.join()

    assert (answer.status_code, answer.json()["code"]) == (429, 20429)
    assert "Retry-After" not in answer.headers
    assert answer.headers["Twilio-Request-Id"].startswith("RQ")
    assert held == [201, 201]
    assert emulator.throttled == 1
    assert emulator.faults.cap.in_flight == 0


def test_over_the_rate_limit_a_create_is_answered_429_with_retry_after(
    clock: FakeClock,
) -> None:
    with Emulator(secret=SECRET, seed=3, rate_limit=2.0, clock=clock) as emulator:
        http = requests.Session()
        http.auth = (emulator.username, SECRET)
        statuses = [create(http, emulator).status_code for _ in range(3)]
        throttled = create(http, emulator)
        clock.now += 0.5  # one more token
        statuses += [create(http, emulator).status_code, throttled.status_code]

    assert statuses == [201, 201, 429, 201, 429]
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.json()["code"] == 20429
    assert emulator.throttled == 2


def test_an_unknown_address_is_a_404_with_20404(emulator: Emulator, http: requests.Session) -> None:
    emulator.unknown_addresses.add(sid(1))

    answer = create(http, emulator)

    assert (answer.status_code, answer.json()["code"]) == (404, 20404)
    assert answer.json()["more_info"] == "https://www.twilio.com/docs/errors/20404"
    assert emulator.created == []


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        basic(SANDBOX_ACCOUNT_SID, "wrong"),
        basic("AC" + "1" * 32, SECRET),
        basic("é", "ü"),
        f"Bearer {SECRET}",
        "Basic not-base64!",
        "Basic " + base64.b64encode(b"\xff\xfe").decode(),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v2/WebChats"), ("GET", f"{LOOKUP}?Identity=x"), ("POST", "/v1/Conversations/CH1")],
)
def test_every_endpoint_refuses_wrong_credentials_with_20003(
    emulator: Emulator, authorization: str | None, method: str, path: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    answer = requests.request(
        method, f"{emulator.url}{path}", headers=headers, data={"AddressSid": sid(1)}
    )

    assert (answer.status_code, answer.json()["code"]) == (401, 20003)
    assert emulator.created == []


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/WebChats", 405, 20004),
        ("GET", "/v2/Nothing", 404, 20404),
        ("POST", "/v1/Conversations/CH1/Participants", 404, 20404),
        ("DELETE", "/v2/WebChats", 405, 20004),
        ("PUT", "/v2/WebChats", 501, 70002),
    ],
)
def test_other_paths_and_methods_get_twilios_error_json(
    emulator: Emulator, http: requests.Session, method: str, path: str, status: int, code: int
) -> None:
    answer = http.request(method, f"{emulator.url}{path}")

    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert answer.headers["Twilio-Request-Id"].startswith("RQ")


def test_a_post_that_is_not_a_form_is_a_415(emulator: Emulator, http: requests.Session) -> None:
    answer = http.post(f"{emulator.url}/v2/WebChats", json={"AddressSid": sid(1)})

    assert (answer.status_code, answer.json()["code"]) == (415, 20415)


def test_a_dropped_answer_closes_the_connection_and_may_still_create(
    emulator: Emulator, http: requests.Session
) -> None:
    emulator.script(sid(1), Fault(drop=True), Fault(drop=True, create=True))

    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            create(http, emulator)
    after = create(http, emulator)

    assert after.status_code == 201
    assert len(emulator.created) == 2  # the second drop created one first


def test_scripted_lookup_faults_answer_in_order_then_the_index(
    emulator: Emulator, http: requests.Session
) -> None:
    create(http, emulator, Identity="prv-9")
    emulator.script_lookup(
        "prv-9", Fault(status=403, code=20003), Fault(drop=True), Fault(status=500, code=20500)
    )

    def status() -> int:
        try:
            return http.get(f"{emulator.url}{LOOKUP}", params={"Identity": "prv-9"}).status_code
        except requests.ConnectionError:
            return 0

    assert [status() for _ in range(4)] == [403, 0, 500, 200]


def test_random_faults_repeat_for_the_same_seed() -> None:
    def statuses(seed: int) -> list[int]:
        with Emulator(secret=SECRET, seed=seed, error_rate=0.5) as emulator:
            http = requests.Session()
            http.auth = (emulator.username, SECRET)
            seen = []
            for _ in range(20):
                try:
                    seen.append(create(http, emulator).status_code)
                except requests.ConnectionError:
                    seen.append(0)
            return seen

    first = statuses(11)

    assert first == statuses(11)
    assert 201 in first
    assert set(first) - {201} <= {0, 500, 502, 503}
    assert set(first) != {201}


def raw_exchange(emulator: Emulator, request: bytes) -> bytes:
    """Send bytes as they are and read what comes back until the server closes."""
    host, port = emulator.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET /v2/WebChats HTTP/1.1 trailing\r\n\r\n", b"400"),
        (b"POST /v2/WebChats HTTP/1.1\r\nContent-Length: many\r\n\r\n", b"400"),
        (b"POST /v2/WebChats HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
        (b"POST /v2/WebChats HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
    ],
)
def test_a_malformed_request_is_refused_and_the_server_goes_on(
    emulator: Emulator, http: requests.Session, request_bytes: bytes, status: bytes
) -> None:
    answer = raw_exchange(emulator, request_bytes)

    assert answer.split(b" ")[1] == status
    assert b"Twilio-Request-Id: RQ" in answer
    assert create(http, emulator).status_code == 201


def test_a_body_that_is_not_utf8_is_a_400(emulator: Emulator, http: requests.Session) -> None:
    answer = http.post(
        f"{emulator.url}/v2/WebChats",
        data=b"AddressSid=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert (answer.status_code, answer.json()["code"]) == (400, 70002)


def test_recorded_answers_are_written_with_their_kind(tmp_path: Path) -> None:
    with Emulator(secret=SECRET, seed=3, record_answers=True) as emulator:
        http = requests.Session()
        http.auth = (emulator.username, SECRET)
        create(http, emulator, Identity="r")
        lookup(http, emulator, "r")
        http.post(
            f"{emulator.url}/v1/Conversations/{emulator.created[0].conversation_sid}",
            data={"State": "closed"},
        )
        http.get(f"{emulator.url}/nowhere")
    emulator.write_answers(tmp_path / "answers.csv")

    with (tmp_path / "answers.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["status"], r["kind"]) for r in rows] == [
        ("201", "create"),
        ("200", "lookup"),
        ("200", "close"),
        ("404", "other"),
    ]
    assert [float(r["seconds"]) for r in rows] == sorted(float(r["seconds"]) for r in rows)
    assert summary(emulator) == (
        "served 1 create, 1 lookup and 1 close; created 1 web chat; answered 0 with 429"
    )


@pytest.mark.slow
def test_a_spawned_emulator_serves_until_sigterm_and_writes_its_record(tmp_path: Path) -> None:
    record = tmp_path / "answers.csv"
    options = ["--record", str(record), "--unknown-address", sid(5), "--max-concurrent", "4"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}

    with spawn(options, env=env) as process:
        assert process.credentials_env() == {
            "TWILIO_ACCOUNT_SID": SANDBOX_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": STANDALONE_SECRET,
        }
        auth = (process.username, process.secret)
        created = requests.post(
            f"{process.url}/v2/WebChats", data={"AddressSid": sid(1)}, auth=auth
        )
        unknown = requests.post(
            f"{process.url}/v2/WebChats", data={"AddressSid": sid(5)}, auth=auth
        )
        exit_code = process.stop()

    assert process.url.startswith("http://127.0.0.1:")
    assert (created.status_code, unknown.status_code, unknown.json()["code"]) == (201, 404, 20404)
    assert exit_code == 0
    assert "created 1 web chat;" in process.said
    with record.open() as stream:
        assert [(r["status"], r["kind"]) for r in csv.DictReader(stream)] == [
            ("201", "create"),
            ("404", "create"),
        ]


@pytest.mark.slow
def test_spawn_says_why_an_emulator_did_not_start() -> None:
    with pytest.raises(EmulatorError, match="loopback only"):
        spawn(["--host", "192.0.2.1"])


def test_latency_delays_every_successful_answer_and_no_refusal() -> None:
    service = WebChatService("AC" + "1" * 32, SECRET, ids=Ids(5))
    sleeps: list[float] = []
    routes = Routes(
        service, FaultPlan(seed=5), "http://127.0.0.1:1", latency=0.2, sleep=sleeps.append
    )
    auth = basic(service.username, SECRET)
    form = "application/x-www-form-urlencoded"

    _, created = routes.answer(
        Request("POST", "/v2/WebChats", auth, form, b"AddressSid=IG1&Identity=a")
    )
    sid = service.created[0].conversation_sid
    kinds = [
        routes.answer(Request("GET", f"{LOOKUP}?Identity=a", auth))[0],
        routes.answer(Request("POST", f"/v1/Conversations/{sid}", auth, form, b"State=closed"))[0],
        routes.answer(Request("POST", "/v2/WebChats", basic("x", "y"), form, b"AddressSid=IG1"))[0],
    ]

    assert isinstance(created, Reply)
    assert created.status == 201
    assert kinds == ["lookup", "close", "create"]
    assert sleeps == [0.2, 0.2, 0.2]  # the refused create did not wait


def test_open_connections_counts_a_kept_alive_connection_until_its_client_goes(
    emulator: Emulator, http: requests.Session
) -> None:
    assert emulator.open_connections == 0
    assert create(http, emulator).status_code == 201
    assert emulator.open_connections == 1  # kept alive for the next request
    assert create(http, emulator).status_code == 201
    assert emulator.open_connections == 1  # the same connection again
    http.close()
    wait_until(lambda: emulator.open_connections == 0)
