"""The Flex API over HTTP: where it is, how we authenticate, and what one POST came to."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NameResolutionError, NewConnectionError

from provisioner import __version__
from provisioner.errors import ConfigError

WEB_CHATS_PATH = "/v2/WebChats"
USER_AGENT = f"provisioner/{__version__} (python-requests/{requests.__version__})"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
CREDENTIALS_REJECTED = frozenset({401, 403})


@dataclass(frozen=True)
class Credentials:
    """HTTP Basic credentials; the secret never appears in repr, logs or tracebacks."""

    username: str
    secret: str = field(repr=False)
    account: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Credentials:
        """Account SID + Auth Token, or API Key + Secret, from the environment."""
        account = env.get("TWILIO_ACCOUNT_SID", "").strip()
        token = env.get("TWILIO_AUTH_TOKEN", "").strip()
        key = env.get("TWILIO_API_KEY", "").strip()
        key_secret = env.get("TWILIO_API_SECRET", "").strip()
        if key and key_secret:
            return cls(key, key_secret, account or key)
        if account and token:
            return cls(account, token, account)
        raise ConfigError(
            "no Twilio credentials: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, "
            "or TWILIO_API_KEY and TWILIO_API_SECRET (or rehearse with --sandbox)"
        )


def resolve_base_url(explicit: str | None, env: Mapping[str, str]) -> str:
    """The API root: explicit, else built from TWILIO_REGION/TWILIO_EDGE as the SDK builds it."""
    url = explicit or env.get("PROVISIONER_BASE_URL") or ""
    if not url:
        region = env.get("TWILIO_REGION", "").strip()
        edge = env.get("TWILIO_EDGE", "").strip()
        if edge and not region:
            region = "us1"
        parts = ["flex-api", *(p for p in (edge, region) if p), "twilio", "com"]
        url = "https://" + ".".join(parts)
    url = url.rstrip("/")
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ConfigError(f"--base-url {url}: expected https://HOST[:PORT]")
    if split.scheme == "http" and not is_loopback(split.hostname):
        raise ConfigError(
            f"--base-url {url}: plain http is allowed only to a loopback host "
            "(credentials must never cross a network in clear); use https://"
        )
    return url


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Attempt:
    """What one POST came to: a web chat, a Twilio error, or a transport failure."""

    http_status: int | None = None
    conversation_sid: str = ""
    identity: str = ""
    request_id: str = ""
    error_code: str = ""
    error_message: str = ""
    retry_after: float | None = None
    ambiguous: bool = False  # the request may have reached Twilio and created a web chat

    @property
    def created(self) -> bool:
        """Twilio created the web chat."""
        return self.http_status is not None and 200 <= self.http_status < 300

    @property
    def retryable(self) -> bool:
        """Twilio's guidance: retry 429, 500, 502, 503, 504 and failed connections."""
        return self.http_status is None or self.http_status in RETRYABLE_STATUSES

    @property
    def credentials_rejected(self) -> bool:
        """401 or 403: every further request would fail the same way."""
        return self.http_status in CREDENTIALS_REJECTED


class FlexClient:
    """Creates web chats over one pooled, kept-alive HTTP session."""

    def __init__(
        self, base_url: str, credentials: Credentials, *, timeout: float, pool_size: int
    ) -> None:
        self.url = base_url + WEB_CHATS_PATH
        self.timeout = timeout
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.auth = (credentials.username, credentials.secret)
        self._session.trust_env = False  # no .netrc or proxy settings override our auth
        self._session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})

    def create_web_chat(self, parameters: Mapping[str, str]) -> Attempt:
        """POST one web chat; every outcome, failures included, comes back as an Attempt."""
        try:
            response = self._session.post(self.url, data=dict(parameters), timeout=self.timeout)
        except requests.exceptions.ConnectTimeout as error:
            return Attempt(error_code="connect_timeout", error_message=_describe(error))
        except requests.exceptions.ReadTimeout:
            return Attempt(
                error_code="timeout",
                error_message=f"no answer within {self.timeout:g}s; the web chat may exist",
                ambiguous=True,
            )
        except requests.exceptions.ConnectionError as error:
            if _never_connected(error):
                return Attempt(error_code="connection_failed", error_message=_describe(error))
            return Attempt(
                error_code="connection_lost",
                error_message=f"connection lost after sending; the web chat may exist "
                f"({_describe(error)})",
                ambiguous=True,
            )
        except requests.exceptions.RequestException as error:
            return Attempt(
                error_code="request_failed", error_message=_describe(error), ambiguous=True
            )
        return _attempt_from(response)

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()


def _attempt_from(response: requests.Response) -> Attempt:
    request_id = response.headers.get("Twilio-Request-Id", "")
    body = _json_object(response)
    if 200 <= response.status_code < 300:
        conversation_sid = body.get("conversation_sid")
        identity = body.get("identity")
        return Attempt(
            http_status=response.status_code,
            conversation_sid=conversation_sid if isinstance(conversation_sid, str) else "",
            identity=identity if isinstance(identity, str) else "",
            request_id=request_id,
            error_message=""
            if conversation_sid
            else "created, but the answer had no conversation_sid",
        )
    code = body.get("code")
    message = body.get("message")
    more_info = body.get("more_info")
    text = message if isinstance(message, str) and message else response.reason or "error"
    if isinstance(more_info, str) and more_info:
        text = f"{text} ({more_info})"
    return Attempt(
        http_status=response.status_code,
        request_id=request_id,
        error_code=str(code) if isinstance(code, (int, str)) and code != "" else "",
        error_message=text,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def _json_object(response: requests.Response) -> dict[str, object]:
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _never_connected(error: requests.exceptions.ConnectionError) -> bool:
    """True when the failure happened before any byte of the request left."""
    cause: BaseException | None = error
    for _ in range(10):  # causes chain through urllib3's wrappers; never loop forever
        if cause is None:
            break
        if isinstance(cause, (NewConnectionError, NameResolutionError, ConnectionRefusedError)):
            return True
        reason = getattr(cause, "reason", None)
        cause = reason if isinstance(reason, BaseException) else cause.__context__
    return False


def _describe(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:297] + "..."
