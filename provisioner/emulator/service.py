"""The web chat service the emulator plays: credentials, forms, creations, states, the index."""

from __future__ import annotations

import base64
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

SANDBOX_ACCOUNT_SID = "AC" + "0" * 32
FORM_TYPE = "application/x-www-form-urlencoded"
STATES = ("active", "inactive", "closed")  # a conversation's states, as Twilio names them
SID_BITS = 128  # a Twilio SID is two letters and 32 hex digits


@dataclass(frozen=True)
class WebChat:
    """One web chat the emulator created: a conversation with one participant."""

    conversation_sid: str
    identity: str
    parameters: Mapping[str, str]
    request_id: str
    participant_sid: str
    created_at: float  # seconds since the epoch, on the service's clock


def is_form(content_type: str) -> bool:
    """True for the form encoding Twilio's POSTs take."""
    return content_type.split(";")[0].strip().lower() == FORM_TYPE


def parse_form(body: bytes) -> dict[str, str] | None:
    """The form's fields (the last value of a repeated one); None when it is not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return {key: values[-1] for key, values in parse_qs(text, keep_blank_values=True).items()}


class Ids:
    """Twilio-shaped ids (`CH` + 32 hex, ...), from a seeded generator so tests can repeat them."""

    def __init__(self, seed: int | None) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def make(self, prefix: str) -> str:
        """A new id with this prefix."""
        with self._lock:
            return f"{prefix}{self._random.getrandbits(SID_BITS):032x}"


class WebChatService:
    """The account: its credentials, the web chats created, their states, the participant index."""

    def __init__(
        self,
        username: str,
        secret: str,
        *,
        ids: Ids,
        lookup_lag: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.username = username
        self.secret = secret
        self.lookup_lag = lookup_lag  # seconds before a new conversation shows in the index
        self.ids = ids
        self.unknown_addresses: set[str] = set()
        self.created: list[WebChat] = []  # in order of creation; tests may clear it
        # Web chats of the website's visitors (emulator/visitors.py): on the account, in the
        # index under their own identities, but never among `created`, the batch's creations.
        self.visitor_chats: list[WebChat] = []
        self.chat_service_sid = ids.make("IS")
        self._clock = clock
        self._by_identity: dict[str, list[WebChat]] = {}
        self._by_sid: dict[str, WebChat] = {}
        self._states: dict[str, tuple[str, float]] = {}  # sid -> (state, when it was set)
        self._lock = threading.Lock()

    @property
    def account_sid(self) -> str:
        """The account the credentials belong to (an API key's account is the sandbox's)."""
        return self.username if self.username.startswith("AC") else SANDBOX_ACCOUNT_SID

    def authorized(self, authorization: str | None) -> bool:
        """True when the Basic credentials are this account's."""
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        username, _, password = decoded.partition(":")
        return secrets.compare_digest(username.encode(), self.username.encode()) and (
            secrets.compare_digest(password.encode(), self.secret.encode())
        )

    def create(self, form: Mapping[str, str], request_id: str, *, visitor: bool = False) -> WebChat:
        """Create a web chat: a conversation whose participant has the form's Identity
        (`visitor`: a website visitor's, kept out of `created`)."""
        chat = WebChat(
            conversation_sid=self.ids.make("CH"),
            identity=form.get("Identity") or self.ids.make(""),
            parameters=dict(form),
            request_id=request_id,
            participant_sid=self.ids.make("MB"),
            created_at=self._clock(),
        )
        with self._lock:
            (self.visitor_chats if visitor else self.created).append(chat)
            self._by_identity.setdefault(chat.identity, []).append(chat)
            self._by_sid[chat.conversation_sid] = chat
            self._states[chat.conversation_sid] = ("active", chat.created_at)
        return chat

    def conversations_for(self, identity: str) -> list[WebChat]:
        """Every web chat created for `identity`, visible in the index yet or not."""
        with self._lock:
            return list(self._by_identity.get(identity, ()))

    def visible(self, identity: str) -> list[WebChat]:
        """What the index shows for `identity` now, sorted by conversation SID as Twilio sorts."""
        shown_before = self._clock() - self.lookup_lag
        chats = [c for c in self.conversations_for(identity) if c.created_at <= shown_before]
        return sorted(chats, key=lambda chat: chat.conversation_sid)

    def find(self, conversation_sid: str) -> WebChat | None:
        """The web chat whose conversation has this SID."""
        with self._lock:
            return self._by_sid.get(conversation_sid)

    def state(self, conversation_sid: str) -> tuple[str, float]:
        """A conversation's state and when it was set."""
        with self._lock:
            return self._states[conversation_sid]

    def set_state(self, conversation_sid: str, state: str) -> None:
        """Change a conversation's state (to `closed`, when a duplicate is closed)."""
        with self._lock:
            self._states[conversation_sid] = (state, self._clock())

    @property
    def closed(self) -> set[str]:
        """SIDs of the conversations now closed."""
        with self._lock:
            return {sid for sid, (state, _) in self._states.items() if state == "closed"}
