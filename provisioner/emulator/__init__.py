"""A local emulator of Twilio's web chat and conversation APIs, for --sandbox, rehearsals and tests.

- `service`: the account: credentials, forms, the web chats created, their states, the index.
- `faults`: what goes wrong on purpose: scripted and random faults, a rate limit, a concurrency cap.
- `resources`: Twilio's Conversations JSON and its pages.
- `routes`: which request goes where, and the order of the checks it meets.
- `handler` and `server`: the socket, its threads, the answers record; `Emulator` ties it together.
- `process`: the emulator as a process of its own (`serve_until_stopped`, `spawn`).
"""

from provisioner.emulator.answers import Answer, Drop, Reply
from provisioner.emulator.faults import ConcurrencyCap, Fault, FaultPlan, TokenBucket
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

__all__ = [
    "SANDBOX_ACCOUNT_SID",
    "STANDALONE_SECRET",
    "Answer",
    "ConcurrencyCap",
    "Drop",
    "Emulator",
    "EmulatorError",
    "EmulatorProcess",
    "Fault",
    "FaultPlan",
    "Recorded",
    "Reply",
    "TokenBucket",
    "WebChat",
    "WebChatService",
    "serve_until_stopped",
    "spawn",
    "standalone_credentials",
    "summary",
]
