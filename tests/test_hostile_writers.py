"""CsvWriter tests a row for NUL once, not each cell: the bytes written must be those the
per-cell code wrote, for any row."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from provisioner.cells import escape_formula, escape_key
from provisioner.writers import CsvWriter

HEADERS = ["customer_id", "Name", "row_key", "error_message"]
KEYS = ["customer_id", "row_key"]
NUL_SUBSTITUTE = "\x1a"  # what a NUL is written as (writers.py)
# Text with NULs, other controls, formula starts and key-like digits, often.
CELL = st.text(st.sampled_from(["\x00", "\x1a", "=", "+", "-", "@", "0", "1", "e", " ", "é", "\n"]))
ANY_CELL = CELL | st.text()


def per_cell(headers: Sequence[str], keys: Sequence[str], rows: list[list[str]]) -> bytes:
    """The file the writer wrote before a8f1a0e: each cell's NUL replaced on its own."""
    key_indexes = {i for i, header in enumerate(headers) if header in keys}
    stream = io.StringIO(newline="")
    writer = csv.writer(stream)
    writer.writerow([escape_formula(h.replace("\x00", NUL_SUBSTITUTE)) for h in headers])
    for cells in rows:
        writer.writerow(
            [
                escape_key(text) if index in key_indexes else escape_formula(text)
                for index, text in enumerate(c.replace("\x00", NUL_SUBSTITUTE) for c in cells)
            ]
        )
    return stream.getvalue().encode("utf-8-sig")


@given(rows=st.lists(st.lists(ANY_CELL, min_size=len(HEADERS), max_size=len(HEADERS))))
def test_a_row_is_written_as_the_per_cell_code_wrote_it(rows: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "results.csv"
        with CsvWriter(path, HEADERS, key_columns=KEYS) as writer:
            for cells in rows:
                writer.write(cells)

        assert path.read_bytes() == per_cell(HEADERS, KEYS, rows)
