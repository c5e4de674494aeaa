"""Reading input tables (CSV streamed; workbooks through pandas), and the input's snapshot.

CSV is read by the stdlib csv module, not pandas: pandas pads ragged rows and renames duplicate
headers (`Name.1`), which hides what the file says, and it holds the whole file in memory where
csv streams one record at a time. Workbooks are read whole by pandas anyway (see workbooks.py);
text encodings (the one check of a name, detection) are in charsets.py.

Row numbers are the numbers a spreadsheet shows: the header row, title rows above it and blank
rows all count; a CSV record with a quoted line break is one row, as a spreadsheet shows it.
"""

from __future__ import annotations

import csv
import os
import re
import select
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import IO, BinaryIO

from provisioner.charsets import is_wide, reading_encoding, undecodable
from provisioner.errors import ConfigError, InputError
from provisioner.private import open_private
from provisioner.workbooks import (
    OLE2_MAGIC,
    ZIP_MAGIC,
    Sheet,
    column_letter,
    detect_format,
    read_sheet,
)

__all__ = [
    "HEADER_SEARCH_ROWS",
    "MAX_CELL_CHARS",
    "MAX_INPUT_BYTES",
    "MAX_SHEET_ROWS",
    "Table",
    "open_table",
    "snapshot_input",
]

_SAMPLE_BYTES = 64 * 1024
_DELIMITERS = (",", ";", "\t", "|")
# Title and notes blocks above a header are a few lines; a row that far down is data.
HEADER_SEARCH_ROWS = 20
# The most rows a sheet holds (Excel's limit): a --header-row below it is in no spreadsheet.
MAX_SHEET_ROWS = 1_048_576
# The csv module refuses a field over 128 kB by default; a long note is not a reason to refuse a
# file. Past this cap a value is almost surely a quote left open, and is refused as such. (The
# csv module's limit is per process; we only ever raise it.)
MAX_CELL_CHARS = 16 * 1024 * 1024
# The largest input copied into the run folder: far above any sheet of customers (100,000 rows
# of CSV are ~20 MB), and a bound on what an endless pipe (`yes |`) can make us copy.
MAX_INPUT_BYTES = 2 * 1024 * 1024 * 1024
# A FIFO's writer (a shell's `<(...)` or another program) opens it within moments of us.
FIFO_WRITER_WAIT_SECONDS = 10.0
_COPY_CHUNK = 1024 * 1024
_TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
_SEP_LINE = re.compile(r'"?sep=([^\r\n"])"?[,;\t| ]*')

HeaderTest = Callable[[Sequence[str]], bool]
RowTest = Callable[[str], bool]


