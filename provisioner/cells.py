"""Cells that survive spreadsheets: what we write, how our own files are undone, and keys changed.

Two jobs, one subject (what Excel and LibreOffice do to a cell):
- escaping: the result files guard cells with a leading `'` where a spreadsheet would run them
  (formulas) or change them (keys that look like numbers or dates), and `unescape_cell` takes
  exactly that one quote away when our own file is fed back;
- recognising damage already done: `key_fingerprint`, `fingerprint_range` and
  `spreadsheet_changed` tell a new key from an old key that a spreadsheet has rewritten
  (`00123` saved back as `123`, `1234567890123456` as `1.23457E+15`).
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal

QUOTE = "'"

# A cell starting with one of these runs as a formula in Excel, LibreOffice or Sheets (OWASP).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_ESCAPE_FIRST = frozenset([*FORMULA_TRIGGERS, QUOTE])  # first characters escape_formula looks at

# Opening a CSV, Excel and LibreOffice keep a leading `'` as a character of the text (shown in the
# cell, unlike a `'` typed into a cell, which Excel hides as a "text" prefix): the cell stays text
# and is saved back with its quote. So a quoted `'00123` comes back as `'00123`, never as `123`.
# Checked here with LibreOffice (`soffice --headless --convert-to csv`); for Excel it is the
# reason the OWASP formula guard works, not checked on a machine.

# Numbers, dates, times, fractions and percentages in any common locale: digits with the marks
# locales group, split decimals and write dates and times with, a sign or accounting parentheses,
# a currency, an exponent, a percent sign or AM/PM. Wider than any one spreadsheet reads, on
# purpose: a key quoted without need costs one `'` that comes off again on the way back.
_VALUE_LIKE = re.compile(
    r"[-+(]?[$€£¥]?[ ]?[.,]?[0-9][0-9.,'/:\- \u00a0\u202f]*"
    r"(?:[eE][-+]?[0-9]+)?"
    r"(?:[ ]?[%$€£¥]|\s+[aApP][mM]?|\s*[aApP][mM])?\)?"
)
_DIGIT = re.compile(r"[0-9]")
_ISO_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}T[0-9:.,]+(?:Z|[-+][0-9:]+)?")
# What Excel and LibreOffice read as TRUE/FALSE in English, German, French, Spanish, Italian.
_BOOLEANS = frozenset(
    {"true", "false", "wahr", "falsch", "vrai", "faux", "verdadero", "falso", "vero"}
)
_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
_DATE_SEPARATORS = re.compile(r"[\s\-/.,]+")
_MAX_DATE_TOKENS = 4  # "Mon 24 Nov 2026" at most; longer texts are sentences, not dates


def is_spreadsheet_value(text: str) -> bool:
    """True when a spreadsheet opening `text` from a CSV may read it as other than text."""
    bare = text.strip()
    if not _DIGIT.search(bare):  # the common case for names and messages: cheap, and final
        return bare.casefold() in _BOOLEANS
    if _VALUE_LIKE.fullmatch(bare) or _ISO_DATE_TIME.fullmatch(bare):
        return True
    if bare.casefold() in _BOOLEANS:
        return True
    return _month_date_tokens(bare) is not None


def _guarded(text: str) -> bool:
    """True for text a spreadsheet would not keep as it is: a formula, or a value it converts."""
    return text.startswith(FORMULA_TRIGGERS) or is_spreadsheet_value(text)


def escape_formula(value: str) -> str:
    """Make a cell inert in spreadsheets: prefix `'` where it could run as a formula.

    A value that already starts with quotes before anything `unescape_cell` would unquote gets
    one more, so that `unescape_cell` always gives back exactly what was written.
    """
    if not value or value[0] not in _ESCAPE_FIRST:
        return value  # most cells: nothing at the start that is a formula or a quote
    bare = value.lstrip(QUOTE)
    if bare.startswith(FORMULA_TRIGGERS) or (bare != value and is_spreadsheet_value(bare)):
        return QUOTE + value
    return value


def escape_key(value: str) -> str:
    """Make a key or ID cell survive a spreadsheet: prefix `'` to formulas and to anything it
    would read as a number, date, time, percentage or boolean (`00123`, `1e5`, `2026-11-24`)."""
    if _guarded(value.lstrip(QUOTE)):
        return QUOTE + value
    return value


def escape_text(value: str) -> str:
    """For cells stored as text (xlsx), which nothing runs or converts: only a value that starts
    with a quote `unescape_cell` would take gets one more."""
    if value.startswith(QUOTE) and _guarded(value.lstrip(QUOTE)):
        return QUOTE + value
    return value


def unescape_cell(value: str) -> str:
    """Undo `escape_formula`, `escape_key` and `escape_text`: for files this tool wrote only."""
    if value.startswith(QUOTE) and _guarded(value.lstrip(QUOTE)):
        return value[1:]
    return value


# ---- keys a spreadsheet has changed ----------------------------------------------------------
#
# What Excel and LibreOffice do to a key they read as a number, and so what we recognise:
# - leading zeros, a `+`, thousands separators and trailing decimal zeros dropped:
#   `00123` -> `123`, `+15551234567` -> `15551234567`, `"1,234"` -> `1234`, `1.50` -> `1.5`;
# - only 15 significant digits kept: Excel cuts the rest to zeros (`1234567890123456` ->
#   `1234567890123450`), LibreOffice rounds what it shows (`1.2345678901234567` ->
#   `1.23456789012346`, `12345678901234567` -> `1.23456789012346E+016`);
# - shown, and so saved, in scientific notation with as many digits as the column shows
#   (Excel's General: `1.23457E+15`; LibreOffice: `1.23456789012346E+016`; `1E+17`; a German
#   Excel writes `1,23457E+15`);
# - through a float (pandas and friends): `123.0`, `1.2345678901234568e+16`.
# And to a key it reads as a date: shown in the locale's date format (`2026-11-24` ->
# `11/24/2026`, `24/11/2026`, `24.11.2026`, `11/24/26`; `12-05` -> `5-Dec`; `MAR-12` -> `Mar-12`).
#
# Decisions:
# - Numbers are compared by value; only unsigned ones (a key starting with `-` is formula-guarded
#   on the way out, and negative IDs are not seen in practice). A comma is a thousands separator
#   only in three-digit groups (`1,234,567`) and a decimal comma only in scientific notation
#   (`1,23457E+15`): `1,5` is not fingerprinted, since no spreadsheet saves it differently in the
#   locale that read it.
# - Dates are compared by the (month, day) they can mean, day-first and month-first both, since the
#   locale is unknown: `03/04/2026` may be 3 April or 4 March. Years must agree where both texts
#   have one (two-digit years as spreadsheets read them: 00-29 -> 20xx, 30-99 -> 19xx); a text
#   without a year (`12-05`, `5-Dec`) matches any year, because the spreadsheet adds the current
#   one or hides it. Month-year texts (`Nov-26` as November 2026) and times are not fingerprinted.
# - A text that reads as both (`1.2`: a number in English, 1 February in German) is a number.
# - Booleans change case only (`true` -> `TRUE`).
#
# The fingerprint of a number is its exact value in a form that sorts like the value, so that the
# originals a damaged key may come from are one range of fingerprints (`fingerprint_range`): a
# ledger index answers that with one BETWEEN. A damaged key with few digits (`1.23457E+15`) stands
# for many originals, and the range covers them all; a precise key's range is a point or a few
# units, so new keys among dense numeric IDs never scan their neighbours.

SPREADSHEET_DIGITS = 15  # significant digits Excel and LibreOffice keep of a number
FLOAT_DIGITS = 17  # significant digits a float's shortest repr can need
_EXPONENT_OFFSET = 500  # fingerprints store exponent + offset in three digits
_MIN_EXPONENT, _MAX_EXPONENT = -400, 499  # beyond what spreadsheets hold (about 1e-307..1e308)
_MAX_KEY_DIGITS = 400  # digits a numeric key may have before we stop treating it as a number
_DECIMALS = Context(prec=_MAX_KEY_DIGITS + 50)  # exact arithmetic for every key we accept
_WIDTH_DIGITS = 2  # a range's half-width is rounded up to this many digits: 1.015625 -> 1.1
_ZERO = "n000"  # the fingerprint of zero: sorts before every positive number
# Two-digit years as Excel and LibreOffice read them by default.
_CENTURY_PIVOT = 30
_LEAP_YEAR = 2000  # a year in which 29 February exists, for texts without a year

_PLAIN = re.compile(r"\+?(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?")
_GROUPED = re.compile(r"\+?(?P<int>[1-9][0-9]{0,2}(?:,[0-9]{3})+)(?:\.(?P<frac>[0-9]*))?")
_SCIENTIFIC = re.compile(r"\+?(?P<int>[0-9]*)(?:[.,](?P<frac>[0-9]*))?[eE](?P<exp>[-+]?[0-9]{1,4})")
_NUMERIC_DATE = re.compile(r"([0-9]{1,2})([-/.])([0-9]{1,2})(?:\2([0-9]{4}|[0-9]{2}))?")
_ISO_DATE = re.compile(r"([0-9]{4})([-/.])([0-9]{1,2})\2([0-9]{1,2})")

_Reading = tuple[int | None, int, int]  # (year or None, month, day)


@dataclass(frozen=True, slots=True)
class _Number:
    """A key read as a number: its exact value and how it was written."""

    value: Decimal
    digits: int  # significant digits written (all mantissa digits when scientific)
    scientific: bool
    canonical: bool  # written as a spreadsheet or a float writes numbers: no zeros, `+` or commas


def _number(text: str) -> _Number | None:
    """`text` as an unsigned decimal number, or None."""
    grouped = False
    match = _SCIENTIFIC.fullmatch(text)
    scientific = match is not None
    if match is None:
        match = _PLAIN.fullmatch(text) or _GROUPED.fullmatch(text)
        grouped = match is not None and "," in match["int"]
    if match is None:
        return None
    whole = match["int"].replace(",", "")
    fraction = match["frac"] or ""
    if not (whole or fraction) or len(whole) + len(fraction) > _MAX_KEY_DIGITS:
        return None
    exponent = int(match["exp"]) if scientific else 0
    value = _DECIMALS.create_decimal(f"{whole or '0'}.{fraction or '0'}e{exponent}")
    if not value.is_zero() and not _MIN_EXPONENT <= value.adjusted() < _MAX_EXPONENT:
        return None
    mantissa = (whole + fraction).lstrip("0")
    digits = len(mantissa if scientific or fraction else mantissa.rstrip("0"))
    canonical = not (text.startswith("+") or grouped or (len(whole) > 1 and whole.startswith("0")))
    return _Number(value, digits, scientific, canonical)


def _encode(value: Decimal) -> str:
    """A fingerprint of a non-negative number that sorts as the number does."""
    if value <= 0:
        return _ZERO
    _, digits, exponent = value.normalize(_DECIMALS).as_tuple()
    assert isinstance(exponent, int)
    leading = exponent + len(digits)  # value = 0.d1d2... * 10**leading
    leading = min(max(leading, _MIN_EXPONENT), _MAX_EXPONENT)
    return f"n{leading + _EXPONENT_OFFSET:03d}" + "".join(map(str, digits))


def _place(value: Decimal, significant: int) -> Decimal:
    """The value of one unit in the `significant`-th significant digit of `value`."""
    return _DECIMALS.scaleb(Decimal(1), value.adjusted() - significant + 1)


def _round(value: Decimal, significant: int, rounding: str) -> Decimal:
    if value.is_zero():
        return value
    return value.quantize(_place(value, significant), rounding=rounding, context=_DECIMALS)


def _as_float(value: Decimal) -> Decimal | None:
    """The exact value of the float nearest to `value`, or None past a float's range."""
    number = float(value)
    return Decimal(number) if math.isfinite(number) else None


