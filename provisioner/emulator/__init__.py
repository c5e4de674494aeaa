"""A local emulator of Twilio's web chat and conversation APIs, for --sandbox, rehearsals and tests.

- `service`: the account: credentials, forms, the web chats created, their states, the index.
- `faults`: what goes wrong on purpose: scripted and random faults, a rate limit, a concurrency cap.
- `visitors`: the website's visitors on the same account, for rehearsing a run in opening hours.
- `resources`: Twilio's Conversations JSON and its pages.
- `routes`: which request goes where, and the order of the checks it meets.
- `handler` and `server`: the socket, its threads and open connections, the answers record;
  `Emulator` ties it together.
- `process`: the emulator as a process of its own (`serve_until_stopped`, `spawn`).
"""

from provisioner.emulator.answers import Answer, Drop, Reply
from provisioner.emulator.faults import ConcurrencyCap, Fault, FaultPlan, Limit, TokenBucket
from provisioner.emulator.process import (
    STANDALONE_SECRET,
    EmulatorError,
    EmulatorProcess,
    serve_until_stopped,
    spawn,
    standalone_credentials,
    summary,
)
from provisioner.emulator.server import Emulator, Recorded
from provisioner.emulator.service import SANDBOX_ACCOUNT_SID, WebChat, WebChatService
from provisioner.emulator.visitors import VISITOR_PREFIX, Visit, VisitorCounts, Visitors

__all__ = [
    "SANDBOX_ACCOUNT_SID",
    "STANDALONE_SECRET",
    "VISITOR_PREFIX",
    "Answer",
    "ConcurrencyCap",
    "Drop",
    "Emulator",
    "EmulatorError",
    "EmulatorProcess",
    "Fault",
    "FaultPlan",
    "Limit",
    "Recorded",
    "Reply",
    "TokenBucket",
    "Visit",
    "VisitorCounts",
    "Visitors",
    "WebChat",
    "WebChatService",
    "serve_until_stopped",
    "spawn",
    "standalone_credentials",
    "summary",
]
