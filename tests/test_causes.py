"""causes.py: every code a WebChats create can answer has words and a next step; the tally."""

from __future__ import annotations

import pytest

from provisioner.causes import (
    EXAMPLE_ROWS,
    HTTP_STATUSES,
    OTHER_CAUSE,
    OUR_CODES,
    STATUSES,
    TWILIO_CODES,
    Cause,
    CauseCount,
    CauseTally,
    FailingRow,
    cause_lines,
    explain,
)
from provisioner.words import plural

WEBCHATS_CODES = [
    "20001",
    "20003",
    "20404",
    "20429",
    "21604",
    "45700",
    "45701",
    "45711",
    "45715",
    "45719",
    "45731",
    "45741",
    "45744",
    "45745",
    "45780",
]
OUR_OWN = [
    "timeout",
    "connection_lost",
    "connection_failed",
    "connect_timeout",
    "unreadable_answer",
    "redirect_refused",
    "request_failed",
    "invalid_address_sid",
    "missing_address_sid",
    "not_text",
    "duplicate_customer_id",
    "duplicate_row_key",
    "duplicate_identity",
    "key_changed",
]


@pytest.mark.parametrize("code", WEBCHATS_CODES)
def test_twilio_codes_have_words_and_their_page(code):
    cause = explain(code, "failed", "Twilio's own text")
    assert cause.code == code
    assert cause.meaning
    assert cause.next_step
    assert cause.meaning != "Twilio's own text"
    assert cause.more_info == f"https://www.twilio.com/docs/api/errors/{code}"


@pytest.mark.parametrize("code", OUR_OWN)
def test_our_codes_have_words_and_no_link(code):
    cause = explain(code, "invalid", "a message")
    assert (cause.code, cause.more_info) == (code, "")
    assert cause.meaning
    assert cause.next_step


def test_the_issue_s_examples_read_as_promised():
    assert explain("20404", "failed", "").meaning.startswith("address not found")
    assert "AddressSid and TWILIO_REGION" in explain("20404", "failed", "").next_step
    assert "AddressSid and TWILIO_REGION" in explain("45744", "failed", "").next_step
    assert explain("20003", "failed", "").meaning.startswith("credentials rejected")
    assert "16 kB" in explain("45731", "failed", "").meaning


def test_the_server_s_more_info_wins_over_the_derived_page():
    cause = explain("20404", "failed", "x", "https://www.twilio.com/docs/errors/20404")
    assert cause.more_info == "https://www.twilio.com/docs/errors/20404"


def test_an_unknown_code_falls_back_to_the_server_s_message_and_link():
    link = "https://www.twilio.com/docs/errors/45999"
    cause = explain("45999", "failed", f"Something new happened ({link})", link)
    assert cause == Cause(
        "45999", "Something new happened", f"see {link}, and error_message in errors.csv", link
    )


def test_an_unknown_numeric_code_without_link_points_at_twilio_s_page():
    cause = explain("61234", "failed", "")
    assert cause.meaning == "error 61234, with no message"
    assert cause.more_info == "https://www.twilio.com/docs/api/errors/61234"


def test_a_hostile_message_is_cut_and_has_no_control_characters():
    cause = explain("99999", "failed", "\x1b[2Jwiped\r\n" + "x" * 1000)
    assert "\x1b" not in cause.meaning
    assert "\n" not in cause.meaning
    assert len(cause.meaning) <= 200


@pytest.mark.parametrize(
    ("status", "http_status", "code"),
    [
        ("failed", 502, "http_502"),
        ("failed", 401, "http_401"),
        ("failed", 418, "http_418"),
        ("not_attempted", None, "not_attempted"),
        ("invalid", None, "invalid"),
        ("failed", None, "failed"),
        ("", None, "failed"),
    ],
)
def test_rows_without_a_code_are_explained_by_http_status_or_row_status(status, http_status, code):
    cause = explain("", status, "Bad Gateway", http_status=http_status)
    assert cause.code == code
    assert cause.meaning
    assert cause.next_step
    assert "Bad Gateway" not in cause.meaning


def test_http_classes_cover_every_status_without_its_own_entry():
    assert explain("", "failed", "", http_status=504).meaning == HTTP_STATUSES["http_5xx"].meaning
    assert explain("", "failed", "", http_status=409).meaning == HTTP_STATUSES["http_4xx"].meaning


def test_one_home_per_code():
    tables = [TWILIO_CODES, HTTP_STATUSES, OUR_CODES, STATUSES]
    keys = [key for table in tables for key in table]
    assert len(keys) == len(set(keys))


def test_tally_counts_by_cause_most_frequent_first_with_example_rows():
    tally = CauseTally(examples=2)
    for row in (3, 5, 8, 13):
        tally.add(row, explain("20404", "failed", "not found"), key=f"k{row}", status="failed")
    tally.add(21, explain("timeout", "failed", "no answer"), key="k21", status="failed")
    tally.add(34, explain("", "not_attempted", ""), key="k34", status="not_attempted")
    causes = tally.causes()
    assert [(c.code, c.count, c.example_rows) for c in causes] == [
        ("20404", 4, (3, 5)),
        ("not_attempted", 1, (34,)),
        ("timeout", 1, (21,)),
    ]
    assert causes[0].meaning == explain("20404", "failed", "").meaning
    assert tally.total == 6
    assert tally.failing_rows()[:3] == [
        FailingRow(row=3, key="k3", status="failed", code="20404", message=""),
        FailingRow(row=5, key="k5", status="failed", code="20404", message=""),
        FailingRow(row=34, key="k34", status="not_attempted", code="not_attempted", message=""),
    ]


def test_tally_memory_is_bounded_whatever_codes_a_server_invents():
    tally = CauseTally(max_causes=3)
    for row in range(1, 10_001):
        tally.add(row, explain(str(70000 + row), "failed", f"invented {row}"))
    causes = tally.causes()
    assert len(causes) == 4
    assert causes[0].code == OTHER_CAUSE
    assert causes[0].count == 10_000 - 3
    assert all(len(c.example_rows) <= EXAMPLE_ROWS for c in causes)
    assert len(tally.failing_rows()) <= 4 * EXAMPLE_ROWS


@pytest.mark.parametrize(
    ("count", "text"), [(0, "0 rows"), (1, "1 row"), (2, "2 rows"), (1_000, "1000 rows")]
)
def test_plural(count, text):
    assert plural(count, "row") == text


def test_plural_with_an_irregular_noun():
    assert plural(2, "entry", "entries") == "2 entries"


def test_cause_lines_align_and_say_what_to_do():
    tally = CauseTally()
    for row in range(2, 14):
        tally.add(row, explain("20404", "failed", ""))
    tally.add(40, explain("key_changed", "invalid", ""))
    lines = cause_lines(tally.causes())
    assert lines == [
        "  12 rows  20404        address not found in this account or region (or the API path "
        "does not exist there) -> check the AddressSid and TWILIO_REGION (or --base-url) "
        "(rows 2, 3, 4, ...)",
        "   1 row   key_changed  the row's key looks like an already-created key changed by a "
        "spreadsheet (e.g. 00123 became 123); not sent, to avoid a second web chat -> restore "
        "the original ID (the message names it and its run), or pass --force (row 40)",
    ]


def test_cause_lines_of_nothing_is_nothing():
    assert cause_lines([]) == []


def test_cause_lines_keep_a_hostile_code_on_one_line():
    lines = cause_lines(
        [CauseCount(code="x\ny", count=1, meaning="m\x1b[31m", next_step="", example_rows=())]
    )
    assert lines == ["  1 row  x y  m [31m"]