def _stored(original: Decimal) -> set[Decimal]:
    """Every value a spreadsheet or a float may hold for `original`."""
    values = {original}
    for rounding in (ROUND_DOWN, ROUND_HALF_UP, ROUND_HALF_EVEN):
        values.add(_round(original, SPREADSHEET_DIGITS, rounding))
    if (as_float := _as_float(original)) is not None:
        values.add(as_float)
    return values


def _number_changed(original: _Number, changed: _Number) -> bool:
    if not changed.canonical:  # spreadsheets never add zeros, a `+` or separators
        return False
    target = changed.value
    if target == original.value:
        return True
    a, b = _as_float(original.value), _as_float(target)
    if a is not None and a == b:  # written back through a float, shortest repr
        return True
    stored = _stored(original.value)
    if target in stored:
        return True
    if not changed.scientific:
        return False
    # Shown in scientific notation with as many digits as fit: trailing zeros are dropped, so
    # rounding to the digits written is the test whatever the precision shown.
    return any(
        _round(value, changed.digits, rounding) == target
        for value in stored
        for rounding in (ROUND_HALF_UP, ROUND_HALF_EVEN)
    )


def _number_range(number: _Number) -> tuple[str, str]:
    """The fingerprints of every original that `number` may be a spreadsheet's rewrite of."""
    value = number.value
    if value.is_zero():
        return _ZERO, _ZERO
    widths = []
    if number.scientific:  # rounded to the digits shown
        widths.append(_DECIMALS.divide(_place(value, number.digits), 2))
    if number.digits <= SPREADSHEET_DIGITS:  # cut or rounded to 15 digits
        widths.append(_place(value, SPREADSHEET_DIGITS))
    if number.digits <= FLOAT_DIGITS and (as_float := _as_float(value)) is not None:
        widths.append(Decimal(math.ulp(float(as_float))))  # through a float and back
    # Rounded up to two digits: the same originals, and short fingerprints at both ends.
    width = sum(widths, Decimal(0))
    width = width.quantize(_place(width, _WIDTH_DIGITS), rounding=ROUND_CEILING, context=_DECIMALS)
    return _encode(_DECIMALS.subtract(value, width)), _encode(_DECIMALS.add(value, width))


