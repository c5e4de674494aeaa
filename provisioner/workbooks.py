"""Workbooks (.xlsx, .xlsm, .xls, .ods, .xlsb): what a file is, is it safe, its cells as text.

Engines: pandas reads every format through its `calamine` engine. One engine for the five
formats means one behaviour (types, dates, blank rows) and one set of tests; it reads the whole
used range whatever the file's stored `<dimension>` says (openpyxl's read-only mode trusts that
and loses rows and columns), it is several times faster than openpyxl and xlrd, and needs no
pyxlsb/odfpy/xlrd. What calamine does not give is a cell's number format, so a cell formatted
`00000` would read as 123 where the sheet shows 00123. openpyxl could give the format, but only
cell by cell outside pandas and at a fifth of the speed; instead, for .xlsx/.xlsm we read the
styles and the cells' style indexes straight from the sheet's XML in one streaming pass (the same
pass that finds hidden rows) and render plain number formats (`00000`, `0.00`, `#,##0`, `0%`)
as the sheet shows them. In .xls, .xlsb and .ods the general form is used (123, 1.5).
"""

from __future__ import annotations

import re
import zipfile
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard, cast
from xml.etree import ElementTree

from provisioner.errors import InputError

if TYPE_CHECKING:
    from python_calamine import CalamineWorkbook

# pandas and numpy are imported where a sheet is read: importing them costs about a third of a
# second of CPU, which a run of a CSV (and every --help) would pay for nothing.

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
OLE2_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")  # old Office files, and encrypted OOXML packages

# Zip bomb caps, checked against the zip's declared sizes first and then while inflating every
# part once (Python's zipfile stops at the declared size and checks the CRC, so a part that
# lies about its size is refused instead of inflating on). Memory stays at one read buffer.
MAX_ZIP_ENTRIES = 10_000  # a workbook has tens of parts; thousands means something else
# 2.5x the 49 MB of XML in a 100,000-row x 8-column sheet; pandas holds ~180 bytes a cell, so
# the most a file under the cap can cost (~4.5 million cells of terse XML) is ~800 MB.
MAX_UNCOMPRESSED_BYTES = 128 * 1024 * 1024
# Sheets inflate 5-100x (rows of blank formatted cells the most); deflate tops out at 1032x,
# where bombs of repeated bytes sit. The declared-size cap above is what bounds memory.
MAX_COMPRESSION_RATIO = 500
RATIO_FLOOR_BYTES = 1024 * 1024  # small parts (styles, themes) may compress very well
_INFLATE_CHUNK = 1024 * 1024

_FORMATS = {"xlsx", "xlsm", "xlsb", "ods", "xls"}
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")  # MS-OFFCRYPTO's stream name
_XLS_STREAMS = ("Workbook".encode("utf-16-le"), "Book".encode("utf-16-le"))  # BIFF8 / BIFF5


def detect_format(path: Path, sample: bytes, name: str) -> str | None:
    """The workbook format of a file by its content ("xlsx", "xls", ...), or None for text."""
    if sample.startswith(ZIP_MAGIC):
        return _zip_format(path, name)
    if sample.startswith(OLE2_MAGIC):
        return _ole2_format(path, name)
    return None


def _zip_format(path: Path, name: str) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            parts = set(archive.namelist())
            if "xl/workbook.xml" in parts:
                types = (
                    archive.read("[Content_Types].xml") if "[Content_Types].xml" in parts else b""
                )
                return "xlsm" if b"macroEnabled" in types else "xlsx"
            if "xl/workbook.bin" in parts:
                return "xlsb"
            if "content.xml" in parts and b"spreadsheet" in _small_part(archive, "mimetype"):
                return "ods"
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as error:
        raise InputError(_damaged(name, error)) from error
    raise InputError(
        f"{name}: a zip archive but not a workbook (.xlsx, .xlsm, .xlsb or .ods); "
        "save the sheet as .xlsx or CSV"
    )


def _damaged(name: str, error: Exception) -> str:
    suffix = Path(name).suffix.lower().lstrip(".")
    kind = f"{suffix} " if suffix in _FORMATS else ""
    return (
        f"{name}: not a readable {kind}workbook (damaged zip: {error}); "
        "open it and save it again, or save the sheet as CSV"
    )


def _small_part(archive: zipfile.ZipFile, part: str) -> bytes:
    try:
        with archive.open(part) as stream:
            return stream.read(256)
    except KeyError:
        return b""


