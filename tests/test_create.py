"""`provisioner create` end to end: the real CLI against the emulator on a loopback socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest

from provisioner.cells import unescape_cell
from provisioner.cli import cli
from provisioner.emulator import Fault, spawn
from provisioner.result_columns import ERROR_COLUMNS, RESULT_COLUMNS
from provisioner.rows import derive_identity
from tests.conftest import (
    CUSTOMER_HEADER,
    SECRET,
    Cli,
    SleepsUntilReady,
    customers,
    read_csv,
    read_header,
    read_summary,
    said,
    sid,
    without_derived_identity,
    write_csv,
)


def test_every_row_is_created_once_with_exactly_its_values(
    provisioner: Cli, tmp_path: Path
) -> None:
    header = [
        "Address SID",
        "chat_friendly_name",
        "Customer-Friendly Name",
        "PreEngagementData",
        "identity",
        "Notes",
    ]
    rows = [
        [sid(1), "Chat one", "Ana", '{"email": "ana@example.com"}', "ana", "keep me"],
        [sid(2), "", "Björn", "", "", ""],
        [sid(3), "Chat three", "", "", "", "=1+2"],
    ]
    source = write_csv(tmp_path / "in.csv", header, rows)

    result = provisioner("create", str(source), "--run-id", "r1")

    assert result.exit_code == 0, result.output
    results = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert read_header(provisioner.run_dir("r1") / "results.csv") == [*header, *RESULT_COLUMNS]
    sent = sorted(
        (without_derived_identity(chat.parameters) for chat in provisioner.emulator.created),
        key=lambda p: p["AddressSid"],
    )
    assert sent == [
        {
            "AddressSid": sid(1),
            "ChatFriendlyName": "Chat one",
            "CustomerFriendlyName": "Ana",
            "PreEngagementData": '{"email": "ana@example.com"}',
            "Identity": "ana",
        },
        {"AddressSid": sid(2), "CustomerFriendlyName": "Björn"},
        {"AddressSid": sid(3), "ChatFriendlyName": "Chat three"},
    ]
    by_sid = {chat.conversation_sid: chat for chat in provisioner.emulator.created}
    assert [r["row"] for r in results] == ["2", "3", "4"]  # the header is the sheet's row 1
    assert [r["Notes"] for r in results] == ["keep me", "", "'=1+2"]  # formula-escaped on output
    for result_row in results:
        chat = by_sid[result_row["conversation_sid"]]
        assert result_row["status"] == "created"
        assert result_row["Address SID"] == chat.parameters["AddressSid"]
        assert result_row["request_id"] == chat.request_id
        assert result_row["identity"] == chat.identity == chat.parameters["Identity"]
        assert (
            result_row["attempts"],
            result_row["ambiguous_attempts"],
            result_row["http_status"],
        ) == ("1", "0", "201")
    # Rows without an Identity of their own were sent the one derived from scope and row key.
    derived = [derive_identity(provisioner.scope, unescape_cell(r["row_key"])) for r in results[1:]]
    assert [r["identity"] for r in results] == ["ana", *derived]
    assert all(identity.startswith("prv-") and len(identity) == 36 for identity in derived)
    assert len(set(derived)) == 2
    assert read_csv(provisioner.run_dir("r1") / "errors.csv") == []
    summary = read_summary(provisioner.run_dir("r1"))
    assert summary["counts"] == {
        "created": 3,
        "existing": 0,
        "invalid": 0,
        "failed": 0,
        "not_attempted": 0,
    }
    assert summary["requests_sent"] == 3
    assert summary["exit_code"] == 0


def test_invalid_rows_are_reported_and_the_others_go_on(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        ["AddressSid", "Name"],
        [[sid(1), "a"], ["IG123", "b"], ["", "c"], [sid(2), "d"]],
    )

    result = provisioner("create", str(source), "--run-id", "r1", expect=1)

    assert result.exit_code == 1
    assert len(provisioner.emulator.created) == 2
    errors = read_csv(provisioner.run_dir("r1") / "errors.csv")
    assert read_header(provisioner.run_dir("r1") / "errors.csv") == [
        "AddressSid",
        "Name",
        *ERROR_COLUMNS,
    ]
    assert [(e["row"], e["status"], e["error_code"]) for e in errors] == [
        ("3", "invalid", "invalid_address_sid"),
        ("4", "invalid", "missing_address_sid"),
    ]
    assert "IG followed by 32 hex digits" in errors[0]["error_message"]


def test_missing_address_column_lists_the_columns_found(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["Address", "Name"], [[sid(1), "a"]])

    result = provisioner("create", str(source), expect=2)

    assert result.exit_code == 2
    assert "no AddressSid column; found: Address, Name" in result.stderr
    assert provisioner.emulator.requests == 0
    assert not provisioner.out.exists()


def test_missing_credentials_name_the_variables_and_send_nothing(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))

    result = provisioner("create", str(source), env={}, expect=2)

    assert result.exit_code == 2
    assert "TWILIO_ACCOUNT_SID" in result.stderr
    assert "TWILIO_AUTH_TOKEN" in result.stderr
    assert "TWILIO_API_KEY" in result.stderr
    assert provisioner.emulator.requests == 0


def test_api_key_credentials_are_accepted(provisioner: Cli, tmp_path: Path) -> None:
    provisioner.emulator.username = "SK" + "1" * 32
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    env = {
        "TWILIO_API_KEY": "SK" + "1" * 32,
        "TWILIO_API_SECRET": SECRET,
        "TWILIO_ACCOUNT_SID": "AC" + "2" * 32,
    }

    result = provisioner("create", str(source), "--run-id", "r1", env=env)

    assert result.exit_code == 0, result.output
    assert len(provisioner.emulator.created) == 2


def test_429_with_retry_after_is_honoured_and_retried(provisioner: Cli, tmp_path: Path) -> None:
    provisioner.emulator.script(sid(2), Fault(status=429, code=20429, retry_after="7"))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    result = provisioner("create", str(source), "--run-id", "r1")

    assert result.exit_code == 0
    (row,) = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert (row["status"], row["attempts"], row["ambiguous_attempts"]) == ("created", "2", "0")
    # The account's pause, counted from when the 429 came: 7 s less the moments since.
    assert max(provisioner.sleeps.calls) == pytest.approx(7, abs=0.05)
    assert read_summary(provisioner.run_dir("r1"))["rate"]["throttled_429"] == 1


def test_503_is_retried_with_backoff_until_it_succeeds(provisioner: Cli, tmp_path: Path) -> None:
    provisioner.emulator.script(
        sid(2), Fault(status=503, code=20503), Fault(status=503, code=20503)
    )
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    # --rate 0: the default rate's waits would be recorded among the backoffs (sleep is injected)
    result = provisioner("create", str(source), "--run-id", "r1", "--rate", "0")

    assert result.exit_code == 0
    (row,) = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert (row["status"], row["attempts"]) == ("created", "3")
    backoffs = [s for s in provisioner.sleeps.calls if s >= 0.25]
    assert len(backoffs) == 2
    # full jitter, at least 0.25 s: up to 0.5 s before the second try, up to 1 s before the third
    assert 0.25 <= backoffs[0] <= 0.5
    assert 0.25 <= backoffs[1] <= 1.0


def test_a_row_that_keeps_failing_gives_up_after_max_attempts(
    provisioner: Cli, tmp_path: Path
) -> None:
    provisioner.emulator.script(sid(2), *[Fault(status=503, code=20503)] * 3)
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))

    result = provisioner("create", str(source), "--run-id", "r1", "--max-attempts", "3", expect=1)

    assert result.exit_code == 1
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [(r["status"], r["attempts"], r["http_status"], r["error_code"]) for r in rows] == [
        ("failed", "3", "503", "20503"),
        ("created", "1", "201", ""),
    ]
    assert "gave up after 3 tries" in rows[0]["error_message"]
    assert rows[0]["request_id"].startswith("RQ")
    (error,) = read_csv(provisioner.run_dir("r1") / "errors.csv")
    assert (error["row"], error["status"]) == ("2", "failed")


def test_a_dropped_connection_is_looked_up_before_sending_again(
    provisioner: Cli, tmp_path: Path
) -> None:
    provisioner.emulator.script(sid(2), Fault(drop=True))
    provisioner.emulator.script(sid(3), Fault(drop=True, create=True))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))

    result = provisioner("create", str(source), "--run-id", "r1")

    assert result.exit_code == 0
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [(r["status"], r["attempts"], r["ambiguous_attempts"], r["lookup"]) for r in rows] == [
        ("created", "2", "1", "absent"),  # dropped before creating: sent again
        ("created", "1", "1", "found"),  # dropped after creating: found, never sent again
    ]
    assert provisioner.emulator.creations("AddressSid", sid(2)) == 1
    assert provisioner.emulator.creations("AddressSid", sid(3)) == 1
    (found,) = provisioner.emulator.conversations_for(rows[1]["identity"])
    assert rows[1]["conversation_sid"] == found.conversation_sid
    assert found.parameters["AddressSid"] == sid(3)


def test_an_answer_slower_than_timeout_is_looked_up_and_not_sent_again(
    provisioner: Cli, tmp_path: Path
) -> None:
    provisioner.emulator.script(sid(2), Fault(delay=1.0))
    # The lag wait lasts until the slow request has created its web chat, as 10 s would.
    provisioner.sleeps = SleepsUntilReady(
        ready=lambda: provisioner.emulator.creations("AddressSid", sid(2)) > 0
    )
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    result = provisioner("create", str(source), "--run-id", "r1", "--timeout", "0.2")

    assert result.exit_code == 0
    (row,) = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert (row["status"], row["attempts"], row["ambiguous_attempts"], row["lookup"]) == (
        "created",
        "1",
        "1",
        "found",
    )
    # The slow answer's web chat was created: the lookup found it, nothing was sent again.
    assert provisioner.emulator.creations("AddressSid", sid(2)) == 1
    (chat,) = provisioner.emulator.created
    assert row["conversation_sid"] == chat.conversation_sid


def test_rejected_credentials_stop_the_run_at_once(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(200))
    env = {"TWILIO_ACCOUNT_SID": provisioner.emulator.username, "TWILIO_AUTH_TOKEN": "wrong"}

    # --no-lookup: the create's own 401 (a new ledger's lookups would meet it first).
    arguments = ("--run-id", "r1", "--rate", "0", "--no-lookup")
    result = provisioner("create", str(source), *arguments, env=env, expect=3)

    assert result.exit_code == 3
    assert "rejected the credentials" in result.stderr
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    statuses = [r["status"] for r in rows]
    assert set(statuses) == {"failed", "not_attempted"}
    assert provisioner.emulator.requests <= 2 * 8  # at most what was in flight
    failed = [r for r in rows if r["status"] == "failed"]
    assert all(
        (r["http_status"], r["error_code"], r["attempts"]) == ("401", "20003", "1") for r in failed
    )
    assert read_summary(provisioner.run_dir("r1"))["exit_code"] == 3


def test_unknown_address_is_not_retried(provisioner: Cli, tmp_path: Path) -> None:
    provisioner.emulator.unknown_addresses.add(sid(2))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))

    result = provisioner("create", str(source), "--run-id", "r1", expect=1)

    assert result.exit_code == 1
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [(r["status"], r["attempts"], r["http_status"], r["error_code"]) for r in rows] == [
        ("failed", "1", "404", "20404"),
        ("created", "1", "201", ""),
    ]
    assert "was not found" in rows[0]["error_message"]


def test_many_failures_in_a_row_stop_the_run(provisioner: Cli, tmp_path: Path) -> None:
    provisioner.emulator.error_rate = 1.0
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(60))

    result = provisioner(
        "create",
        str(source),
        "--run-id",
        "r1",
        "--max-attempts",
        "2",
        "--concurrency",
        "2",
        "--rate",
        "0",
        expect=3,
    )

    assert result.exit_code == 3
    assert "20 rows in a row failed" in result.stderr
    statuses = [r["status"] for r in read_csv(provisioner.run_dir("r1") / "results.csv")]
    assert statuses.count("failed") >= 20
    assert statuses.count("not_attempted") > 0
    assert len(statuses) == 60


def test_errors_csv_feeds_straight_back_in(provisioner: Cli, tmp_path: Path) -> None:
    provisioner.emulator.unknown_addresses.add(sid(3))
    source = write_csv(
        tmp_path / "in.csv", [*CUSTOMER_HEADER, "Region"], [[*r, "EMEA"] for r in customers(4)]
    )
    assert provisioner("create", str(source), "--run-id", "r1", expect=1).exit_code == 1
    provisioner.emulator.unknown_addresses.clear()

    errors = provisioner.run_dir("r1") / "errors.csv"
    result = provisioner("create", str(errors), "--run-id", "r2")

    assert result.exit_code == 0, result.output
    rerun = provisioner.run_dir("r2") / "results.csv"
    assert read_header(rerun) == [*CUSTOMER_HEADER, "Region", *RESULT_COLUMNS]
    (row,) = read_csv(rerun)
    assert (row["customer_id"], row["status"], row["Region"]) == ("C2", "created", "EMEA")
    assert provisioner.emulator.creations("CustomerFriendlyName", "Customer 2") == 1


def test_dry_run_sends_nothing_and_writes_the_plan(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, [*customers(2), ["C9", "bad", "x"]])

    result = provisioner("create", str(source), "--run-id", "r1", "--dry-run", expect=1)

    assert result.exit_code == 1
    assert provisioner.emulator.requests == 0
    assert f"would send row 2: AddressSid='{sid(2)}'" in result.stderr
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [r["status"] for r in rows] == ["not_attempted", "not_attempted", "invalid"]
    assert read_summary(provisioner.run_dir("r1"))["dry_run"] is True


def test_a_dry_run_shows_no_pace_and_claims_no_row_was_sent(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows = [*customers(2), customers(1)[0], ["C9", "bad", "x"]]  # C1 twice: one is left out
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows)

    result = provisioner("create", str(source), "--run-id", "r1", "--dry-run", expect=1)

    assert provisioner.emulator.requests == 0
    lines = said(result.stderr)
    assert not [line for line in lines if "rows/s" in line]  # nothing was sent: no rate
    assert not [line for line in lines if " was sent" in line or " were sent" in line]
    causes = read_summary(provisioner.run_dir("r1"))["causes"]
    assert {cause["code"] for cause in causes} == {"duplicate_customer_id", "invalid_address_sid"}
    assert not [cause for cause in causes if "was sent" in cause["meaning"]]


def test_a_thousand_rows_against_a_flaky_api_are_each_created_once(
    provisioner: Cli, tmp_path: Path
) -> None:
    provisioner.emulator.error_rate = 0.1
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1000))

    result = provisioner(
        "create", str(source), "--run-id", "r1", "--rate", "0", "--concurrency", "16"
    )

    assert result.exit_code == 0, result.stderr[-2000:]
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [r["status"] for r in rows] == ["created"] * 1000
    names = [chat.parameters["CustomerFriendlyName"] for chat in provisioner.emulator.created]
    assert sorted(names) == sorted(f"Customer {n}" for n in range(1, 1001))
    assert sum(int(r["attempts"]) for r in rows) > 1000  # the errors really happened


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base-url", "http://api.example.com"], "plain http is allowed only to a loopback host"),
        (["--run-id", "../elsewhere"], "'--run-id': '../elsewhere': use a plain folder name"),
        (["--run-id", "a: b"], "'--run-id': 'a: b': use a plain folder name"),  # named whole
        (["--concurrency", "0"], "--concurrency"),
        (["--column", "AddressSid"], "PARAM=HEADER"),
    ],
)
def test_bad_options_exit_2_before_sending(
    provisioner: Cli, tmp_path: Path, args: list[str], message: str
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    result = provisioner("create", str(source), *args, base_url=False, expect=2)

    assert result.exit_code == 2
    assert message in result.stderr
    assert provisioner.emulator.requests == 0


def test_an_existing_run_folder_is_not_overwritten(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))
    assert provisioner("create", str(source), "--run-id", "r1").exit_code == 0

    result = provisioner("create", str(source), "--run-id", "r1", expect=2)

    assert result.exit_code == 2
    assert "choose another --run-id" in result.stderr


def test_the_secret_never_appears_in_any_output(provisioner: Cli, tmp_path: Path) -> None:
    provisioner.emulator.script(sid(2), Fault(drop=True), Fault(status=500, code=20500))
    provisioner.emulator.unknown_addresses.add(sid(3))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))

    result = provisioner("create", str(source), "--run-id", "r1", "--traceback", expect=1)
    broken = provisioner("create", str(tmp_path / "missing.csv"), "--traceback", expect=2)

    assert result.exit_code == 1
    assert broken.exit_code == 2
    assert SECRET not in result.output + broken.output
    for path in provisioner.run_dir("r1").iterdir():
        assert SECRET not in path.read_text(encoding="utf-8-sig"), path


def test_sandbox_needs_no_credentials(provisioner: Cli) -> None:
    example = Path(__file__).parent.parent / "inputs" / "example.csv"

    result = provisioner("create", str(example), "--sandbox", "--run-id", "s1", env={})

    assert result.exit_code == 0, result.output
    rows = read_csv(provisioner.run_dir("s1") / "results.csv")
    assert rows
    assert all(r["status"] == "created" and r["conversation_sid"].startswith("CH") for r in rows)
    assert provisioner.emulator.requests == 0  # the sandbox's own emulator answered


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command under `group`, as the words that name it, the group itself included."""
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def test_every_command_help_has_an_example(provisioner: Cli) -> None:
    commands = _command_paths(cli)
    assert {("create",), ("status",), ("emulator",)} <= set(commands)  # the walk found them
    for command in commands:
        result = provisioner(*command, "--help")
        assert result.exit_code == 0
        assert "Example" in result.output, command


