"""config.py: provisioner.toml and PROVISIONER_* variables; command line > environment > file."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.cli import cli
from provisioner.cli.settings import per_command, settings_tables
from provisioner.config import (
    CONFIG_NAME,
    Setting,
    check_trusted,
    env_name,
    find_config,
    load_config,
    option_key,
    source_label,
    split_list,
    unknown_env,
)
from provisioner.errors import ConfigError
from provisioner.ledger import open_ledger
from provisioner.runtime import Runtime
from tests.conftest import (
    CUSTOMER_HEADER,
    Cli,
    customers,
    no_machine_settings,
    read_csv,
    said,
    sid,
    write_csv,
)

SETTINGS = [
    Setting("out", "out_dir", Path),
    Setting("rate", "rate", float),
    Setting("concurrency", "concurrency", int),
    Setting("max-attempts", "max_attempts", int),
    Setting("base-url", "base_url", str),
    Setting("dry-run", "dry_run", bool),
    Setting("column", "columns", list),
]
TABLES = {"create": SETTINGS}
OTHER_UID = 12345  # a user who is neither the one running the tests nor root
OPTION = {setting.dest: setting.name for setting in SETTINGS}  # parameter -> option name


def write(tmp_path: Path, text: str, name: str = CONFIG_NAME) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- finding the file -------------------------------------------------------------------------


def test_no_config_anywhere_is_fine(tmp_path):
    assert find_config(None, tmp_path) is None


def test_the_working_directory_s_file_is_found(tmp_path):
    path = write(tmp_path, "rate = 2\n")
    assert find_config(None, tmp_path) == path


def test_an_explicit_path_is_relative_to_the_working_directory(tmp_path):
    path = write(tmp_path, "rate = 2\n", "cron.toml")
    write(tmp_path, "rate = 3\n")
    assert find_config(Path("cron.toml"), tmp_path) == path


def test_an_explicit_path_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--config nope\.toml: no such file"):
        find_config(Path("nope.toml"), tmp_path)


# --- reading it -------------------------------------------------------------------------------


def test_create_table_with_dashes_and_typed_values(tmp_path):
    path = write(
        tmp_path,
        """
        [create]
        rate = 5
        concurrency = 4
        max-attempts = 3
        base-url = "http://127.0.0.1:8765"
        dry-run = true
        out = "runs"

        [create.column]
        AddressSid = "Address"
        CustomerFriendlyName = "Customer Name"
        """,
    )
    assert load_config(path, TABLES) == {
        "rate": 5.0,
        "concurrency": 4,
        "max_attempts": 3,
        "base_url": "http://127.0.0.1:8765",
        "dry_run": True,
        "out_dir": "runs",
        "columns": ["AddressSid=Address", "CustomerFriendlyName=Customer Name"],
    }
    assert isinstance(load_config(path, TABLES)["rate"], float)


def test_top_level_keys_with_underscores_and_a_column_list(tmp_path):
    path = write(tmp_path, 'max_attempts = 2\ncolumn = ["AddressSid=Address"]\n')
    assert load_config(path, TABLES) == {"max_attempts": 2, "columns": ["AddressSid=Address"]}


def test_the_same_setting_twice_is_refused(tmp_path):
    path = write(tmp_path, "max_attempts = 2\n[create]\nmax-attempts = 3\n")
    with pytest.raises(ConfigError, match="'max-attempts' is set twice"):
        load_config(path, TABLES)


def test_other_commands_tables_are_left_to_them(tmp_path):
    path = write(tmp_path, "rate = 1\n[status]\nruns = 5\n")
    assert load_config(path, {**TABLES, "status": [Setting("runs", "limit", int)]}) == {"rate": 1.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("concurency = 4\n", "unknown setting 'concurency'; did you mean 'concurrency'?"),
        (
            "[create]\nbase_ur = 'x'\n",
            "unknown setting 'base_ur'; did you mean 'base-url'? (in [create])",
        ),
        (
            "verbose = true\n",
            "unknown setting 'verbose'; known settings: base-url, column, concurrency, dry-run, "
            "max-attempts, out, rate",
        ),
        (
            "[reconcile]\nrate = 1\n",
            "unknown setting 'reconcile'; known settings: base-url, column, concurrency, "
            "dry-run, max-attempts, out, rate",
        ),
    ],
)
def test_unknown_keys_name_the_closest_option(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path, TABLES)
    assert str(error.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('concurrency = "8"\n', "'concurrency' must be a whole number, not str '8'"),
        ("concurrency = 8.5\n", "'concurrency' must be a whole number, not float 8.5"),
        ("concurrency = true\n", "'concurrency' must be a whole number, not bool True"),
        ('dry-run = "yes"\n', "'dry-run' must be true or false, not str 'yes'"),
        ("rate = true\n", "'rate' must be a number, not bool True"),
        ("base-url = 8765\n", "'base-url' must be text in quotes, not int 8765"),
        ("out = 1\n", "'out' must be a path in quotes, not int 1"),
        ("column = 3\n", "'column' must be a list of texts"),
        ("column = [1, 2]\n", "'column' must be a list of texts"),
        ("[create.column]\nAddressSid = 1\n", "'column' must be a list of texts"),
        ("create = 1\n", "'create' must be a table: [create]"),
    ],
)
def test_wrong_types_name_the_key_and_the_type_expected(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path, TABLES)
    assert str(error.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    "key",
    [
        "auth_token",
        "auth-token",
        "TWILIO_AUTH_TOKEN",
        "api_secret",
        "password",
        "account_sid",
        "api-key",
        "twilio_api_key",
    ],
)
@pytest.mark.parametrize("where", ["", "[create]\n"])
def test_credentials_are_refused_and_never_echoed(tmp_path, key, where):
    path = write(tmp_path, f'{where}{key} = "s3cr3t-value"\n')
    with pytest.raises(ConfigError) as error:
        load_config(path, TABLES)
    assert f"{key!r} is not allowed in a file; credentials stay in the environment" in str(
        error.value
    )
    assert "s3cr3t" not in str(error.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"rate = \n", "not valid TOML: "),
        (b"rate = 5\nrate = 6\n", "not valid TOML: "),
        (b"rate = '\xff'\n", "not UTF-8 text"),
        (b"#" * 1_000_001, "larger than 1000000 bytes"),
    ],
)
def test_a_file_that_is_not_toml_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / CONFIG_NAME
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path, TABLES)


def test_a_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / CONFIG_NAME
    path.write_bytes(b"\xef\xbb\xbf[create]\nrate = 3\n")  # as Windows Notepad saves UTF-8

    assert load_config(path, TABLES) == load_config(
        _written(tmp_path, b"[create]\nrate = 3\n"), TABLES
    )


def _written(folder: Path, content: bytes) -> Path:
    path = folder / "plain.toml"
    path.write_bytes(content)
    return path


def test_an_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, TABLES)  # a directory


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "variable"),
    [
        ("rate", "PROVISIONER_RATE"),
        ("max-attempts", "PROVISIONER_MAX_ATTEMPTS"),
        ("--base-url", "PROVISIONER_BASE_URL"),
        ("dry_run", "PROVISIONER_DRY_RUN"),
    ],
)
def test_env_name(name, variable):
    assert env_name(name) == variable


def test_option_key_is_one_spelling():
    assert option_key("Max_Attempts") == option_key("--max-attempts") == "max-attempts"


def test_split_list_keeps_spaces_inside_items():
    assert split_list(" AddressSid=Address ;CustomerFriendlyName=Customer Name;; ") == [
        "AddressSid=Address",
        "CustomerFriendlyName=Customer Name",
    ]


def test_unknown_env_names_typos_and_nothing_else():
    env = {"PROVISIONER_CONCURENCY": "4", "PROVISIONER_RATE": "2", "HOME": "/root"}
    names = [setting.name for setting in SETTINGS]
    assert unknown_env(env, names) == [
        "PROVISIONER_CONCURENCY (did you mean PROVISIONER_CONCURRENCY?)"
    ]


def test_source_labels():
    path = Path("provisioner.toml")
    assert source_label("COMMANDLINE", "rate", path) == "command line"
    assert source_label("ENVIRONMENT", "max-attempts", path) == (
        "environment (PROVISIONER_MAX_ATTEMPTS)"
    )
    assert source_label("DEFAULT_MAP", "rate", path) == "file (provisioner.toml)"
    assert source_label("DEFAULT", "rate", None) == "default"


# --- precedence, wired into Click as cli.py does ----------------------------------------------


class ColumnMapping(click.types.StringParamType):
    """--column's type: its variable holds several mappings, `;`-separated (headers have spaces)."""

    name = "PARAM=HEADER"

    def split_envvar_value(self, rv: str) -> list[str]:
        return split_list(rv)