def _ole2_format(path: Path, name: str) -> str:
    """Old .xls, or a password-protected OOXML workbook (both are OLE2 compound files)."""
    found_xls = False
    with path.open("rb") as stream:
        tail = b""
        while block := stream.read(_INFLATE_CHUNK):
            window = tail + block
            if _ENCRYPTED_STREAM in window:
                raise InputError(password_message(name))
            found_xls = found_xls or any(stream_name in window for stream_name in _XLS_STREAMS)
            tail = window[-len(_ENCRYPTED_STREAM) :]
    if found_xls:
        return "xls"
    raise InputError(
        f"{name}: an old Office file with no workbook in it (a password-protected workbook, "
        "or not a spreadsheet); save it as .xlsx without a password, or as CSV"
    )


def password_message(name: str) -> str:
    """The one line for a workbook we cannot open because it has a password."""
    return (
        f"{name}: the workbook is password-protected; open it, remove the password "
        "(save it without one) and run again, or save the sheet as CSV"
    )


def check_zip(path: Path, name: str) -> None:
    """Refuse a zip that would inflate past the caps (zip bomb) before any engine opens it."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > MAX_ZIP_ENTRIES:
                raise InputError(f"{name}: {len(entries):,} parts in the zip; {_too_big()}")
            declared = sum(entry.file_size for entry in entries)
            if declared > MAX_UNCOMPRESSED_BYTES:
                raise InputError(f"{name}: inflates to {declared:,} bytes; {_too_big()}")
            for entry in entries:
                if entry.file_size > RATIO_FLOOR_BYTES and (
                    entry.file_size > MAX_COMPRESSION_RATIO * max(entry.compress_size, 1)
                ):
                    raise InputError(
                        f"{name}: part {entry.filename} inflates {entry.file_size:,} bytes from "
                        f"{entry.compress_size:,} (a zip bomb?); {_too_big()}"
                    )
            for entry in entries:
                with archive.open(entry) as part:
                    while part.read(_INFLATE_CHUNK):
                        pass
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        message = str(error)
        if "encrypt" in message.lower():
            raise InputError(password_message(name)) from error
        raise InputError(_damaged(name, error)) from error
    except NotImplementedError as error:  # a compression method zipfile does not know
        raise InputError(f"{name}: not a readable workbook ({error})") from error


def _too_big() -> str:
    return (
        f"refused above {MAX_UNCOMPRESSED_BYTES // (1024 * 1024)} MiB inflated or "
        f"{MAX_COMPRESSION_RATIO}x compression; split the sheet or save it as CSV"
    )


@dataclass(frozen=True)
class _NumberFormat:
    """A plain number format (`00000`, `#,##0.00`, `0%`): what the sheet shows for a number."""

    min_digits: int
    decimals: int
    thousands: bool
    percent: bool

    def render(self, value: float) -> str:
        """The number as the format shows it, rounded half away from zero as Excel does."""
        number = Decimal(repr(value))
        if self.percent:
            number *= 100
        quantum = Decimal(1).scaleb(-self.decimals)
        rounded = abs(number).quantize(quantum, rounding=ROUND_HALF_UP)
        whole, _, fraction = f"{rounded:f}".partition(".")
        whole = whole.lstrip("0").rjust(self.min_digits, "0")
        if self.thousands:
            whole = f"{int(whole or '0'):,}".rjust(len(whole), "0") if whole else ""
        text = whole + ("." + fraction if self.decimals else "") + ("%" if self.percent else "")
        return ("-" if number < 0 and rounded else "") + text


_PLAIN_FORMAT = re.compile(r"([#0,]*)(?:\.(0+))?(%?)")
_BUILTIN_FORMATS = {1: "0", 2: "0.00", 3: "#,##0", 4: "#,##0.00", 9: "0%", 10: "0.00%"}


def _number_format(code: str) -> _NumberFormat | None:
    """The plain number format of a format code, None for General, dates, text and the rest."""
    positive = code.split(";", 1)[0]
    match = _PLAIN_FORMAT.fullmatch(positive)
    if not match or not positive or "0" not in positive:
        return None
    whole, decimals, percent = match.groups()
    return _NumberFormat(
        min_digits=whole.count("0"),
        decimals=len(decimals or ""),
        thousands="," in whole,
        percent=bool(percent),
    )


@dataclass
class _ColumnFormats:
    """The number formats down one column, as runs of rows: few entries when a column is uniform."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    formats: list[_NumberFormat] = field(default_factory=list)

    def add(self, row: int, number_format: _NumberFormat) -> None:
        if self.formats and self.formats[-1] is number_format and self.ends[-1] == row - 1:
            self.ends[-1] = row
        else:
            self.starts.append(row)
            self.ends.append(row)
            self.formats.append(number_format)

    def at(self, row: int) -> _NumberFormat | None:
        index = bisect_right(self.starts, row) - 1
        return self.formats[index] if index >= 0 and row <= self.ends[index] else None