def test_python_dash_m_runs_the_cli() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "provisioner", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "provisioner" in completed.stdout


@pytest.mark.slow
def test_the_standalone_emulator_serves_a_run_until_stopped(tmp_path: Path) -> None:
    record = tmp_path / "answers.csv"
    bare = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(200))
    with spawn(["--error-rate", "0.1", "--seed", "3", "--record", str(record)], bare) as api:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "provisioner",
                "create",
                str(source),
                "--out",
                str(tmp_path / "out"),
                "--run-id",
                "r1",
                "--base-url",
                api.url,
                "--rate",
                "0",
                # the emulator's index has no lag: waiting 10 s per dropped answer tests nothing
                "--lookup-lag",
                "0",
            ],
            env={**os.environ, **api.credentials_env()},
            capture_output=True,
            text=True,
            timeout=120,
        )
        stopped = api.stop()

    assert run.returncode == 0, run.stderr
    rows = read_csv(tmp_path / "out" / "r1" / "results.csv")
    assert [r["status"] for r in rows] == ["created"] * 200
    assert stopped == 0
    assert "created 200 web chats" in api.said
    answers = read_csv(record)
    assert sum(a["status"] == "201" and a["kind"] == "create" for a in answers) == 200
    assert any(a["status"].startswith("5") for a in answers)  # --error-rate really failed some


def test_a_refused_connection_is_retried_and_never_ambiguous(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    # A socket bound but never listening refuses every connection, and holding it for the whole
    # test keeps the port ours: a port just closed could be taken by anything meanwhile.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        result = provisioner(
            "create",
            str(source),
            "--run-id",
            "r1",
            "--base-url",
            url,
            "--max-attempts",
            "3",
            base_url=False,
            expect=1,
        )

    assert result.exit_code == 1
    rows = read_csv(provisioner.run_dir("r1") / "results.csv")
    assert [
        (r["status"], r["attempts"], r["ambiguous_attempts"], r["error_code"]) for r in rows
    ] == [("failed", "3", "0", "connection_failed")] * 2


@pytest.mark.parametrize(("command", "offers_sandbox"), [("create", True), ("reconcile", False)])
def test_missing_credentials_offer_sandbox_only_where_the_command_has_it(
    provisioner: Cli, tmp_path: Path, command: str, offers_sandbox: bool
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    result = provisioner(command, str(source), env={}, expect=2)

    assert ("--sandbox" in result.stderr) is offers_sandbox
    assert "TWILIO_AUTH_TOKEN" in result.stderr
    assert provisioner.emulator.requests == 0