def _load_settings(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """--config is eager: the file becomes the default_map before any other option is read."""
    path = find_config(value, Path.cwd())
    if path is not None:
        try:
            ctx.default_map = load_config(path, TABLES)
        except ConfigError as error:
            raise click.UsageError(str(error)) from error
    return path


@click.command()
@click.option("--config", type=click.Path(path_type=Path), is_eager=True, callback=_load_settings)
@click.option("--rate", type=float, default=5.0, envvar=env_name("rate"))
@click.option(
    "--concurrency", type=click.IntRange(1, 256), default=8, envvar=env_name("concurrency")
)
@click.option("--dry-run", is_flag=True, envvar=env_name("dry-run"))
@click.option("--column", "columns", multiple=True, type=ColumnMapping(), envvar=env_name("column"))
@click.pass_context
def create(ctx: click.Context, /, config: Path | None, **values: Any) -> None:
    """Print each setting's value and where it came from."""
    report = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        assert source is not None
        report[name] = [value, source_label(source.name, OPTION[name], config)]
    click.echo(json.dumps(report))


def run_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]
) -> dict[str, Any]:
    """Invoke the command in tmp_path, which holds a provisioner.toml, with exactly `env`."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "[create]\nrate = 1.5\nconcurrency = 2\ndry-run = true\n"
        '[create.column]\nAddressSid = "Address"\n',
    )
    unset: dict[str, str | None] = {env_name(setting.name): None for setting in SETTINGS}
    result = CliRunner(env={**unset, **env}).invoke(create, args)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    return report


def test_the_file_beats_the_defaults(tmp_path, monkeypatch):
    from_file = f"file ({tmp_path / CONFIG_NAME})"
    assert run_create(tmp_path, monkeypatch, [], {}) == {
        "rate": [1.5, from_file],
        "concurrency": [2, from_file],
        "dry_run": [True, from_file],
        "columns": [["AddressSid=Address"], from_file],
    }


def test_the_environment_beats_the_file(tmp_path, monkeypatch):
    env = {
        "PROVISIONER_RATE": "3",
        "PROVISIONER_DRY_RUN": "false",
        "PROVISIONER_COLUMN": "AddressSid=Addr;CustomerFriendlyName=Customer Name",
    }
    assert run_create(tmp_path, monkeypatch, [], env) == {
        "rate": [3.0, "environment (PROVISIONER_RATE)"],
        "concurrency": [2, f"file ({tmp_path / CONFIG_NAME})"],
        "dry_run": [False, "environment (PROVISIONER_DRY_RUN)"],
        "columns": [
            ["AddressSid=Addr", "CustomerFriendlyName=Customer Name"],
            "environment (PROVISIONER_COLUMN)",
        ],
    }


def test_the_command_line_beats_everything(tmp_path, monkeypatch):
    args = ["--rate", "4", "--concurrency", "6", "--column", "AddressSid=Sid"]
    env = {"PROVISIONER_RATE": "3", "PROVISIONER_CONCURRENCY": "5"}
    assert run_create(tmp_path, monkeypatch, args, env) == {
        "rate": [4.0, "command line"],
        "concurrency": [6, "command line"],
        "dry_run": [True, f"file ({tmp_path / CONFIG_NAME})"],
        "columns": [["AddressSid=Sid"], "command line"],
    }


def test_an_explicit_config_replaces_the_working_directory_s(tmp_path, monkeypatch):
    other = write(tmp_path, "rate = 9\n", "cron.toml")
    report = run_create(tmp_path, monkeypatch, ["--config", "cron.toml"], {})
    assert report["rate"] == [9.0, f"file ({other})"]
    assert report["concurrency"] == [8, "default"]


def test_click_still_range_checks_values_from_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "concurrency = 1000\n")
    result = CliRunner().invoke(create, [])
    assert result.exit_code == 2
    assert "1000 is not in the range 1<=x<=256" in result.output


def test_a_bad_file_stops_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'auth_token = "s3cr3t"\n')
    result = CliRunner().invoke(create, [])
    assert result.exit_code == 2
    assert "credentials stay in the environment" in result.output
    assert "s3cr3t" not in result.output


# --- any value a file can hold -----------------------------------------------------------------

TOML_VALUES = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(
        st.from_regex(r"[A-Za-z]{1,8}", fullmatch=True), st.text(max_size=5), max_size=3
    ),
)


@settings(max_examples=100, deadline=None)
@given(setting=st.sampled_from(SETTINGS), value=TOML_VALUES)
def test_any_value_is_the_option_s_type_or_a_config_error(tmp_path_factory, setting, value):
    """Whatever a file holds, loading gives the option's type or one ConfigError, never a crash."""
    path = tmp_path_factory.getbasetemp() / CONFIG_NAME
    path.write_text(f"[create]\n{setting.name} = {toml_value(value)}\n", encoding="utf-8")
    if not fits(setting.kind, value):
        with pytest.raises(ConfigError, match=f"{setting.name!r} must be"):
            load_config(path, TABLES)
        return
    loaded = load_config(path, TABLES)[setting.dest]
    assert type(loaded) is (str if setting.kind is Path else setting.kind)


