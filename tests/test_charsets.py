"""charsets.py: the one check of an encoding name, detection, and where a file fails to decode."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from provisioner.charsets import detect_encoding, encoding_problem, undecodable

NAME_IT = "name the file's encoding, for example utf-8, cp1252 or utf-16"
NOT_TEXT = "is not a text encoding (it turns bytes into bytes, or text into text)"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("klingon", f"'klingon' is not an encoding Python knows; {NAME_IT}"),
        ("rot13", f"'rot13' {NOT_TEXT}; {NAME_IT}"),
        ("rot_13", f"'rot_13' {NOT_TEXT}; {NAME_IT}"),
        ("base64", f"'base64' {NOT_TEXT}; {NAME_IT}"),
        ("hex", f"'hex' {NOT_TEXT}; {NAME_IT}"),
        ("zlib_codec", f"'zlib_codec' {NOT_TEXT}; {NAME_IT}"),
        ("utf-8\n", f"'utf-8\\n' is not an encoding name; {NAME_IT}"),
        ("utf\x008", f"'utf\\x008' is not an encoding name; {NAME_IT}"),
        ("ütf-8", f"'ütf-8' is not an encoding name; {NAME_IT}"),
        ("", f"'' is empty; {NAME_IT}"),
        (" ", f"' ' is empty; {NAME_IT}"),
        ("undefined", f"'undefined' decodes nothing; {NAME_IT}"),
    ],
)
def test_a_name_that_cannot_read_text_says_why(name: str, problem: str) -> None:
    assert encoding_problem(name) == problem


@pytest.mark.parametrize(
    "name", ["utf-8", "UTF8", "utf_8", "utf-8-sig", "cp1252", "latin-1", "utf-16-le", "utf-32"]
)
def test_a_text_encoding_has_no_problem(name: str) -> None:
    assert encoding_problem(name) is None


TEXT = "AddressSid,Name\nIG1,Zoë\n"


@pytest.mark.parametrize(
    ("content", "detected"),
    [
        (TEXT.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8-sig"),
        (TEXT.encode("utf-16"), "utf-16"),
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16"),
        (TEXT.encode("utf-32"), "utf-32"),  # its BOM starts with UTF-16-LE's
        (codecs.BOM_UTF32_BE + TEXT.encode("utf-32-be"), "utf-32"),
        (TEXT.encode("cp1252"), "cp1252"),
        (TEXT.encode("latin-1") + b"\x81", "latin-1"),  # undefined in Windows-1252
    ],
    ids=[
        "utf-8",
        "utf-8-bom",
        "utf-16-le",
        "utf-16-be",
        "utf-32-le",
        "utf-32-be",
        "cp1252",
        "latin-1",
    ],
)
def test_detection(tmp_path: Path, content: bytes, detected: str) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(content)

    assert detect_encoding(path, content[:65536]) == detected


@pytest.mark.parametrize(
    ("lines_before", "bad", "encoding", "detail"),
    [
        (0, "é", "ascii", "byte c3: ordinal not in range(128)"),
        (3, "é", "ascii", "byte c3: ordinal not in range(128)"),
        (5000, "é", "ascii", "byte c3: ordinal not in range(128)"),  # blocks past the first
        (5000, "\u0441", "cp1252", "byte 81: character maps to <undefined>"),  # UTF-8 d1 81
    ],
)
def test_an_undecodable_file_names_the_line_and_the_bytes(
    tmp_path: Path, lines_before: int, bad: str, encoding: str, detail: str
) -> None:
    path = tmp_path / "in.csv"
    path.write_text("AddressSid,Name\n" * lines_before + f"IG1,{bad}\nIG2,x\n", "utf-8")
    with pytest.raises(UnicodeDecodeError) as raised:
        path.read_text(encoding)

    error = undecodable("in.csv", encoding, raised.value, path)

    assert str(error) == (
        f"in.csv: line {lines_before + 1}: not valid {encoding} text ({detail}); "
        f"{NAME_IT}, with --encoding; or leave --encoding out to detect it"
    )
