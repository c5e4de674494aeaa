"""timestamps.py: ISO 8601 times read back, the ledger's own and Twilio's, in one function."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.ledger import Entry
from provisioner.timestamps import epoch_seconds, utc_now
from provisioner.vocabulary import EntryStatus

CLOCK_SLACK = 5.0  # seconds between reading the clock here and in utc_now, on a busy machine
MOMENT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-25T10:00:00Z",  # Twilio's date_created
        "2026-11-25T10:00:00.000000Z",  # the ledger's utc_now
        "2026-11-25T10:00:00+00:00",
        "2026-11-25T11:00:00+01:00",
    ],
)
def test_every_spelling_of_one_moment_is_one_number(text: str) -> None:
    assert epoch_seconds(text) == MOMENT.timestamp()


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z", "25/11/2026", "Z"])
def test_text_that_is_no_time_is_none(text: str) -> None:
    assert epoch_seconds(text) is None


def test_what_the_ledger_writes_reads_back_as_now() -> None:
    assert epoch_seconds(utc_now()) == pytest.approx(time.time(), abs=CLOCK_SLACK)


# Offsets in whole minutes, as every real zone has them (ISO 8601 writes no finer ones).
OFFSETS = st.integers(-23 * 60, 23 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))


@given(st.datetimes(datetime(1971, 1, 1), datetime(9998, 12, 31), timezones=OFFSETS))
def test_any_aware_time_reads_back_as_its_own_moment(moment: datetime) -> None:
    assert epoch_seconds(moment.isoformat()) == moment.timestamp()


def test_a_ledger_entry_with_no_time_is_at_zero() -> None:
    entry = Entry(
        "K1", EntryStatus.CREATED, "CH1", "prv-1", "RQ1", "r1", 0, first_sent_at="", updated_at="x"
    )
    assert (entry.first_sent, entry.updated) == (0.0, 0.0)