def _year(text: str | None) -> int | None:
    if text is None:
        return None
    year = int(text)
    if len(text) == 2:
        year += 2000 if year < _CENTURY_PIVOT else 1900
    return year


def _valid(year: int | None, month: int, day: int) -> bool:
    if not 1 <= month <= 12 or day < 1:
        return False
    return day <= calendar.monthrange(year or _LEAP_YEAR, month)[1]


def _month_date_tokens(text: str) -> tuple[int, list[str]] | None:
    """(month, the numbers) for a text of one English month name and numbers, or None."""
    tokens = [token for token in _DATE_SEPARATORS.split(text) if token]
    if not 2 <= len(tokens) <= _MAX_DATE_TOKENS:
        return None
    months = [_MONTHS[token.casefold()] for token in tokens if token.casefold() in _MONTHS]
    numbers = [token for token in tokens if token.isascii() and token.isdigit()]
    if len(months) != 1 or not numbers or len(months) + len(numbers) != len(tokens):
        return None
    return months[0], numbers


def _date_readings(text: str) -> frozenset[_Reading]:
    """Every (year, month, day) that `text` may mean as a date; empty when it is no date."""
    if match := _ISO_DATE.fullmatch(text):
        iso = (int(match[1]), int(match[3]), int(match[4]))
        return frozenset({iso} if _valid(*iso) else ())
    if match := _NUMERIC_DATE.fullmatch(text):
        if match[4] is None and match[2] == ".":
            return frozenset()  # `1.2` is a number; spreadsheets write day and month as `1/2`
        year = _year(match[4])
        first, second = int(match[1]), int(match[3])
        orders = ((first, second), (second, first))
        return frozenset((year, m, d) for m, d in orders if _valid(year, m, d))
    return _named_month_readings(text)


