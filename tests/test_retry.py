"""The retry policy, the limits' slot booking, and the client's small parsers."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from provisioner.attempts import Attempt, parse_retry_after
from provisioner.endpoints import Credentials, resolve_base_url
from provisioner.errors import ConfigError
from provisioner.limits import AccountLimits
from provisioner.limits_permits import Answer
from provisioner.limits_rate import SEND_JITTER_MARGIN
from provisioner.retry import retry_policy


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sleeping(clock: FakeClock) -> Callable[[float], None]:
    """A sleep that moves the fake clock instead of waiting."""

    def sleep(seconds: float) -> None:
        clock.now += max(seconds, 0.0)

    return sleep


def send_times(limits: AccountLimits, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        permit = limits.acquire(sleeping(clock), threading.Event())
        assert permit is not None
        times.append(clock.now)
        limits.release(permit, Answer.ACCEPTED, 0.01, None)
    return times


def most_in_one_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def test_the_rate_is_kept_in_every_one_second_window() -> None:
    clock = FakeClock()
    times = send_times(AccountLimits(10.0, 1, clock), clock, 200)

    assert most_in_one_second(times) <= 10
    assert times[-1] - times[0] == pytest.approx(199 * (1 + SEND_JITTER_MARGIN) / 10)


def test_slots_are_shared_by_threads_without_overlap() -> None:
    clock = FakeClock()
    limits = AccountLimits(50.0, 8, clock)
    waits: list[float] = []
    lock = threading.Lock()

    def send_many() -> None:
        for _ in range(100):
            asked: list[float] = []
            permit = limits.acquire(asked.append, threading.Event())
            assert permit is not None
            with lock:
                waits.append(sum(asked))
            limits.release(permit, Answer.ACCEPTED, 0.01, None)

    threads = [threading.Thread(target=send_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(round(w, 6) for w in waits) == [
        round(n * (1 + SEND_JITTER_MARGIN) / 50, 6) for n in range(800)
    ]


def test_the_retry_policy_waits_until_the_accounts_pause_ends() -> None:
    sleeps: list[float] = []
    answers = iter([Attempt(http_status=429, retry_after=12.0), Attempt(http_status=201)])

    policy = retry_policy(
        5, sleeps.append, threading.Event(), source=random.Random(SEED), pause_left=lambda: 12.0
    )
    last = policy(lambda: next(answers))

    assert last.created
    assert sleeps == [12.0]  # the pause, longer than the first backoff (at most 0.5 s)


def test_the_retry_policy_leaves_retry_after_to_the_accounts_pause() -> None:
    """The account's limits decide what of a Retry-After is honoured, once for all rows."""
    sleeps: list[float] = []
    answers = iter([Attempt(http_status=429, retry_after=12.0), Attempt(http_status=201)])

    policy = retry_policy(5, sleeps.append, threading.Event(), source=random.Random(SEED))
    policy(lambda: next(answers))

    assert sleeps == expected_waits(SEED, 1)  # the backoff alone: no pause was set


SEED = 8  # any fixed seed: the policy and the expectation draw the same jitter from it
ATTEMPTS = 9  # enough tries that the last waits reach the 30 s cap (0.5 * 2**6 = 32)


def expected_waits(seed: int, count: int) -> list[float]:
    """Full jitter as documented: uniform in [0, min(30, 0.5 * 2**(n-1))], at least 0.25 s."""
    source = random.Random(seed)
    return [
        max(0.25, source.uniform(0, min(30.0, 0.5 * 2 ** (n - 1)))) for n in range(1, count + 1)
    ]


def test_the_retry_policy_backs_off_exponentially_and_stops() -> None:
    sleeps: list[float] = []
    calls = []

    def failing() -> Attempt:
        calls.append(1)
        return Attempt(http_status=503)

    policy = retry_policy(ATTEMPTS, sleeps.append, threading.Event(), source=random.Random(SEED))
    last = policy(failing)

    assert last.http_status == 503
    assert len(calls) == ATTEMPTS
    assert len(sleeps) == ATTEMPTS - 1
    assert all(0.25 <= s <= 30 for s in sleeps)
    assert sleeps == expected_waits(SEED, ATTEMPTS - 1)
    assert len(set(sleeps)) == len(sleeps)  # a constant wait could not pass


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 422])
def test_client_errors_are_never_retried(status: int) -> None:
    calls = []

    def refused() -> Attempt:
        calls.append(1)
        return Attempt(http_status=status)

    retry_policy(5, lambda s: None, threading.Event())(refused)

    assert len(calls) == 1


def test_retry_after_as_seconds_or_http_date() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    in_a_minute = format_datetime(now + timedelta(seconds=60), usegmt=True)
    assert parse_retry_after(in_a_minute, now=now.timestamp()) == pytest.approx(60)


@pytest.mark.parametrize(
    ("given", "env", "url"),
    [
        (None, {}, "https://flex-api.twilio.com"),
        (None, {"TWILIO_REGION": "ie1"}, "https://flex-api.ie1.twilio.com"),
        (
            None,
            {"TWILIO_REGION": "au1", "TWILIO_EDGE": "sydney"},
            "https://flex-api.sydney.au1.twilio.com",
        ),
        (None, {"TWILIO_EDGE": "dublin"}, "https://flex-api.dublin.us1.twilio.com"),
        # --base-url, however given (PROVISIONER_BASE_URL and the settings file reach it
        # through Click, tested in test_config): the region is not asked.
        ("http://127.0.0.1:8765/", {"TWILIO_REGION": "ie1"}, "http://127.0.0.1:8765"),
        ("http://[::1]:8765", {}, "http://[::1]:8765"),
    ],
)
def test_base_url_as_the_sdk_builds_it(given: str | None, env: dict[str, str], url: str) -> None:
    assert resolve_base_url(given, env) == url


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8765", "ftp://flex-api.twilio.com", "flex-api.twilio.com"]
)
def test_base_urls_that_would_leak_credentials_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        resolve_base_url(url, {})


def test_credentials_never_show_their_secret() -> None:
    credentials = Credentials.from_env(
        {"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "hunter2"}
    )
    assert "hunter2" not in repr(credentials)
    assert "hunter2" not in str(credentials)
