"""Exit codes and the error types that carry them: one table, the README's, everywhere.

`ExitCode` is a contract for cron wrappers; each `ProvisionerError` subclass says which code it
ends a command with, and only the CLI turns errors into output and an exit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from provisioner.emulator.process import EmulatorError
from provisioner.errors import (
    ConfigError,
    ExitCode,
    InputError,
    LedgerError,
    ProvisionerError,
    ResultsError,
)
from provisioner.report_html import EXIT_WORDS, UNKNOWN_EXIT, render_report
from tests.conftest import CUSTOMER_HEADER, Cli, customers, said, write_csv
from tests.summaries import summary_of

README = Path(__file__).resolve().parent.parent / "README.md"
# A row of the README's exit code table: `| 3 | the run stopped early: ... |`.
EXIT_ROW = re.compile(r"^\| (\d+) \| (.+) \|$")

ERROR_EXITS = {
    ProvisionerError: ExitCode.NOTHING_SENT,
    InputError: ExitCode.NOTHING_SENT,
    ConfigError: ExitCode.NOTHING_SENT,
    LedgerError: ExitCode.NOTHING_SENT,
    ResultsError: ExitCode.STOPPED,  # raised mid-run: what was sent is kept
    EmulatorError: ExitCode.NOTHING_SENT,  # the sandbox did not start
}


def readme_exit_codes() -> dict[int, str]:
    """The README's table under `## Exit codes`: code -> meaning."""
    section = README.read_text(encoding="utf-8").split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return {
        int(match[1]): match[2]
        for line in section.splitlines()
        if (match := EXIT_ROW.match(line.strip()))
    }


def every_error_type(kind: type[ProvisionerError] = ProvisionerError) -> set[type]:
    """ProvisionerError and every subclass of it, however deep."""
    found: set[type] = {kind}
    for subclass in kind.__subclasses__():
        found |= every_error_type(subclass)
    return found


def test_the_readme_documents_every_exit_code_and_no_other() -> None:
    assert set(readme_exit_codes()) == {int(code) for code in ExitCode}


def test_the_exit_codes_are_the_documented_numbers() -> None:
    assert [(code.name, int(code)) for code in ExitCode] == [
        ("OK", 0),
        ("ROWS_FAILED", 1),
        ("NOTHING_SENT", 2),
        ("STOPPED", 3),
        ("INTERNAL", 4),
        ("BROKEN_PIPE", 141),
    ]


@pytest.mark.parametrize("code", list(ExitCode), ids=[code.name for code in ExitCode])
def test_report_html_has_words_for_every_exit_code(code: ExitCode) -> None:
    assert EXIT_WORDS[code] != UNKNOWN_EXIT

    page = render_report(summary_of({"exit_code": int(code)}))

    assert UNKNOWN_EXIT[0] not in page
    assert EXIT_WORDS[code][0] in page


def test_every_error_type_says_which_exit_code_it_ends_with() -> None:
    assert every_error_type() == set(ERROR_EXITS)  # a new error type is added to the table


@pytest.mark.parametrize(
    ("kind", "code"), ERROR_EXITS.items(), ids=[kind.__name__ for kind in ERROR_EXITS]
)
def test_an_error_type_carries_its_exit_code(kind: type[ProvisionerError], code: ExitCode) -> None:
    assert kind("what to do next").exit_code == code


# ---------------------------------------------------------------- through the CLI


def failing_create(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    """Make the run itself raise `error` once the command has checked its options."""

    def create(*_arguments: object) -> None:
        raise error

    monkeypatch.setattr("provisioner.cli.create.create", create)
    write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InputError("in.csv: fix it"), ExitCode.NOTHING_SENT),
        (LedgerError("ledger.sqlite: in use"), ExitCode.NOTHING_SENT),
        (ResultsError("results.csv: disk full"), ExitCode.STOPPED),
        (KeyboardInterrupt(), ExitCode.STOPPED),
        (RuntimeError("a bug"), ExitCode.INTERNAL),
    ],
    ids=["input", "ledger", "results", "ctrl-c", "bug"],
)
def test_the_cli_ends_each_error_with_its_exit_code_and_one_line(
    provisioner: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    code: ExitCode,
) -> None:
    failing_create(provisioner, tmp_path, monkeypatch, error)

    result = provisioner("create", str(tmp_path / "in.csv"), expect=int(code))

    lines = said(result.stderr)
    if str(error):  # the last line, and no other, has the error's own words (what to do next)
        assert [line for line in lines if str(error) in line] == [lines[-1]]
    assert "Traceback" not in result.output
    assert provisioner.emulator.requests == 0


def test_a_bug_is_exit_4_naming_the_exception_and_the_traceback_option(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_create(provisioner, tmp_path, monkeypatch, ZeroDivisionError("division by zero"))

    result = provisioner("create", str(tmp_path / "in.csv"), expect=ExitCode.INTERNAL)
    shown = provisioner("create", str(tmp_path / "in.csv"), "--traceback", expect=ExitCode.INTERNAL)

    line = said(result.stderr)[-1]
    assert "ZeroDivisionError" in line
    assert "--traceback" in line
    assert "Traceback" not in result.stderr
    assert "Traceback" in shown.stderr  # the stack, for the bug report
    assert "ZeroDivisionError" in shown.stderr
