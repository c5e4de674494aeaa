"""An option, variable or credential that cannot be used: one `error:` line, exit 2, nothing
sent, no host looked up, no run folder, the ledger untouched, the bad value never echoed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.ledger_runs import read_status
from tests.conftest import (
    CUSTOMER_HEADER,
    Cli,
    customers,
    write_csv,
)
from tests.run_checks import (
    assert_no_secret,
    error_lines,
    no_secret_in_any_file,  # noqa: F401  (autouse: no secret in any file a test leaves)
    refused_names,  # noqa: F401  (the `no_names` fixture)
)

NOT_LATIN_1 = "s3cr3t-t\u00f6k\u00e9n-\u20ac-\u2713"  # characters Basic auth cannot carry
WITH_CONTROL = "s3cr3t-tok\x07en-bell"
BAD_SETTINGS: dict[str, tuple[list[str], dict[str, str], str, str]] = {
    # name: (arguments, environment added, what the message names (| between alternatives),
    # what it must not show)
    "timeout-nan": (["--timeout", "nan"], {}, "--timeout", ""),
    "timeout-inf": (["--timeout", "inf"], {}, "--timeout", ""),
    "timeout-nan-from-env": (
        [],
        {"PROVISIONER_TIMEOUT": "nan"},
        "PROVISIONER_TIMEOUT|--timeout",
        "",
    ),
    "rate-nan": (["--rate", "nan"], {}, "--rate", ""),
    "rate-inf": (["--rate", "inf"], {}, "--rate", ""),
    "lookup-lag-nan": (["--lookup-lag", "nan"], {}, "--lookup-lag", ""),
    "delimiter-two-characters": (["--delimiter", ";;"], {}, "--delimiter", ""),
    "encoding-unknown": (["--encoding", "nope"], {}, "--encoding", ""),
    "base-url-with-user-info": (
        ["--base-url", "https://user:hunter2pw@flex-api.twilio.com"],
        {},
        "--base-url",
        "hunter2pw",
    ),
    "base-url-with-query": (["--base-url", "https://h.example?x=1"], {}, "--base-url", ""),
    "base-url-unclosed-bracket": (["--base-url", "https://["], {}, "--base-url", ""),
    "base-url-without-scheme-with-user-info": (
        ["--base-url", "AC1:hunter2pw@flex-api.twilio.com"],
        {},
        "--base-url",
        "hunter2pw",
    ),
    "base-url-impossible-port": (["--base-url", "https://h.example:99999"], {}, "--base-url", ""),
    "base-url-from-env-with-user-info": (
        [],
        {"PROVISIONER_BASE_URL": "https://u:hunter2pw@flex-api.twilio.com"},
        "PROVISIONER_BASE_URL|--base-url",  # the variable, or the option it sets
        "hunter2pw",
    ),
    "token-not-latin-1": ([], {"TWILIO_AUTH_TOKEN": NOT_LATIN_1}, "TWILIO_AUTH_TOKEN", NOT_LATIN_1),
    "token-with-a-control-character": (
        [],
        {"TWILIO_AUTH_TOKEN": WITH_CONTROL},
        "TWILIO_AUTH_TOKEN",
        WITH_CONTROL,
    ),
    "api-secret-with-a-line-break": (
        [],
        {"TWILIO_API_KEY": "SK" + "1" * 32, "TWILIO_API_SECRET": "abc\ndef-key-secret"},
        "TWILIO_API_SECRET",
        "def-key-secret",
    ),
    "account-sid-not-latin-1": (
        [],
        {"TWILIO_ACCOUNT_SID": "AC\u0416" + "0" * 31},
        "TWILIO_ACCOUNT_SID",
        "",
    ),
}


@pytest.mark.parametrize(
    ("arguments", "environment", "named", "hidden"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys()
)
def test_an_unusable_setting_is_one_error_line_exit_2_and_nothing_sent_or_marked(
    provisioner: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_names: list[str],
    arguments: list[str],
    environment: dict[str, str],
    named: str,
    hidden: str,
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    provisioner("create", str(source), "--run-id", "r0", expect=0)  # an earlier run's ledger
    before = provisioner.emulator.requests
    no_names.clear()
    for name, value in environment.items():
        if name.startswith("PROVISIONER_"):  # Click reads options' variables from os.environ
            monkeypatch.setenv(name, value)

    has_base_url = "--base-url" in arguments or "PROVISIONER_BASE_URL" in environment
    result = provisioner(
        "create",
        str(source),
        "--run-id",
        "r1",
        *arguments,
        *([] if has_base_url else ["--base-url", provisioner.emulator.url]),
        env=provisioner.env(**environment),
        base_url=False,
        expect=2,
    )

    (message,) = error_lines(result)
    assert any(name in message for name in named.split("|")), result.stderr
    assert "Traceback" not in result.output
    if hidden:
        assert hidden not in result.output
        unusual = {char for char in hidden if not char.isascii() or not char.isprintable()}
        assert not unusual & set(result.output.replace("\n", "")), unusual
        assert_no_secret(provisioner.emulator.username, [], provisioner.out, secret=hidden)
    assert provisioner.emulator.requests == before
    assert no_names == []  # no host was even looked up: nothing went anywhere
    assert not provisioner.run_dir("r1").exists()
    ledger = read_status(provisioner.out / "ledger.sqlite")
    assert ledger.unsettled == {}  # nothing in flight
    assert [run.run_id for run in ledger.runs] == ["r0"]
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)
