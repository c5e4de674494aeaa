"""summary.py and run_summary.py: every part of a Summary is typed, and its JSON is the README's
contract (keys, nesting, order), `from` included; the parts built from the limits' state."""

from __future__ import annotations

import json
import threading
import types
from collections.abc import Iterator
from dataclasses import is_dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from provisioner.causes import CauseCount, FailingRow
from provisioner.limits import AccountLimits
from provisioner.limits_permits import Answer
from provisioner.limits_timeline import TimelinePoint
from provisioner.summary import (
    ConcurrencyLimits,
    Duplicate,
    OtherTrafficSpell,
    Rate,
    SettingUsed,
    Summary,
    Visitors,
)
from provisioner.vocabulary import LookupResult
from tests.summaries import summary_of

# summary.json's keys, in order, as tools that watch cron read them (the README's Outputs).
SUMMARY_KEYS = [
    "run_id",
    "input",
    "started_at",
    "ended_at",
    "duration_seconds",
    "rows",
    "counts",
    "invalid_reasons",
    "requests_sent",
    "exit_code",
    "stop_reason",
    "dry_run",
    "warnings",
    "forced_rows",
    "ambiguous_rows",
    "in_flight_from_earlier_runs",
    "rate",
    "base_url",
    "ledger",
    "files",
    "rerun_command",
    "conversations_url",
    "lookups",
    "lookups_refused",
    "duplicates",
    "causes",
    "failing_rows",
    "limits",
    "timeline",
    "other_traffic",
    "columns",
    "settings",
    "abandoned",
    "visitors",
    "rerun_commands",
]
PART_KEYS = {
    "rate": [
        "requested",
        "settled",
        "final",
        "lowest",
        "throttled_429",
        "reserve",
        "other_traffic_429",
        "yielded_lowest",
    ],
    "limits": [
        "concurrency_requested",
        "concurrency_settled",
        "concurrency_final",
        "concurrency_lowest",
        "concurrency_cap",
    ],
    "other_traffic": ["from", "until", "throttled_429", "yielded_to", "others_estimated"],
    "timeline": ["t", "sent", "throttled", "others", "rate", "concurrency"],
    "duplicates": ["row_key", "conversation_sid", "others"],
    "causes": ["code", "count", "meaning", "next_step", "example_rows", "more_info"],
    "failing_rows": ["row", "key", "status", "code", "message"],
    "visitors": [
        "rate",
        "arrived",
        "served",
        "refused",
        "refused_share",
        "refused_by_rate_limit",
        "refused_by_concurrency_cap",
    ],
}


def every_part() -> Summary:
    """A summary with something in every part."""
    return Summary(
        run_id="r1",
        input="in.csv",
        started_at="2026-11-25T10:00:00Z",
        ended_at="2026-11-25T10:01:00Z",
        duration_seconds=60.0,
        rows=4,
        counts={"created": 2, "failed": 2},
        invalid_reasons={},
        requests_sent=9,
        exit_code=1,
        stop_reason="",
        dry_run=False,
        warnings=("row 3: PreEngagementData is not JSON",),
        forced_rows=0,
        ambiguous_rows=1,
        in_flight_from_earlier_runs=0,
        rate=Rate(5.0, 4.0, 3.5, 2.0, 3, 1.0, 1, 2.1),
        base_url="https://flex-api.twilio.com",
        ledger="ledger.sqlite",
        files={"results.csv": "r1/results.csv"},
        rerun_command="provisioner create r1/errors.csv",
        lookups={LookupResult.FOUND: 1, LookupResult.DUPLICATES: 1},
        duplicates=(Duplicate("C1", "CH1", ("CH2",)),),
        causes=(CauseCount("20404", 2, "not found", "check it", (2, 3), "https://x"),),
        failing_rows=(FailingRow(2, "C2", "failed", "20404", "not found"),),
        limits=ConcurrencyLimits(8, 2, 2, 1, 2),
        timeline=(TimelinePoint(0.0, 5, 1, 1, 4.0, 2), TimelinePoint(1.0, 4, 0, 0, None, 2)),
        other_traffic=(
            OtherTrafficSpell("2026-11-25T10:00:10Z", "2026-11-25T10:00:20Z", 1, 2.1, 1.9),
        ),
        columns=("'AddressSid' -> AddressSid",),
        settings={"rate": SettingUsed(5.0, "default"), "column": SettingUsed({"A": "B"}, "file")},
        visitors=Visitors(0.5, 10, 9, 1, 0.1, 1, 0),
        rerun_commands={"errors.csv": "provisioner create r1/errors.csv"},
    )


def hints_within(kind: Any) -> Iterator[Any]:
    """`kind` and every type inside it: a part's fields, a container's items, a union's arms."""
    yield kind
    if is_dataclass(kind) and isinstance(kind, type):
        for hint in get_type_hints(kind).values():
            yield from hints_within(hint)
    for argument in get_args(kind):
        yield from hints_within(argument)


def test_every_part_of_a_summary_is_typed_and_frozen() -> None:
    within = list(hints_within(Summary))

    assert Any not in within
    assert object not in within
    parts = {kind for kind in within if is_dataclass(kind)}
    assert {Rate, ConcurrencyLimits, OtherTrafficSpell, TimelinePoint, Duplicate} <= parts
    assert {CauseCount, FailingRow, Visitors, SettingUsed} <= parts
    assert all(vars(kind)["__dataclass_params__"].frozen for kind in parts)
    unions = [kind for kind in within if get_origin(kind) in (Union, types.UnionType)]
    assert all(Any not in get_args(union) for union in unions)


def test_summary_json_has_the_contract_s_keys_in_order() -> None:
    written = json.loads(every_part().to_json())

    assert list(written) == SUMMARY_KEYS
    for name, keys in PART_KEYS.items():
        part = written[name]
        for item in part if isinstance(part, list) else [part]:
            assert list(item) == keys, name
    assert list(written["settings"]["rate"]) == ["value", "source"]
    assert written["lookups"] == {"found": 1, "duplicates": 1}
    assert written["other_traffic"][0]["from"] == "2026-11-25T10:00:10Z"
    assert written["causes"][0]["example_rows"] == [2, 3]
    assert written["duplicates"][0]["others"] == ["CH2"]


def test_summary_json_read_back_is_the_same_summary() -> None:
    summary = every_part()

    assert summary_of(json.loads(summary.to_json())) == summary


def test_a_summary_names_no_visitors_without_a_live_rate() -> None:
    assert json.loads(summary_of({}).to_json())["visitors"] is None


def test_rate_and_limits_are_the_limits_state_with_what_was_asked() -> None:
    now = [0.0]
    limits = AccountLimits(4.0, 2, lambda: now[0], reserve=1.0)
    stopping = threading.Event()
    for answer in (Answer.ACCEPTED, Answer.THROTTLED):
        permit = limits.acquire(lambda seconds: None, stopping)
        assert permit is not None
        now[0] += 0.25
        limits.release(permit, answer, 0.25, None)
    state = limits.state()

    rate, concurrency = Rate.of(state, 4.0), ConcurrencyLimits.of(state, 2)

    assert (rate.requested, rate.reserve, rate.throttled_429) == (4.0, 1.0, 1)
    assert (rate.final, rate.settled) == (state.rate, state.settled_rate)
    assert (concurrency.concurrency_requested, concurrency.concurrency_final) == (2, 2)
    points = limits.timeline()
    assert sum(point.sent for point in points) == state.sent == 2
    assert sum(point.throttled for point in points) == 1