@dataclass(frozen=True)
class Table:
    """A readable input table: its headers, and its data rows on demand.

    Each `rows()` call reads a CSV file again (streamed); a workbook is held as pandas read it.
    """

    path: Path
    headers: tuple[str, ...]
    encoding: str = ""
    delimiter: str = ","
    sheet: str | None = None  # the sheet read, for workbooks
    header_row: int = 1  # the header's row number as the spreadsheet shows it
    format: str = "csv"  # csv, xlsx, xlsm, xls, xlsb or ods
    # Hidden rows are sent: hiding or filtering is how a person looks at a sheet, the rows are
    # still in the file, and skipping them would drop rows without a trace. Counted (only
    # .xlsx/.xlsm say which rows are hidden) so the run can warn, naming them: sheet row numbers.
    hidden_rows: tuple[int, ...] = ()
    hidden_sheets: tuple[str, ...] = ()  # sheets the workbook hides; never read unless named
    name: str = ""  # how messages name the input (the user's path, not the snapshot's)
    columns: tuple[int, ...] = ()  # the 0-based source column of each header
    width: int = 0  # CSV: the header's width; a value beyond it is refused
    sep_line: bool = False  # CSV: the first line is Excel's `sep=X`, not a row
    _sheet: Sheet | None = field(default=None, compare=False, repr=False)
    _looks_like_row: RowTest | None = field(default=None, compare=False, repr=False)

    @property
    def is_workbook(self) -> bool:
        """True for a workbook (any format), False for CSV."""
        return self.format != "csv"

    @property
    def where(self) -> str:
        """The input as messages name it: the file, and the sheet for workbooks."""
        name = self.name or str(self.path)
        return f"sheet {self.sheet!r} of {name}" if self.sheet is not None else name

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(sheet row number, cells under the headers, stripped) for every non-blank data row."""
        for number, cells in self._records():
            if number <= self.header_row:
                continue
            if not self.is_workbook:
                _check_width(self.where, number, cells, self.width)
            picked = [cells[i].strip() if i < len(cells) else "" for i in self.columns]
            if any(picked):
                yield number, picked

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        if self._sheet is not None:
            return self._sheet.rows()
        return _csv_records(
            self.path,
            self.encoding,
            self.delimiter,
            self.sep_line,
            self.where,
            self._looks_like_row,
        )


def open_table(
    path: Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    sheet: str | None = None,
    header_row: int | None = None,
    looks_like_header: HeaderTest | None = None,
    looks_like_row: RowTest | None = None,
    name: str | None = None,
) -> Table:
    """Read and check a CSV file or workbook whole: its format, header row and columns.

    The header is row `header_row` (1-based, as the spreadsheet shows it) when given; else the
    first of the first HEADER_SEARCH_ROWS rows for which `looks_like_header(cells)` is True;
    else row 1. `looks_like_row(line)` is True for a line of text that is a row of this input
    (it holds an Address SID, say): found inside a CSV value that spans lines, it shows a quote
    left open. `name` is how messages name the file (default: `path`).
    """
    name = name or str(path)
    _check_reading_options(header_row, delimiter)
    sample = _sample(path, name)
    if not sample.strip():
        raise InputError(f"{name}: the file is empty; expected a header row and data rows")
    workbook_format = detect_format(path, sample, name)
    if workbook_format is not None:
        return _open_workbook(path, workbook_format, sheet, header_row, looks_like_header, name)
    if sheet is not None:
        raise InputError(f"--sheet {sheet}: {name} is not a workbook but a text (CSV) file")
    encoding = reading_encoding(path, sample, encoding)
    if b"\x00" in sample and not is_wide(encoding):
        raise InputError(_binary_message(name, sample[: sample.index(b"\x00")].count(b"\n") + 1))
    delimiter, sep_line = _dialect(sample, encoding, delimiter, header_row, looks_like_header, name)
    records = _csv_records(path, encoding, delimiter, sep_line, name, looks_like_row)
    layout = _layout(records, header_row, looks_like_header, name, None)
    return Table(
        path,
        layout.headers,
        encoding,
        delimiter,
        header_row=layout.header_row,
        name=name,
        columns=layout.columns,
        width=layout.width,
        sep_line=sep_line,
        _looks_like_row=looks_like_row,
    )


def _check_reading_options(header_row: int | None, delimiter: str | None) -> None:
    """--header-row and --delimiter as a caller other than the CLI may pass them."""
    if header_row is not None and header_row < 1:
        raise ConfigError(f"--header-row {header_row}: rows are numbered from 1")
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise ConfigError(
            f"--delimiter {delimiter!r}: use one character other than a quote or line break, "
            "for example --delimiter ';'"
        )


def _open_workbook(
    path: Path,
    workbook_format: str,
    sheet: str | None,
    header_row: int | None,
    looks_like_header: HeaderTest | None,
    name: str,
) -> Table:
    """One sheet of a workbook, read whole through pandas, as a Table."""
    sheet_data = read_sheet(path, workbook_format, sheet, name)
    where = f"sheet {sheet_data.name!r} of {name}"
    layout = _layout(sheet_data.rows(), header_row, looks_like_header, where, sheet_data)
    return Table(
        path,
        layout.headers,
        sheet=sheet_data.name,
        header_row=layout.header_row,
        format=workbook_format,
        hidden_rows=layout.hidden_rows,
        hidden_sheets=sheet_data.hidden_sheets,
        name=name,
        columns=layout.columns,
        _sheet=sheet_data,
    )


def _dialect(
    sample: bytes,
    encoding: str,
    delimiter: str | None,
    header_row: int | None,
    looks_like_header: HeaderTest | None,
    name: str,
) -> tuple[str, bool]:
    """The CSV's delimiter (named, from Excel's `sep=X` first line, or sniffed from the header
    line), and whether that `sep=` line is there."""
    try:
        lines = sample.decode(encoding, errors="replace").splitlines()
    except UnicodeError as error:  # a codec that knows no `replace` (idna)
        raise undecodable(name, encoding, error) from error
    sep = _SEP_LINE.fullmatch(lines[0].lstrip("\ufeff")) if lines else None
    if sep is not None:
        lines = lines[1:]
    if delimiter is None:
        delimiter = sep.group(1) if sep else _sniff_delimiter(lines, header_row, looks_like_header)
    return delimiter, sep is not None


def _sample(path: Path, name: str) -> bytes:
    if not path.exists():
        raise InputError(f"{name}: no such file")
    if path.is_dir():
        raise InputError(f"{name}: is a directory, not a CSV file or workbook")
    try:
        with path.open("rb") as stream:
            return stream.read(_SAMPLE_BYTES)
    except OSError as error:
        raise InputError(f"{name}: cannot be read ({error.strerror})") from error


@dataclass(frozen=True)
class _Layout:
    header_row: int
    headers: tuple[str, ...]
    columns: tuple[int, ...]
    width: int
    hidden_rows: tuple[int, ...]


def _layout(
    records: Iterator[tuple[int, list[str]]],
    header_row: int | None,
    looks_like_header: HeaderTest | None,
    where: str,
    sheet: Sheet | None,
) -> _Layout:
    """Find the header row, then read every row once: which columns hold data, hidden rows.

    A blank header cell over a column with data is a column named by its letter (`Column C`),
    at the end of the header as anywhere else; columns with neither a header nor data are left
    out. In a workbook any column with data counts; in a CSV file a value beyond the header
    record's last cell (blank ones count: `AddressSid,,Name,` has four) is refused, as it nearly
    always means a delimiter inside an unquoted value, which shifts the cells after it.
    """
    head = list(islice(records, header_row or HEADER_SEARCH_ROWS))
    number = _header_number(head, header_row, looks_like_header, where)
    header = head[number - 1][1]
    # A CSV row's width is bounded by the header record itself, so nothing has to be learnt
    # before this pass; which columns under it hold data is learnt here, streaming every row
    # once without holding them (run.read_input reads the whole input before sending anyway).
    width = len(header)
    if sheet is not None:  # read whole already: ask the array, not row by row
        used, hidden_rows = sheet.columns_with_data(number), sheet.hidden_data_rows(number)
    else:
        used, hidden_rows = set(), ()
        for row, cells in chain((r for r in head if r[0] > number), records):
            _check_width(where, row, cells, width)
            used.update(i for i, cell in enumerate(cells) if cell and cell.strip())
    span = max(width, max(used) + 1) if used else width
    columns = tuple(i for i in range(span) if (i < width and header[i].strip()) or i in used)
    headers = tuple(
        header[i] if i < width and header[i].strip() else f"Column {column_letter(i)}"
        for i in columns
    )
    return _Layout(number, headers, columns, width, hidden_rows)


def _header_number(
    head: list[tuple[int, list[str]]],
    header_row: int | None,
    looks_like_header: HeaderTest | None,
    where: str,
) -> int:
    """The header's row number among the first rows `head`: named, found, or row 1."""
    if header_row is not None:
        if len(head) < header_row:
            raise InputError(f"--header-row {header_row}: {where} has only {len(head)} rows")
        number = header_row
    else:
        number = next(
            (
                n
                for n, cells in head
                if looks_like_header is not None
                and any(cell.strip() for cell in cells)
                and looks_like_header([cell.strip() for cell in cells])
            ),
            1,
        )
    if not head:
        raise InputError(f"{where}: is empty; expected a header row and data rows")
    if not any(cell.strip() for cell in head[number - 1][1]):
        if header_row is not None:
            raise InputError(
                f"--header-row {header_row}: row {header_row} of {where} is empty; "
                "name the row that holds the column names"
            )
        raise InputError(
            f"{where}: the first row is empty; expected a header row "
            "(name it with --header-row N if it is further down)"
        )
    return number


