"""The kinds of value an option takes, each checked where it is parsed (one `error:` line, exit
2), whether it came from the command line, a PROVISIONER_* variable or the settings file."""

from __future__ import annotations

import math
import os
from typing import Any

import click

from provisioner.charsets import encoding_problem
from provisioner.config import split_list
from provisioner.endpoints import api_root
from provisioner.errors import ConfigError
from provisioner.limits_rate import MIN_RATE
from provisioner.staging import run_id_problem

# Far above any account's rate (Twilio raises the 5/s only through sales), and low enough that
# the pacing's arithmetic on gaps between sends stays exact.
MAX_RATE = 10_000.0
# Emulated website visitors: one in about 17 minutes; fewer is none in a rehearsal, and a wait
# drawn at a far lower rate overflows the thread's timeout.
MIN_VISITOR_RATE = 0.001
# What Linux's file systems take (NAME_MAX, PATH_MAX): a longer path fails only when used.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


class Number(click.FloatRange):
    """A finite number within a range (Click's FloatRange lets `nan` through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number}: give a finite number", param, ctx)
        return number


class Seconds(Number):
    """A number of seconds within a range."""

    name = "seconds"


class Rate(Number):
    """So many a second: 0 for none (no limit), else from `slowest` to MAX_RATE."""

    name = "rate"

    def __init__(self, slowest: float = MIN_RATE) -> None:
        super().__init__(0, MAX_RATE)
        self.slowest = slowest  # requests: MIN_RATE, the slowest pace a run keeps

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rate = super().convert(value, param, ctx)
        if 0 < rate < self.slowest:
            self.fail(
                f"{rate:g}/s is below {self.slowest:g}/s, the slowest this option takes; refused "
                f"(not raised): give at least {self.slowest:g}, or 0 for none",
                param,
                ctx,
            )
        return rate


class ApiRoot(click.ParamType[str, str]):
    """An API root URL, normalised (`endpoints.api_root`): https://HOST[:PORT]."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return api_root(str(value))
        except ConfigError as error:
            self.fail(str(error), param, ctx)


class FilePath(click.Path):
    """A path no file system refuses outright: no NUL byte (possible only from the settings
    file), no name longer than MAX_NAME_BYTES, at most MAX_PATH_BYTES in all."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            if not value.strip():  # Path("") is ".", the working folder: never what was meant
                self.fail("an empty path", param, ctx)
            if "\0" in value:
                self.fail("a path cannot hold a NUL byte", param, ctx)
            encoded = os.fsencode(value)
            longest = max((len(part) for part in encoded.split(b"/")), default=0)
            if longest > MAX_NAME_BYTES or len(encoded) > MAX_PATH_BYTES:
                self.fail(
                    f"too long a path: names of at most {MAX_NAME_BYTES} bytes, "
                    f"{MAX_PATH_BYTES} in all",
                    param,
                    ctx,
                )
        return super().convert(value, param, ctx)


class ColumnMapping(click.types.StringParamType):
    """PARAM=HEADER; several in one PROVISIONER_COLUMN variable, `;`-separated (headers have
    spaces, which Click would split on)."""

    name = "PARAM=HEADER"

    def split_envvar_value(self, rv: str) -> list[str]:
        return split_list(rv)


def parse_columns(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """--column's values as {PARAM: HEADER}."""
    mapping = {}
    for value in values:
        name, sep, header = value.partition("=")
        if not sep or not name.strip() or not header:
            raise click.BadParameter(f'{value!r}: expected PARAM=HEADER, e.g. AddressSid="Address"')
        mapping[name.strip()] = header
    return mapping


def check_encoding(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--encoding: a text encoding Python knows and that can read a CSV."""
    if value is None:
        return None
    problem = encoding_problem(value)
    if problem is not None:
        raise click.BadParameter(problem)
    return value


def check_delimiter(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--delimiter: one character (`tab` and `\\t` spell a tab), not a quote nor a newline."""
    if value is None:
        return None
    value = {"\\t": "\t", "tab": "\t"}.get(value, value)
    if len(value) != 1 or value in "\"'\r\n":
        raise click.BadParameter(f"{value!r}: one character, such as , ; | or \\t")
    return value


def check_run_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--run-id: a name a run folder can have."""
    if value is not None and (problem := run_id_problem(value)) is not None:
        raise click.BadParameter(problem)
    return value
