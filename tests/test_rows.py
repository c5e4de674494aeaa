"""Rows: header matching, --column, fed-back files, repeats, keys and derived identities."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.errors import InputError
from provisioner.result_columns import EARLIER_RESULT_COLUMNS, ERROR_COLUMNS, RESULT_COLUMNS
from provisioner.rows import (
    IDENTITY_PREFIX,
    Columns,
    Row,
    RowBuilder,
    derive_identity,
    names_address_column,
)
from tests.conftest import Cli, read_csv, write_csv

SCOPE = "AC123@flex-api.twilio.com"
IDENTITY_MAX = 64  # what we promise for a derived identity (Twilio takes any string)


def sid(number: int) -> str:
    return f"IG{number:032x}"


def build_all(
    headers: Sequence[str], rows: Sequence[Sequence[str]], mapping: Mapping[str, str] | None = None
) -> list[Row]:
    """Both passes of a run: the first learns which values repeat, the second builds the rows."""
    columns = Columns.resolve(headers, mapping)
    first = RowBuilder(columns)
    for number, cells in enumerate(rows, start=1):
        first.build(number, cells)
    second = RowBuilder(columns, first.repeats())
    return [second.build(number, cells) for number, cells in enumerate(rows, start=1)]


def test_headers_are_matched_whatever_their_spacing_case_and_separators() -> None:
    headers = ["Notes", " Address SID ", "chat_friendly_name", "Customer-Friendly-Name", "identity"]

    columns = Columns.resolve(headers)

    assert columns.parameters == {
        "AddressSid": 1,
        "ChatFriendlyName": 2,
        "CustomerFriendlyName": 3,
        "Identity": 4,
    }
    assert columns.pre_engagement == {}
    assert columns.carried == (0, 1, 2, 3, 4)
    assert not columns.fed_back
    assert columns.describe() == [
        "' Address SID ' -> AddressSid",
        "'chat_friendly_name' -> ChatFriendlyName",
        "'Customer-Friendly-Name' -> CustomerFriendlyName",
        "'identity' -> Identity",
        "carried to the outputs only, not sent: Notes",
    ]


def test_without_an_address_column_the_error_names_the_headers_and_the_option() -> None:
    with pytest.raises(InputError) as raised:
        Columns.resolve(["Name", "Flex address"])

    assert str(raised.value) == (
        "no AddressSid column; found: Name, Flex address. Use --column AddressSid=HEADER"
    )


def test_two_headers_meaning_one_parameter_are_refused() -> None:
    with pytest.raises(InputError, match=r"columns AddressSid, address_sid all mean AddressSid"):
        Columns.resolve(["AddressSid", "address_sid"])


def test_column_picks_one_of_two_headers_meaning_the_same() -> None:
    columns = Columns.resolve(["AddressSid", "address_sid"], {"AddressSid": "address_sid"})

    assert columns.parameters == {"AddressSid": 1}


def test_column_maps_parameters_keys_and_pre_engagement_fields() -> None:
    headers = ["Flex address", "Client", "E-mail", "Topic", "pre_engagement.plan"]
    mapping = {
        "address sid": "Flex address",
        "customer_id": "Client",
        "pre_engagement.email": "E-mail",
        "pre_engagement.topic": "topic",  # headers match loosely, like the automatic matching
    }

    columns = Columns.resolve(headers, mapping)

    assert columns.parameters == {"AddressSid": 0}
    assert columns.customer_id == 1
    assert columns.pre_engagement == {"plan": 4, "email": 2, "topic": 3}
    (row,) = build_all(headers, [[sid(1), "c-1", "a@example.com", "", "gold"]], mapping)
    assert row.key == "c-1"
    assert row.parameters == {
        "AddressSid": sid(1),
        "PreEngagementData": '{"plan": "gold", "email": "a@example.com"}',
    }


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {"AddressSid": "Adress SID"},
            "--column AddressSid=Adress SID: no such header (closest: Address SID); "
            "found: Address SID, Name",
        ),
        (
            {"pre_engagement.email": "Emial"},
            "--column pre_engagement.email=Emial: no such header; found: Address SID, Name",
        ),
        (
            {"Adress": "Name"},
            "--column Adress=...: unknown parameter; use one of AddressSid, ChatFriendlyName, "
            "CustomerFriendlyName, PreEngagementData, Identity, customer_id, row_key "
            "or pre_engagement.KEY",
        ),
        (
            {"pre_engagement.": "Name"},
            "--column pre_engagement.=...: name the key, e.g. pre_engagement.email",
        ),
    ],
)
def test_column_mistakes_say_what_to_do(mapping: dict[str, str], message: str) -> None:
    with pytest.raises(InputError) as raised:
        Columns.resolve(["Address SID", "Name"], mapping)

    assert str(raised.value) == message


def test_pre_engagement_data_and_pre_engagement_fields_together_are_refused() -> None:
    with pytest.raises(InputError, match="both a PreEngagementData column and pre_engagement"):
        Columns.resolve(["AddressSid", "PreEngagementData", "pre_engagement.email"])


@pytest.mark.parametrize(
    "suffix", [RESULT_COLUMNS, ERROR_COLUMNS, *EARLIER_RESULT_COLUMNS], ids=lambda s: str(len(s))
)
def test_a_file_this_tool_wrote_is_recognised_by_its_column_suffix(
    suffix: tuple[str, ...],
) -> None:
    headers = ["AddressSid", "customer_id", *suffix]

    columns = Columns.resolve(headers)

    assert columns.fed_back
    assert columns.carried == (0, 1)
    assert columns.carried_headers == ["AddressSid", "customer_id"]
    assert columns.row_key == headers.index("row_key")
    expected_source = headers.index("source_row") if "source_row" in suffix else None
    assert columns.source_row == expected_source


def test_a_fed_back_row_keeps_its_key_source_row_and_unescaped_cells() -> None:
    headers = ["AddressSid", "ChatFriendlyName", *ERROR_COLUMNS]
    # The run that wrote the file escaped the formula-like cell with a quote.
    cells = [sid(7), "'=SUM(A1)", "7", "failed", "503", "busy", "key-7", "12"]

    (row,) = build_all(headers, [cells])

    assert row.key == "key-7"
    assert row.source_row == 12
    assert row.cells == (sid(7), "=SUM(A1)")
    assert row.parameters == {"AddressSid": sid(7), "ChatFriendlyName": "=SUM(A1)"}


@pytest.mark.parametrize(
    "headers",
    [
        ["AddressSid", "row", "status", "identity"],  # the input's own columns, by coincidence
        ["AddressSid", *RESULT_COLUMNS[:-1]],  # not the whole suffix
        ["AddressSid", *(name.upper() for name in ERROR_COLUMNS)],  # not exactly ours
    ],
)
def test_an_input_with_look_alike_columns_is_not_fed_back(headers: list[str]) -> None:
    columns = Columns.resolve(headers)

    assert not columns.fed_back
    assert columns.source_row is None
    status = [header.casefold() for header in headers].index("status")
    assert status in columns.carried  # a fed-back file's own status would be dropped


def test_an_input_whose_identity_column_is_its_own_sends_it() -> None:
    headers = ["AddressSid", "row", "status", "identity"]

    (row,) = build_all(headers, [[sid(1), "1", "new", "user-1"]])

    assert row.identity == "user-1"
    assert row.cells == (sid(1), "1", "new", "user-1")


@pytest.mark.parametrize(
    ("headers", "column", "code", "name"),
    [
        (["AddressSid", "customer_id"], 1, "duplicate_customer_id", "customer_id"),
        (["AddressSid", "row_key"], 1, "duplicate_row_key", "row_key"),
        (["AddressSid", "Identity"], 1, "duplicate_identity", "Identity"),
    ],
)
def test_a_repeated_key_is_invalid_from_its_second_row(
    headers: list[str], column: int, code: str, name: str
) -> None:
    rows = [[sid(1), "k-1"], [sid(2), "k-2"], [sid(3), "k-1"], [sid(4), "k-1"]]

    built = build_all(headers, rows)

    assert [row.problem_code for row in built] == ["", "", code, code]
    assert built[2].problem == f"duplicate {name} 'k-1' (first at row 1)"
    assert built[3].problem == f"duplicate {name} 'k-1' (first at row 1)"


def test_a_row_key_that_is_another_rows_customer_id_is_a_repeated_key() -> None:
    # Row 3's key is its customer_id (no row_key): row 1's row_key. Same key: one web chat.
    headers = ["AddressSid", "row_key", "customer_id"]
    rows = [[sid(1), "C1", "a"], [sid(2), "", "b"], [sid(3), "", "C1"], [sid(4), "b", "d"]]

    built = build_all(headers, rows)

    assert [row.key for row in built] == ["C1", "b", "C1", "b"]
    assert [row.problem_code for row in built] == ["", "", "duplicate_row_key", "duplicate_row_key"]
    assert "'C1'" in str(built[2].problem)
    assert "row 1 " in str(built[2].problem)
    assert "'b'" in str(built[3].problem)
    assert "row 2 " in str(built[3].problem)


@pytest.mark.parametrize("column", ["row_key", "customer_id"])
@pytest.mark.parametrize("character", ["\x00", "\x1b", "\x7f", "\x85", "\x9b"])
def test_control_characters_in_a_key_make_the_row_invalid(column: str, character: str) -> None:
    # A NUL would not survive the ledger's JSON either: two keys would be one entry.
    rows = [[sid(1), f"k{character}1"], [sid(2), f"k{character}2"], [sid(3), "k\t3"]]

    built = build_all(["AddressSid", column], rows)

    assert [row.problem_code for row in built] == ["not_text", "not_text", ""]
    assert column in str(built[0].problem)
    assert f"U+{ord(character):04X}" in str(built[0].problem)  # the character found, named


def test_the_first_pass_flags_nothing_and_counts_the_repeats() -> None:
    columns = Columns.resolve(["AddressSid", "customer_id"])
    first = RowBuilder(columns)

    built = [first.build(n, [sid(n), "same"]) for n in range(1, 4)]

    assert [row.problem for row in built] == [None, None, None]
    assert first.repeats().duplicate_rows == 2


def test_keys_come_from_row_key_then_customer_id_then_the_row_itself() -> None:
    headers = ["AddressSid", "customer_id", "row_key"]
    rows = [[sid(1), "c-1", "r-1"], [sid(2), "c-2", ""], [sid(3), "", ""], [sid(3), "", ""]]

    keys = [row.key for row in build_all(headers, rows)]

    assert keys[:2] == ["r-1", "c-2"]
    assert keys[2].startswith("auto:")
    assert keys[3] == keys[2] + ":2"  # identical rows are numbered, not flagged


@pytest.mark.parametrize(
    ("address", "code"),
    [
        ("", "missing_address_sid"),
        ("IG123", "invalid_address_sid"),
        ("XX" + "0" * 32, "invalid_address_sid"),
    ],
)
def test_a_bad_address_makes_the_row_invalid(address: str, code: str) -> None:
    (row,) = build_all(["AddressSid", "ChatFriendlyName"], [[address, "chat"]])

    assert row.problem_code == code


def test_control_characters_make_the_row_invalid() -> None:
    (row,) = build_all(["AddressSid", "ChatFriendlyName"], [[sid(1), "a\x00b"]])

    assert row.problem_code == "not_text"
    assert "ChatFriendlyName" in str(row.problem)
    assert "U+0000" in str(row.problem)


def test_not_text_names_the_character_found_not_another(provisioner: Cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv", ["customer_id", "AddressSid", "ChatFriendlyName"],
        [["c1", sid(1), "ring\x07bell"], ["c2", sid(2), "fine"]],
    )  # fmt: skip

    provisioner("create", str(source), "--run-id", "r1", "--rate", "0", expect=1)

    (error,) = read_csv(provisioner.run_dir("r1") / "errors.csv")
    assert error["error_code"] == "not_text"
    assert "U+0007" in error["error_message"]  # the BEL found
    assert "NUL" not in error["error_message"]  # not a character the row does not hold
    assert len(provisioner.emulator.created) == 1


def test_a_row_gets_a_derived_identity_unless_it_has_one_or_a_problem() -> None:
    own, plain, broken = build_all(
        ["AddressSid", "Identity", "customer_id"],
        [[sid(1), "user-1", "c-1"], [sid(2), "", "c-2"], ["bad", "", "c-3"]],
    )

    assert own.with_identity(SCOPE) is own
    assert broken.with_identity(SCOPE) is broken
    with_identity = plain.with_identity(SCOPE)
    assert with_identity.identity == derive_identity(SCOPE, "c-2")
    assert with_identity.parameters["Identity"] == with_identity.identity
    assert with_identity.with_identity("another scope") == with_identity  # set once


def test_derived_identity_is_the_documented_blake2b() -> None:
    # DESIGN.md: "prv-" + blake2b(scope + "\0" + row_key, digest_size=16).hexdigest()
    digest = hashlib.blake2b(b"scope\0key", digest_size=16).hexdigest()
    assert derive_identity("scope", "key") == "prv-" + digest


@settings(derandomize=True, max_examples=100)
@given(scope=st.text(), key=st.text(), other=st.text())
def test_derived_identities_are_stable_ascii_short_and_distinct(
    scope: str, key: str, other: str
) -> None:
    identity = derive_identity(scope, key)

    assert identity == derive_identity(scope, key)
    assert identity.isascii()
    assert identity.startswith(IDENTITY_PREFIX)
    assert len(identity) <= IDENTITY_MAX
    if other != key:
        assert derive_identity(scope, other) != identity
    if other != scope:
        assert derive_identity(other, key) != identity


@pytest.mark.parametrize(
    ("cells", "mapping", "expected"),
    [
        (["Name", "Address SID"], None, True),
        (["Name", "address_sid"], None, True),
        (["Name", "Address"], None, False),
        ([sid(1), "Ada"], None, False),
        (["Flex address", "Name"], {"AddressSid": "Flex address"}, True),
        (["AddressSid", "Name"], {"AddressSid": "Flex address"}, False),
    ],
)
def test_names_address_column_spots_the_header_row(
    cells: list[str], mapping: dict[str, str] | None, expected: bool
) -> None:
    assert names_address_column(cells, mapping) is expected


# ---------------------------------------------------------------- one key, one identity (22.3)

_PLAIN_COLUMNS = Columns.resolve(["AddressSid", "CustomerFriendlyName"])
_VALUES = [(sid(n), name) for n in (1, 2) for name in ("Ana", "")]
# Keys a row may be given: plain, numeric and guarded ones, and the keys other rows derive.
_DERIVED = [RowBuilder(_PLAIN_COLUMNS).build(1, list(values)).key for values in _VALUES]
_KEYS = ["", "C1", "00001", "'00001", "1", *_DERIVED, f"{_DERIVED[0]}:2"]
_IDENTITIES = ["", "id-1", *(derive_identity(SCOPE, key) for key in _KEYS if key)]

_row_specs = st.tuples(
    st.sampled_from(_VALUES),
    st.sampled_from(_KEYS),  # row_key: fed back (or a row_key column)
    st.sampled_from(_KEYS),  # customer_id
    st.sampled_from(_IDENTITIES),  # Identity
)


@settings(derandomize=True, max_examples=300)
@given(specs=st.lists(_row_specs, max_size=12), fed_back=st.booleans(), data=st.data())
def test_no_two_rows_ever_leave_with_one_key_or_one_identity(
    specs: list[tuple[tuple[str, str], str, str, str]], fed_back: bool, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(specs))
    names = ["AddressSid", "CustomerFriendlyName", "customer_id", "Identity"]
    if fed_back:  # a file this tool wrote: row_key is one of its own columns
        headers = [*names, *ERROR_COLUMNS]
        rows = [
            [*values, customer_id, identity, *("" for _ in ERROR_COLUMNS)]
            for values, _, customer_id, identity in shuffled
        ]
        at = headers.index("row_key")
        for row, (_, row_key, _, _) in zip(rows, shuffled, strict=True):
            row[at] = row_key
    else:
        headers = [*names, "row_key"]
        rows = [[*v, customer_id, identity, key] for v, key, customer_id, identity in shuffled]
    columns = Columns.resolve(headers)
    first = RowBuilder(columns, scope=SCOPE)
    for number, cells in enumerate(rows, start=2):
        first.build(number, cells)
    second = RowBuilder(columns, first.repeats(), SCOPE)

    built = [second.build(number, cells) for number, cells in enumerate(rows, start=2)]

    leaving = [row.with_identity(SCOPE) for row in built if row.problem is None]
    assert len({row.key for row in leaving}) == len(leaving)
    assert len({row.identity for row in leaving}) == len(leaving)
    assert all(row.identity for row in leaving)
    if built:  # the first row never repeats an earlier one
        assert not built[0].repeats_a_key