def _check_width(where: str, number: int, cells: list[str], width: int) -> None:
    if len(cells) > width and any(cell.strip() for cell in cells[width:]):
        raise InputError(
            f"{where}: row {number} has {len(cells)} cells but the header has {width} columns; "
            "quote values that contain the delimiter, or add headers"
        )


# --- CSV ---------------------------------------------------------------------------------------


def _binary_message(where: str, line: int) -> str:
    """One rule for a NUL wherever it falls in a text input: the file is binary, refused whole
    (a spreadsheet never writes one; a NUL in the first bytes or on line 900,000 is the same
    sign of a file that is not what it seems, and the whole file is read before anything is
    sent, so the refusal still makes nothing)."""
    return (
        f"{where}: looks like a binary file, not a CSV file or workbook "
        f"(a NUL character on line {line}); remove it, or export the sheet again"
    )


class _LineTap:
    """The lines csv.reader takes, kept until its record is complete (to find a broken quote),
    each refused if it holds a NUL (see `_binary_message`)."""

    def __init__(self, stream: IO[str], where: str) -> None:
        self._stream = stream
        self._where = where
        self.count = 0  # lines read so far, as a text editor numbers them
        self.taken: list[str] = []

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._stream)
        self.count += 1
        if "\x00" in line:
            raise InputError(_binary_message(self._where, self.count))
        self.taken.append(line)
        return line


