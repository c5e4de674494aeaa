"""One key, one customer, one identity, one web chat: through the real CLI, against the emulator
or a hostile server on loopback (issues 22.3, 22.4, 24.2, 24.3)."""

from __future__ import annotations

import csv
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provisioner.rows import derive_identity
from tests.conftest import CUSTOMER_HEADER, EARLIER, Cli, read_csv, sid, write_csv
from tests.hostile import (
    Drop,
    HostileServer,
    created,
    hostile_server,  # noqa: F401  (the `hostile` fixture)
    lookup_page,
    participant_conversation,
    web_chat_sid,
)

CREATE_PATH = "/v2/WebChats"
LOOKUP_PATH = "/v1/ParticipantConversations"
NAMES = ["AddressSid", "CustomerFriendlyName"]


def results(provisioner: Cli, run_id: str) -> list[dict[str, str]]:
    return read_csv(provisioner.run_dir(run_id) / "results.csv")


def statuses(provisioner: Cli, run_id: str) -> list[tuple[str, str]]:
    return [(r["status"], r["error_code"]) for r in results(provisioner, run_id)]


def identities_sent(provisioner: Cli) -> list[str]:
    return [chat.identity for chat in provisioner.emulator.created]


def ledger_statuses(provisioner: Cli) -> dict[str, str]:
    """The ledger's entries by key, less the earlier run's that Cli.knows_the_scope writes."""
    with sqlite3.connect(provisioner.out / "ledger.sqlite") as db:
        entries = db.execute("SELECT row_key, status FROM entries WHERE row_key != ?", (EARLIER,))
        return dict(entries.fetchall())


# ---------------------------------------------------------------- 22.3 keys however obtained


def test_a_copy_whose_derived_key_is_a_fed_back_rows_key_is_not_a_second_customer(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", NAMES, [[sid(1), "Ana"], [sid(2), "Bo"]])
    provisioner("create", str(source), "--run-id", "plan", "--dry-run")
    errors = provisioner.run_dir("plan") / "errors.csv"
    with errors.open("a", newline="", encoding="utf-8") as stream:  # the tool's columns blank
        csv.writer(stream).writerow([sid(1), "Ana", *[""] * 6])

    provisioner("create", str(errors), "--run-id", "r1", expect=1)

    rows = results(provisioner, "r1")
    assert [(r["status"], r["error_code"]) for r in rows] == [
        ("created", ""),
        ("created", ""),
        ("invalid", "duplicate_row_key"),
    ]
    assert rows[2]["row_key"] == rows[0]["row_key"]  # the copy's derived key: the fed one
    assert provisioner.emulator.creations("CustomerFriendlyName", "Ana") == 1
    assert len(set(identities_sent(provisioner))) == len(identities_sent(provisioner)) == 2


@pytest.mark.parametrize("given_first", [False, True])
def test_a_customer_id_equal_to_another_rows_derived_key_is_flagged_on_the_later_row(
    provisioner: Cli, tmp_path: Path, given_first: bool
) -> None:
    plain = write_csv(tmp_path / "plain.csv", NAMES, [[sid(1), "Ana"]])
    provisioner("create", str(plain), "--run-id", "plan", "--dry-run")
    (derived,) = [r["row_key"] for r in results(provisioner, "plan")]
    assert derived.startswith("auto:")
    rows = [["", sid(1), "Ana"], [derived, sid(2), "Bo"]]
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows[::-1] if given_first else rows)

    provisioner("create", str(source), "--run-id", "r1", expect=1)

    assert statuses(provisioner, "r1") == [("created", ""), ("invalid", "duplicate_row_key")]
    assert len(provisioner.emulator.created) == 1


def test_a_given_identity_equal_to_another_rows_derived_one_is_flagged(
    provisioner: Cli, tmp_path: Path
) -> None:
    taken = derive_identity(provisioner.scope, "C1")
    header = [*CUSTOMER_HEADER, "Identity"]
    source = write_csv(
        tmp_path / "in.csv", header, [["C2", sid(2), "Bo", taken], ["C1", sid(1), "Ana", ""]]
    )

    provisioner("create", str(source), "--run-id", "r1", expect=1)

    assert statuses(provisioner, "r1") == [("created", ""), ("invalid", "duplicate_identity")]
    assert identities_sent(provisioner) == [taken]


