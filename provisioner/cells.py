"""Formula-safe cells: escaping what we write, and undoing it when our own files come back."""

from __future__ import annotations

# A cell starting with one of these runs as a formula in Excel, LibreOffice or Sheets (OWASP).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def escape_formula(value: str) -> str:
    """Make a cell inert in spreadsheets: prefix `'` where it could run as a formula.

    A value that already starts with quotes before a trigger gets one more, so that
    `unescape_formula` can always take exactly one away.
    """
    if value.lstrip("'").startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def unescape_formula(value: str) -> str:
    """Undo `escape_formula`: applied only to files this tool wrote (errors.csv fed back)."""
    if value.startswith("'") and value.lstrip("'").startswith(FORMULA_TRIGGERS):
        return value[1:]
    return value