def fits(kind: type, value: object) -> bool:
    """The file's types each option takes: a number for a float, never a bool for a number."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    if kind is list:
        return isinstance(value, (list, dict))  # of texts: the strategy makes nothing else
    return isinstance(value, str if kind is Path else kind)


def toml_value(value: object) -> str:
    """The value as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # finite floats always show "." or "e", as TOML wants
    if isinstance(value, str):
        escaped = "".join(
            f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c
            for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


# --- a bad value names where it came from (the real command) ---------------------------------


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("command line", "'--concurrency'"),
        ("environment", "'--concurrency' from the environment (PROVISIONER_CONCURRENCY)"),
        ("file", "'--concurrency' from the file ({config})"),
    ],
)
def test_a_value_out_of_range_names_the_variable_or_the_file_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, hint: str
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write(tmp_path, "concurrency = 999\n" if source == "file" else "rate = 5\n")
    (tmp_path / "in.csv").write_text("AddressSid\nIG" + "1" * 32 + "\n")
    arguments = ["create", "in.csv", "--sandbox", "--out", str(tmp_path / "out")]
    if source == "command line":
        arguments += ["--concurrency", "999"]
    env = {"PROVISIONER_CONCURRENCY": "999" if source == "environment" else None}

    result = CliRunner(env=env).invoke(cli, arguments, obj=Runtime())

    assert result.exit_code == 2
    assert said(result.stderr) == [  # CliRunner calls the program `cli`
        f"error: Invalid value for {hint.format(config=config)}: 999 is not in the range "
        "1<=x<=256. (see cli create --help)"
    ]
    assert not (tmp_path / "out").exists()


