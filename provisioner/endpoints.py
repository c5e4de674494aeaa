"""Where the Twilio APIs are and how we authenticate: credentials, roots, proxies, CA.

Configuration only, checked before anything is sent: every problem is a ConfigError that
names the option or variable and never shows a secret.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from provisioner.attempts import CONTROL_CHARACTERS
from provisioner.errors import ConfigError, ProvisionerError
from provisioner.options import Endpoints

CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
_LABEL = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*", re.ASCII)
DEFAULT_PORTS = {"http": 80, "https": 443}
# The two ways to authenticate, as every message and help text names them (one home: an API
# key needs the account's SID too, since the ledger belongs to the account, not the key).
CREDENTIAL_VARIABLES = (
    "TWILIO_ACCOUNT_SID + TWILIO_AUTH_TOKEN, "
    "or TWILIO_API_KEY + TWILIO_API_SECRET + TWILIO_ACCOUNT_SID"
)
# The variables that choose Twilio's hosts, as Twilio's SDK reads them, when no root is given.
REGION_VARIABLES = ("TWILIO_REGION", "TWILIO_EDGE")
MAX_PORT = 65535
_DNS_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"  # `_` too: some internal hosts have it
# An API root's host and port: a DNS name (or IPv4 address), or an IPv6 address in brackets;
# the port is checked for its range apart, to say so.
_NETLOC = re.compile(
    rf"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?))"
    r"(?::(?P<port>[^:\[\]]*))?",
    re.ASCII | re.IGNORECASE,
)


@dataclass(frozen=True)
class Credentials:
    """HTTP Basic credentials; the secret never appears in repr, logs or tracebacks."""

    username: str
    secret: str = field(repr=False)
    account: str

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, can_rehearse: bool = False) -> Credentials:
        """Account SID + Auth Token, or API Key + Secret, from the environment; when none are
        set, the error offers --sandbox if the command has it (`can_rehearse`)."""
        account = env.get("TWILIO_ACCOUNT_SID", "").strip()
        token = env.get("TWILIO_AUTH_TOKEN", "").strip()
        key = env.get("TWILIO_API_KEY", "").strip()
        key_secret = env.get("TWILIO_API_SECRET", "").strip()
        if key and key_secret:
            _check_basic("TWILIO_API_KEY", key, username=True)
            _check_basic("TWILIO_API_SECRET", key_secret, username=False)
            if not account:
                # The ledger belongs to the account: a key alone would tie it to the key, and
                # a rotated key would then create every customer's web chat again.
                raise ConfigError(
                    "TWILIO_ACCOUNT_SID is not set: with TWILIO_API_KEY and TWILIO_API_SECRET, "
                    "set TWILIO_ACCOUNT_SID too (the account the key belongs to)"
                )
            return cls(key, key_secret, account)
        if account and token:
            _check_basic("TWILIO_ACCOUNT_SID", account, username=True)
            _check_basic("TWILIO_AUTH_TOKEN", token, username=False)
            return cls(account, token, account)
        pairs = (
            ("TWILIO_ACCOUNT_SID", account, "TWILIO_AUTH_TOKEN", token),
            ("TWILIO_API_KEY", key, "TWILIO_API_SECRET", key_secret),
        )
        for first, first_value, second, second_value in pairs:
            if bool(first_value) != bool(second_value):
                missing, present = (second, first) if first_value else (first, second)
                raise ConfigError(
                    f"{missing} is not set ({present} is): set it too, or use the other way "
                    f"({CREDENTIAL_VARIABLES})"
                )
        rehearse = " (or rehearse with --sandbox)" if can_rehearse else ""
        raise ConfigError(f"no Twilio credentials: set {CREDENTIAL_VARIABLES}{rehearse}")


def _check_basic(name: str, value: str, *, username: bool) -> None:
    """Refuse what HTTP Basic auth cannot carry; the message never shows the characters."""
    if not value.isascii():
        raise ConfigError(
            f"{name} contains characters that are not ASCII (Twilio credentials are letters "
            "and digits): copy it again from the Twilio Console"
        )
    if CONTROL_CHARACTERS.search(value):
        raise ConfigError(
            f"{name} contains a control character (a line break or a tab?): "
            "copy it again from the Twilio Console"
        )
    if username and ":" in value:
        raise ConfigError(f"{name} contains ':', which HTTP Basic auth cannot carry in a name")


def resolve_base_url(explicit: str | None, env: Mapping[str, str]) -> str:
    """The Flex API root: explicit, else built from TWILIO_REGION/TWILIO_EDGE as the SDK does."""
    if explicit:  # from --base-url, PROVISIONER_BASE_URL or a settings file: Click reads them
        return _checked_root(explicit, "--base-url")
    return _twilio_root("flex-api", env)


def resolve_conversations_url(
    explicit: str | None, base_url_given: str | None, env: Mapping[str, str]
) -> str:
    """The Conversations root: explicit, else the --base-url given, else Twilio's for the region."""
    if explicit:
        return _checked_root(explicit, "--conversations-url")
    if base_url_given:
        return _checked_root(base_url_given, "--base-url")
    return _twilio_root("conversations", env)


