"""Which request goes where, and the checks each meets in Twilio's order."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from provisioner.emulator import resources
from provisioner.emulator.answers import (
    AUTHENTICATE,
    BAD_REQUEST,
    METHOD_NOT_ALLOWED,
    MISSING_ADDRESS_SID,
    NOT_FOUND,
    TOO_MANY_REQUESTS,
    UNSUPPORTED_MEDIA_TYPE,
    Answer,
    Drop,
    Reply,
    ok,
    twilio_error,
)
from provisioner.emulator.faults import Fault, FaultPlan
from provisioner.emulator.service import STATES, WebChat, WebChatService, is_form, parse_form

WEB_CHATS_PATH = "/v2/WebChats"
CREATE, LOOKUP, CLOSE, OTHER = "create", "lookup", "close", "other"  # kinds of request
HOLD_LIMIT = 30.0  # seconds a held request waits at most: a test that forgets it cannot hang
HOST = re.compile(r"[A-Za-z0-9.:\[\]-]{1,300}")  # a Host header fit to build a URL on


@dataclass(frozen=True)
class Request:
    """One HTTP request as the handler read it."""

    method: str
    target: str  # the path and query as sent
    authorization: str | None = None
    content_type: str = ""
    body: bytes = b""
    host: str | None = None  # the Host header

    @property
    def path(self) -> str:
        """The target without its query."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        """The query's fields (the last value of a repeated one)."""
        fields = parse_qs(urlsplit(self.target).query, keep_blank_values=True)
        return {key: values[-1] for key, values in fields.items()}


def kind_of(path: str) -> str:
    """Which endpoint a path names (OTHER for none)."""
    if path == WEB_CHATS_PATH:
        return CREATE
    if path == resources.PARTICIPANT_CONVERSATIONS_PATH:
        return LOOKUP
    prefix, _, sid = path.rpartition("/")
    return CLOSE if prefix == resources.CONVERSATIONS_PATH and sid else OTHER


METHODS = {CREATE: "POST", LOOKUP: "GET", CLOSE: "POST"}


class Routes:
    """Turns a request into an answer: auth, the concurrency cap, faults, then the service."""

    def __init__(
        self,
        service: WebChatService,
        plan: FaultPlan,
        root: str,
        *,
        latency: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.service = service
        self.plan = plan
        self.root = root  # the emulator's own URL, for the absolute URLs in answers
        self.latency = latency  # seconds before each successful answer
        self.received: Counter[str] = Counter()
        self._sleep = sleep
        self._lock = threading.Lock()

    def request_id(self) -> str:
        """A new Twilio-Request-Id."""
        return self.service.ids.make("RQ")

    def root_for(self, request: Request) -> str:
        """The root as this client reached it (localhost or 127.0.0.1), for the URLs answered."""
        if request.host and HOST.fullmatch(request.host):
            return f"http://{request.host}"
        return self.root

    def answer(self, request: Request) -> tuple[str, Answer]:
        """The kind of request and what it gets."""
        request_id = self.request_id()
        kind = kind_of(request.path)
        if kind == OTHER:
            message = f"The requested resource {request.path} was not found"
            return kind, twilio_error(404, NOT_FOUND, message, request_id)
        if request.method != METHODS[kind]:
            return kind, twilio_error(405, METHOD_NOT_ALLOWED, "Method not allowed", request_id)
        with self._lock:
            self.received[kind] += 1
        if not self.service.authorized(request.authorization):
            return kind, twilio_error(401, AUTHENTICATE, "Authenticate", request_id)
        conversations = kind != CREATE  # lookups and closes are the Conversations API's
        if not self.plan.admit(conversations):  # Twilio documents no Retry-After for this one
            message = "Too many concurrent requests"
            return kind, twilio_error(429, TOO_MANY_REQUESTS, message, request_id)
        try:
            serve = {CREATE: self._create, LOOKUP: self._lookup, CLOSE: self._close}[kind]
            return kind, serve(request, request_id)
        finally:
            self.plan.release(conversations)

    def _create(self, request: Request, request_id: str) -> Answer:
        form = _form(request, request_id)
        if isinstance(form, Reply):
            return form
        address = form.get("AddressSid", "")
        fault, throttled = self.plan.for_create(address)
        if fault is not None:
            faulted = self._meet(fault, request_id, lambda: self.service.create(form, request_id))
            if faulted is not None:
                return faulted
        if throttled:
            headers = {"Retry-After": "1"}
            return twilio_error(429, TOO_MANY_REQUESTS, "Too many requests", request_id, headers)
        if not address:
            message = "Missing required parameter AddressSid in the post body"
            return twilio_error(400, MISSING_ADDRESS_SID, message, request_id)
        if address in self.service.unknown_addresses:
            message = f"The requested resource {WEB_CHATS_PATH} was not found"
            return twilio_error(404, NOT_FOUND, message, request_id)
        self._wait()
        return _created(self.service.create(form, request_id), request_id)

    def _lookup(self, request: Request, request_id: str) -> Answer:
        asked = resources.page_asked(request.query)
        if isinstance(asked, str):
            return twilio_error(400, BAD_REQUEST, asked, request_id)
        fault = self.plan.for_lookup(asked.identity)
        faulted = self._meet(fault, request_id) if fault is not None else None
        if faulted is not None:
            return faulted
        self._wait()
        root = self.root_for(request)

        def render(chat: WebChat) -> dict[str, object]:
            return resources.participant_conversation(chat, self.service, root)

        shown = self.service.visible(asked.identity)
        return ok(200, resources.page(shown, asked, root, render), request_id)

    def _close(self, request: Request, request_id: str) -> Answer:
        form = _form(request, request_id)
        if isinstance(form, Reply):
            return form
        chat = self.service.find(request.path.rpartition("/")[2])
        if chat is None:
            message = f"The requested resource {request.path} was not found"
            return twilio_error(404, NOT_FOUND, message, request_id)
        state = form.get("State")
        if state is not None and state not in STATES:
            message = f"Invalid State {state!r}: one of {', '.join(STATES)}"
            return twilio_error(400, BAD_REQUEST, message, request_id)
        self._wait()
        if state is not None:
            self.service.set_state(chat.conversation_sid, state)
        body = resources.conversation(chat, self.service, self.root_for(request))
        return ok(200, body, request_id)

    def _meet(
        self, fault: Fault, request_id: str, create: Callable[[], WebChat] | None = None
    ) -> Answer | None:
        """What a fault does to a request; None when the request then goes on as usual."""
        if fault.delay:
            self._sleep(fault.delay)
        if fault.hold is not None:
            fault.hold.wait(HOLD_LIMIT)
        chat = create() if fault.create and create is not None else None
        if fault.drop:
            return Drop()
        if fault.status is None:
            # A fault that created the web chat answers for it; else the request goes on.
            return None if chat is None else _created(chat, request_id)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        code = fault.code or fault.status * 100
        return twilio_error(fault.status, code, "Scripted fault", request_id, headers)

    def _wait(self) -> None:
        if self.latency:
            self._sleep(self.latency)


def _form(request: Request, request_id: str) -> dict[str, str] | Reply:
    if not is_form(request.content_type):
        return twilio_error(415, UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type", request_id)
    form = parse_form(request.body)
    if form is None:
        return twilio_error(400, BAD_REQUEST, "The body is not UTF-8 form data", request_id)
    return form


def _created(chat: WebChat, request_id: str) -> Answer:
    """Twilio's 201 for a new web chat."""
    body = {"conversation_sid": chat.conversation_sid, "identity": chat.identity}
    return ok(201, body, request_id)
