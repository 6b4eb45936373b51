"""units.parse_size / format_size."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmkit.units import SIZE_HELP, format_size, parse_size

BINARY = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
DECIMAL = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
KNOWN_UNITS = {"", "b", "k", "kib", "m", "mib", "g", "gib", "t", "tib", "kb", "mb", "gb", "tb"}

counts = st.integers(min_value=0, max_value=10**6)


def _case_variants(unit: str) -> st.SearchStrategy[str]:
    return st.sampled_from([unit, unit.lower(), unit.upper(), unit.capitalize()])


@given(n=counts, unit=st.sampled_from(sorted(BINARY)))
def test_single_letter_units_are_powers_of_1024(n: int, unit: str) -> None:
    assert parse_size(f"{n}{unit}") == n * BINARY[unit]
    assert parse_size(f"{n}{unit.lower()}") == n * BINARY[unit]


@given(n=counts, unit=st.sampled_from(sorted(BINARY)), data=st.data())
def test_iec_units_are_powers_of_1024_in_any_case(n: int, unit: str, data: st.DataObject) -> None:
    spelled = data.draw(_case_variants(f"{unit}iB"))
    assert parse_size(f"{n}{spelled}") == n * BINARY[unit]


@given(n=counts, unit=st.sampled_from(sorted(DECIMAL)), data=st.data())
def test_si_units_are_powers_of_1000(n: int, unit: str, data: st.DataObject) -> None:
    spelled = data.draw(_case_variants(unit))
    assert parse_size(f"{n}{spelled}") == n * DECIMAL[unit]


@given(n=st.integers(min_value=0, max_value=1 << 62))
def test_plain_ints_and_digit_strings_are_bytes(n: int) -> None:
    assert parse_size(n) == n
    assert parse_size(str(n)) == n
    assert parse_size(f"{n}B") == n
    assert parse_size(f"  {n} ") == n


def test_whitespace_between_number_and_unit_is_allowed() -> None:
    assert parse_size("512 M") == 512 << 20
    assert parse_size(" 2 GiB ") == 2 << 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.5G", 3 << 29), ("0.5K", 512), ("1.25MiB", 5 << 18), ("2.5KB", 2500)],
)
def test_fractions_scale_by_unit(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@given(n=st.integers(min_value=0, max_value=1 << 50))
def test_format_size_round_trips_exact_sizes(n: int) -> None:
    exact = n < 1024 or n % 1024 == 0
    if exact:
        assert parse_size(format_size(n)) == n


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0B"), (1023, "1023B"), (1024, "1KiB"), (256 << 20, "256MiB"), (3 << 40, "3TiB")],
)
def test_format_size_picks_the_largest_exact_unit(n: int, text: str) -> None:
    assert format_size(n) == text


def test_format_size_rounds_inexact_sizes_to_one_decimal() -> None:
    assert format_size(1536) == "1.5KiB"


@pytest.mark.parametrize(
    "garbage",
    ["", "   ", "abc", "12X", "1.2.3G", "-5M", "5 M B", "0x10", "M", "1e9", "10 megs", "1,5G"],
)
def test_garbage_is_rejected_listing_accepted_forms(garbage: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_size(garbage)
    assert SIZE_HELP in str(exc.value)
    assert repr(garbage) in str(exc.value)


@given(number=st.integers(0, 10**6), unit=st.from_regex(r"[a-zA-Z]{1,4}", fullmatch=True))
def test_unknown_unit_suffixes_are_rejected(number: int, unit: str) -> None:
    if unit.lower() in KNOWN_UNITS:
        assert parse_size(f"{number}{unit}") >= 0
        return
    with pytest.raises(ValueError, match=re.escape(SIZE_HELP)):
        parse_size(f"{number}{unit}")


def test_negative_int_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_size(-1)


@pytest.mark.parametrize("value", [True, False])
def test_bools_are_not_sizes(value: bool) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(value)
