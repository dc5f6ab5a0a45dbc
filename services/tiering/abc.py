"""Pure ABC rules: head-count ABC of customers and revenue ABC of products. No I/O.

The two are different analyses and keep different names everywhere: **customer classes** rank
members by spend and cut by head count; **product classes** rank items by sales and cut by
cumulative share of sales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Spender:
    """A member's completed-trade spend (net of refunds) within the period."""

    member_id: str
    spend_cents: int
    last_purchase_at: datetime


def class_sizes(n: int, a_share: Decimal, b_share: Decimal) -> tuple[int, int]:
    """(size of A, size of A and B together) for n ranked members: ceil(p_A·n), ceil(p_B·n)."""
    return math.ceil(a_share * n), math.ceil(b_share * n)


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


@dataclass(frozen=True, slots=True)
class ProductRow:
    """One line of the product ABC table."""

    rank: int
    sku: str
    sales_cents: int
    share: Decimal             # of total sales
    cumulative_items: Decimal  # share of items ranked so far
    cumulative_sales: Decimal  # share of sales so far
    product_class: str


def classify_products(sales: dict[str, int], a_cutoff: Decimal,
                      b_cutoff: Decimal) -> list[ProductRow]:
    """The ABC table: items by sales descending (then sku), cut by cumulative share of sales.

    An item belongs to A while the items ranked above it have not yet reached `a_cutoff` of
    sales: A is the smallest head of the list that makes up the cut-off, so a single item
    holding 80% of sales is A, not B. B is cut the same way at `b_cutoff`. Items without
    positive sales are left out.
    """
    items = sorted(((sku, c) for sku, c in sales.items() if c > 0), key=lambda x: x[0])
    items.sort(key=lambda x: x[1], reverse=True)
    total = sum(c for _, c in items)
    rows: list[ProductRow] = []
    before = 0
    for rank, (sku, cents) in enumerate(items, start=1):
        share_before = Decimal(before) / total
        cls = "A" if share_before < a_cutoff else "B" if share_before < b_cutoff else "C"
        before += cents
        rows.append(ProductRow(rank, sku, cents, Decimal(cents) / total,
                               Decimal(rank) / len(items), Decimal(before) / total, cls))
    return rows
