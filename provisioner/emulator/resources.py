"""Twilio's Conversations JSON: a conversation, a participant's conversation, a page of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from provisioner.emulator.service import WebChat, WebChatService

PARTICIPANT_CONVERSATIONS_PATH = "/v1/ParticipantConversations"
CONVERSATIONS_PATH = "/v1/Conversations"
MAX_PAGE_SIZE = 50  # Twilio's default and maximum PageSize for this list
AFTER, BEFORE = "PA", "PB"  # page tokens: the page after / before the SID that follows them


def iso_date(seconds: float) -> str:
    """A time as Twilio writes it: ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conversation(chat: WebChat, service: WebChatService, root: str) -> dict[str, object]:
    """The Conversation resource, as GET or POST /v1/Conversations/{sid} answers it."""
    state, updated = service.state(chat.conversation_sid)
    url = f"{root}{CONVERSATIONS_PATH}/{chat.conversation_sid}"
    return {
        "account_sid": service.account_sid,
        "chat_service_sid": service.chat_service_sid,
        "messaging_service_sid": None,
        "sid": chat.conversation_sid,
        "friendly_name": chat.parameters.get("ChatFriendlyName"),
        "unique_name": None,
        "attributes": "{}",
        "state": state,
        "date_created": iso_date(chat.created_at),
        "date_updated": iso_date(updated),
        "timers": {},
        "url": url,
        "links": {"participants": f"{url}/Participants", "messages": f"{url}/Messages"},
        "bindings": None,
    }


def participant_conversation(
    chat: WebChat, service: WebChatService, root: str
) -> dict[str, object]:
    """One entry of GET /v1/ParticipantConversations."""
    state, updated = service.state(chat.conversation_sid)
    url = f"{root}{CONVERSATIONS_PATH}/{chat.conversation_sid}"
    return {
        "account_sid": service.account_sid,
        "chat_service_sid": service.chat_service_sid,
        "participant_sid": chat.participant_sid,
        "participant_user_sid": None,
        "participant_identity": chat.identity,
        "participant_messaging_binding": None,
        "conversation_sid": chat.conversation_sid,
        "conversation_unique_name": None,
        "conversation_friendly_name": chat.parameters.get("ChatFriendlyName"),
        "conversation_attributes": "{}",
        "conversation_date_created": iso_date(chat.created_at),
        "conversation_date_updated": iso_date(updated),
        "conversation_created_by": "system",
        "conversation_state": state,
        "conversation_timers": {},
        "links": {
            "participant": f"{url}/Participants/{chat.participant_sid}",
            "conversation": url,
        },
    }


@dataclass(frozen=True)
class PageAsked:
    """Which page of one identity's conversations a lookup asks for."""

    identity: str
    page_size: int = MAX_PAGE_SIZE
    page: int = 0
    token: str | None = None  # AFTER or BEFORE + a conversation SID


def page_asked(query: Mapping[str, str]) -> PageAsked | str:
    """The lookup's parameters, or what is wrong with them."""
    identity = query.get("Identity", "")
    if not identity:
        return "Missing required parameter Identity"
    try:
        page_size = int(query.get("PageSize", MAX_PAGE_SIZE))
        page = int(query.get("Page", 0))
    except ValueError:
        return "PageSize and Page must be whole numbers"
    token = query.get("PageToken") or None
    if page_size < 1 or page < 0:
        return "PageSize must be at least 1 and Page at least 0"
    if token is not None and token[:2] not in (AFTER, BEFORE):
        return f"Invalid PageToken {token!r}"
    return PageAsked(identity, min(page_size, MAX_PAGE_SIZE), page, token)


def _slice(chats: Sequence[WebChat], asked: PageAsked) -> list[WebChat]:
    # Tokens name a SID, not a position, so a conversation that appears meanwhile is not skipped.
    if asked.token is None:
        return list(chats[: asked.page_size])
    mark = asked.token[2:]
    if asked.token.startswith(AFTER):
        return [c for c in chats if c.conversation_sid > mark][: asked.page_size]
    before = [c for c in chats if c.conversation_sid < mark]
    return before[-asked.page_size :]


def page(
    chats: Sequence[WebChat],
    asked: PageAsked,
    root: str,
    render: Callable[[WebChat], dict[str, object]],
) -> dict[str, object]:
    """One page of a lookup's answer, with Twilio's `meta` and absolute page URLs."""
    shown = _slice(chats, asked)

    def url(number: int, token: str | None) -> str:
        query: dict[str, object] = {"Identity": asked.identity, "PageSize": asked.page_size}
        query["Page"] = number
        if token is not None:
            query["PageToken"] = token
        return f"{root}{PARTICIPANT_CONVERSATIONS_PATH}?{urlencode(query)}"

    more_after = bool(shown) and chats[-1].conversation_sid > shown[-1].conversation_sid
    more_before = bool(shown) and chats[0].conversation_sid < shown[0].conversation_sid
    return {
        "conversations": [render(chat) for chat in shown],
        "meta": {
            "page": asked.page,
            "page_size": asked.page_size,
            "first_page_url": url(0, None),
            "previous_page_url": (
                url(max(asked.page - 1, 0), BEFORE + shown[0].conversation_sid)
                if more_before
                else None
            ),
            "url": url(asked.page, asked.token),
            "next_page_url": (
                url(asked.page + 1, AFTER + shown[-1].conversation_sid) if more_after else None
            ),
            "key": "conversations",
        },
    }
