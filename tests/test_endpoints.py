"""endpoints.py: where the APIs are (roots, the ledger's scope), proxies and loopback, checked
before anything is sent. Examples of each refusal are in test_client.py; here the properties
that hold for any input."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from provisioner.endpoints import (
    api_roots,
    create_endpoint,
    is_loopback,
    proxy_for,
    resolve_base_url,
    resolve_conversations_url,
    scope_of,
)
from provisioner.errors import ConfigError
from provisioner.options import Endpoints

ACCOUNT = "AC" + "0" * 32
MESSAGE_LIMIT = 400  # characters: a refused value is quoted bounded (120), with the advice


@pytest.mark.parametrize(
    "spelling",
    [
        "https://flex-api.twilio.com",
        "https://FLEX-API.twilio.com/",
        "HTTPS://flex-api.twilio.com:443",
        "  https://flex-api.Twilio.com:443//  ",
    ],
)
def test_one_host_however_spelt_is_one_ledger_scope(spelling: str) -> None:
    assert scope_of(ACCOUNT, resolve_base_url(spelling, {})) == f"{ACCOUNT}@flex-api.twilio.com"


def test_another_port_or_account_is_another_scope() -> None:
    root = resolve_base_url("https://flex-api.twilio.com", {})
    other_port = resolve_base_url("https://flex-api.twilio.com:8443", {})
    assert scope_of(ACCOUNT, root) != scope_of(ACCOUNT, other_port)
    assert scope_of(ACCOUNT, root) != scope_of("AC" + "1" * 32, root)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("localhost.example.com", False),
        ("flex-api.twilio.com", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_conversations_root_follows_the_base_url_unless_given() -> None:
    env = {"TWILIO_REGION": "ie1"}
    assert resolve_conversations_url(None, None, env) == "https://conversations.ie1.twilio.com"
    assert resolve_conversations_url(None, "http://127.0.0.1:9/", env) == "http://127.0.0.1:9"
    given_root = resolve_conversations_url("https://c.example", "http://127.0.0.1:9", env)
    assert given_root == "https://c.example"


def test_api_roots_are_those_given_else_the_region_s() -> None:
    env = {"TWILIO_REGION": "ie1"}
    assert api_roots(Endpoints(), env) == Endpoints(
        base_url="https://flex-api.ie1.twilio.com",
        conversations_url="https://conversations.ie1.twilio.com",
    )
    given_base = api_roots(Endpoints(base_url="http://127.0.0.1:9"), env)
    assert given_base == Endpoints(
        base_url="http://127.0.0.1:9", conversations_url="http://127.0.0.1:9"
    )


def test_a_create_without_credentials_goes_on_only_as_a_dry_run_or_in_the_sandbox() -> None:
    given = Endpoints(base_url="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="TWILIO_"):
        create_endpoint(given, {}, sandbox=False, dry_run=False)
    roots, credentials = create_endpoint(given, {}, sandbox=False, dry_run=True)
    assert (roots.base_url, credentials) == ("http://127.0.0.1:9", None)
    # The sandbox's emulator brings its own roots and credentials, whatever was given.
    assert create_endpoint(given, {}, sandbox=True, dry_run=False) == (Endpoints(), None)


def test_a_create_with_credentials_sends_them_to_the_roots() -> None:
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": "token"}
    roots, credentials = create_endpoint(Endpoints(), env, sandbox=False, dry_run=True)
    assert roots.base_url == "https://flex-api.twilio.com"
    assert credentials is not None
    assert credentials.account == ACCOUNT


# ---------------------------------------------------------------- proxies


def test_lower_case_proxy_variables_win_and_all_proxy_is_the_fallback() -> None:
    url = "https://flex-api.twilio.com"
    both = {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:1"}
    assert proxy_for(url, both) == "http://lower:1"
    assert proxy_for(url, {"ALL_PROXY": "http://all:1"}) == "http://all:1"
    assert proxy_for(url, {"HTTP_PROXY": "http://plain:1"}) is None  # for http:// URLs only
    assert proxy_for("http://flex-api.example.test", {"HTTP_PROXY": "http://plain:1"}) == (
        "http://plain:1"
    )


def test_a_proxy_given_as_host_and_port_is_an_http_proxy() -> None:
    assert proxy_for("https://flex-api.twilio.com", {"HTTPS_PROXY": "proxy:3128"}) == (
        "http://proxy:3128"
    )


def test_a_refused_proxy_with_credentials_never_shows_them() -> None:
    with pytest.raises(ConfigError) as raised:
        proxy_for("https://flex-api.twilio.com", {"HTTPS_PROXY": "socks5://u:pw-in-proxy@p:1"})
    assert "HTTPS_PROXY" in str(raised.value)
    assert "pw-in-proxy" not in str(raised.value)


# ---------------------------------------------------------------- any input


URLS = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, user, host, port, rest: f"{scheme}://{user}{host}{port}{rest}",
        st.sampled_from(["http", "https", "HTTPS", "ftp", ""]),
        st.sampled_from(["", "user@", "user:pw-in-url@"]),
        st.sampled_from(["flex-api.twilio.com", "127.0.0.1", "localhost", "[::1]", "h", ""]),
        st.sampled_from(["", ":443", ":8765", ":0", ":99999", ":x", ":"]),
        st.sampled_from(["", "/", "//", "/v2", "?x=1", "#f", " ", "\n"]),
    ),
)


@given(URLS)
@example("https://user:pw-in-url@flex-api.twilio.com")
@example("https://" + "a" * 5000 + ".example")
@example("https://[")  # a bracketed host that is no IPv6 address
@example("http://[x]:8765")
def test_a_root_is_a_fixed_point_or_one_bounded_configuration_error(url: str) -> None:
    try:
        root, message = resolve_base_url(url, {}), ""
    except ConfigError as error:
        root, message = "", str(error)

    if root:
        assert resolve_base_url(root, {}) == root  # normalised once and for all
        assert "@" not in root
        assert root.startswith(("https://", "http://"))
    else:
        assert message.startswith("--base-url")
        if "@" in url:  # credentials in a URL are never quoted back
            assert "pw-in-url" not in message
        assert "\n" not in message
        assert len(message) <= MESSAGE_LIMIT


@given(
    st.dictionaries(
        st.sampled_from(["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"]),
        st.text(max_size=40),
    ),
    st.sampled_from(["https://flex-api.twilio.com", "https://10.1.2.3:8443", "http://[::1]:9"]),
)
@example({"HTTPS_PROXY": "["}, "https://flex-api.twilio.com")
@example({"HTTPS_PROXY": "http://[x]:3128"}, "https://flex-api.twilio.com")
def test_proxy_settings_of_any_text_give_a_proxy_none_or_a_configuration_error(
    env: dict[str, str], url: str
) -> None:
    try:
        proxy, message = proxy_for(url, env), ""
    except ConfigError as error:
        proxy, message = None, str(error)

    assert proxy is None or proxy.startswith(("http://", "https://"))
    assert "\n" not in message
