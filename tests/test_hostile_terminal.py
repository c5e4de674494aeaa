"""A hostile pass over what reaches the operator's terminal: text from the input (headers, file
names) carrying terminal escape sequences. The real CLI, real files in a tmp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli, sid

# OSC 52 asks a terminal to put text on the clipboard; OSC 0 sets the window title; CSI 2J
# clears the screen. Click strips only CSI sequences, and only when not on a terminal.
SEQUENCES = {
    "clipboard": "\x1b]52;c;cm0gLXJmIH4=\x07",
    "title": "\x1b]0;owned\x1b\\",
    "clear": "\x1b[2J",
    "c1-csi": "\x9b2J",
    "carriage-return": "\rfake line",
}
ESCAPES = ("\x1b", "\x07", "\x9b", "\r")


@pytest.mark.parametrize("sequence", list(SEQUENCES.values()), ids=list(SEQUENCES))
def test_a_header_s_escape_sequence_never_reaches_the_terminal(
    provisioner: Cli, tmp_path: Path, sequence: str
) -> None:
    """A spreadsheet exported from elsewhere names a column with an escape sequence: the
    lines that list the columns show it, inert."""
    source = tmp_path / "in.csv"
    source.write_text(
        f'customer_id,AddressSid,"Note{sequence}"\nC1,{sid(1)},x\n', encoding="utf-8", newline=""
    )

    result = provisioner("create", str(source), "--sandbox")

    carried = [line for line in result.stderr.splitlines() if "carried" in line]
    assert carried, result.stderr
    assert not [code for code in ESCAPES if code in result.stderr], repr(result.stderr)


def test_an_input_named_with_an_escape_sequence_is_shown_inert(
    provisioner: Cli, tmp_path: Path
) -> None:
    source = tmp_path / f"in{SEQUENCES['clipboard']}.csv"
    source.write_text(f"customer_id,AddressSid\nC1,{sid(1)}\n", encoding="utf-8")

    created = provisioner("create", str(source), "--sandbox")
    status = provisioner("status", "--out", str(provisioner.out))

    for text in (created.stderr, status.output):
        assert not [code for code in ESCAPES if code in text], repr(text)