# --- trust: a settings file decides where the credentials go ----------------------------------


def cli_in(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, *args: str, env: dict[str, str] | None = None
) -> Result:
    """The real CLI run in `workdir`, with exactly `env` as its environment (none by default)."""
    monkeypatch.chdir(workdir)
    for variable in [name for name in os.environ if name.startswith(("PROVISIONER_", "TWILIO_"))]:
        monkeypatch.delenv(variable)
    for variable, value in (env or {}).items():
        monkeypatch.setenv(variable, value)
    return CliRunner().invoke(cli, list(args), obj=Runtime(env=dict(env or {})))


def an_input(workdir: Path) -> Path:
    path = workdir / "in.csv"
    path.write_text(f"customer_id,AddressSid\nC1,{sid(1)}\n", encoding="utf-8")
    return path


TRUSTED = "[create]\nout = 'runs'\n"


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646, 0o620, 0o602, 0o1777 & 0o777])
@pytest.mark.parametrize("explicit", [False, True], ids=["./provisioner.toml", "--config"])
@pytest.mark.parametrize("command", ["create", "reconcile", "status"])
def test_a_settings_file_others_may_write_is_refused(
    tmp_path, monkeypatch, mode, explicit, command
):
    path = write(tmp_path, TRUSTED, "shared.toml" if explicit else CONFIG_NAME)
    path.chmod(mode)
    args = [command, *([str(an_input(tmp_path)), "--dry-run"] if command == "create" else [])]
    args += ["--config", str(path)] if explicit else []

    result = cli_in(tmp_path, monkeypatch, *args)

    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert str(path) in message
    assert f"mode {mode:04o}" in message
    assert "owner root" in message
    assert f"chmod go-w {path}" in message
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("command", ["create", "reconcile", "status"])
def test_a_settings_file_another_user_owns_is_refused(tmp_path, monkeypatch, command):
    path = write(tmp_path, TRUSTED)
    path.chmod(0o644)
    os.chown(path, OTHER_UID, -1)
    args = [command, *([str(an_input(tmp_path)), "--dry-run"] if command == "create" else [])]

    result = cli_in(tmp_path, monkeypatch, *args)

    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert str(path) in message
    assert f"owned by uid {OTHER_UID}" in message
    assert "mode 0644" in message
    assert "chmod go-w" in message
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640, 0o755, 0o400])
def test_a_settings_file_of_the_user_or_root_writable_by_its_owner_only_is_read(
    tmp_path, monkeypatch, mode
):
    path = write(tmp_path, TRUSTED)
    path.chmod(mode)
    assert os.stat(path).st_uid == os.getuid()  # the user running the tests (root counts too)

    result = cli_in(tmp_path, monkeypatch, "create", str(an_input(tmp_path)), "--dry-run")

    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs").is_dir()


