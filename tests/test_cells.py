"""Cells: escaping is undone exactly; keys a spreadsheet rewrote are recognised, others are not."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from provisioner.cells import (
    FORMULA_TRIGGERS,
    escape_formula,
    escape_key,
    escape_text,
    fingerprint_range,
    is_spreadsheet_value,
    key_fingerprint,
    spreadsheet_changed,
    unescape_cell,
)

SEEDED = settings(derandomize=True)  # the same examples on every run and machine

# Text as people and systems put it in cells, quotes and value-like text made likely.
cells = st.text() | st.from_regex(r"'{0,3}[-+=@ ]?[0-9.,:/eE%$ ]{0,8}", fullmatch=True)
ESCAPES = [escape_formula, escape_key, escape_text]


@pytest.mark.parametrize("escape", ESCAPES)
@SEEDED
@given(value=cells)
@example(value="'00123")
@example(value="''=1+2")
@example(value="'")
@example(value="' 1")
def test_unescape_undoes_every_escape(escape, value: str) -> None:
    assert unescape_cell(escape(value)) == value


@SEEDED
@given(cells)
def test_escaped_keys_are_text_to_a_spreadsheet(value: str) -> None:
    escaped = escape_key(value)
    assert not escaped.startswith(FORMULA_TRIGGERS)
    assert not is_spreadsheet_value(escaped)


@SEEDED
@given(cells)
def test_escaped_cells_never_start_a_formula(value: str) -> None:
    assert not escape_formula(value).startswith(FORMULA_TRIGGERS)


@SEEDED
@given(cells)
def test_text_cells_change_only_when_they_start_with_a_quote(value: str) -> None:
    assert escape_text(value) == value or value.startswith("'")


@pytest.mark.parametrize(
    ("value", "formula", "key", "text"),
    [
        ("00123", "00123", "'00123", "00123"),
        ("'00123", "''00123", "''00123", "''00123"),
        ("=1+2", "'=1+2", "'=1+2", "=1+2"),
        ("1e5", "1e5", "'1e5", "1e5"),
        ("C001", "C001", "C001", "C001"),
        ("'C001", "'C001", "'C001", "'C001"),
        ("auto:4f2a", "auto:4f2a", "auto:4f2a", "auto:4f2a"),
        ("", "", "", ""),
    ],
)
def test_escapes(value: str, formula: str, key: str, text: str) -> None:
    assert (escape_formula(value), escape_key(value), escape_text(value)) == (formula, key, text)


@pytest.mark.parametrize(
    "value",
    [
        "00123",
        "123",
        "1234567890123456789",
        "1.5",
        ".5",
        "1,234",
        "1'234",
        "1 234",
        "1e5",
        "1E+05",
        "12E3",
        "5%",
        "$12",
        "12 €",
        "(123)",
        "1/2",
        "1 1/2",
        "2026-11-24",
        "11/24/2026",
        "24.11.2026",
        "2026-11-24T10:30:00",
        "10:30",
        "10 PM",
        "9am",
        "12-05",
        "MAR-12",
        "5 Dec",
        "Nov 24, 2026",
        "TRUE",
        "false",
        "WAHR",
        " 0042 ",
    ],
)
def test_what_a_spreadsheet_reads_as_a_value(value: str) -> None:
    assert is_spreadsheet_value(value)


@pytest.mark.parametrize(
    "value",
    [
        "C001",
        "auto:3f9a",
        "IG" + "0" * 32,
        "Alice",
        "12a",
        "0x1F",
        "1e",
        "e5",
        "May Smith",
        "'00123",
    ],
)
def test_what_a_spreadsheet_keeps_as_text(value: str) -> None:
    assert not is_spreadsheet_value(value)


# ---- keys a spreadsheet rewrote ------------------------------------------------------------


def excel_forms(key: str) -> set[str]:
    """What Excel, LibreOffice and float-based tools save for a digit string (written here
    independently of provisioner.cells, from what those programs print)."""
    number = int(key)
    digits = str(number)
    general = format(float(number), ".6G")  # Excel's General at the default column width
    libre = format(Decimal(number), ".15G")  # LibreOffice: 15 digits, 3-digit exponent
    if "E" in libre:
        mantissa, exponent = libre.split("E")
        libre = f"{mantissa}E{exponent[0]}{int(exponent[1:]):03d}"
    forms = {
        digits,  # leading zeros dropped
        digits + ".0",  # through a float, written by pandas
        repr(float(number)),  # through a float, shortest repr
        general,
        general.replace(".", ","),  # a German Excel
        libre,
    }
    if len(digits) > 15:
        forms.add(digits[:15] + "0" * (len(digits) - 15))  # Excel keeps 15 digits, zeros after
    forms.discard(key)
    return forms


def in_range(key: str, changed: str) -> bool:
    found = fingerprint_range(changed)
    fingerprint = key_fingerprint(key)
    assert found is not None
    assert fingerprint is not None
    return found[0] <= fingerprint <= found[1]


digit_keys = st.builds(
    lambda zeros, body: "0" * zeros + body,
    st.integers(0, 4),
    st.from_regex(r"[1-9][0-9]{0,24}", fullmatch=True),
)


@SEEDED
@given(digit_keys)
@example("00123")
@example("1234567890123456")
@example("99999999999999999")
@example("9007199254740993")
def test_every_spreadsheet_rewrite_of_a_digit_key_is_recognised(key: str) -> None:
    for changed in excel_forms(key):
        assert spreadsheet_changed(key, changed), changed
        assert in_range(key, changed), changed


@pytest.mark.parametrize(
    ("original", "changed"),
    [
        ("00123", "123"),
        ("123", "123.0"),
        ("1234567890123456", "1.23457E+15"),
        ("1234567890123456", "1234567890123450"),
        ("1234567890123456", "1,23457E+15"),
        ("12345678901234567", "1.23456789012346E+016"),
        ("99999999999999999", "1E+017"),
        ("+15551234567", "15551234567"),
        ("1,234", "1234"),
        ("1.50", "1.5"),
        ("1.2345678901234567", "1.23456789012346"),
        ("2026-11-24", "11/24/2026"),
        ("2026-11-24", "24/11/2026"),
        ("2026-11-24", "24.11.2026"),
        ("2026-11-24", "11/24/26"),
        ("03/04/2026", "4/3/2026"),
        ("03/04/2026", "3/4/2026"),
        ("12-05", "5-Dec"),
        ("12-05", "12/5/2026"),
        ("MAR-12", "Mar-12"),
        ("24-Nov-2026", "24-Nov-26"),
        ("true", "TRUE"),
    ],
)
def test_known_rewrites(original: str, changed: str) -> None:
    assert spreadsheet_changed(original, changed)
    assert in_range(original, changed)


@pytest.mark.parametrize(
    ("original", "new"),
    [
        ("123", "00123"),  # spreadsheets drop zeros, never add them
        ("123", "124"),
        ("1234", "1,234"),
        ("1234567890123456", "1234567890123457"),
        ("1234567890123456", "1.23458E+15"),
        ("2026-11-24", "11/25/2026"),
        ("2026-11-24", "11/24/2025"),
        ("C001", "C1"),
        ("C001", "C001 "),
        ("auto:4f2a", "auto:4f2b"),
        ("00123", "00123"),
    ],
)
def test_not_rewrites(original: str, new: str) -> None:
    assert not spreadsheet_changed(original, new)


@pytest.mark.parametrize(
    "key", ["C001", "auto:4f2a", "prv-1", "IG" + "0" * 32, "Alice", "Nov-2026"]
)
def test_keys_no_spreadsheet_touches_have_no_fingerprint(key: str) -> None:
    assert key_fingerprint(key) is None
    assert fingerprint_range(key) is None


@SEEDED
@given(st.integers(1, 10**15 - 1), st.integers(1, 10**15 - 1))
@example(99_999_999_999_998, 100_000_000_000_000)
def test_distinct_short_numbers_never_match(a: int, b: int) -> None:
    if a == b:
        return
    assert not spreadsheet_changed(str(a), str(b))
    # A range spans at most the neighbours a 15-digit rounding of a decimal could come from.
    assert abs(a - b) < 2 or not in_range(str(a), str(b))


@SEEDED
@given(digit_keys, st.integers(1, 10**6))
def test_keys_further_apart_than_rounding_never_match(key: str, distance: int) -> None:
    number = int(key)
    lost = 10 ** max(0, len(str(number)) - 14)  # more than 15-digit rounding can move a key
    other = str(number + lost * distance)
    assert not spreadsheet_changed(key, other)
    assert not spreadsheet_changed(other, key)


@SEEDED
@given(st.from_regex(r"[1-9][0-9]{17,30}", fullmatch=True).filter(lambda key: key[-1] != "0"))
def test_a_precise_long_key_looks_up_one_value(key: str) -> None:
    fingerprint = key_fingerprint(key)
    assert fingerprint_range(key) == (fingerprint, fingerprint)


numbers = st.decimals(min_value=0, max_value=Decimal("1e30"), places=6, allow_nan=False)


@SEEDED
@given(st.lists(numbers, min_size=2, max_size=6))
def test_fingerprints_sort_as_the_numbers_do(values: list[Decimal]) -> None:
    texts = [format(value, "f") for value in values]
    by_fingerprint = sorted(texts, key=lambda text: str(key_fingerprint(text)))
    assert [Decimal(text) for text in by_fingerprint] == sorted(values)