# ---------------------------------------------------------------- 24.2 keys a spreadsheet touched


def test_rows_copied_out_of_results_csv_are_the_same_customers(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "in.csv", CUSTOMER_HEADER, [["00001", sid(1), "Ana"], ["2004", sid(2), "Bo"]]
    )
    provisioner("create", str(source), "--run-id", "r1")
    with (provisioner.run_dir("r1") / "results.csv").open(encoding="utf-8-sig") as stream:
        copied = [row[:3] for row in list(csv.reader(stream))[1:]]
    assert copied[0][0] == "'00001"  # the guard against spreadsheet coercion, as written
    # The operator copies the rows (original columns only), one retyped without its zeros.
    source = write_csv(tmp_path / "copy.csv", CUSTOMER_HEADER, [*copied, ["'1", sid(1), "Ana"]])

    provisioner("create", str(source), "--run-id", "r2", expect=1)

    rows = results(provisioner, "r2")
    assert [(r["status"], r["error_code"]) for r in rows] == [
        ("existing", ""),  # exactly the tool's own guard: the same key
        ("existing", ""),
        ("invalid", "key_changed"),  # the guard and its zeros gone: a spreadsheet change
    ]
    assert [r["row_key"] for r in rows[:2]] == [r["row_key"] for r in results(provisioner, "r1")]
    assert len(provisioner.emulator.created) == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [("002004", "2004"), ("2004", "002004"), ("2004", "2004.0"), ("1234567", "1.234567E+06")],
)
def test_keys_in_one_input_that_differ_only_as_a_spreadsheet_changes_them(
    provisioner: Cli, tmp_path: Path, first: str, second: str
) -> None:
    rows = [[first, sid(1), "Ana"], ["C9", sid(9), "Cy"], [second, sid(2), "Ana again"]]
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows)

    provisioner("create", str(source), "--run-id", "r1", expect=1)

    assert statuses(provisioner, "r1") == [
        ("created", ""),
        ("created", ""),
        ("invalid", "key_changed"),
    ]
    assert len(provisioner.emulator.created) == 2

    provisioner("create", str(source), "--run-id", "r2", "--force")

    assert len(provisioner.emulator.created) == 2 + 3  # --force sends every row, both twins
    assert provisioner.emulator.creations("CustomerFriendlyName", "Ana again") == 1


# ---------------------------------------------------------------- 24.3 the original settles


def test_the_original_sheet_settles_after_its_rows_were_fixed_through_errors_csv(
    provisioner: Cli, tmp_path: Path
) -> None:
    rows = [
        ["C1", sid(1), "Ana"],
        ["C2", "IG-typo", "Bo"],  # a bad value, keyed by customer_id
        ["", "IG-oops", "Walk-in"],  # a bad value, keyed by a derived key
        ["C4", "", "Dee"],  # no address at all
        ["C5", sid(5), "Eve"],
    ]
    original = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, rows)

    provisioner("create", str(original), "--run-id", "r1", expect=1)
    errors = provisioner.run_dir("r1") / "errors.csv"
    assert len(read_csv(errors)) == 3
    fixed = errors.read_text(encoding="utf-8-sig")
    fixed = fixed.replace("IG-typo", sid(2)).replace("IG-oops", sid(3))
    fixed = fixed.replace("C4,,Dee", f"C4,{sid(4)},Dee")
    errors.write_text(fixed, encoding="utf-8-sig")
    provisioner("create", str(errors), "--run-id", "r2")
    provisioner("create", str(errors), "--run-id", "r3")  # the fixed file again: nothing new

    provisioner("create", str(original), "--run-id", "r4")

    assert [status for status, _ in statuses(provisioner, "r4")] == ["existing"] * 5
    assert not (provisioner.run_dir("r4") / "errors.csv").exists() or not read_csv(
        provisioner.run_dir("r4") / "errors.csv"
    )
    created = provisioner.emulator.created
    assert len(created) == 5
    assert sorted(chat.parameters["AddressSid"] for chat in created) == [
        sid(n) for n in range(1, 6)
    ]
    assert len({chat.identity for chat in created}) == 5
    assert set(ledger_statuses(provisioner).values()) == {"created"}
    provisioner("create", str(original), "--run-id", "r5", "--strict")  # settled for --strict too