def _csv_records(
    path: Path,
    encoding: str,
    delimiter: str,
    sep_line: bool,
    where: str,
    looks_like_row: RowTest | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) for every record of the CSV, streamed, ragged rows kept as they are.

    The csv module reads leniently, as spreadsheets do (a quote inside an unquoted value is
    text). A quote left open swallows the rows after it into one value; so a record that spans
    lines is checked, and refused with the line where the quote opened, when its quoting is
    irregular or a line inside one of its values is a row (`looks_like_row`). The last record
    is checked for ending inside quotes.
    """
    csv.field_size_limit(MAX_CELL_CHARS)
    try:
        with path.open(encoding=encoding, errors="strict", newline="") as stream:
            tap = _LineTap(stream, where)
            if sep_line:
                next(tap, None)
            reader = csv.reader(tap, delimiter=delimiter, strict=False)
            number = 0
            pending: tuple[int, list[str]] | None = None  # held back until we know it is not last
            pending_lines: list[str] = []
            pending_start = 0
            while True:
                first_line = tap.count + 1
                tap.taken = []
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except csv.Error as error:
                    raise _unreadable(where, first_line, tap.taken, delimiter, error) from error
                number += 1
                if len(tap.taken) > 1:
                    opened = _open_quote(tap.taken, delimiter)
                    if opened is None and looks_like_row is not None:
                        opened = _swallowed_row(cells, tap.taken, delimiter, looks_like_row)
                    if opened is not None:
                        raise InputError(_open_quote_message(where, first_line + opened))
                if pending is not None:
                    yield pending
                pending, pending_lines, pending_start = (number, cells), tap.taken, first_line
            if pending is not None:
                if '"' in pending_lines[-1]:
                    opened = _open_quote(pending_lines, delimiter, at_end=True)
                    if opened is not None:
                        raise InputError(_open_quote_message(where, pending_start + opened))
                yield pending
    except UnicodeError as error:  # a decode error, or a codec refusing its input (idna)
        raise undecodable(where, encoding, error, path) from error


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _swallowed_row(
    cells: Sequence[str], lines: Sequence[str], delimiter: str, looks_like_row: RowTest
) -> int | None:
    """Where the quote opened, when a line inside a value that spans lines is itself a row."""
    for cell in cells:
        if any(looks_like_row(piece) for piece in _LINE_BREAK.split(cell)[1:]):
            return _open_quote(lines, delimiter, spanning=True) or 0
    return None


def _open_quote_message(where: str, line: int) -> str:
    return (
        f"{where}: line {line}: a quote opened here is never closed, so the rows after it "
        'would be read as one value; close it (write "" for a quote inside a value) and run again'
    )


def _unreadable(
    where: str, first_line: int, taken: Sequence[str], delimiter: str, error: csv.Error
) -> InputError:
    if "field larger than field limit" in str(error):
        start = _open_quote(taken, delimiter, spanning=True) or 0
        return InputError(
            f"{where}: line {first_line + start}: a value longer than {MAX_CELL_CHARS:,} "
            "characters starts here, most likely a quote that is never closed; close the "
            "quote, or shorten the value"
        )
    opened = _open_quote(taken, delimiter)
    if opened is not None:
        return InputError(_open_quote_message(where, first_line + opened))
    return InputError(f"{where}: line {first_line}: not a readable CSV record ({error})")


_FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)


def _open_quote(
    lines: Sequence[str], delimiter: str, *, at_end: bool = False, spanning: bool = False
) -> int | None:
    """Where (0-based line) the quote that made a record go wrong opened, None if none did.

    Wrong: the text ends inside quotes; or, in a record that spans lines, a closing quote
    followed by more text, or a quote inside an unquoted value: each is what a quote left open
    and then closed by a later row's quote looks like. CSV as spreadsheets write it has none.
    `at_end`: only ending inside quotes counts (one line read as spreadsheets do). `spanning`:
    the first quoted value that runs past a line's end.
    """
    state = _FIELD_START
    opened = 0
    first_spanning: int | None = None
    stray = False
    strict = len(lines) > 1 and not at_end
    for index, line in enumerate(lines):
        for char in line:
            if state == _QUOTED:
                if char == '"':
                    state = _QUOTE_IN_QUOTED
            elif state == _QUOTE_IN_QUOTED:
                if char == '"':
                    state = _QUOTED
                elif char == delimiter or char in "\r\n":
                    state = _FIELD_START
                elif strict:
                    return opened
                else:
                    state = _UNQUOTED
            elif char == delimiter or char in "\r\n":
                state = _FIELD_START
            elif state == _FIELD_START and char == '"':
                state, opened = _QUOTED, index
            else:
                stray = stray or char == '"'
                state = _UNQUOTED
        if state == _QUOTED and first_spanning is None:
            first_spanning = opened
            if spanning:
                return opened
    if state == _QUOTED:
        return opened
    if stray and strict:
        return first_spanning or 0
    return None


def _sniff_delimiter(
    lines: Sequence[str], header_row: int | None, looks_like_header: HeaderTest | None
) -> str:
    """The delimiter of the header line: the line `header_row` names, else the first line that
    looks like a header when split by its own most frequent delimiter, else the first line."""
    candidates = lines[:HEADER_SEARCH_ROWS]
    if header_row is not None:
        candidates = lines[header_row - 1 : header_row]
    elif looks_like_header is not None:
        for line in candidates:
            delimiter = _most_frequent_delimiter(line)
            cells = [cell.strip().strip('"').strip() for cell in line.split(delimiter)]
            if any(cells) and looks_like_header(cells):
                return delimiter
    return _most_frequent_delimiter(candidates[0]) if candidates else ","


def _most_frequent_delimiter(line: str) -> str:
    counts = {delimiter: line.count(delimiter) for delimiter in _DELIMITERS}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


# --- The input's snapshot in the run folder ---------------------------------------------------


def snapshot_input(source: str | Path, run_dir: Path, stdin: BinaryIO) -> Path:
    """Copy the input (a file, a FIFO, or `-` for standard input) into the run folder, once.

    The run reads only the copy (`input.csv`, `input.xlsx`, ...; mode 0600), so an input changed
    or cut short while the run goes on cannot change it, and the copy records what was run.
    Devices and sockets are refused before reading (reading /dev/zero would never end); a copy
    is refused past MAX_INPUT_BYTES.
    """
    if str(source) == "-":
        if stdin.isatty():
            raise InputError(
                "-: standard input is a terminal; pipe the file in, "
                "for example: provisioner create - < customers.csv"
            )
        return _copy(stdin, run_dir, "standard input", "")
    path = Path(source)
    name = str(source)
    try:
        status = path.stat()
    except FileNotFoundError as error:
        raise InputError(f"{name}: no such file") from error
    except OSError as error:
        raise InputError(f"{name}: cannot be read ({error.strerror})") from error
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise InputError(f"{name}: is a directory, not a CSV file or workbook")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        kind = "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise InputError(
            f"{name}: is {kind}, not a file; save the data to a file, "
            "or pipe it in and name the input '-'"
        )
    if stat.S_ISREG(mode) and status.st_size > MAX_INPUT_BYTES:
        raise InputError(f"{name}: {status.st_size:,} bytes; {_too_large()}")
    suffix = path.suffix.lower()
    try:
        if stat.S_ISFIFO(mode):
            with _open_fifo(path, name) as stream:
                return _copy(stream, run_dir, name, suffix)
        with path.open("rb") as stream:
            return _copy(stream, run_dir, name, suffix)
    except OSError as error:
        raise InputError(f"{name}: cannot be read ({error.strerror})") from error


def _too_large() -> str:
    return f"inputs are read up to {MAX_INPUT_BYTES:,} bytes; split the file into batches"


def _open_fifo(path: Path, name: str) -> BinaryIO:
    """Open a FIFO without blocking on a writer that never comes; wait a bounded time for data."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        poller = select.poll()
        poller.register(descriptor, select.POLLIN)
        if not poller.poll(FIFO_WRITER_WAIT_SECONDS * 1000):
            raise InputError(
                f"{name}: a FIFO that nothing wrote to within {FIFO_WRITER_WAIT_SECONDS:g} s; "
                "start the program that writes to it first, or pass a file"
            )
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _read_block(stream: BinaryIO, name: str) -> bytes:
    """The next block of the input; a failure to read is the input's fault, not the folder's."""
    try:
        return stream.read(_COPY_CHUNK)
    except OSError as error:
        raise InputError(f"{name}: cannot be read ({error.strerror or error})") from error


