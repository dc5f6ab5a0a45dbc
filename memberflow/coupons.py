"""Coupon suggestion: "满 X 减 Y" (Y off an order of at least X) from a shop's order values.

A threshold X is worth setting where many orders fall just below it: a buyer at 85 adds an item
to reach 100 and save 5. Every order already at or above X gets Y off for nothing new: that is
margin given away. For each round threshold between the 25th and the 90th percentile of order
values, with a face value of at most 6% of it (the largest of 1, 2, 5, 10, 20, 50, ... that fits):

- **just below**: the orders from 80% of X up to X, the ones a coupon can lift;
- **lift**: what they would add reaching X (an upper bound: as if every one of them did);
- **given away**: Y on every order at or above X, and on every lifted order;
- **net** = lift - given away.

The three thresholds with the best net are suggested (at least one, when there are orders). The
classic case: most orders under 100 gives face values of 2 or 5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

FACES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)   # the 1-2-5 series shops use
FACE_SHARE = Decimal("0.06")       # a face value is at most this share of its threshold
BAND = Decimal("0.8")              # "just below": from this share of the threshold up to it


@dataclass(frozen=True)
class Suggestion:
    threshold: int          # whole currency units
    face_value: int
    discount_pct: Decimal   # face value as a share of the threshold
    just_below_pct: Decimal
    at_or_above_pct: Decimal
    lift: Decimal           # currency units, upper bound
    given_away: Decimal
    net: Decimal

    @property
    def label(self) -> str:
        return f"满{self.threshold}减{self.face_value}"

    def to_dict(self) -> dict[str, str | int]:
        return {"coupon": self.label, "threshold": self.threshold,
                "face_value": self.face_value, "discount_pct": str(self.discount_pct),
                "just_below_pct": str(self.just_below_pct),
                "at_or_above_pct": str(self.at_or_above_pct), "lift": str(self.lift),
                "given_away": str(self.given_away), "net": str(self.net)}


def round_thresholds(low: int, high: int) -> list[int]:
    """Round numbers from `low` to `high`: steps of 10 under 100, 50 under 500, 100 under 2,000,
    500 above."""
    out, x = [], 10
    while x <= max(high, 10):
        if x >= low:
            out.append(x)
        x += 10 if x < 100 else 50 if x < 500 else 100 if x < 2000 else 500
    return out


def face_for(threshold: int) -> int:
    limit = FACE_SHARE * threshold
    return max([f for f in FACES if f <= limit], default=1)


def percentile(histogram: Mapping[int, int], share: Decimal) -> int:
    """The smallest whole value with at least `share` of the orders at or below it."""
    total = sum(histogram.values())
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= share * total:
            return value
    return max(histogram, default=0)


def _pct(part: int, whole: int) -> Decimal:
    return (Decimal(part) * 100 / whole).quantize(Decimal("0.01"), ROUND_HALF_UP)


def suggest(histogram: Mapping[int, int], count: int = 3) -> list[Suggestion]:
    """Suggestions from order values in whole currency units (value -> orders), best net
    first among the thresholds tried, then returned by threshold."""
    total = sum(histogram.values())
    if not total:
        return []
    low = percentile(histogram, Decimal("0.25"))
    high = percentile(histogram, Decimal("0.9"))
    tried = []
    for threshold in round_thresholds(max(low, 1), high):
        face = face_for(threshold)
        floor = BAND * threshold
        near = {v: n for v, n in histogram.items() if floor <= v < threshold}
        near_orders = sum(near.values())
        above = sum(n for v, n in histogram.items() if v >= threshold)
        # A value v stands for [v, v + 1): on average v + 0.5 before reaching the threshold.
        lift = sum(((threshold - v - Decimal("0.5")) * n for v, n in near.items()), Decimal(0))
        given = Decimal(face) * (above + near_orders)
        tried.append(Suggestion(
            threshold, face, _pct(face, threshold), _pct(near_orders, total),
            _pct(above, total), lift.quantize(Decimal("0.01")),
            given.quantize(Decimal("0.01")), (lift - given).quantize(Decimal("0.01"))))
    best = sorted(tried, key=lambda s: (-s.net, s.threshold))[:count]
    return sorted(best, key=lambda s: s.threshold)


def verdict(found: Sequence[Suggestion]) -> str:
    """Whether the suggestions pay for themselves, in words."""
    paying = [s.label for s in found if s.net > 0]
    if paying:
        return (f"{', '.join(paying)} can pay for itself: the orders just below adding what "
                "they need to reach it outweigh the face value given to every order")
    return ("none pays for itself given to every buyer, even if every order just below rose "
            "to the threshold (net below 0): these cost least, and are worth it only for the "
            "orders they bring that would not have come at all")