def test_check_trusted_names_the_owner_by_name_when_it_has_one(tmp_path):
    path = write(tmp_path, TRUSTED)
    path.chmod(0o660)
    with pytest.raises(ConfigError) as error:
        check_trusted(path)
    assert f"owner {pwd.getpwuid(os.getuid()).pw_name}" in str(error.value)


# --- sources named: the first line shows what was typed, the rest says where it came from ---


def first_lines(result: Result) -> list[str]:
    """The lines for people before the run's column lines (what a run's start says)."""
    return [line for line in said(result.stderr) if not line.startswith("column ")][:6]


def test_an_endpoint_from_the_file_is_named_with_the_file_even_under_quiet(tmp_path, monkeypatch):
    path = write(tmp_path, "[create]\nbase_url = 'https://api.example.test'\nrate = 2\n")
    path.chmod(0o600)

    result = cli_in(
        tmp_path, monkeypatch, "create", str(an_input(tmp_path)), "--dry-run", "--quiet"
    )

    assert result.exit_code == 0, result.output
    lines = said(result.stderr)
    endpoint = [line for line in lines if line.startswith("endpoint:")]
    assert endpoint == [
        f"endpoint: --base-url https://api.example.test from the file ({path}); "
        "the credentials go there"
    ]
    assert not any(line.startswith("provisioner ") for line in lines)  # --quiet
    loud = cli_in(tmp_path, monkeypatch, "create", str(an_input(tmp_path)), "--dry-run")
    shown = first_lines(loud)
    assert shown[0].startswith("provisioner ")
    assert "--base-url" not in shown[0]
    assert "--rate" not in shown[0]
    assert f"settings from the file {path}: --rate 2.0" in shown
    assert endpoint[0] in shown


