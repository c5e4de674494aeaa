"""attempts.py: what a call to Twilio came to (Attempt, Lookup), and the defensive parsers of
Twilio's error bodies and Retry-After."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from provisioner.attempts import (
    CONTROL_CHARACTERS,
    MAX_RETRY_AFTER,
    Attempt,
    Lookup,
    json_object,
    one_line,
    parse_error_body,
    parse_retry_after,
)
from provisioner.retry import retryable

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
SID = "CH" + "0" * 32


# ---------------------------------------------------------------- Attempt


@pytest.mark.parametrize(
    ("attempt", "created", "worth_retrying", "rejected"),
    [
        (Attempt(http_status=201, conversation_sid=SID), True, False, False),
        (Attempt(http_status=200, conversation_sid=SID), True, False, False),
        (Attempt(http_status=201, ambiguous=True), False, True, False),  # a lost answer
        (Attempt(), False, True, False),  # no answer at all
        (Attempt(http_status=429), False, True, False),
        (Attempt(http_status=500), False, True, False),
        (Attempt(http_status=502), False, True, False),
        (Attempt(http_status=503), False, True, False),
        (Attempt(http_status=504), False, True, False),
        (Attempt(http_status=501), False, False, False),  # not Twilio's transient list
        (Attempt(http_status=400), False, False, False),
        (Attempt(http_status=404), False, False, False),
        (Attempt(http_status=401), False, False, True),
        (Attempt(http_status=403), False, False, True),
        (Attempt(error_code="connection_failed"), False, True, False),
        (Attempt(error_code="invalid_sid"), False, False, False),  # trying again cannot help
        (Attempt(error_code="tls_untrusted"), False, False, False),
        (Attempt(error_code="invalid_sid", ambiguous=True), False, False, False),
    ],
)
def test_an_attempt_says_what_it_came_to(
    attempt: Attempt, created: bool, worth_retrying: bool, rejected: bool
) -> None:
    assert (attempt.created, retryable(attempt), attempt.credentials_rejected) == (
        created,
        worth_retrying,
        rejected,
    )


# ---------------------------------------------------------------- Lookup


@pytest.mark.parametrize(
    ("lookup", "ok", "worth_retrying", "refused", "throttled"),
    [
        (Lookup(http_status=200), True, False, False, False),
        (Lookup(http_status=200, error_code="too_many_pages"), False, False, False, False),
        (Lookup(http_status=200, error_code="unreadable_answer"), False, True, False, False),
        (Lookup(), False, True, False, False),  # no answer
        (Lookup(http_status=429), False, True, False, True),
        (Lookup(http_status=500), False, True, False, False),
        (Lookup(http_status=503), False, True, False, False),
        (Lookup(http_status=401), False, False, True, False),
        (Lookup(http_status=403), False, False, True, False),
        (Lookup(http_status=404), False, False, False, False),
    ],
)
def test_a_lookup_says_what_it_came_to(
    lookup: Lookup, ok: bool, worth_retrying: bool, refused: bool, throttled: bool
) -> None:
    assert (lookup.ok, retryable(lookup), lookup.refused, lookup.throttled) == (
        ok,
        worth_retrying,
        refused,
        throttled,
    )


def test_an_ok_lookup_keeps_a_note_of_what_it_ignored_and_stays_ok() -> None:
    lookup = Lookup(http_status=200, error_message="1 entry without a sid ignored")
    assert lookup.ok
    assert not retryable(lookup)


# ---------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("-5", 0.0),  # a wait in the past is no wait
        ("inf", MAX_RETRY_AFTER),
        ("99999999999", MAX_RETRY_AFTER),
        (format_datetime(NOW + timedelta(seconds=12), usegmt=True), 12.0),
        (format_datetime(NOW - timedelta(days=1), usegmt=True), 0.0),
        (format_datetime(NOW + timedelta(days=1), usegmt=True), MAX_RETRY_AFTER),
    ],
)
def test_retry_after_as_seconds_or_a_date_within_the_cap(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW.timestamp(), cap=MAX_RETRY_AFTER) == pytest.approx(
        seconds
    )


@pytest.mark.parametrize(
    "value", [None, "", "   ", "soon", "nan", "3, 4", "9" * 65, "\u00a0" * 100]
)
def test_a_retry_after_that_says_nothing_usable_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW.timestamp(), cap=MAX_RETRY_AFTER) is None


def test_without_a_cap_a_long_retry_after_is_kept() -> None:
    assert parse_retry_after("86400", now=NOW.timestamp()) == 86400.0


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_delta_seconds_come_back_as_written_up_to_the_cap(seconds: float) -> None:
    parsed = parse_retry_after(repr(seconds), now=NOW.timestamp(), cap=MAX_RETRY_AFTER)
    assert parsed == min(seconds, MAX_RETRY_AFTER)


# ---------------------------------------------------------------- Twilio's error body


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (20404, "20404"),
        ("  21610 ", "21610"),
        (21610.0, "21610"),
        (21610.5, ""),  # not a code
        (True, ""),  # JSON true is not a number here
        (10**13, ""),  # longer than any Twilio code
        (None, ""),
        ("20\n404", "20 404"),  # one line, whatever the server sent
    ],
)
def test_the_code_of_an_error_body_is_one_short_line(code: object, text: str) -> None:
    error = parse_error_body(json.dumps({"code": code, "message": "m", "status": 400}))
    assert error.code == text


def test_an_error_body_keeps_its_message_and_only_a_web_link() -> None:
    body = {"code": 20003, "message": "Authenticate", "more_info": " https://twilio.com/20003 "}
    error = parse_error_body(json.dumps(body))
    assert (error.code, error.message, error.more_info) == (
        "20003",
        "Authenticate",
        "https://twilio.com/20003",
    )
    assert parse_error_body(json.dumps({"more_info": "javascript:alert(1)"})).more_info == ""


@pytest.mark.parametrize(
    "body", [b"", b"null", b"[1, 2]", b'"text"', b"<html>", b"[" * 100_000, b"\xff\xfe"]
)
def test_a_body_that_is_not_a_json_object_is_none_and_an_empty_error(body: bytes) -> None:
    assert json_object(body) is None
    error = parse_error_body(body)
    assert (error.code, error.message, error.more_info) == ("", "", "")


@given(st.text(max_size=200))
@example("line one\r\nline two\ttab\x00nul\x1b[31mred\x9bcsi")
def test_one_line_has_no_control_character_left(text: str) -> None:
    line = one_line(text)
    assert CONTROL_CHARACTERS.search(line) is None
    assert line == line.strip()
    assert len(line) <= len(text)


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=20))
def test_any_code_value_parses_to_a_bounded_code(code: object) -> None:
    if isinstance(code, float) and not math.isfinite(code):
        body = '{"code": ' + ("NaN" if math.isnan(code) else "Infinity") + "}"
    else:
        body = json.dumps({"code": code})
    error = parse_error_body(body)
    assert len(error.code) <= 32
    assert CONTROL_CHARACTERS.search(error.code) is None
