"""Every option's value is checked where it is parsed: whatever value reaches any option of any
command (typed, from its PROVISIONER_* variable or from the settings file), the command ends
with a clear line (exit 2 and nothing made, or it runs): never exit 4, never a traceback."""

from __future__ import annotations

import os
import socket
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from provisioner.cli import cli
from provisioner.cli.settings import settings_tables
from provisioner.config import CONFIG_NAME
from provisioner.endpoints import is_loopback
from provisioner.errors import ExitCode
from provisioner.runtime import Runtime
from tests.conftest import CUSTOMER_HEADER, Sleeps, customers, said, write_csv
from tests.test_config import toml_value

EXAMPLES = 200  # each kind of value meets each kind of option; about 5 s (3,000 found nothing more)

# The values the issue names: huge, tiny, negative, NaN, non-ASCII, control characters, empty,
# bracketed hosts; and any text at all.
NUMBERS = st.one_of(
    st.sampled_from(
        [
            "9223372036854775808",
            "-9223372036854775809",
            "1e-300",
            "-1e-300",
            "1e308",
            "1e309",
            "-1",
            "-0",
            "0",
            "0.4",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "1_000",
            "0x1F",
            " 5",
            "٣",
        ]
    ),
    st.integers().map(str),
    st.integers(min_value=19, max_value=5000).map(lambda digits: "9" * digits),  # > int64
    st.floats().map(repr),
)
HOSTS = st.sampled_from(
    [
        "https://[zz]",
        "https://[::1",
        "https://[127.0.0.1]",
        "https://%",
        "https://[::1]x",
        "https://[::1]]",
        "http://[::1]:0",
        "http://[::1]:65536",
        "http://[fe80::1%25eth0]",
        "https://[::ffff:127.0.0.1]",
        "https://[]",
        "https://:443",
        "http://127.0.0.1:" + "9" * 50,
        "https://ex ample.com",
        "https://é.example",
    ]
)
CONTROL = st.text(st.characters(categories=["Cc"]), min_size=1, max_size=4)
VALUES = st.one_of(NUMBERS, HOSTS, CONTROL, st.just(""), st.text(max_size=30))
# What a TOML file can hold besides texts: numbers of any size, nan and inf, booleans, lists.
TOML_VALUES = st.one_of(
    VALUES,
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.booleans(),
    st.lists(st.text(max_size=5), max_size=3),
)


def toml_literal(value: str) -> str:
    """`value` as TOML: a number as a number (as someone would write it), else a text."""
    try:
        tomllib.loads(f"x = {value}")
    except tomllib.TOMLDecodeError:
        return toml_value(value)
    return value


def options_of(command: click.Command) -> list[click.Option]:
    """The options a user can give `command`: all but --help, and --traceback (which shows
    the stack of an error when asked to)."""
    return [
        param
        for param in command.params
        if isinstance(param, click.Option)
        and param.name
        and param.name not in ("help", "show_traceback")
    ]


# Every option of every command, walked from the Click commands themselves.
OPTIONS = [
    (name, option) for name, command in cli.commands.items() for option in options_of(command)
]
VARIABLES = [(name, option) for name, option in OPTIONS if option.envvar]
SETTINGS = [(name, setting.name) for name, table in settings_tables().items() for setting in table]


@pytest.fixture(scope="module")
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on: the emulator cannot start there, so a value
    it accepts ends in `cannot listen` (exit 2) instead of serving until stopped."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        yield listening.getsockname()[1]


@contextmanager
def workdir() -> Iterator[Path]:
    """A fresh working folder holding one valid input, entered for one example."""
    before = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="values-") as folder:
        path = Path(folder)
        write_csv(path / "in.csv", CUSTOMER_HEADER, customers(2))
        os.chdir(path)
        try:
            yield path
        finally:
            os.chdir(before)


def harmless_args(command: str, port: int, fuzzed: str | None) -> list[str]:
    """Arguments with which `command` sends nothing and serves nothing, whatever else it gets:
    a dry run without credentials; reconcile and status on a folder with no ledger; the
    emulator on a taken port (or, when the port is what is tried, a host it refuses)."""
    if command == "create":
        return ["create", "in.csv", "--dry-run"]
    if command == "emulator":
        return ["emulator", "--host", "192.0.2.1"] if fuzzed == "port" else [
            "emulator", "--port", str(port)
        ]  # fmt: skip
    return [command]


def invoke(args: list[str], env: dict[str, str]) -> Result:
    """The real CLI, with exactly `env` of the PROVISIONER_* and TWILIO_* variables."""
    unset: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith(("PROVISIONER_", "TWILIO_"))
    }
    runtime = Runtime(sleep=Sleeps(), env={})
    return CliRunner(env={**unset, **env}).invoke(cli, args, obj=runtime, catch_exceptions=False)


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def assert_handled(result: Result, folder: Path, before: set[Path]) -> None:
    """Exit 0 to 3 (never 4), no traceback, one error line; nothing made on exit 2."""
    assert result.exit_code != ExitCode.INTERNAL, result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    if result.exit_code == ExitCode.NOTHING_SENT:
        errors = [line for line in said(result.stderr) if line.startswith("error:")]
        assert len(errors) == 1, result.output
        assert files_under(folder) == before, result.output  # no run folder, no ledger