@pytest.mark.parametrize(
    ("variable", "flag"),
    [
        ("PROVISIONER_BASE_URL", "--base-url"),
        ("PROVISIONER_CONVERSATIONS_URL", "--conversations-url"),
    ],
)
@pytest.mark.parametrize("command", ["create", "reconcile"])
def test_an_endpoint_from_a_variable_is_named_with_the_variable(
    tmp_path, monkeypatch, variable, flag, command
):
    env = {
        variable: "https://api.example.test",
        "TWILIO_ACCOUNT_SID": "AC1",
        "TWILIO_AUTH_TOKEN": "t",
    }
    args = (
        [str(an_input(tmp_path)), "--dry-run", "--quiet"]
        if command == "create"
        else ["--out", "nowhere", "--rate", "0"]
    )
    if command == "reconcile":
        env.pop("TWILIO_AUTH_TOKEN")  # reconcile then stops at the credentials: nothing is sent

    result = cli_in(tmp_path, monkeypatch, command, *args, env=env)

    expected = (
        f"endpoint: {flag} https://api.example.test from the environment ({variable}); "
        "the credentials go there"
    )
    assert expected in said(result.stderr), result.output
    if command == "create":
        assert result.exit_code == 0


def test_a_region_from_the_environment_is_named_with_the_hosts_it_chose(tmp_path, monkeypatch):
    env = {"TWILIO_REGION": "ie1", "TWILIO_EDGE": "dublin"}
    result = cli_in(
        tmp_path, monkeypatch, "create", str(an_input(tmp_path)), "--dry-run", "--quiet", env=env
    )
    assert result.exit_code == 0, result.output
    assert (
        "endpoint: https://flex-api.dublin.ie1.twilio.com and "
        "https://conversations.dublin.ie1.twilio.com from the environment "
        "(TWILIO_REGION=ie1 TWILIO_EDGE=dublin); the credentials go there"
    ) in said(result.stderr)


def test_typed_endpoints_and_defaults_need_no_endpoint_line(tmp_path, monkeypatch):
    typed = cli_in(
        tmp_path, monkeypatch, "create", str(an_input(tmp_path)), "--dry-run",
        "--base-url", "https://api.example.test",
    )  # fmt: skip
    assert typed.exit_code == 0, typed.output
    lines = said(typed.stderr)
    assert "--base-url https://api.example.test" in lines[0]
    assert not any(line.startswith(("endpoint:", "settings from")) for line in lines)


# --- one mechanism for every command: [create] serves what reconcile and status share ---------

# A value for each option reconcile or status shares with create, as the file holds it and as
# the command then has it. A new shared option fails `test_every_shared_option_has_a_sample`
# until it has one here, so every shared option is proven below.
SAMPLES: dict[str, tuple[object, object]] = {
    "out_dir": ("elsewhere", Path("elsewhere")),
    "ledger_path": ("books/ledger.sqlite", Path("books/ledger.sqlite")),
    "columns": (["CustomerFriendlyName=Customer Name"], {"CustomerFriendlyName": "Customer Name"}),
    "encoding": ("cp1252", "cp1252"),
    "delimiter": (";", ";"),
    "sheet": ("Customers", "Customers"),
    "header_row": (3, 3),
    "base_url": ("http://127.0.0.1:9", "http://127.0.0.1:9"),
    "conversations_url": ("http://localhost:9", "http://localhost:9"),
    "timeout": (7, 7.0),
    "lookup_lag": (2.5, 2.5),
    "rate": (2, 2.0),
    "concurrency": (3, 3),
    "max_attempts": (2, 2),
}


def shared_settings(command: str) -> dict[str, Setting]:
    """The settings `command` takes from [create], derived from the commands' Click options."""
    tables = settings_tables()
    of_create = {setting.dest for setting in tables["create"]}
    return {
        setting.dest: setting
        for setting in tables[command]
        if setting.dest in of_create and setting.dest not in per_command()
    }


SHARED = [
    (command, dest) for command in ("reconcile", "status") for dest in shared_settings(command)
]