def api_roots(given: Endpoints, env: Mapping[str, str]) -> Endpoints:
    """The Flex and Conversations API roots: given ("" where not), from the environment, or
    Twilio's."""
    return Endpoints(
        base_url=resolve_base_url(given.base_url, env),
        conversations_url=resolve_conversations_url(given.conversations_url, given.base_url, env),
    )


def create_endpoint(
    given: Endpoints, env: Mapping[str, str], *, sandbox: bool, dry_run: bool
) -> tuple[Endpoints, Credentials | None]:
    """Where a create sends, and with which credentials: nowhere outside for --sandbox (its
    emulator brings its own roots and credentials); a dry run goes on without credentials."""
    if sandbox:
        return Endpoints(), None
    roots = api_roots(given, env)
    try:
        return roots, Credentials.from_env(env, can_rehearse=True)
    except ProvisionerError:
        if not dry_run:
            raise
    return roots, None


def _twilio_root(product: str, env: Mapping[str, str]) -> str:
    region = env.get("TWILIO_REGION", "").strip().lower()
    edge = env.get("TWILIO_EDGE", "").strip().lower()
    for name, value, example in (("TWILIO_REGION", region, "ie1"), ("TWILIO_EDGE", edge, "dublin")):
        if value and not _LABEL.fullmatch(value):
            raise ConfigError(
                f"{name} {_shown(value)}: expected a Twilio {name[7:].lower()} "
                f"such as {example}, or unset it"
            )
    if edge and not region:
        region = "us1"  # as the SDK does: an edge alone means the US region
    return "https://" + ".".join([product, *(p for p in (edge, region) if p), "twilio", "com"])


def _checked_root(url: str, option: str) -> str:
    """`api_root(url)`, its refusal naming the option or variable it came from."""
    try:
        return api_root(url)
    except ConfigError as error:
        raise ConfigError(f"{option} {error}") from None


def api_root(url: str) -> str:
    """An API root as the requests will use it (scheme, host, port), or a ConfigError saying
    why `url` cannot be one; the message starts with the URL as given, one line, bounded."""
    text = url.strip()
    expected = "expected https://HOST[:PORT]"
    if CONTROL_CHARACTERS.search(text) or " " in text:
        raise ConfigError(f"(the URL contains spaces or control characters): {expected}")
    if "@" in text:  # wherever it is (no scheme: "AC1:token@host"), never quoted back
        raise ConfigError(
            "(a URL with a user name or password): remove them (credentials "
            "come only from the TWILIO_* variables)"
        )
    try:
        split = urlsplit(text.rstrip("/"))
    except ValueError:  # a bracketed host that is no IPv6 address: "https://[", "http://[x]"
        raise ConfigError(f"{_shown(text)}: not a valid host; {expected}") from None
    scheme = split.scheme.lower()
    if scheme not in ("http", "https") or not split.netloc:
        raise ConfigError(f"{_shown(text)}: {expected}")
    if split.query or split.fragment or "?" in text or "#" in text:
        raise ConfigError(f"{_shown(text)}: remove the query string or fragment; {expected}")
    if split.path:
        raise ConfigError(
            f"{_shown(text)}: give the root only, without a path ({_shown(split.path)}); {expected}"
        )
    host, port = _host_and_port(split.netloc, text)
    if scheme == "http" and not is_loopback(host):
        raise ConfigError(
            f"{_shown(text)}: plain http is allowed only to a loopback host "
            "(credentials must never cross a network in clear); use https://"
        )
    shown_host = f"[{host}]" if ":" in host else host
    if port is None or DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{shown_host}"
    return f"{scheme}://{shown_host}:{port}"


