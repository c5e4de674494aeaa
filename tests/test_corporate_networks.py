"""What corporate machines have: HTTPS_PROXY and NO_PROXY, a CA bundle, a ~/.netrc."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from click.testing import Result

from provisioner.ledger_runs import read_status
from tests.conftest import (
    CUSTOMER_HEADER,
    SECRET,
    Cli,
    customers,
    write_csv,
)
from tests.hostile import (
    HostileServer,
    Reply,
    created,
    hostile_server,  # noqa: F401  (the `hostile` fixture)
    web_chat_sid,
)
from tests.run_checks import (
    FAR_HOST,
    against,
    assert_no_secret,
    check_run,
    create_on,
    error_lines,
    no_secret_in_any_file,  # noqa: F401  (autouse: no secret in any file a test leaves)
    posts,
    refused_names,  # noqa: F401  (the `no_names` fixture)
)

NETWORK_SETTINGS: dict[str, tuple[dict[str, str], str, str]] = {
    # name: (environment added, the variable the message names, what it must not show)
    "https-proxy-not-http": (
        {"HTTPS_PROXY": "socks5://u:proxy-pass-word@127.0.0.1:1"},
        "HTTPS_PROXY",
        "proxy-pass-word",
    ),
    "https-proxy-impossible-port": ({"HTTPS_PROXY": "http://127.0.0.1:99999"}, "HTTPS_PROXY", ""),
    "https-proxy-unclosed-bracket": ({"HTTPS_PROXY": "http://[::1"}, "HTTPS_PROXY", ""),
    "ca-bundle-missing": ({"REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem"}, "REQUESTS_CA_BUNDLE", ""),
    "ca-bundle-not-pem": ({"SSL_CERT_FILE": "/etc/hostname"}, "SSL_CERT_FILE", ""),
}


def _refused_network_setting(
    provisioner: Cli, tmp_path: Path, environment: dict[str, str]
) -> Result:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(2))
    return provisioner(
        "create",
        str(source),
        "--run-id",
        "r1",
        "--base-url",
        f"https://{FAR_HOST}",
        env=provisioner.env(**environment),
        base_url=False,
        expect=2,
    )


@pytest.mark.parametrize(
    ("environment", "named", "hidden"), NETWORK_SETTINGS.values(), ids=NETWORK_SETTINGS.keys()
)
def test_an_unusable_proxy_or_ca_bundle_is_one_error_line_and_nothing_sent(
    provisioner: Cli,
    tmp_path: Path,
    no_names: list[str],
    environment: dict[str, str],
    named: str,
    hidden: str,
) -> None:
    result = _refused_network_setting(provisioner, tmp_path, environment)

    (message,) = error_lines(result)
    assert named in message
    assert "Traceback" not in result.output
    if hidden:
        assert hidden not in result.output
    assert FAR_HOST not in no_names  # nothing was sent anywhere
    ledger = provisioner.out / "ledger.sqlite"
    if ledger.exists():
        assert read_status(ledger).unsettled == {}
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


@pytest.mark.parametrize("environment", [NETWORK_SETTINGS["ca-bundle-missing"][0]])
def test_an_unusable_proxy_or_ca_bundle_leaves_no_run_folder(
    provisioner: Cli, tmp_path: Path, no_names: list[str], environment: dict[str, str]
) -> None:
    _refused_network_setting(provisioner, tmp_path, environment)

    assert not provisioner.run_dir("r1").exists()


@pytest.mark.parametrize(
    ("no_proxy", "proxied"),
    [
        ("", True),
        ("other.test", True),
        ("example.test", False),
        (".example.test", False),
        ("other.test, flex-api.example.test", False),
        ("*", False),
    ],
)
def test_https_proxy_is_used_for_an_https_root_and_no_proxy_honoured(
    provisioner: Cli, tmp_path: Path, no_names: list[str], no_proxy: str, proxied: bool
) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))
    with HostileServer(default=Reply(502, b"", ())) as proxy:
        environment = {"HTTPS_PROXY": proxy.url, **({"NO_PROXY": no_proxy} if no_proxy else {})}
        result = provisioner(
            "create",
            str(source),
            "--run-id",
            "r1",
            "--base-url",
            f"https://{FAR_HOST}",
            "--max-attempts",
            "2",
            env=provisioner.env(**environment),
            base_url=False,
            expect=1,
        )
        received = proxy.received

    (row,) = check_run(provisioner.run_dir("r1"), rows=1, exit_code=1)
    assert row["status"] == "failed"
    assert "Traceback" not in result.output
    if proxied:
        assert [(r.method, r.target) for r in received] == [("CONNECT", f"{FAR_HOST}:443")] * 2
        assert all(r.header("Authorization") is None for r in received)  # only inside the tunnel
        assert row["error_code"] == "proxy_failed"
        assert "proxy" in row["error_message"]
        assert FAR_HOST not in no_names  # the proxy resolves the name, not us
    else:
        assert received == []
        assert FAR_HOST in no_names  # went direct (and the guard refused the name)
        assert row["error_code"] == "connection_failed"
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)


def test_a_netrc_never_replaces_the_credentials(
    provisioner: Cli, hostile: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(
        "machine 127.0.0.1 login intruder password netrc-password\n"
        "default login intruder password netrc-password\n"
    )
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(netrc))
    against(hostile, created(web_chat_sid(1)))
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))

    result = create_on(provisioner, hostile, source, expect=0)

    (row,) = check_run(provisioner.run_dir("r1"), rows=1, exit_code=0)
    assert row["status"] == "created"
    (request,) = posts(hostile)
    basic = base64.b64encode(f"{provisioner.emulator.username}:{SECRET}".encode()).decode()
    assert request.header("Authorization") == f"Basic {basic}"
    assert "netrc-password" not in result.output
    assert_no_secret(provisioner.emulator.username, [result.output], provisioner.out)
