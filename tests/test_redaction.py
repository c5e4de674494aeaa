"""A server that quotes the credentials back, in any encoding: redacted in every output and file."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from urllib.parse import quote, quote_plus

from provisioner.client import WEB_CHATS_PATH
from tests.conftest import (
    CUSTOMER_HEADER,
    SECRET,
    Cli,
    customers,
    read_summary,
    write_csv,
)
from tests.hostile import (
    HostileServer,
    hostile_server,  # noqa: F401  (the `hostile` fixture)
    json_reply,
    twilio_error,
)
from tests.run_checks import (
    assert_no_secret,
    check_run,
    create_on,
    no_secret_in_any_file,  # noqa: F401  (autouse: no secret in any file a test leaves)
    posts,
)


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