def context_of(
    command: str, workdir: Path, monkeypatch: pytest.MonkeyPatch, *args: str
) -> click.Context:
    """The command's parsed options, read in `workdir` as the CLI reads them (not run)."""
    monkeypatch.chdir(workdir)
    no_machine_settings(monkeypatch)
    return cli.commands[command].make_context(command, list(args), obj=Runtime(env={}))


def test_every_shared_option_has_a_sample():
    assert {dest for _, dest in SHARED} <= set(SAMPLES)
    assert {"out_dir", "ledger_path"} <= set(shared_settings("status"))
    assert {"out_dir", "base_url", "columns", "rate", "timeout"} <= set(
        shared_settings("reconcile")
    )


@pytest.mark.parametrize(("command", "dest"), SHARED)
def test_a_shared_option_set_only_in_create_serves_the_command(
    tmp_path, monkeypatch, command, dest
):
    setting = shared_settings(command)[dest]
    in_file, expected = SAMPLES[dest]
    write(tmp_path, f"[create]\n{setting.name} = {toml_value(in_file)}\n").chmod(0o600)

    ctx = context_of(command, tmp_path, monkeypatch)

    assert ctx.params[dest] == expected
    assert ctx.get_parameter_source(dest) is click.core.ParameterSource.DEFAULT_MAP


@pytest.mark.parametrize(("command", "dest"), SHARED)
def test_the_command_s_own_table_wins_over_create_s(tmp_path, monkeypatch, command, dest):
    setting = shared_settings(command)[dest]
    in_file, expected = SAMPLES[dest]
    text = f"[create]\n{setting.name} = {toml_value(in_file)}\n"
    other = {"out_dir": "mine", "ledger_path": "mine.sqlite", "base_url": "http://[::1]:8"}
    if dest in other:
        text += f"[{command}]\n{setting.name} = {toml_value(other[dest])}\n"
        expected = Path(other[dest]) if setting.kind is Path else other[dest]
    write(tmp_path, text).chmod(0o600)
    explicit = tmp_path / CONFIG_NAME

    ctx = context_of(command, tmp_path / "..", monkeypatch, "--config", str(explicit))

    assert ctx.params[dest] == expected


def test_create_s_own_printing_stays_create_s(tmp_path, monkeypatch):
    write(tmp_path, "[create]\njson = true\nout = 'runs'\n[status]\nruns = 3\n").chmod(0o600)

    status = context_of("status", tmp_path, monkeypatch)

    assert status.params["as_json"] is False  # `json` in [create] is create's --json
    assert (status.params["out_dir"], status.params["limit"]) == (Path("runs"), 3)
    create = context_of("create", tmp_path, monkeypatch, "in.csv")
    assert create.params["as_json"] is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[status]\nrate = 2\n", "unknown setting 'rate'"),
        ("[reconcile]\nforce = true\n", "unknown setting 'force'"),
        ("[reconcile]\nclose-duplicates = true\n", "unknown setting 'close-duplicates'"),
        ("reconcile = 1\n", "'reconcile' must be a table: [reconcile]"),
    ],
)
@pytest.mark.parametrize("command", ["status", "reconcile"])
def test_a_command_s_table_is_checked(tmp_path, monkeypatch, text, message, command):
    write(tmp_path, text).chmod(0o600)
    result = cli_in(tmp_path, monkeypatch, command)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())


def test_a_value_from_a_command_s_table_is_range_checked_as_typed(tmp_path, monkeypatch):
    write(tmp_path, "[status]\nruns = 0\n").chmod(0o600)
    result = cli_in(tmp_path, monkeypatch, "status")
    assert result.exit_code == 2, result.output
    assert "0 is not in the range" in result.stderr


