"""Writing result tables: CSV row by row, xlsx streamed, small files atomically; owner-only files.

Result files hold customer data, so every file is created readable by its owner only (0600),
whatever the umask says.
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Protocol, Self

from provisioner.cells import escape_formula, escape_key, escape_text, is_spreadsheet_value
from provisioner.private import open_private

if TYPE_CHECKING:
    from openpyxl.cell import Cell

# openpyxl is imported where an xlsx is written: importing it (with numpy) costs about a third
# of a second of CPU, which a CSV-only run (and every --help) would pay for nothing.

# xlsx layout
WIDTH_SAMPLE_ROWS = 50  # rows held back to size the columns; the rest stream straight through
MIN_WIDTH = 6  # characters: a column narrower than this is hard to hit with a mouse
MAX_WIDTH = 60  # characters: wider pushes the other columns off screen; the cell shows the rest
WIDTH_PADDING = 2  # characters of air beside the longest text, as Excel's autofit leaves
TEXT_FORMAT = "@"  # Excel's Text format: what a person types into the cell stays text
# XML 1.0 cannot hold these characters; such values are invalid rows (`not_text`). An xlsx
# cell keeps the control characters as Excel does, escaped `_xHHHH_` (and a text that reads as
# such an escape gets `_x005F`, Excel's escaped `_`), which calamine reads back: a row fed back
# through errors.xlsx is still `not_text`, not created with other text. U+FFFE and U+FFFF,
# which calamine does not unescape, become U+FFFD. The CSV keeps them exactly (but a NUL, below).
_OOXML_ESCAPED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]|_x[0-9A-Fa-f]{4}_")
_ESCAPED_UNDERSCORE = "_x005F"
_NONCHARACTERS = re.compile(r"[\ufffe\uffff]")
_REPLACEMENT = "\ufffd"
# A CSV holding a NUL is refused whole as binary when read (table.py), our own errors.csv
# too; a NUL from a workbook cell is written as SUB, ASCII's substitute for a character that
# cannot be kept: still a control character, so its row stays `not_text` when fed back.
_NUL = "\x00"
_NUL_SUBSTITUTE = "\x1a"
_SHEET_TITLE_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")
_SHEET_TITLE_LENGTH = 31  # Excel's limit


class TableWriter(Protocol):
    """A result table written row by row: CSV or xlsx."""

    @property
    def path(self) -> Path:
        """Where the finished table is."""
        ...

    def write(self, cells: Sequence[str]) -> None:
        """Append one row."""
        ...

    def flush(self) -> None:
        """Make what was written so far safe to read, where the format allows."""
        ...

    def close(self) -> None:
        """Finish the table."""
        ...


def _open_private(path: Path) -> int:
    """A file descriptor for writing `path` afresh, mode 0600 whatever the umask or old mode."""
    return open_private(path, os.O_WRONLY | os.O_TRUNC)


class CsvWriter:
    """A CSV written row by row and flushed, so a killed run leaves a readable file.

    UTF-8 with a BOM, so that Excel reads it as UTF-8. Cells are formula-escaped; the cells of
    `key_columns` are also quoted where a spreadsheet would change them (`escape_key`).
    """

    def __init__(
        self, path: Path, headers: Sequence[str], *, key_columns: Collection[str] = ()
    ) -> None:
        self.path = path
        self._keys = frozenset(i for i, header in enumerate(headers) if header in key_columns)
        descriptor = _open_private(path)
        try:
            # Kept open across calls and closed by close(): no `with` can hold it.
            self._stream: IO[str] = open(descriptor, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115
        except BaseException:
            os.close(descriptor)
            raise
        self._writer = csv.writer(self._stream)
        self._writer.writerow([escape_formula(_csv_text(header)) for header in headers])

    def write(self, cells: Sequence[str]) -> None:
        """Append one row, formula-escaped and key-escaped."""
        keys = self._keys
        if _NUL in "".join(cells):  # rare: one test of the whole row keeps the usual row cheap
            cells = [_csv_text(cell) for cell in cells]
        self._writer.writerow(
            [
                escape_key(cell) if index in keys else escape_formula(cell)
                for index, cell in enumerate(cells)
            ]
        )

    def flush(self) -> None:
        """Hand what was written to the operating system."""
        self._stream.flush()

    def close(self) -> None:
        """Flush and close."""
        self._stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so a reader sees the old file or the new one, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    with (
        _replacing(temporary, path),
        open(_open_private(temporary), "w", encoding="utf-8") as stream,
    ):
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())


@contextmanager
def _replacing(temporary: Path, path: Path) -> Iterator[None]:
    """Rename `temporary` onto `path` once written; remove it if writing it failed."""
    try:
        yield
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


class XlsxWriter:
    """An xlsx workbook of one sheet, every cell text, streamed by openpyxl's write-only mode.

    Cells are stored as strings, so nothing is read as a number, a date or a formula (`=1+2` and
    `00123` stay as written, with no quote needed). Cells a spreadsheet would convert if typed
    (numbers, dates, formulas) and empty cells also get Excel's Text format, so that a person
    editing the cell keeps text. The header row is bold and frozen; column widths come from the
    header and the first rows. Memory stays flat: rows go to openpyxl's temporary file as they
    come, and the workbook is written beside `path` and renamed onto it by `close()`, so `path`
    is never a half-written file.
    """

    def __init__(self, path: Path, headers: Sequence[str]) -> None:
        self.path = path
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell

        self._new_cell = WriteOnlyCell
        self._temporary = path.with_name(f".{path.name}.tmp")
        self._workbook = Workbook(write_only=True)
        self._sheet = self._workbook.create_sheet(_sheet_title(path.stem))
        self._headers = [_xml_text(header) for header in headers]
        self._held: list[list[str]] | None = []  # None once the columns are sized
        self._closed = False

    def write(self, cells: Sequence[str]) -> None:
        """Append one row (the first rows are held back until the column widths are known)."""
        row = [escape_text(_xml_text(cell)) for cell in cells]
        if self._held is None:
            self._append(row)
            return
        self._held.append(row)
        if len(self._held) >= WIDTH_SAMPLE_ROWS:
            self._start()

    def flush(self) -> None:
        """Nothing to do: an xlsx is a zip whose index comes last, readable only once closed."""

    def close(self) -> None:
        """Write the workbook beside `path`, then rename it onto `path`."""
        if self._closed:
            return
        self._closed = True
        if self._held is not None:
            self._start()
        with (
            _replacing(self._temporary, self.path),
            open(_open_private(self._temporary), "wb") as stream,
        ):
            self._workbook.save(stream)
            stream.flush()
            os.fsync(stream.fileno())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        """Size the columns, freeze the header, and write the header and the rows held back."""
        from openpyxl.styles import Font
        from openpyxl.utils import get_column_letter

        held, self._held = self._held or [], None
        sheet = self._sheet
        for index, width in enumerate(column_widths(self._headers, held), start=1):
            dimension = sheet.column_dimensions[get_column_letter(index)]
            dimension.width = width
            dimension.number_format = TEXT_FORMAT  # for cells left empty, which have no style
        sheet.freeze_panes = "A2"
        bold = Font(bold=True)
        header_cells = []
        for header in self._headers:
            cell = self._text_cell(header)
            cell.font = bold
            header_cells.append(cell)
        sheet.append(header_cells)
        for row in held:
            self._append(row)

    def _append(self, row: Sequence[str]) -> None:
        self._sheet.append([self._cell(text) for text in row])

    def _cell(self, text: str) -> Cell | str | None:
        """A plain string where openpyxl stores it as one; a Text cell where a person could lose it.

        openpyxl would store `=...` as a formula and `#N/A` as an error; Excel would turn a number
        typed over `00123` into a number. Plain strings are the fast path (most cells).
        """
        if not text:
            return None
        if text.startswith(("=", "#")) or is_spreadsheet_value(text):
            return self._text_cell(text)
        return text

    def _text_cell(self, text: str) -> Cell:
        cell = self._new_cell(self._sheet, value=text)
        cell.data_type = "s"  # after the value: openpyxl makes `=...` a formula on assignment
        cell.number_format = TEXT_FORMAT
        return cell


def column_widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[float]:
    """Readable widths in characters: the longest line of the header or a sampled row, capped."""
    widths = [_display_width(header) + WIDTH_PADDING + 1 for header in headers]  # +1: bold
    for row in rows:
        for index, cell in enumerate(row):
            needed = _display_width(cell) + WIDTH_PADDING
            if index < len(widths):
                widths[index] = max(widths[index], needed)
            else:
                widths.append(needed)
    return [float(min(max(width, MIN_WIDTH), MAX_WIDTH)) for width in widths]


def _display_width(text: str) -> int:
    """Columns the longest line of `text` takes: East Asian wide characters take two."""
    return max(
        (
            sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in line)
            for line in text.splitlines()
        ),
        default=0,
    )


def _csv_text(text: str) -> str:
    return text.replace(_NUL, _NUL_SUBSTITUTE) if _NUL in text else text


def _xml_text(text: str) -> str:
    if text.isprintable() and "_" not in text:
        return text  # most cells: nothing to escape
    return _NONCHARACTERS.sub(_REPLACEMENT, _OOXML_ESCAPED.sub(_ooxml_escape, text))


def _ooxml_escape(match: re.Match[str]) -> str:
    found = match[0]
    return f"_x{ord(found):04X}_" if len(found) == 1 else _ESCAPED_UNDERSCORE + found


def _sheet_title(stem: str) -> str:
    return _SHEET_TITLE_FORBIDDEN.sub("_", stem)[:_SHEET_TITLE_LENGTH] or "Sheet1"
