"""Reading input tables (CSV, xlsx) into rows of text, and writing the result tables."""

from __future__ import annotations

import codecs
import csv
import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import IO

import openpyxl
from openpyxl.utils.exceptions import InvalidFileException
from openpyxl.workbook.workbook import Workbook

from provisioner.cells import escape_formula
from provisioner.errors import InputError

_SAMPLE_BYTES = 64 * 1024
_DELIMITERS = (",", ";", "\t", "|")
_ZIP_MAGIC = b"PK\x03\x04"
_OLE2_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")


@dataclass(frozen=True)
class Table:
    """A readable input table: its headers, and its data rows on demand (each call reads again)."""

    path: Path
    headers: tuple[str, ...]
    encoding: str = ""
    delimiter: str = ","
    sheet: str | None = None  # set for xlsx workbooks

    @property
    def is_workbook(self) -> bool:
        """True for an xlsx workbook, False for CSV."""
        return self.sheet is not None

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(data row number, cells padded to the header width) for every non-blank data row."""
        width = len(self.headers)
        number = 0
        records = _xlsx_records(self) if self.is_workbook else _csv_records(self)
        next(records, None)  # the header
        for cells in records:
            number += 1
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) < width:
                cells = cells + [""] * (width - len(cells))
            elif len(cells) > width:
                extra = [cell for cell in cells[width:] if cell.strip()]
                if extra:
                    raise InputError(
                        f"{self.path}: row {number} has {len(cells)} cells but the header has "
                        f"{width} columns; fix the row or add headers"
                    )
                cells = cells[:width]
            yield number, [cell.strip() for cell in cells]


def open_table(
    path: Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    sheet: str | None = None,
) -> Table:
    """Check that `path` is a readable CSV or xlsx file and read its header row."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a CSV or xlsx file")
    try:
        with path.open("rb") as stream:
            sample = stream.read(_SAMPLE_BYTES)
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror})") from error
    if not sample.strip():
        raise InputError(f"{path}: the file is empty; expected a header row and data rows")
    if sample.startswith(_OLE2_MAGIC):
        raise InputError(
            f"{path}: a password-protected or legacy .xls workbook; "
            "save it as .xlsx without a password, or as CSV"
        )
    if sample.startswith(_ZIP_MAGIC) or path.suffix.lower() in (".xlsx", ".xlsm"):
        return _open_workbook(path, sheet)
    if sheet is not None:
        raise InputError(f"--sheet {sheet}: {path} is not an xlsx workbook")
    if encoding is None:
        encoding = _detect_encoding(path, sample)
    else:
        try:
            codecs.lookup(encoding)
        except LookupError as error:
            raise InputError(f"--encoding {encoding}: unknown encoding") from error
    if b"\x00" in sample and not encoding.startswith("utf-16"):
        raise InputError(f"{path}: looks like a binary file, not a CSV file")
    text_sample = sample.decode(encoding, errors="replace")
    if delimiter is None:
        delimiter = _sniff_delimiter(text_sample)
    table = Table(path, (), encoding, delimiter)
    return Table(path, _header(table, _csv_records(table)), encoding, delimiter)


def _header(table: Table, records: Iterator[list[str]]) -> tuple[str, ...]:
    header = next(records, None)
    if header is None or not any(cell.strip() for cell in header):
        where = f"sheet {table.sheet!r} of {table.path}" if table.is_workbook else str(table.path)
        raise InputError(f"{where}: the first row is empty; expected a header row")
    while header and not header[-1].strip():
        header.pop()  # trailing empty columns, as spreadsheets export them
    return tuple(header)


def _open_workbook(path: Path, sheet: str | None) -> Table:
    """Check the workbook opens and has the sheet; read its header row."""
    with _workbook(path) as workbook:
        names = workbook.sheetnames
        if not names:
            raise InputError(f"{path}: the workbook has no sheets")
        if sheet is not None and sheet not in names:
            raise InputError(f"--sheet {sheet}: no such sheet in {path}; found: {', '.join(names)}")
    table = Table(path, (), sheet=sheet if sheet is not None else names[0])
    return Table(path, _header(table, _xlsx_records(table)), sheet=table.sheet)


@contextmanager
def _workbook(path: Path) -> Iterator[Workbook]:
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable xlsx workbook ({error})") from error
    try:
        yield workbook
    finally:
        workbook.close()


def _xlsx_records(table: Table) -> Iterator[list[str]]:
    """Every row of the table's sheet as text, streamed by openpyxl's read-only mode."""
    with _workbook(table.path) as workbook:
        worksheet = workbook[table.sheet or workbook.sheetnames[0]]
        for values in worksheet.iter_rows(values_only=True):
            yield [cell_text(value) for value in values]


def cell_text(value: object) -> str:
    """A spreadsheet cell as the text a person sees: 5 not 5.0, dates as ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value)


def _csv_records(table: Table) -> Iterator[list[str]]:
    """Every record of the CSV as text cells, streamed (ragged rows kept as they are)."""
    try:
        with table.path.open(encoding=table.encoding, errors="strict", newline="") as stream:
            yield from csv.reader(stream, delimiter=table.delimiter, strict=False)
    except UnicodeDecodeError as error:
        raise InputError(
            f"{table.path}: not valid {table.encoding} text ({error.reason}); "
            "name the encoding with --encoding, for example --encoding cp1252"
        ) from error
    except csv.Error as error:
        raise InputError(f"{table.path}: not a readable CSV file ({error})") from error


def _detect_encoding(path: Path, sample: bytes) -> str:
    """UTF-8 (with or without BOM) or UTF-16 when the bytes say so, else Windows-1252/Latin-1."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as stream:
        try:
            while block := stream.read(1 << 20):
                decoder.decode(block)
            decoder.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError:
            pass
        stream.seek(0)
        # Windows-1252 leaves five bytes undefined; a file that has them is Latin-1.
        undefined = set(b"\x81\x8d\x8f\x90\x9d")
        while block := stream.read(1 << 20):
            if undefined.intersection(block):
                return "latin-1"
    return "cp1252"


def _sniff_delimiter(text: str) -> str:
    """The delimiter that appears most often in the header line; comma when none does."""
    header_line = text.splitlines()[0] if text else ""
    counts = {delimiter: header_line.count(delimiter) for delimiter in _DELIMITERS}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


class CsvWriter:
    """A CSV written row by row and flushed, so a killed run leaves a readable file."""

    def __init__(self, path: Path, headers: Sequence[str]) -> None:
        self.path = path
        self._stream: IO[str] = path.open("w", encoding="utf-8-sig", newline="")
        self._writer = csv.writer(self._stream)
        self.write(headers)

    def write(self, cells: Sequence[str]) -> None:
        """Append one row, formula-escaped."""
        self._writer.writerow([escape_formula(cell) for cell in cells])

    def flush(self) -> None:
        """Hand what was written to the operating system."""
        self._stream.flush()

    def close(self) -> None:
        """Flush and close."""
        self._stream.close()


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so a reader sees the old file or the new one, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
