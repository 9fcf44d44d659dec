"""Property-based tests for the normalization rules and the coverage-date arithmetic."""

from __future__ import annotations

import re
from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from olv import normalize
from olv.coverage_dates import covered_on

keys = st.text(alphabet=st.characters(codec="ascii"), max_size=40)
days = st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 1, 1))


@given(keys)
def test_policy_key_is_idempotent_and_alphanumeric_upper(raw: str) -> None:
    once = normalize.policy_key(raw)
    assert normalize.policy_key(once) == once
    assert once == once.upper()
    assert all(c.isalnum() for c in once)


@given(st.text(max_size=40))
def test_policy_key_keeps_exactly_the_ascii_letters_and_digits_of_any_text(raw: str) -> None:
    """Whatever the text holds (other scripts, surrogates, controls): its ASCII letters and
    digits, in order, upper-cased, and nothing else."""
    assert normalize.policy_key(raw) == re.sub("[^0-9A-Za-z]+", "", raw).upper()


@given(keys, st.lists(st.sampled_from(" -./#_"), max_size=5))
def test_policy_key_ignores_punctuation_and_case(raw: str, noise: list[str]) -> None:
    decorated = "".join(noise) + raw.lower() + "".join(noise)
    assert normalize.policy_key(decorated) == normalize.policy_key(raw)


@given(st.text(alphabet="ABCDEFGHJKLMNPRSTUVWXYZ0123456789 \t", max_size=30))
def test_vin_upper_without_spaces(raw: str) -> None:
    vin = normalize.vin(raw.lower())
    assert " " not in vin and "\t" not in vin
    assert vin == raw.replace(" ", "").replace("\t", "").upper()
    assert normalize.vin(vin) == vin


@given(st.sampled_from(["unknown", "UNKNOWN", " Unknown ", "uNkNoWn"]))
def test_unknown_key_any_case(raw: str) -> None:
    assert normalize.is_unknown_key(raw)


@given(days, st.integers(0, 4000), st.integers(-10, 4000))
def test_covered_exactly_between_effective_and_end(
    effective: date, length: int, offset: int
) -> None:
    end = effective + timedelta(days=length)
    day = effective + timedelta(days=offset)
    assert covered_on(day, effective, expiration=end) == (effective <= day < end)
    assert covered_on(day, effective, cancellation=end) == (effective <= day < end)
    assert covered_on(day, effective) == (day >= effective)


@given(days, st.integers(1, 400), st.integers(1, 400))
def test_earlier_of_cancellation_and_expiration_ends_coverage(
    effective: date, a: int, b: int
) -> None:
    expiration, cancellation = effective + timedelta(days=a), effective + timedelta(days=b)
    last = min(expiration, cancellation) - timedelta(days=1)
    assert covered_on(last, effective, expiration, cancellation)
    assert not covered_on(last + timedelta(days=1), effective, expiration, cancellation)
