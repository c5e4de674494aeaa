"""vocabulary.py: every word has what it means beside it, and the ledger's CHECK is built from
the entry statuses (the same text as the schema that shipped, so old ledgers open as before)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from provisioner.causes import OUR_CODES, STATUSES, explain
from provisioner.ledger import Entry, open_ledger
from provisioner.ledger_schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, STATUS_CHECK
from provisioner.report_html import LOOKUP_WORDS, STATUS_WORDS
from provisioner.vocabulary import (
    ERROR_STATUSES,
    EntryStatus,
    ErrorCode,
    LookupResult,
    Status,
)

SCOPE = "AC0123:flex-api.twilio.com"
# The entries table exactly as schema 1 shipped it (a ledger made by any earlier version).
SHIPPED_ENTRIES = """CREATE TABLE entries (
            scope TEXT NOT NULL,
            row_key TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('in_flight', 'created', 'failed')),
            conversation_sid TEXT NOT NULL DEFAULT '',
            identity TEXT NOT NULL DEFAULT '',
            request_id TEXT NOT NULL DEFAULT '',
            run_id TEXT NOT NULL,
            ambiguous_attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL DEFAULT '',
            updated_at TEXT NOT NULL,
            PRIMARY KEY (scope, row_key)
        ) WITHOUT ROWID"""
# Codes whose message explains them (it names the host, the proxy or the CA bundle to set).
EXPLAINED_BY_MESSAGE = {
    ErrorCode.PROXY_FAILED,
    ErrorCode.TLS_UNTRUSTED,
    ErrorCode.TLS_FAILED,
    ErrorCode.INVALID_SID,
}


def test_the_values_are_the_strings_files_json_and_the_ledger_hold() -> None:
    assert [status.value for status in Status] == [
        "created",
        "existing",
        "invalid",
        "failed",
        "not_attempted",
    ]
    assert [result.value for result in LookupResult] == [
        "",
        "found",
        "absent",
        "duplicates",
        "failed",
    ]
    assert [status.value for status in EntryStatus] == ["in_flight", "created", "failed"]
    assert json.dumps([Status.CREATED, ErrorCode.CUT_OFF]) == '["created", "cut_off"]'
    assert f"{ErrorCode.STOPPED}" == str(ErrorCode.STOPPED) == "stopped"


@pytest.mark.parametrize("status", list(Status))
def test_every_status_has_its_words_and_an_error_status_its_cause(status: Status) -> None:
    assert status.words
    assert STATUS_WORDS[status.value] == status.words
    is_error = status in ERROR_STATUSES
    assert bool(status.meaning) == bool(status.next_step) == is_error
    if is_error:  # a row with this status and no code: the cause is the status's
        cause = explain("", status.value, "a message")
        assert (cause.code, cause.meaning, cause.next_step) == (
            status.value,
            status.meaning,
            status.next_step,
        )


@pytest.mark.parametrize("result", [result for result in LookupResult if result.value])
def test_every_lookup_result_has_its_words(result: LookupResult) -> None:
    assert result.words
    assert LOOKUP_WORDS[result.value] == result.words
    assert LookupResult.NONE.value not in LOOKUP_WORDS  # no lookup: no line on the page


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_has_its_meaning_and_next_step(code: ErrorCode) -> None:
    cause = explain(code.value, Status.FAILED, "the message says it")
    if code in EXPLAINED_BY_MESSAGE:
        assert (code.meaning, code.next_step) == ("", "")
        assert code.value not in OUR_CODES
        assert cause.meaning == "the message says it"
        return
    assert code.meaning
    assert code.next_step
    assert (cause.code, cause.meaning, cause.next_step) == (
        code.value,
        code.meaning,
        code.next_step,
    )


def test_no_word_is_both_a_code_and_a_codeless_status() -> None:
    assert not set(OUR_CODES) & set(STATUSES)
    assert set(STATUSES) == {status.value for status in ERROR_STATUSES}


def test_the_check_is_the_text_that_shipped() -> None:
    assert STATUS_CHECK == "CHECK (status IN ('in_flight', 'created', 'failed'))"
    assert MIGRATIONS[0][0] == SHIPPED_ENTRIES


def test_the_check_accepts_exactly_the_entry_statuses(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with open_ledger(path, SCOPE):
        pass
    connection = sqlite3.connect(path)
    insert = (
        "INSERT INTO entries (scope, row_key, status, run_id, updated_at)"
        " VALUES (?, ?, ?, 'run-1', 'now')"
    )
    for status in EntryStatus:
        connection.execute(insert, (SCOPE, f"key-{status}", status))
    others = {"existing", "invalid", "not_attempted", "", "CREATED", "created "}
    for word in others:
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute(insert, (SCOPE, f"key-{word}", word))
    stored = {row[0] for row in connection.execute("SELECT status FROM entries")}
    connection.commit()
    connection.close()
    assert stored == {status.value for status in EntryStatus}


def test_a_ledger_made_by_the_first_schema_opens_and_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    connection.execute(SHIPPED_ENTRIES)
    for statement in MIGRATIONS[0][1:]:
        connection.execute(statement)
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute("PRAGMA user_version = 1")
    rows = [
        ("k-created", "created", "CH" + "0" * 32, 0),
        ("k-in-flight", "in_flight", "", 0),
        ("k-failed", "failed", "", 1),
    ]
    connection.executemany(
        "INSERT INTO entries (scope, row_key, status, conversation_sid, run_id,"
        " ambiguous_attempts, updated_at) VALUES (?, ?, ?, ?, 'run-0', ?, '')",
        [(SCOPE, *row) for row in rows],
    )
    connection.commit()
    connection.close()

    with open_ledger(path, SCOPE) as ledger:
        entries = ledger.lookup_all([key for key, *_ in rows])
        assert {key: entry.status for key, entry in entries.items()} == {
            "k-created": EntryStatus.CREATED,
            "k-in-flight": EntryStatus.IN_FLIGHT,
            "k-failed": EntryStatus.FAILED,
        }
        assert all(type(entry.status) is EntryStatus for entry in entries.values())
        assert {entry.row_key for entry in ledger.unsettled()} == {"k-in-flight", "k-failed"}
        assert ledger.in_flight_count() == 1
    connection = sqlite3.connect(path)
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    (schema,) = connection.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'entries'"
    ).fetchone()
    connection.close()
    assert version == SCHEMA_VERSION
    # The migrations that came since add columns; the CHECK is the one it was made with.
    assert STATUS_CHECK in schema


def test_an_entry_made_from_text_holds_the_member() -> None:
    entry = Entry("k", "created", "", "", "", "run-1", 0)  # type: ignore[arg-type]
    assert entry.status is EntryStatus.CREATED
    with pytest.raises(ValueError, match="existing"):
        Entry("k", "existing", "", "", "", "run-1", 0)  # type: ignore[arg-type]