def _named_month_readings(text: str) -> frozenset[_Reading]:
    """`24-Nov`, `Nov 24, 2026`, `24-Nov-26`: the day first, then a year of two or four digits."""
    found = _month_date_tokens(text)
    if found is None:
        return frozenset()
    month, numbers = found
    if len(numbers) > 2 or len(numbers[0]) > 2:
        return frozenset()  # not a day (`Nov-2026` is a month of a year: not fingerprinted)
    year: int | None = None
    if len(numbers) == 2:
        if len(numbers[1]) not in (2, 4):
            return frozenset()
        year = _year(numbers[1])
    day = int(numbers[0])
    return frozenset({(year, month, day)} if _valid(year, month, day) else ())


def _same_date(a: _Reading, b: _Reading) -> bool:
    return a[1:] == b[1:] and (a[0] is None or b[0] is None or a[0] == b[0])


def key_fingerprint(key: str) -> str | None:
    """A coarse form of `key` that sorts by value; None for keys no spreadsheet rewrites or makes.

    `00123`, `123`, `123.0` and `1.23E+2` share one fingerprint; for a damaged form that lost
    digits, the original's fingerprint lies in `fingerprint_range` of the damaged form.
    """
    text = key.strip()
    if (number := _number(text)) is not None:
        return _encode(number.value)
    if readings := _date_readings(text):
        month, day = next(iter(readings))[1:]
        low, high = sorted((month, day))
        return f"d{low:02d}{high:02d}"  # day-first and month-first readings agree on this
    if text.casefold() in ("true", "false"):
        return "b" + text.casefold()
    return None


def fingerprint_range(key: str) -> tuple[str, str] | None:
    """The fingerprints (low, high, inclusive) of every key that `key` may be a rewrite of.

    A point for most keys; a span for ones that lost digits (`1.23457E+15`, a 16-digit key ending
    in 0). A ledger asks for created keys whose fingerprint lies between the two, then checks each
    with `spreadsheet_changed`. None when `key_fingerprint(key)` is None.
    """
    number = _number(key.strip())
    if number is not None:
        return _number_range(number)
    fingerprint = key_fingerprint(key)
    return None if fingerprint is None else (fingerprint, fingerprint)


def spreadsheet_changed(original: str, changed: str) -> bool:
    """True when `changed` differs from `original` but a spreadsheet could have made it of it."""
    before, after = original.strip(), changed.strip()
    if before == after:
        return False
    if (old := _number(before)) is not None:
        new = _number(after)
        return new is not None and _number_changed(old, new)
    if old_dates := _date_readings(before):
        new_dates = _date_readings(after)
        return any(_same_date(a, b) for a in old_dates for b in new_dates)
    folded = before.casefold()
    return folded in ("true", "false") and folded == after.casefold()