def _copy(stream: BinaryIO, run_dir: Path, name: str, suffix: str) -> Path:
    """Copy `stream` into the run folder (0600), refusing it past MAX_INPUT_BYTES."""
    partial = run_dir / ".input.partial"
    copied = 0
    try:
        descriptor = open_private(partial, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "wb") as target:
            while block := _read_block(stream, name):
                copied += len(block)
                if copied > MAX_INPUT_BYTES:
                    raise InputError(f"{name}: more than {MAX_INPUT_BYTES:,} bytes; {_too_large()}")
                target.write(block)
            target.flush()
            os.fsync(target.fileno())
        snapshot = run_dir / f"input{_snapshot_suffix(partial, suffix)}"
        os.replace(partial, snapshot)
        return snapshot
    except OSError as error:
        raise InputError(
            f"{name}: cannot be copied into {run_dir} ({error.strerror}); "
            "check that the output folder is writable and has space"
        ) from error
    finally:
        partial.unlink(missing_ok=True)


def _snapshot_suffix(path: Path, suffix: str) -> str:
    """The copy's suffix: its workbook format when its bytes say so, else the source's or .csv."""
    with path.open("rb") as stream:
        magic = stream.read(8)
    if magic.startswith(OLE2_MAGIC):
        return ".xls" if suffix != ".xlsx" else suffix  # an encrypted .xlsx is OLE2 too
    if magic.startswith(ZIP_MAGIC):
        try:
            return "." + (detect_format(path, magic, str(path)) or "zip")
        except InputError:
            return suffix or ".zip"
    return suffix if suffix in _TEXT_SUFFIXES else ".csv"
