"""The RFM quartile rule and the segment map (services/tiering/rfm.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.tiering import rfm
from shared.shopconfig import parse

values = st.lists(st.integers(-10_000, 10_000), min_size=1, max_size=60)


def scores(xs: list[int]) -> list[int]:
    found = rfm.edges(xs)
    return [rfm.score(x, found) for x in xs]


def test_the_documented_examples() -> None:
    assert scores([1, 2, 3, 4]) == [1, 2, 3, 4]
    assert scores([1, 1, 1, 5]) == [1, 1, 1, 2]
    assert scores([7, 7, 7]) == [1, 1, 1]
    assert scores([42]) == [1]                       # a single buyer
    assert rfm.edges([]) == []                       # no buyer, no edge
    # Recency is scored on its negation: 1 day ago beats 30 days ago.
    assert scores([-1, -30, -2, -400]) == [4, 2, 3, 1]


@given(values)
def test_scores_are_one_to_four_ordered_and_as_many_as_the_distinct_edges(xs: list[int]) -> None:
    found = rfm.edges(xs)
    got = scores(xs)
    assert 1 <= len(found) <= 3 and found == sorted(set(found)) and set(found) <= set(xs)
    assert set(got) <= set(range(1, len(found) + 2))
    for (a, sa), (b, sb) in itertools.combinations(zip(xs, got, strict=True), 2):
        assert (a <= b) <= (sa <= sb)                # a larger value never scores lower
    assert min(got) == 1                             # the lowest values score 1


@given(values)
def test_every_quartile_edge_has_at_least_its_share_at_or_below(xs: list[int]) -> None:
    ordered = sorted(xs)
    for q, edge in zip((0.25, 0.5, 0.75), [ordered[max(0, -(-len(xs) * k // 4) - 1)]
                                            for k in (1, 2, 3)], strict=True):
        assert sum(x <= edge for x in xs) >= q * len(xs)
        assert edge in rfm.edges(xs)


def test_the_default_map_names_every_score_pattern() -> None:
    for r, f, m in itertools.product(range(1, 5), repeat=3):
        assert rfm.segment_of(r, f, m, rfm.DEFAULT_SEGMENTS) != rfm.OTHERS, (r, f, m)
    assert rfm.segment_of(4, 4, 4, rfm.DEFAULT_SEGMENTS) == "champions"
    assert rfm.segment_of(4, 1, 1, rfm.DEFAULT_SEGMENTS) == "new"
    assert rfm.segment_of(1, 1, 4, rfm.DEFAULT_SEGMENTS) == "lost"
    assert rfm.segment_of(1, 4, 4, rfm.DEFAULT_SEGMENTS) == "at-risk"


@pytest.mark.parametrize("bad", ["5", "0", "4-2", "1-", "a", "1,2"])
def test_a_bad_pattern_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValidationError, match="not a score"):
        rfm.Segment(id="x", name="x", r=bad)


def test_the_first_matching_segment_wins_and_a_gap_is_others() -> None:
    own = [rfm.Segment(id="big", name="大客户", m="4"), rfm.Segment(id="any", name="all")]
    assert rfm.segment_of(1, 1, 4, own) == "big" and rfm.segment_of(1, 1, 3, own) == "any"
    assert rfm.segment_of(1, 1, 1, own[:1]) == rfm.OTHERS


def test_rules_and_targets_name_segments_of_the_shops_map() -> None:
    shop = {"shop_id": "s", "name": "S", "tagging": {"tags": [{"id": "t", "name": "T"}], "rules": [
        {"id": "r", "tag": "t", "when": 'rfm_segment in ["at_risk", "lost"] or spend > 5'}]}}
    with pytest.raises(ValueError, match=r"tagging.rules\[0\].when: rfm_segment 'at_risk' is "
                                         r"not a segment of the shop's RFM map \(at-risk, "):
        parse(shop)
    own = {"segments": [{"id": "at-risk", "name": "Mine", "r": "1"}]}
    fixed = 'rfm_segment in ["at-risk", "others"] or spend > 5'
    assert parse({**shop, "rfm": own, "tagging": {**shop["tagging"], "rules": [
        {"id": "r", "tag": "t", "when": fixed}]}}).rfm.segments[0].name == "Mine"
    campaign = {"id": "c", "name": "C", "channels": ["sms"], "offer": {
        "kind": "cash_off", "amount": "5.00"}, "starts_at": "2026-07-01T00:00:00Z",
        "ends_at": "2026-07-31T00:00:00Z", "target": {"rfm_segments": ["none", "lots"]}}
    with pytest.raises(ValueError, match=r"campaigns\[0\].target.rfm_segments: 'lots' is not"):
        parse({"shop_id": "s", "name": "S", "campaigns": [campaign]})
