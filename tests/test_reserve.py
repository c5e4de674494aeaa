"""--reserve and other traffic on the account (issue 21): the option, what a run says and writes.

The model itself (how the run yields) is simulated in test_limits.py; here the real CLI runs
against the emulator on loopback, and the summary's other traffic is turned into lines, advice
and report.html as people see them.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from provisioner.emulator import Emulator
from provisioner.limits_timeline import TimelinePoint
from provisioner.report import (
    ONE_IN_FLIGHT,
    end_of_run,
    learnt_options,
    other_traffic_line,
    shared_rate_line,
    status_counts,
)
from provisioner.report_html import render_report
from provisioner.summary import ConcurrencyLimits, OtherTrafficSpell, Rate
from provisioner.vocabulary import Status
from tests.conftest import (
    CUSTOMER_HEADER,
    SECRET,
    Cli,
    Sleeps,
    customers,
    read_summary,
    said,
    write_csv,
)
from tests.summaries import summary_of
from tests.test_report import a_summary

ROWS = 6


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    write_csv(path, CUSTOMER_HEADER, customers(ROWS))
    return path


def only_run_dir(provisioner: Cli) -> Path:
    (run_dir,) = [path for path in provisioner.out.iterdir() if path.is_dir()]
    return run_dir


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--reserve", "5"], {}),  # at --rate's default, 5
        (["--rate", "3", "--reserve", "3.5"], {}),
        (["--rate", "2"], {"PROVISIONER_RESERVE": "2"}),
        (["--rate", "1", "--reserve", "0.75"], {}),  # below, but leaves under 0.5/s
    ],
)
def test_a_reserve_not_below_the_rate_is_refused_naming_both(
    provisioner: Cli,
    rows: Path,
    args: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    result = provisioner("create", str(rows), *args, expect=2)

    errors = [line for line in said(result.stderr) if line.startswith("error:")]
    assert len(errors) == 1
    assert "--reserve" in errors[0]
    assert "--rate" in errors[0]
    assert not provisioner.out.exists() or not any(provisioner.out.iterdir())  # nothing made


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf", "lots"])
def test_a_reserve_that_is_not_a_number_of_requests_is_refused(
    provisioner: Cli, rows: Path, value: str
) -> None:
    result = provisioner("create", str(rows), "--reserve", value, expect=2)

    assert [line for line in said(result.stderr) if line.startswith("error:")]
    assert not provisioner.out.exists() or not any(provisioner.out.iterdir())


@pytest.mark.parametrize(
    ("args", "env", "reserve"),
    [
        ([], {}, 1.0),  # on by default
        (["--reserve", "0.5"], {}, 0.5),  # fractions
        ([], {"PROVISIONER_RESERVE": "0"}, 0.0),  # today's behaviour, from the environment
        (["--rate", "0"], {}, 0.0),  # nothing to keep it from
    ],
)
def test_the_reserve_kept_is_in_summary_json(
    provisioner: Cli,
    rows: Path,
    args: list[str],
    env: dict[str, str],
    reserve: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    provisioner("create", str(rows), *args)

    summary = read_summary(only_run_dir(provisioner))
    assert summary["rate"]["reserve"] == reserve
    assert summary["rate"]["other_traffic_429"] == 0
    assert summary["other_traffic"] == []
    assert summary["counts"]["created"] == ROWS


def test_the_reserve_comes_from_the_settings_file_too(
    provisioner: Cli, rows: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "provisioner.toml").write_text("[create]\nreserve = 0.25\n", encoding="utf-8")

    provisioner("create", str(rows))

    summary = read_summary(only_run_dir(provisioner))
    assert summary["rate"]["reserve"] == 0.25
    assert summary["settings"]["reserve"]["value"] == 0.25


@pytest.mark.parametrize(("args", "warned"), [(["--reserve", "2"], True), ([], False)])
def test_a_reserve_given_with_no_rate_is_warned_about_once(
    provisioner: Cli, rows: Path, args: list[str], warned: bool
) -> None:
    result = provisioner("create", str(rows), "--rate", "0", *args)

    warnings = [line for line in said(result.stderr) if line.startswith("warning: --reserve")]
    assert len(warnings) == int(warned)


def test_a_rerun_repeats_the_reserve(provisioner: Cli, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    write_csv(path, CUSTOMER_HEADER, [*customers(2), ["C9", "not-an-address", "Broken"]])

    provisioner("create", str(path), "--reserve", "0.5", expect=1)

    rerun = read_summary(only_run_dir(provisioner))["rerun_command"]
    assert "--reserve 0.5" in rerun


@pytest.mark.parametrize(("reserve", "told"), [("1", True), ("0", False)])
def test_a_cap_of_one_in_flight_is_said_once_and_kept_in_the_summary_and_report(
    tmp_path: Path, reserve: str, told: bool
) -> None:
    # Two in flight against a cap of one: a 429 at two in flight is bound to come, early.
    rows = write_csv(tmp_path / "in.csv", CUSTOMER_HEADER, customers(4 * ROWS))
    with Emulator(secret=SECRET, seed=1, max_concurrent=1, latency=0.05) as emulator:
        provisioner = Cli(emulator, Sleeps(), tmp_path)
        provisioner.knows_the_scope()  # a first run's lookups would share the one slot too
        result = provisioner("create", str(rows), "--concurrency", "2", "--reserve", reserve)

    run_dir = only_run_dir(provisioner)
    summary = read_summary(run_dir)
    assert summary["limits"]["concurrency_cap"] == 1
    assert summary["counts"]["created"] == 4 * ROWS
    assert (ONE_IN_FLIGHT in summary["warnings"]) is told
    # Said once as it is learnt, once more at the end.
    assert sum(ONE_IN_FLIGHT in line for line in said(result.stderr)) == 2 * told
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert ("live web chats started during this run may be refused" in report) is told


BUSY = [
    OtherTrafficSpell(
        from_="2026-11-25T11:02:10Z",
        until="2026-11-25T11:40:30Z",
        throttled_429=14,
        yielded_to=2.13,
        others_estimated=1.87,
    )
]


def local_clock(when: str) -> str:
    return datetime.fromisoformat(when).astimezone().strftime("%H:%M")


def test_the_end_of_a_run_says_when_other_traffic_was_busy_in_one_line() -> None:
    summary = a_summary(
        rate=Rate(requested=5.0, reserve=1.0, settled=4.0, throttled_429=15),
        counts=status_counts({Status.CREATED: 3}),
        files={name: name for name in ("results.csv", "errors.csv", "report", "summary")},
        other_traffic=BUSY,
    )

    lines = [line for _, line in end_of_run(summary)]

    expected = (
        f"other traffic on the account was busy from {local_clock(BUSY[0].from_)} to "
        f"{local_clock(BUSY[0].until)}; the run slowed to 2.1/s to leave it room"
    )
    assert expected in lines
    assert other_traffic_line(BUSY) == expected


def test_several_busy_spells_are_still_one_line() -> None:
    spells = [replace(BUSY[0], yielded_to=rate) for rate in (2.0, 2.5, 3.0, 3.5, 1.9)]

    line = other_traffic_line(spells)

    assert "\n" not in line
    assert "2 more" in line


@pytest.mark.parametrize(
    ("rate", "learnt"),
    [
        # --rate 5 less the reserve: the run was where it was asked to be.
        ({"requested": 5.0, "reserve": 1.0, "settled": 4.0}, []),
        # A limit learnt below --rate less the reserve: a lower limit, or a website busy from
        # the start (they look alike), so no --rate is advised on a shared account...
        ({"requested": 5.0, "reserve": 1.0, "settled": 2.7}, []),
        # ...and with --reserve 0, the run alone on the account, it is.
        ({"requested": 5.0, "reserve": 0.0, "settled": 2.7}, ["--rate", "2.7"]),
        # The same, in a run that met other traffic: its 429s say nothing of the account.
        ({"requested": 5.0, "reserve": 1.0, "settled": 2.7, "other_traffic_429": 3}, []),
    ],
)
def test_advice_never_learns_a_rate_from_other_traffic(
    rate: dict[str, Any], learnt: list[str]
) -> None:
    assert learnt_options(Rate(**rate), ConcurrencyLimits()) == learnt


def test_report_html_shows_the_reserve_and_when_other_traffic_was_busy() -> None:
    summary = a_summary(
        rate=Rate(requested=5.0, reserve=1.0, other_traffic_429=14, yielded_lowest=1.7),
        other_traffic=BUSY,
        timeline=[TimelinePoint(t=0.0, sent=4, throttled=1, others=1, rate=3.2, concurrency=8)],
    )

    page = render_report(summary_of(json.loads(summary.to_json())))

    assert 'id="other-traffic"' in page
    assert "2026-11-25T11:02:10Z" in page
    assert ">1.87<" in page  # what the others used, estimated
    assert '<rect class="others"' in page  # the chart marks the moment
    assert "reserve" in page
    assert 'id="other-traffic"' not in render_report(summary_of(json.loads(a_summary().to_json())))


def test_a_busy_spell_with_unreadable_figures_still_renders() -> None:
    spell = OtherTrafficSpell("", "", 0, yielded_to=math.nan, others_estimated=math.inf)

    assert "other-traffic" in render_report(replace(a_summary(), other_traffic=[spell]))


def test_a_rate_settled_under_the_ceiling_on_a_shared_account_names_both_causes() -> None:
    shared = Rate(requested=5.0, reserve=1.0, settled=3.1, throttled_429=4)

    line = shared_rate_line(shared)

    assert line is not None
    assert "3.1/s" in line
    assert "--reserve 0" in line
    assert "--rate 3" not in line
    assert shared_rate_line(replace(shared, settled=4.0)) is None  # where it was asked to be
    assert shared_rate_line(replace(shared, other_traffic_429=2)) is None  # said as a busy spell
    assert shared_rate_line(replace(shared, reserve=0.0)) is None  # alone: advised as --rate