@dataclass(frozen=True)
class Sheet:
    """One sheet read whole: its cells (row 0 is the sheet's row 1), and what the file told."""

    name: str
    cells: Any  # a 2-D numpy object array from pandas (rows x columns)
    hidden_rows: frozenset[int]  # sheet row numbers; only .xlsx/.xlsm say which rows are hidden
    hidden_sheets: tuple[str, ...]
    formats: dict[int, _ColumnFormats]  # column index -> number formats (.xlsx/.xlsm)

    @property
    def height(self) -> int:
        """How many rows the sheet's used range has, counted from row 1."""
        return int(self.cells.shape[0])

    def row(self, index: int) -> list[str]:
        """The cells of row `index` (0-based) as the sheet shows them."""
        texts = [value if type(value) is str else cell_text(value) for value in self.cells[index]]
        for column, column_formats in self.formats.items():
            number_format = column_formats.at(index + 1)
            value = self.cells[index][column] if column < len(texts) else None
            if number_format is not None and _is_number(value):
                texts[column] = number_format.render(float(value))
        return texts

    def columns_with_data(self, after_row: int) -> set[int]:
        """The 0-based columns that hold a value in some row below sheet row `after_row`.

        Spaces are no value (they are trimmed, as in a CSV): a column of them has no data.
        """
        import numpy as np

        below = self.cells[after_row:]
        if not below.size:
            return set()
        return {
            int(column)
            for column in np.flatnonzero((below != "").any(axis=0))
            # stops at the column's first value that is not spaces: nearly always its first
            if any(type(value) is not str or value.strip() for value in below[:, column])
        }

    def hidden_data_rows(self, after_row: int) -> tuple[int, ...]:
        """The hidden rows below sheet row `after_row` that hold a value (sheet row numbers)."""
        return tuple(
            row
            for row in sorted(self.hidden_rows)
            if after_row < row <= self.height and bool((self.cells[row - 1] != "").any())
        )

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(sheet row number, cells as text) for every row of the used range, blank ones too."""
        for index in range(self.height):
            yield index + 1, self.row(index)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_sheet(path: Path, workbook_format: str, sheet: str | None, name: str) -> Sheet:
    """Read one sheet whole through pandas (the first visible one unless `sheet` names it)."""
    import pandas as pd
    from python_calamine import SheetTypeEnum, SheetVisibleEnum

    assert workbook_format in _FORMATS
    if workbook_format != "xls":
        check_zip(path, name)
    try:
        with path.open("rb") as stream, pd.ExcelFile(stream, engine="calamine") as excel:
            book = cast("CalamineWorkbook", excel.book)
            metadata = [e for e in book.sheets_metadata if e.typ == SheetTypeEnum.WorkSheet]
            names = [entry.name for entry in metadata]
            hidden = tuple(e.name for e in metadata if e.visible != SheetVisibleEnum.Visible)
            if not names:
                raise InputError(f"{name}: the workbook has no sheets")
            if sheet is not None and sheet not in names:
                raise InputError(
                    f"--sheet {sheet}: no such sheet in {name}; found: {', '.join(names)}"
                )
            chosen = (
                sheet
                if sheet is not None
                else next((n for n in names if n not in hidden), names[0])
            )
            frame = pd.read_excel(
                excel,
                sheet_name=chosen,
                header=None,
                dtype=object,
                na_filter=False,
                keep_default_na=False,
            )
    except InputError:
        raise
    except Exception as error:  # calamine raises its own exception types for damaged files
        message = str(error) or type(error).__name__
        if "password" in message.lower() or "encrypt" in message.lower():
            raise InputError(password_message(name)) from error
        raise InputError(
            f"{name}: not a readable {workbook_format} workbook ({message}); "
            "open it and save it again, or save the sheet as CSV"
        ) from error
    hidden_rows: frozenset[int] = frozenset()
    formats: dict[int, _ColumnFormats] = {}
    if workbook_format in ("xlsx", "xlsm"):
        hidden_rows, formats = _xlsx_rows_and_formats(path, chosen, name)
    return Sheet(chosen, frame.to_numpy(dtype=object), hidden_rows, hidden, formats)


def cell_text(value: object) -> str:
    """A spreadsheet cell as the text a person sees: 5 not 5.0, dates as ISO 8601, TRUE/FALSE."""
    if value is None or (isinstance(value, float) and value != value):  # NaN: an empty cell
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value) if abs(value) < 10**15 else str(float(value))
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else str(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):  # a duration cell, shown as [h]:mm:ss
        seconds = round(value.total_seconds())
        sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
        return f"{sign}{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return str(value)


# --- .xlsx/.xlsm: hidden rows and number formats, read from the sheet's XML in one pass -------

_RELATIONSHIP_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
# A tag's local name: `row` in `<row ...>` and in `<x:row ...>`, whatever its attributes.
_TAG_NAME = re.compile(rb"<(?:[\w.-]+:)?([\w.-]+)")
_HIDDEN_ROW = rb'<(?:[\w.-]+:)?row\s[^>]*?(?<![\w:])hidden="(?:1|true)"[^>]*>'
_ROW_NUMBER = re.compile(rb'(?<![\w:])r="(\d+)"')
_CELL = re.compile(rb'(?<![\w:])r="([A-Z]+)(\d+)"')
_STYLE = re.compile(rb'(?<![\w:])s="(\d+)"')


def _xlsx_rows_and_formats(
    path: Path, sheet: str, name: str
) -> tuple[frozenset[int], dict[int, _ColumnFormats]]:
    """Which rows of the sheet are hidden, and the plain number formats of its number cells."""
    try:
        with zipfile.ZipFile(path) as archive:
            part = _sheet_part(archive, sheet)
            styles = _style_formats(archive)
            if part is None:
                return frozenset(), {}
            with archive.open(part) as stream:
                return _scan_sheet(_chunks(stream), styles)
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError, ValueError) as error:
        raise InputError(f"{name}: not a readable workbook ({error})") from error


def _chunks(stream: Any) -> Iterator[bytes]:
    while block := stream.read(_INFLATE_CHUNK):
        yield block


def _sheet_part(archive: zipfile.ZipFile, sheet: str) -> str | None:
    """The zip path of the named sheet's XML, through workbook.xml and its relationships."""
    workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    relation = next(
        (
            element.get(f"{{{_RELATIONSHIP_NS}}}id")
            for element in workbook.iterfind(".//{*}sheet")
            if element.get("name") == sheet
        ),
        None,
    )
    relationships = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    for element in relationships.iterfind(".//{*}Relationship"):
        if element.get("Id") == relation:
            target = element.get("Target", "")
            return target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    return None


