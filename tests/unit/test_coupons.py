"""Coupon suggestion (memberflow/coupons.py): the classic case and the rule's arithmetic."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from memberflow import coupons


def test_most_orders_under_100_get_small_face_values() -> None:
    # 1,000 orders: nine in ten between 20 and 99, the rest 100-300.
    histogram = {v: 12 for v in range(20, 95)} | {v: 5 for v in range(100, 300, 10)}
    found = coupons.suggest(histogram)
    assert found and {s.face_value for s in found} <= {2, 5}
    assert all(s.threshold <= 100 for s in found)
    assert [s.label for s in found] == [f"满{s.threshold}减{s.face_value}" for s in found]


def test_the_figures_of_one_threshold_by_hand() -> None:
    # 10 orders at 85, 10 at 120: the threshold 100 lifts the 85s (15 - 0.5 each on average).
    histogram = {85: 10, 120: 10}
    (only,) = [s for s in coupons.suggest(histogram, count=50) if s.threshold == 100]
    assert (only.face_value, only.just_below_pct, only.at_or_above_pct) == (5, Decimal("50.00"),
                                                                            Decimal("50.00"))
    assert (only.lift, only.given_away, only.net) == (Decimal("145.00"), Decimal("100.00"),
                                                      Decimal("45.00"))
    assert coupons.verdict([only]).startswith("满100减5 can pay for itself")
    # Orders thinning out above the threshold: what the 90s add never covers 5 off every 120.
    tried = coupons.suggest({90: 2, 95: 8, 120: 30}, count=50)
    (costly,) = [s for s in tried if s.threshold == 100]
    assert costly.net < 0 and coupons.verdict([costly]).startswith("none pays for itself")


@given(st.dictionaries(st.integers(1, 5000), st.integers(1, 50), min_size=1, max_size=40))
def test_suggestions_are_round_affordable_and_at_most_three(histogram: dict[int, int]) -> None:
    found = coupons.suggest(histogram)
    assert 1 <= len(found) <= 3 or not coupons.round_thresholds(
        coupons.percentile(histogram, Decimal("0.25")),
        coupons.percentile(histogram, Decimal("0.9")))
    for s in found:
        assert s.face_value in coupons.FACES
        assert s.face_value <= max(1, s.threshold * Decimal("0.06"))
        assert s.net == s.lift - s.given_away
    assert [s.threshold for s in found] == sorted({s.threshold for s in found})


def test_no_orders_no_suggestion() -> None:
    assert coupons.suggest({}) == []
