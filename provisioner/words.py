"""Words for people: a count with its noun in the right number."""

from __future__ import annotations


def plural(count: int, noun: str, plural_noun: str = "") -> str:
    """`1 row`, `2 rows`: a count with its noun in the right number."""
    return f"{count} {noun if count == 1 else plural_noun or noun + 's'}"
