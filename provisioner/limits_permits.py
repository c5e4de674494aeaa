"""A request's way through the account's limits, as the values each step hands on: booked
(`Booking`), sent (`Permit`), answered (`Answer`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Answer(Enum):
    """What came back for one request, as far as the account's limits are concerned."""

    ACCEPTED = "accepted"  # any HTTP answer but 429
    THROTTLED = "throttled"  # 429
    NO_ANSWER = "no_answer"  # a transport failure: says nothing about the account's limits


@dataclass(frozen=True)
class Booking:
    """A concurrency slot held and a rate slot booked, not yet sent."""

    start: float  # when the request may be sent
    epoch: int  # the schedule's pause count when booked: a pause since voids the booking
    queued: bool  # it waited for its slot, not for a pause: the rate held it back
    number: int = 0  # which booking it is: a lower concurrency limit voids the latest at once


@dataclass(frozen=True)
class Permit:
    """A request being sent: when, and how many were in flight with it (itself included)."""

    sent_at: float
    in_flight: int
