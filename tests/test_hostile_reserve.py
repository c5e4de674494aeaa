"""Hostile cases for --reserve and the yield to other traffic (issue 21), found by attacking it.

Simulated accounts (test_limits.py's harness: no thread, no sleep) for the model; the real CLI
on loopback for what an operator sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli import cli
from provisioner.emulator import TokenBucket
from provisioner.limits_model import LimitsState
from provisioner.report import learnt_options
from provisioner.runtime import Runtime
from provisioner.summary import ConcurrencyLimits, Rate
from tests.conftest import CUSTOMER_HEADER, customers, read_summary, write_csv
from tests.test_limits import Account, Reply, simulate

LATENCY = (0.3, 0.3)  # Twilio's usual answer time


@dataclass
class CapRaisedMidRun(Account):
    """A new account's cap of one in flight, raised (Twilio's support did) at `raised_at`."""

    raised_at: float = 60.0
    raised_to: int = 8

    def handle(self, now: float) -> Reply:
        if now >= self.raised_at:
            self.cap = self.raised_to
        return super().handle(now)


@pytest.mark.parametrize("reserve", [0.0, 1.0])
def test_a_cap_of_one_raised_mid_run_is_found_again_with_a_reserve_too(reserve: float) -> None:
    # A cap of one cannot be shared, so no slot is kept free under it: trying one more in flight
    # now and then takes nothing from a live chat, and finds the raised cap.
    account = CapRaisedMidRun(cap=1, rate_limit=5.0, latency=LATENCY)

    run = simulate(account, 5.0, 8, 1200.0, reserve=reserve)

    state = run.limits.state()
    assert state.cap != 1
    assert max(level for at, level in run.sends if at >= 900.0) >= 2
    assert run.throughput(since=900.0) >= 0.95 * (5.0 - reserve)


def test_a_cap_of_one_that_stays_costs_ever_rarer_tries_with_a_reserve() -> None:
    account = Account(cap=1, rate_limit=5.0, latency=LATENCY)

    run = simulate(account, 5.0, 8, 600.0, reserve=1.0)

    assert len(run.throttled) <= 4  # the first, then tries ever further apart
    assert run.limits.state().cap == 1  # still said to people
    assert run.throughput() >= 0.95 * (1 / 0.3)


@pytest.mark.parametrize("rate", [0.5, 0.9])
def test_a_token_bucket_under_one_a_second_still_takes_a_request_once_it_refilled(
    rate: float,
) -> None:
    # `provisioner emulator --rate-limit 0.5`, or the sandbox of `--rate 0.9 --sandbox-live-rate`:
    # a burst of `rate` tokens never holds a whole one, and every request was refused.
    now = 0.0
    bucket = TokenBucket(rate, lambda: now)
    taken = []
    for step in range(40):
        now = step * 0.25
        taken.append(bucket.take())

    assert sum(taken) == pytest.approx(rate * 10.0, abs=1.0)


def test_a_slow_sandbox_rehearsal_creates_every_row(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(3))
    arguments = ["create", str(source), "--sandbox", "--out", str(tmp_path / "out")]
    arguments += ["--rate", "0.9", "--reserve", "0", "--sandbox-live-rate", "0.001"]

    result = CliRunner().invoke(cli, arguments, obj=Runtime(env={}), catch_exceptions=False)

    assert result.exit_code == 0, result.output
    (run_dir,) = [path for path in (tmp_path / "out").iterdir() if path.is_dir()]
    assert read_summary(run_dir)["counts"]["created"] == 3


def advice_of(account: Account, duration: float, seed: int = 1) -> list[str]:
    """What the end of a run at the defaults (--rate 5, --reserve 1) advises passing next time."""
    state = simulate(account, 5.0, 8, duration, seed=seed, reserve=1.0).limits.state()
    return learnt_options(Rate.of(state, 5.0), ConcurrencyLimits())


def test_a_run_started_in_a_busy_hour_never_advises_a_lower_rate() -> None:
    # Twilio's 5/s account with visitors at 2/s from the first second, a two-minute batch.
    busy = Account(rate_limit=5.0, latency=LATENCY, visitors=((0.0, 2.0),), seed=7)

    advice = advice_of(busy, 120.0, seed=0)

    assert "--rate" not in advice


def test_a_reserve_exactly_half_a_request_below_the_rate_is_taken(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(1))
    arguments = ["create", str(source), "--dry-run", "--out", str(tmp_path / "out")]
    arguments += ["--rate", "0.7", "--reserve", "0.2"]  # the README: at least 0.5 below --rate

    result = CliRunner().invoke(cli, arguments, obj=Runtime(env={}), catch_exceptions=False)

    assert result.exit_code == 0, result.output


def concurrency_advice(state: LimitsState, asked: int) -> list[str]:
    """What the end of a run advises passing next time for the concurrency."""
    return learnt_options(Rate(), ConcurrencyLimits.of(state, asked))


# (visitors a second, seed): busy starts in which the visitors' 429 to a request sent with two
# in flight, before two were ever accepted, was taken for a cap of one (found by scanning seeds).
BUSY_STARTS = [(2.5, 3), (1.5, 3), (2.0, 27), (2.5, 27), (3.0, 30), (3.0, 38)]


@pytest.mark.parametrize(("visitors", "seed"), BUSY_STARTS)
def test_an_account_with_no_cap_in_flight_is_not_said_to_allow_one(
    visitors: float, seed: int
) -> None:
    # Twilio's 5/s with 300 ms answers and visitors from the first second: a rate limit, and no
    # cap (seen for real: create --sandbox --sandbox-live-rate 2.5, whose emulator has no cap).
    account = Account(rate_limit=5.0, latency=LATENCY, visitors=((0.0, visitors),), seed=10)

    run = simulate(account, 5.0, 8, 110.0, seed=seed, reserve=1.0)

    state = run.limits.state()
    assert state.cap != 1  # no warning of a cap of one, in the run, summary or report
    assert concurrency_advice(state, 8) == []  # no --concurrency 1 advised
    assert state.concurrency >= 2  # not held to one: two in flight are tried again, soon
    assert state.lowest_concurrency == 1  # it was doubted, for a few seconds


def test_a_real_cap_of_one_on_a_shared_account_is_told_within_seconds_for_one_429_more() -> None:
    # A new account (5/s, 1 in flight, 300 ms answers), alone, at the defaults (--reserve 1).
    account = Account(cap=1, rate_limit=5.0, latency=LATENCY)

    first = simulate(account, 5.0, 8, 2.0, reserve=1.0)
    told = simulate(account, 5.0, 8, 10.0, reserve=1.0)
    run = simulate(account, 5.0, 8, 120.0, reserve=1.0)

    assert len(first.throttled) == 1
    assert first.limits.state().cap is None  # one 429 is doubted: not told yet
    assert first.limits.state().concurrency == 1  # but one in flight meanwhile
    assert told.limits.state().cap == 1  # the try at two was refused too: told within seconds
    assert len(told.throttled) == 2
    assert len(run.throttled) == 2  # then tries as rare as without a reserve
    assert concurrency_advice(run.limits.state(), 8) == ["--concurrency", "1"]
    assert run.throughput() >= 0.9 * (1 / 0.3)