def acceptable_path(option: click.Option, value: str) -> bool:
    """A path the run may make a folder at, inside the working folder."""
    if not isinstance(option.type, click.Path):
        return True
    return not value.lstrip().startswith(("/", "~")) and ".." not in value


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=st.sampled_from(OPTIONS), value=VALUES)
def test_any_typed_value_of_any_option_is_handled(taken_port, case, value):
    command, option = case
    assume(acceptable_path(option, value))
    assume(not (option.name == "host" and is_loopback(value.strip())))  # it would serve
    with workdir() as folder:
        before = files_under(folder)
        args = harmless_args(command, taken_port, option.name)
        flag = max(option.opts, key=len)
        args += [flag] if option.is_flag or option.count else [flag, value]
        assert_handled(invoke(args, {}), folder, before)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=st.sampled_from(VARIABLES), value=VALUES)
def test_any_value_of_any_variable_is_handled(taken_port, case, value):
    command, option = case
    assume("\0" not in value)  # an environment cannot hold a NUL
    assume(acceptable_path(option, value))
    with workdir() as folder:
        before = files_under(folder)
        assert isinstance(option.envvar, str)
        result = invoke(harmless_args(command, taken_port, None), {option.envvar: value})
        assert_handled(result, folder, before)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=st.sampled_from(SETTINGS), value=TOML_VALUES, in_table=st.booleans())
def test_any_value_of_any_settings_key_is_handled(taken_port, case, value, in_table):
    command, key = case
    option = next(
        o for o in options_of(cli.commands[command]) if max(o.opts, key=len) == "--" + key
    )
    assume(not isinstance(value, str) or acceptable_path(option, value))
    assume(not isinstance(value, list) or all(acceptable_path(option, v) for v in value))
    with workdir() as folder:
        table = f"[{command}]\n" if in_table else ""
        config = folder / CONFIG_NAME
        config.write_text(f"{table}{key} = {toml_value(value)}\n", encoding="utf-8")
        config.chmod(0o600)
        before = files_under(folder)
        result = invoke(harmless_args(command, taken_port, None), {})
        assert_handled(result, folder, before)


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["--header-row", "9223372036854775808"], "PROVISIONER_HEADER_ROW"),
        (["--base-url", "https://[zz]"], "PROVISIONER_BASE_URL"),
        (["--base-url", "https://[::1"], "PROVISIONER_BASE_URL"),
        (["--base-url", "https://[127.0.0.1]"], "PROVISIONER_BASE_URL"),
        (["--base-url", "https://%"], "PROVISIONER_BASE_URL"),
        (["--base-url", "https://[::1]x"], "PROVISIONER_BASE_URL"),
        (["--base-url", "https://[::1]]"], "PROVISIONER_BASE_URL"),
        (["--conversations-url", "https://[::1]]"], "PROVISIONER_CONVERSATIONS_URL"),
        (["--rate", "1e-300"], "PROVISIONER_RATE"),
        (["--rate", "0.4"], "PROVISIONER_RATE"),
        (["--rate", "nan"], "PROVISIONER_RATE"),
        (["--timeout", "nan"], "PROVISIONER_TIMEOUT"),
        (["--ledger", " "], "PROVISIONER_LEDGER"),  # was the working folder, then "a hard link"
        (["--out", " "], "PROVISIONER_OUT"),
    ],
)
@pytest.mark.parametrize("route", ["typed", "variable", "file"])
@pytest.mark.parametrize("command", ["create", "reconcile"])
def test_the_values_once_found_crashing_are_one_error_line(args, variable, route, command):
    flag, value = args
    with workdir() as folder:
        env = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t"}
        base = ["create", "in.csv", "--sandbox"] if command == "create" else ["reconcile", "in.csv"]
        if route == "typed":
            base += [flag, value]
        elif route == "variable":
            env[variable] = value
        else:
            config = folder / CONFIG_NAME
            config.write_text(f"[create]\n{flag[2:]} = {toml_literal(value)}\n", encoding="utf-8")
            config.chmod(0o600)
        before = files_under(folder)
        result = invoke(base, env)
        assert result.exit_code == ExitCode.NOTHING_SENT, result.output
        assert_handled(result, folder, before)
        assert flag in result.stderr


@pytest.mark.parametrize("command", ["create", "reconcile", "status"])
def test_an_empty_ledger_path_is_refused_where_it_is_parsed(command):
    with workdir() as folder:
        before = files_under(folder)
        args = [command, *(["in.csv"] if command != "status" else []), "--ledger", ""]
        result = invoke(args, {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t"})
        assert result.exit_code == ExitCode.NOTHING_SENT, result.output
        assert_handled(result, folder, before)
        assert "--ledger" in result.stderr
