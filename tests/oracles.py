"""Slow, obvious versions of rules production runs in SQL: the test oracles they are held to.

Production has one implementation of each rule; these are not used outside the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from services.campaigns.domain import Campaign
from services.tiering.abc import class_sizes

_ZERO = timedelta(0)


@dataclass(frozen=True, slots=True)
class Spender:
    """A member's completed-trade spend (net of refunds) within the period."""

    member_id: str
    spend_cents: int
    last_purchase_at: datetime


def rank_customers(spenders: list[Spender]) -> list[Spender]:
    """Spend descending, then last purchase descending, then member id: the same order always.

    Members without positive spend are not ranked; the caller reports them apart.
    """
    ranked = sorted((s for s in spenders if s.spend_cents > 0), key=lambda s: s.member_id)
    ranked.sort(key=lambda s: (s.spend_cents, s.last_purchase_at), reverse=True)  # stable
    return ranked


def classify_customers(spenders: list[Spender], a_share: Decimal,
                       b_share: Decimal) -> dict[str, str]:
    """member id -> 'A' / 'B' / 'C' for every member with positive spend."""
    ranked = rank_customers(spenders)
    a_size, ab_size = class_sizes(len(ranked), a_share, b_share)
    return {
        s.member_id: "A" if rank <= a_size else "B" if rank <= ab_size else "C"
        for rank, s in enumerate(ranked, start=1)
    }



def reach(campaigns: Mapping[str, Campaign]) -> timedelta:
    """The longest click or send window of any campaign (zero when there are none)."""
    return max((max(c.click_window, c.send_window) for c in campaigns.values()), default=_ZERO)


def affected(order_times: Iterable[tuple[str, datetime]], touch_at: datetime,
             window: timedelta) -> list[str]:
    """Ids of orders converted within [touch_at, touch_at + window], in input order, each once."""
    end = touch_at + window
    seen: set[str] = set()
    out: list[str] = []
    for order_id, converted_at in order_times:
        if touch_at <= converted_at <= end and order_id not in seen:
            seen.add(order_id)
            out.append(order_id)
    return out