def test_the_readme_s_cron_layout_serves_reconcile_and_status_in_the_same_folder(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """provisioner.toml with only [create] (out, base_url): reconcile and status, run in the
    same folder, use its ledger and its server."""
    emulator = provisioner.emulator
    workdir, data = tmp_path / "srv", tmp_path / "data"
    workdir.mkdir()
    config = f"[create]\nout = '{data}'\nbase_url = '{emulator.url}'\nrate = 0\nlookup_lag = 0\n"
    write(workdir, config).chmod(0o600)
    source = write_csv(workdir / "in.csv", CUSTOMER_HEADER, customers(3))
    env = provisioner.env()

    created = cli_in(workdir, monkeypatch, "create", str(source), "--run-id", "r1", env=env)
    assert created.exit_code == 0, created.output
    rows = read_csv(data / "r1" / "results.csv")
    with open_ledger(data / "ledger.sqlite", provisioner.scope) as ledger, ledger.transaction():
        ledger.mark_in_flight("C2", "killed", rows[1]["identity"])  # as a killed run leaves it

    status = cli_in(workdir, monkeypatch, "status", "--json", env=env)
    assert status.exit_code == 0, status.output
    shown = json.loads(status.stdout)
    assert shown["ledger"] == str(data / "ledger.sqlite")
    assert sum(shown["unsettled"].values()) == 1

    lookups = emulator.lookups
    settled = cli_in(workdir, monkeypatch, "reconcile", env=env)
    assert settled.exit_code == 0, settled.output
    assert emulator.lookups == lookups + 1  # C2, at the configured server
    (found,) = read_csv(next(data.glob("reconcile-*/reconcile.csv")))
    assert (found["row_key"], found["lookup"]) == ("C2", "found")
    assert found["conversation_sid"] == rows[1]["conversation_sid"]

    again = cli_in(workdir, monkeypatch, "reconcile", str(source), env=env)
    assert again.exit_code == 0, again.output
    assert emulator.lookups == lookups + 1 + 3  # every row of the input, at the same server
    assert not (workdir / "outputs").exists()  # nothing went to the default folder


def test_a_link_another_user_owns_is_refused_even_to_a_trusted_file(tmp_path, monkeypatch):
    target = write(tmp_path, TRUSTED, "mine.toml")
    target.chmod(0o600)
    link = tmp_path / CONFIG_NAME
    link.symlink_to(target)
    os.chown(link, OTHER_UID, -1, follow_symlinks=False)

    result = cli_in(tmp_path, monkeypatch, "status")

    assert result.exit_code == 2, result.output
    assert f"a symbolic link owned by uid {OTHER_UID}" in " ".join(result.stderr.split())
    followed = cli_in(tmp_path, monkeypatch, "status", "--config", str(target))
    assert "refused" not in followed.stderr


def test_the_shared_folder_s_file_from_the_issue_sends_nothing_to_its_host(
    provisioner: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder every user may write (1777) holding another user's provisioner.toml, writable
    by all, naming a host: the credentials never go there, quiet or not."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    their = write(shared, f"[create]\nbase_url = '{provisioner.emulator.url}'\n")
    their.chmod(0o666)
    os.chown(their, OTHER_UID, -1)
    source = write_csv(shared / "in.csv", CUSTOMER_HEADER, customers(2))

    for args in ([], ["--quiet"]):
        result = cli_in(shared, monkeypatch, "create", str(source), *args, env=provisioner.env())
        assert result.exit_code == 2, result.output
        assert f"owned by uid {OTHER_UID}" in " ".join(result.stderr.split())
    assert provisioner.emulator.requests == 0
    assert not (shared / "outputs").exists()


def test_a_base_url_from_the_environment_that_is_no_api_root_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text("AddressSid\nIG" + "1" * 32 + "\n")
    env = {"PROVISIONER_BASE_URL": "https://h/v2", "TWILIO_ACCOUNT_SID": "AC1"}

    result = CliRunner(env=env).invoke(
        cli, ["create", "in.csv", "--dry-run", "--out", str(tmp_path / "out")], obj=Runtime()
    )

    assert result.exit_code == 2
    (line,) = said(result.stderr)
    assert line.startswith("error:")
    assert "--base-url" in line  # the option, and the variable it came from
    assert "PROVISIONER_BASE_URL" in line
    assert not (tmp_path / "out").exists()
