"""Pure ABC rules: the head-count cut of customer classes and revenue ABC of products. No I/O.

The two are different analyses and keep different names everywhere: **customer classes** rank
members by spend and cut by head count (the ranking itself is SQL, in `abc_store`: it touches
every member of a shop; tests hold it to a slow Python oracle in `tests/oracles.py`);
**product classes** rank items by sales and cut by cumulative share of sales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal


def class_sizes(n: int, a_share: Decimal, b_share: Decimal) -> tuple[int, int]:
    """(size of A, size of A and B together) for n ranked members: ceil(p_A·n), ceil(p_B·n)."""
    return math.ceil(a_share * n), math.ceil(b_share * n)


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
