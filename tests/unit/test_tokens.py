"""Token rights, lifetimes and reach (pure parts)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import tokens
from shared.audit import OperationRefused
from shared.keys import RateLimits
from shared.tokens import Credential


@given(st.lists(st.sampled_from(tokens.RIGHTS), min_size=1))
def test_rights_come_back_once_each_in_canonical_order(rights: list[str]) -> None:
    parsed = tokens.parse_rights(",".join(f" {r.upper()} " for r in rights))
    assert set(parsed) == set(rights) and list(parsed) == sorted(
        parsed, key=tokens.RIGHTS.index)


@pytest.mark.parametrize("text", ["", " , ", "read,root", "READ;WRITE"])
def test_unknown_or_no_rights_are_refused_by_name(text: str) -> None:
    with pytest.raises(OperationRefused, match="rights"):
        tokens.parse_rights(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), (" 90m ", timedelta(minutes=90))])
def test_durations(text: str, expected: timedelta) -> None:
    assert tokens.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["0d", "30", "d", "1w", "-1d", "1.5h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(OperationRefused, match="expires_in"):
        tokens.parse_duration(text)


def test_a_shop_token_reaches_its_shops_and_a_platform_token_every_shop() -> None:
    shop = Credential(1, "a", frozenset({"tea"}), frozenset({"read"}))
    platform = Credential(2, "p", None, frozenset({"read"}))
    assert shop.may("tea", "read") and not shop.may("coffee", "read")
    assert not shop.may("tea", "write")
    assert platform.may("coffee", "read") and not platform.may("coffee", "pii")


def test_new_tokens_are_distinct_and_their_digests_are_what_is_kept() -> None:
    made = {tokens.new_token() for _ in range(1000)}
    assert len(made) == 1000 and all(len(t) == 46 and t.startswith("mf_") for t in made)
    token = next(iter(made))
    assert tokens.digest(token) == tokens.digest(token) and len(tokens.digest(token)) == 32


def test_a_key_may_burst_two_seconds_worth_then_waits_in_proportion() -> None:
    limits = RateLimits(per_second=100)
    assert limits.take(1, 150) is None and limits.take(1, 50) is None
    wait = limits.take(1, 50)
    assert wait is not None and 0.4 < wait <= 0.5
    assert limits.take(2, 200) is None          # another key has a bucket of its own


def test_a_batch_larger_than_the_bucket_passes_when_it_is_full_and_is_paid_off() -> None:
    limits = RateLimits(per_second=10)
    assert limits.take(1, 1000) is None
    wait = limits.take(1, 1)
    assert wait is not None and wait > 90       # ~98 s of debt at 10 a second


def test_no_limit_when_the_rate_is_zero() -> None:
    assert all(RateLimits(0).take(1, 10**6) is None for _ in range(3))