# ---------------------------------------------------------------- 22.4 lookups that lie


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_lookup_naming_another_rows_web_chat_settles_no_second_row(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path
) -> None:
    # Every answer is lost; each lookup page holds the same conversation for both identities,
    # and one with no participant_identity at all.
    shared, unnamed, made = web_chat_sid(1), web_chat_sid(2), web_chat_sid(3)
    hostile.script(Drop(), Drop(), Drop(), created(made, "id-c"), path=CREATE_PATH)
    entries = [
        participant_conversation(shared, "id-a", _now_iso()),
        participant_conversation(shared, "id-b", _now_iso()),
        {k: v for k, v in participant_conversation(unnamed, "", _now_iso()).items()
         if k != "participant_identity"},
    ]  # fmt: skip
    hostile.always(LOOKUP_PATH, lookup_page(hostile.url, entries))
    header = [*CUSTOMER_HEADER, "Identity"]
    rows = [[f"C{n}", sid(n), f"N{n}", f"id-{c}"] for n, c in ((1, "a"), (2, "b"), (3, "c"))]
    source = write_csv(tmp_path / "in.csv", header, rows)

    provisioner(
        "create", str(source), "--run-id", "r1", "--rate", "0", "--concurrency", "1",
        "--base-url", hostile.url, "--conversations-url", hostile.url, base_url=False, expect=1,
    )  # fmt: skip

    found = results(provisioner, "r1")
    assert [(r["status"], r["error_code"], r["conversation_sid"]) for r in found] == [
        ("created", "", shared),  # its lookup found it
        ("failed", "lookup_failed", shared),  # the same web chat: flagged, not recorded
        ("created", "", made),  # the entry without an identity was not its web chat: sent again
    ]
    assert ledger_statuses(provisioner) == {"C1": "created", "C2": "in_flight", "C3": "created"}
    posts = [r for r in hostile.received if r.path == CREATE_PATH]
    assert len(posts) == 4


def test_two_answers_with_one_conversation_sid_record_one_row(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path
) -> None:
    shared = web_chat_sid(7)
    hostile.script(created(shared), created(shared), path=CREATE_PATH)
    source = write_csv(
        tmp_path / "in.csv", CUSTOMER_HEADER, [["C1", sid(1), "A"], ["C2", sid(2), "B"]]
    )

    provisioner(
        "create", str(source), "--run-id", "r1", "--rate", "0", "--concurrency", "1",
        "--base-url", hostile.url, "--conversations-url", hostile.url, base_url=False, expect=1,
    )  # fmt: skip

    assert statuses(provisioner, "r1") == [("created", ""), ("failed", "unreadable_answer")]
    assert ledger_statuses(provisioner) == {"C1": "created", "C2": "in_flight"}


def test_strict_with_a_ledger_still_refuses_invalid_rows_it_has_not_created(
    provisioner: Cli, tmp_path: Path
) -> None:
    provisioner(
        "create", str(write_csv(tmp_path / "a.csv", CUSTOMER_HEADER, [["C1", sid(1), "A"]]))
    )
    runs_before = sorted(path.name for path in provisioner.out.iterdir())
    source = write_csv(
        tmp_path / "in.csv", CUSTOMER_HEADER, [["C1", "IG-stale", "A"], ["C2", "IG-bad", "B"]]
    )

    result = provisioner("create", str(source), "--strict", expect=2)

    assert "--strict: 1 invalid row" in result.stderr  # C1's stale value is not counted
    assert sorted(path.name for path in provisioner.out.iterdir()) == runs_before
    assert len(provisioner.emulator.created) == 1