def _style_formats(archive: zipfile.ZipFile) -> list[_NumberFormat | None]:
    """For each cell style index (a cell's `s`), its plain number format or None."""
    if "xl/styles.xml" not in archive.namelist():
        return []
    styles = ElementTree.fromstring(archive.read("xl/styles.xml"))
    codes: dict[int, str] = {key: code for key, code in _BUILTIN_FORMATS.items()}
    for element in styles.iterfind(".//{*}numFmt"):
        codes[int(element.get("numFmtId", "0"))] = element.get("formatCode", "")
    cell_styles = next(styles.iterfind(".//{*}cellXfs"), None)
    if cell_styles is None:
        return []
    return [
        _number_format(codes.get(int(xf.get("numFmtId", "0")), ""))
        for xf in cell_styles.iterfind(".//{*}xf")
    ]


def _scan_sheet(
    chunks: Iterator[bytes], styles: Sequence[_NumberFormat | None]
) -> tuple[frozenset[int], dict[int, _ColumnFormats]]:
    """Stream the sheet XML once: its hidden rows, and its cells with a plain number format.

    A regular expression finds only those tags, so a sheet with neither costs one C-speed scan.
    Rows and cells without an `r` reference (rare writers) are left out: such a cell shows its
    general form.
    """
    formatted = [str(index).encode() for index, style in enumerate(styles) if style is not None]
    pattern = _HIDDEN_ROW
    if formatted:
        wanted = b"|".join(formatted)
        pattern += rb'|<(?:[\w.-]+:)?c\s[^>]*?(?<![\w:])s="(?:' + wanted + rb')"[^>]*>'
    tags = re.compile(pattern)
    hidden: set[int] = set()
    formats: dict[int, _ColumnFormats] = {}
    tail = b""
    for block in chunks:
        text = tail + block
        cut = text.rfind(b"<")
        text, tail = (text[:cut], text[cut:]) if cut > 0 else (text, b"")
        if not formatted and b"hidden=" not in text:
            continue  # the common case: nothing to find in this block
        for match in tags.finditer(text):
            tag = match.group(0)
            name = _TAG_NAME.match(tag)
            if name is not None and name.group(1) == b"row":
                number = _ROW_NUMBER.search(tag)
                if number:
                    hidden.add(int(number.group(1)))
                continue
            reference, style = _CELL.search(tag), _STYLE.search(tag)
            number_format = styles[int(style.group(1))] if style else None
            if reference and number_format is not None:
                column = _column_index(reference.group(1))
                formats.setdefault(column, _ColumnFormats()).add(
                    int(reference.group(2)), number_format
                )
    return frozenset(hidden), formats


def _column_index(letters: bytes) -> int:
    index = 0
    for letter in letters:
        index = index * 26 + (letter - 64)
    return index - 1


def column_letter(index: int) -> str:
    """The spreadsheet letter of a 0-based column index: 0 -> A, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(65 + remainder) + letters
    return letters
