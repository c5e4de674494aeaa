"""Where a run's input and files go, for create and reconcile alike: the input copied into a
staging folder and read whole before anything is made, then moved into a new run folder."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from provisioner.errors import ConfigError, InputError
from provisioner.private import PRIVATE_FOLDER_MODE
from provisioner.rows import ADDRESS_SID_PATTERN, Columns, Repeats, RowBuilder, names_address_column
from provisioner.runtime import Runtime
from provisioner.table import Table, open_table, snapshot_input


@dataclass(frozen=True)
class CheckedInput:
    """An input read whole and checked: its table, columns, row count and repeated values."""

    table: Table
    columns: Columns
    rows: int
    invalid: int
    repeats: Repeats
    scope: str | None = None  # the scope the rows' identities were checked in (read_input)


class InputSettings(Protocol):
    """How an input is read and mapped (create and reconcile share it)."""

    @property
    def input_path(self) -> Path | None: ...
    @property
    def columns(self) -> Mapping[str, str]: ...
    @property
    def encoding(self) -> str | None: ...
    @property
    def delimiter(self) -> str | None: ...
    @property
    def sheet(self) -> str | None: ...
    @property
    def header_row(self) -> int | None: ...


def staged_input(
    options: InputSettings, runtime: Runtime, stack: ExitStack, scope: str | None = None
) -> CheckedInput:
    """The input copied into a staging folder and read whole before anything else is made, so
    that a broken file leaves no run folder and no ledger behind (then see `moved_into`)."""
    assert options.input_path is not None, "an input to stage"
    staging = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="provisioner-")))
    source = snapshot_input(options.input_path, staging, runtime.stdin or sys.stdin.buffer)
    return read_input(options, source, scope)


def moved_into(checked: CheckedInput, run_dir: Path) -> CheckedInput:
    """The input's copy moved from its staging folder into the run folder."""
    snapshot = run_dir / checked.table.path.name
    shutil.move(checked.table.path, snapshot)
    return replace(checked, table=replace(checked.table, path=snapshot))


def read_input(options: InputSettings, source: Path, scope: str | None = None) -> CheckedInput:
    """Read the input's copy `source` whole: its table, columns and what repeats in it (with
    `scope`, the ledger scope identities are derived in, the identities as sent too)."""
    table = open_table(
        source,
        encoding=options.encoding,
        delimiter=options.delimiter,
        sheet=options.sheet,
        header_row=options.header_row,
        looks_like_header=lambda cells: names_address_column(cells, options.columns),
        looks_like_row=lambda line: ADDRESS_SID_PATTERN.search(line) is not None,
        name=str(options.input_path),
    )
    columns = Columns.resolve(table.headers, options.columns)
    builder = RowBuilder(columns, scope=scope)
    rows = invalid = 0
    for number, cells in table.rows():
        rows += 1
        if builder.build(number, cells).problem is not None:
            invalid += 1
    if not rows:
        raise InputError(f"{options.input_path}: has a header row but no data rows")
    repeats = builder.repeats()
    if repeats.duplicate_rows:  # candidates: a second pass tells them for certain, once a row
        checker = RowBuilder(columns, repeats, scope)
        invalid = sum(checker.build(*row).problem is not None for row in table.rows())
    return CheckedInput(table, columns, rows, invalid, repeats, scope)


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def run_id_problem(run_id: str) -> str | None:
    """Why `run_id` cannot name a run folder, naming it; None when it can."""
    if not _RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
        return f"{run_id!r}: use a plain folder name (letters, digits, '.', '_', '-')"
    return None


def check_run_id(run_id: str) -> str:
    """A run id must be a plain folder name."""
    if (problem := run_id_problem(run_id)) is not None:
        raise ConfigError(f"--run-id {problem}")
    return run_id


def new_run_id(out_dir: Path, prefix: str = "") -> str:
    """A run id from the UTC time, e.g. 20261124T214500Z, with -2, -3 ... if taken."""
    base = prefix + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id, number = base, 1
    while (out_dir / run_id).exists():
        number += 1
        run_id = f"{base}-{number}"
    return run_id


def run_folder(out_dir: Path, run_id: str | None = None, *, prefix: str = "") -> tuple[str, Path]:
    """A new folder in `out_dir`, readable by its owner only: `run_id`, else `prefix` and the
    UTC time (create's runs and reconcile's alike); ConfigError when it cannot be made."""
    if run_id is not None:
        run_id = check_run_id(run_id)
        run_dir = out_dir / run_id
        if run_dir.exists():
            raise ConfigError(
                f"{run_dir}: a run folder with this --run-id exists; choose another --run-id"
            )
    else:
        run_id = new_run_id(out_dir, prefix)
        run_dir = out_dir / run_id
    try:
        out_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
        run_dir.mkdir(mode=PRIVATE_FOLDER_MODE)
        run_dir.chmod(PRIVATE_FOLDER_MODE)  # whatever the umask: customer data is the owner's only
    except OSError as error:
        raise ConfigError(f"{run_dir}: cannot create the run folder ({error.strerror})") from error
    return run_id, run_dir
