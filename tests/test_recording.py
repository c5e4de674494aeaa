"""The run's side of the ledger on a real SQLite file: many rows per statement, the same
entries a row at a time would leave, and a ledger that fails stopping the run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from provisioner.cells import key_fingerprint
from provisioner.ledger import Entry, Ledger, open_ledger
from provisioner.ledger_lock import IDENTITY_CHECK_EVERY
from provisioner.outcome import Outcome
from provisioner.plan import Decision, plan
from provisioner.recording import LEDGER_CHUNK, NOTHING_KNOWN, Known, Recorder, known, rows_known
from provisioner.rows import Row, derive_identity
from provisioner.staging import read_input
from provisioner.stopping import Stopping
from provisioner.vocabulary import EntryStatus, ErrorCode, LookupResult, Status
from tests.conftest import Reading, conversation_sid_of

SCOPE = "AC123@flex-api.twilio.com"
SID = "CH" + "a" * 32


def row(key: str, *, problem: str | None = None) -> Row:
    parameters = {"AddressSid": "IG" + "0" * 32, "Identity": f"prv-{key}"}
    return Row(2, (key,), parameters, key, problem=problem)


def created(key: str) -> Outcome:
    return Outcome(
        Status.CREATED, conversation_sid=conversation_sid_of(key), identity=f"prv-{key}", attempts=1
    )


FAILED = Outcome(Status.FAILED, attempts=3, error_code="20429", lookup=LookupResult.ABSENT)
NOT_SENT = Outcome(Status.NOT_ATTEMPTED, error_message="the run stopped first")
CUT = Outcome(Status.NOT_ATTEMPTED, error_code=ErrorCode.CUT_OFF, ambiguous_attempts=1)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(path: Path) -> Iterator[Ledger]:
    with open_ledger(path, SCOPE) as opened:
        yield opened


def record(ledger: Ledger, finished: list[tuple[Decision, Outcome]]) -> Stopping:
    stopping = Stopping()
    recorder = Recorder(ledger, "run-1", stopping)
    assert recorder.mark_in_flight([decision for decision, _ in finished if decision.to_send])
    recorder.record(finished)
    return stopping


def test_known_reads_every_row_of_a_chunk_with_the_keys_a_spreadsheet_changed(
    ledger: Ledger,
) -> None:
    with ledger.transaction():
        ledger.record_created(
            "00123",
            "run-0",
            conversation_sid=SID,
            identity="prv-00123",
            request_id="RQ1",
            ambiguous_attempts=0,
            key_fingerprint=key_fingerprint("00123"),
        )
        ledger.record_failed("c-2", "run-0", ambiguous_attempts=1)
    rows = [row("00123"), row("123"), row("c-2"), row("c-3"), row("124"), row("x", problem="bad")]

    found = known(ledger, rows)

    assert set(found) == {"00123", "123", "c-2"}
    assert found["00123"].entry == ledger.lookup("00123")
    assert found["123"] == Known(changed_from=ledger.lookup("00123"))
    entry = found["c-2"].entry
    assert entry is not None
    assert (entry.status, entry.ambiguous_attempts) == ("failed", 1)


def test_a_batch_leaves_the_entries_a_row_at_a_time_would(tmp_path: Path) -> None:
    prior_failed = [("f-1", FAILED), ("n-1", NOT_SENT), ("k-1", CUT)]
    outcomes = [*((f"c-{i}", created(f"c-{i}")) for i in range(40)), ("f-2", FAILED)]
    outcomes += [*prior_failed, ("n-2", NOT_SENT), ("k-2", CUT)]
    entries: list[dict[str, Entry]] = []
    for batch in (True, False):
        with open_ledger(tmp_path / f"{batch}.db", SCOPE) as opened:
            with opened.transaction():  # rows an earlier run failed
                for key, _ in prior_failed:
                    opened.record_failed(key, "run-0", ambiguous_attempts=0)
            keys = [key for key, _ in outcomes]
            priors = opened.lookup_all(keys)
            finished = [(Decision(row(key), prior=priors.get(key)), out) for key, out in outcomes]
            for chunk in [finished] if batch else [[one] for one in finished]:
                record(opened, chunk)
            entries.append(opened.lookup_all(keys))

    batched, one_by_one = entries
    assert batched.keys() == one_by_one.keys()
    for key, entry in batched.items():  # the times differ; everything else is the same
        assert replace(entry, updated_at="", first_sent_at="") == replace(
            one_by_one[key], updated_at="", first_sent_at=""
        ), key
    assert batched["c-39"].status == "created"
    assert batched["c-39"].conversation_sid == conversation_sid_of("c-39")
    assert batched["f-2"].status == "failed"
    assert "n-2" not in batched  # never sent: the mark in flight undone
    assert batched["n-1"].status == "failed"  # back to what the earlier run left
    assert batched["k-2"].status == "in_flight"  # cut off in flight: looked up next run


def test_rows_known_without_sending_are_not_written(ledger: Ledger) -> None:
    existing = Outcome(Status.EXISTING, conversation_sid=SID)
    stopping = record(ledger, [(Decision(row("c-1"), outcome=existing), existing)])

    assert ledger.lookup("c-1") is None
    assert not stopping.is_set


def test_a_ledger_replaced_mid_run_stops_the_run_and_is_written_no_more(path: Path) -> None:
    now = [100.0]
    with open_ledger(path, SCOPE, clock=lambda: now[0]) as ledger:
        stopping = Stopping()
        recorder = Recorder(ledger, "run-1", stopping)
        decision = Decision(row("c-1"))
        assert recorder.mark_in_flight([decision])
        copy = path.with_name("copy.db")
        shutil.copyfile(path, copy)
        os.replace(copy, path)
        now[0] += IDENTITY_CHECK_EVERY

        recorder.record([(decision, created("c-1"))])
        recorder.record([(Decision(row("c-2")), created("c-2"))])

        assert recorder.failed
        assert stopping.is_set
        assert "deleted or replaced during the run" in stopping.reason
    with open_ledger(path, SCOPE) as reopened:  # the copy: c-1 in flight, as before the swap
        entry = reopened.lookup("c-1")
        assert entry is not None
        assert entry.status == "in_flight"
        assert reopened.lookup("c-2") is None


def test_a_ledger_that_cannot_mark_rows_in_flight_stops_the_run(path: Path) -> None:
    now = [100.0]
    with open_ledger(path, SCOPE, clock=lambda: now[0]) as ledger:
        stopping = Stopping()
        recorder = Recorder(ledger, "run-1", stopping)
        path.unlink()
        now[0] += IDENTITY_CHECK_EVERY

        assert not recorder.mark_in_flight([Decision(row("c-1"))])
        assert stopping.is_set
        assert "deleted or replaced during the run" in stopping.reason


def test_one_conversation_never_settles_two_rows(ledger: Ledger) -> None:
    held = conversation_sid_of("c-1")
    with ledger.transaction():
        ledger.record_created(
            "c-1",
            "run-0",
            conversation_sid=held,
            identity="prv-c-1",
            request_id="",
            ambiguous_attempts=0,
        )
    found = replace(created("c-2"), conversation_sid=held, lookup=LookupResult.FOUND)
    answered = replace(created("c-3"), conversation_sid=conversation_sid_of("c-4"))
    rows = [row("c-2"), row("c-3"), row("c-4"), row("c-5")]
    finished = [
        (Decision(rows[0]), found),
        (Decision(rows[1]), answered),
        (Decision(rows[2]), created("c-4")),  # the same SID as c-3 in the same batch: second
        (Decision(rows[3]), created("c-5")),
    ]
    stopping = Stopping()
    recorder = Recorder(ledger, "run-1", stopping)
    assert recorder.mark_in_flight([decision for decision, _ in finished])

    flagged = recorder.record(finished)

    assert sorted(flagged) == ["c-2", "c-4"]
    assert [(o.status, o.error_code) for o in flagged.values()] == [
        (Status.FAILED, "lookup_failed"),
        (Status.FAILED, "unreadable_answer"),
    ]
    entries = ledger.lookup_all(["c-1", "c-2", "c-3", "c-4", "c-5"])
    assert {key: (e.status, e.conversation_sid) for key, e in entries.items()} == {
        "c-1": ("created", held),
        "c-2": ("in_flight", ""),  # left for the next run to look up again
        "c-3": ("created", conversation_sid_of("c-4")),
        "c-4": ("in_flight", ""),
        "c-5": ("created", conversation_sid_of("c-5")),
    }
    # reconcile records through record_created: refused the same way, naming the holder
    with ledger.transaction():
        holder = ledger.record_created(
            "c-2", "run-2", conversation_sid=held, identity="", request_id="", ambiguous_attempts=0
        )
    assert holder == "c-1"
    assert ledger.lookup("c-2") == entries["c-2"]


def test_rows_known_reads_every_row_in_order_with_what_the_ledger_knows_a_chunk_at_a_time(
    tmp_path: Path, ledger: Ledger
) -> None:
    count = LEDGER_CHUNK * 2 + 7  # three chunks, the last a short one
    source = tmp_path / "in.csv"
    lines = [f"C{n},IG{n % 97:032x}" for n in range(count)]
    source.write_text("customer_id,AddressSid\n" + "\n".join(lines) + "\n", encoding="utf-8")
    checked = read_input(Reading(source), source, SCOPE)
    recorded = {f"C{n}" for n in range(0, count, 250)}  # in every chunk
    first = [row for _, row, _ in rows_known(checked, None, SCOPE)]
    record(
        ledger, [(plan(r, None, force=False), created(r.key)) for r in first if r.key in recorded]
    )

    read = list(rows_known(checked, ledger, SCOPE))

    assert [sequence for sequence, _, _ in read] == list(range(count))
    assert [r.key for _, r, _ in read] == [f"C{n}" for n in range(count)]
    assert all(r.identity == derive_identity(SCOPE, r.key) for _, r, _ in read)
    entries = {r.key: seen.entry for _, r, seen in read if seen.entry is not None}
    assert set(entries) == recorded
    assert {entry.status for entry in entries.values()} == {EntryStatus.CREATED}
    assert all(seen is NOTHING_KNOWN for _, r, seen in read if r.key not in recorded)