def _host_and_port(netloc: str, text: str) -> tuple[str, int | None]:
    """The host (lower case, an IPv6 address without its brackets) and port of `netloc`;
    refused unless the host is a DNS name, an IPv4 address or a bracketed IPv6 address."""
    match = _NETLOC.fullmatch(netloc)
    if match is None:
        raise ConfigError(
            f"{_shown(text)}: not a valid host (a DNS name, an IPv4 address, or an IPv6 "
            "address in brackets, then :PORT if any; a non-ASCII name in its xn-- form)"
        )
    host = (match["ipv6"] or match["name"]).lower()
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{_shown(text)}: {_shown(host)} is not an IPv6 address") from None
    if match["port"] is None:
        return host, None
    digits = match["port"]
    numeric = digits.isascii() and digits.isdigit() and len(digits) <= len(str(MAX_PORT))
    if not (numeric and 1 <= int(digits) <= MAX_PORT):
        raise ConfigError(f"{_shown(text)}: the port must be a number from 1 to {MAX_PORT}")
    return host, int(digits)


def scope_of(account: str, base_url: str) -> str:
    """What the ledger's entries belong to: an account on an API host (the same host however
    it is spelt: case and the default port do not matter)."""
    return f"{account}@{urlsplit(base_url).netloc}"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def proxy_for(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy for requests to `url` from HTTPS_PROXY/HTTP_PROXY/ALL_PROXY and NO_PROXY."""
    split = urlsplit(url)
    host = (split.hostname or "").lower()
    if not host or is_loopback(host):
        return None  # as Go does: a proxy's own loopback is not ours, nor a place for secrets
    scheme = split.scheme.lower()
    no_proxy = env.get("no_proxy", "").strip() or env.get("NO_PROXY", "").strip()
    if no_proxy and _bypassed(host, split.port or DEFAULT_PORTS.get(scheme, 0), no_proxy):
        return None
    for lower in (f"{scheme}_proxy", "all_proxy"):
        for name in (lower, lower.upper()):  # lower case wins, as in curl and urllib
            value = env.get(name, "").strip()
            if value:
                return _checked_proxy(value, name)
    return None


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """NO_PROXY as curl reads it: `*`, domains (with subdomains), host:port, IPs and CIDRs."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    for raw_entry in re.split(r"[,\s]+", no_proxy.lower()):
        entry = raw_entry.strip()
        if entry == "*":
            return True
        entry_port: int | None = None
        if entry.count(":") == 1:
            entry, _, port_text = entry.partition(":")
            # ASCII digits only, and few: str.isdigit() takes `²`, which int() refuses.
            numeric = port_text.isascii() and port_text.isdigit()
            entry_port = (
                int(port_text) if numeric and len(port_text) <= len(str(MAX_PORT)) else None
            )
        entry = entry.strip("[]").removeprefix("*").lstrip(".")
        if not entry or (entry_port is not None and entry_port != port):
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if host == entry or host.endswith("." + entry):
            return True
    return False


def _checked_proxy(value: str, name: str) -> str:
    url = value if "://" in value else "http://" + value  # as requests reads "host:port"
    shown = _shown(value) if "@" not in value else "(a URL with credentials)"
    expected = "expected http://HOST:PORT (only http and https proxies work)"
    try:
        split = urlsplit(url)
    except ValueError:  # a bracketed host that is no IPv6 address
        raise ConfigError(f"{name} {shown}: {expected}") from None
    if split.scheme.lower() not in ("http", "https") or not split.hostname:
        raise ConfigError(f"{name} {shown}: {expected}")
    try:
        split.port  # noqa: B018  (raises for an impossible port)
    except ValueError:
        raise ConfigError(f"{name}: the proxy's port must be a number from 1 to 65535") from None
    return url


def ca_bundle(env: Mapping[str, str]) -> str | bool:
    """The CA certificates to trust: REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, SSL_CERT_FILE/DIR."""
    for name in CA_BUNDLE_VARIABLES:
        path = env.get(name, "").strip()
        if not path:
            continue
        try:
            if os.path.isdir(path):
                ssl.create_default_context(capath=path)
            else:
                ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError, ValueError) as error:
            reason = "no such file" if isinstance(error, FileNotFoundError) else "not readable"
            if isinstance(error, ssl.SSLError):
                reason = "not a PEM file of CA certificates"
            raise ConfigError(
                f"{name}={_shown(path)}: {reason}; point it at the PEM file of the CA "
                "certificates your network uses, or unset it"
            ) from None
        return path
    return True


def _shown(text: str) -> str:
    """A configuration value as a message may quote it: one line, bounded."""
    cleaned = CONTROL_CHARACTERS.sub(" ", text)
    return cleaned if len(cleaned) <= 120 else cleaned[:117] + "..."
