"""Text encodings of CSV inputs: the one check of a named encoding, detection, and where a
file fails to decode.

Every way a name arrives (--encoding, PROVISIONER_ENCODING, provisioner.toml, a caller of
open_table) goes through `encoding_problem`, so that a name Python does not know, or a codec
that is not a text encoding (rot13, hex, base64, zlib: bytes to bytes, text to text), is one
clear error before anything is read, never a LookupError from open().
"""

from __future__ import annotations

import codecs
from pathlib import Path

from provisioner.errors import ConfigError, InputError

__all__ = ["detect_encoding", "encoding_problem", "is_wide", "reading_encoding", "undecodable"]

_BLOCK_BYTES = 1 << 20  # files are read a block at a time: they may be gigabytes
# After a decoding error, the block where it happened is decoded again a byte at a time to find
# its line: small blocks keep that under a few milliseconds.
_SEARCH_BYTES = 64 * 1024
_NAME_IT = "name the file's encoding, for example utf-8, cp1252 or utf-16"
# A BOM that confirms an explicit encoding is read past, as detection does: Python's utf-8 and
# utf-16-le keep it, glued to the first header (`\ufeffAddressSid` names no column).
_BOM_READERS = {
    "utf-8": (codecs.BOM_UTF8, "utf-8-sig"),
    "utf-16-le": (codecs.BOM_UTF16_LE, "utf-16"),
    "utf-16-be": (codecs.BOM_UTF16_BE, "utf-16"),
    "utf-32-le": (codecs.BOM_UTF32_LE, "utf-32"),
    "utf-32-be": (codecs.BOM_UTF32_BE, "utf-32"),
}
_WIDE_ENCODINGS = ("utf-16", "utf-32")  # text in which NUL bytes are normal, not binary
_DOMAIN_CODECS = ("idna", "punycode")  # text encodings of host names, never of a file


def encoding_problem(name: str) -> str | None:
    """Why `name` cannot read a text file, as a sentence naming it; None when it can."""
    if not name.strip():
        return f"{name!r} is empty; {_NAME_IT}"
    if not (name.isascii() and name.isprintable()):
        return f"{name!r} is not an encoding name; {_NAME_IT}"
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return f"{name!r} is not an encoding Python knows; {_NAME_IT}"
    if not info._is_text_encoding:
        return (
            f"{name!r} is not a text encoding (it turns bytes into bytes, or text into text); "
            f"{_NAME_IT}"
        )
    if info.name in _DOMAIN_CODECS:
        return f"{name!r} encodes domain names, not files; {_NAME_IT}"
    try:
        codecs.getincrementaldecoder(name)().decode(b"", final=True)
    except UnicodeError:  # Python's `undefined` codec refuses everything
        return f"{name!r} decodes nothing; {_NAME_IT}"
    return None


def reading_encoding(path: Path, sample: bytes, encoding: str | None) -> str:
    """The encoding to read the file in: the one named (checked), else the one detected."""
    if encoding is None:
        return detect_encoding(path, sample)
    problem = encoding_problem(encoding)
    if problem is not None:
        raise ConfigError(f"--encoding {problem}")
    bom, reader = _BOM_READERS.get(codecs.lookup(encoding).name, (b"", ""))
    return reader if bom and sample.startswith(bom) else encoding


def is_wide(encoding: str) -> bool:
    """True for UTF-16 and UTF-32, in which NUL bytes are text, in any spelling."""
    return codecs.lookup(encoding).name.startswith(_WIDE_ENCODINGS)


def undecodable(
    where: str, encoding: str, error: UnicodeError, path: Path | None = None
) -> InputError:
    """The error for a file `encoding` cannot decode: the line (when `path` is given) and bytes."""
    if isinstance(error, UnicodeDecodeError):
        bad = error.object[error.start : error.end].hex(" ")
        count = error.end - error.start
        reason = f"byte{'s' if count > 1 else ''} {bad}: {error.reason}" if bad else error.reason
    else:
        reason = str(error)
    line = _undecodable_line(path, encoding) if path is not None else None
    return InputError(
        f"{where}: {f'line {line}: ' if line else ''}not valid {encoding} text ({reason}); "
        f"{_NAME_IT}, with --encoding; or leave --encoding out to detect it"
    )


def _undecodable_line(path: Path, encoding: str) -> int | None:
    """The line of the first bytes `encoding` cannot decode; the file is read again for it,
    only after an error (the text layer decodes ahead of the line it returns)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    newlines = 0
    with path.open("rb") as stream:
        while block := stream.read(_SEARCH_BYTES):
            state = decoder.getstate()
            try:
                newlines += decoder.decode(block).count("\n")
                continue
            except UnicodeError:
                decoder.setstate(state)
            for index in range(len(block)):
                try:
                    newlines += decoder.decode(block[index : index + 1]).count("\n")
                except UnicodeError:
                    return newlines + 1
            return None  # pragma: no cover (the block failed whole, so a byte of it fails)
        try:
            decoder.decode(b"", final=True)
        except UnicodeError:
            return newlines + 1
    return None


def detect_encoding(path: Path, sample: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-32 or UTF-16 (with a BOM) when the bytes say so, else
    Windows-1252, or Latin-1 when bytes Windows-1252 leaves undefined are there."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"  # before UTF-16: UTF-32-LE's BOM starts with UTF-16-LE's
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as stream:
        try:
            while block := stream.read(_BLOCK_BYTES):
                decoder.decode(block)
            decoder.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError:
            pass
        stream.seek(0)
        # Windows-1252 leaves five bytes undefined; a file that has them is Latin-1.
        undefined = set(b"\x81\x8d\x8f\x90\x9d")
        while block := stream.read(_BLOCK_BYTES):
            if undefined.intersection(block):
                return "latin-1"
    return "cp1252"
