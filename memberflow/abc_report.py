"""ABC reports: customer classes (head count by spend) and product classes (by sales), as
tables for JSON/CSV and the product Pareto chart as PNG."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from memberflow.readmodel import iso
from services.tiering import abc_store
from services.tiering.abc import ProductRow, class_sizes, classify_products
from services.tiering.policy import AbcSettings
from shared.money import from_cents
from shared.shops import shop_configs

CUSTOMER_COLUMNS = ("rank", "member_id", "spend", "last_purchase_at", "abc_class")
PRODUCT_COLUMNS = ("rank", "sku", "sales", "share", "cumulative_items_pct",
                   "cumulative_sales_pct", "product_class")


class NoData(LookupError):
    """The shop has no order events yet, so there is no period to report on."""


def _settings(conn: Connection, shop_id: str) -> AbcSettings:
    entry = shop_configs(conn, [shop_id]).get(shop_id)
    return entry[1].abc if entry else AbcSettings()


def _as_of(conn: Connection, shop_id: str) -> datetime:
    end = abc_store.watermark(conn, shop_id)
    if end is None:
        raise NoData(f"shop {shop_id!r} has no order events yet")
    return end


def customer_abc(conn: Connection, shop_id: str) -> dict[str, Any]:
    """Head-count ABC of the shop's members over the period ending at its latest event time."""
    settings = _settings(conn, shop_id).customers
    as_of = _as_of(conn, shop_id)
    rows = abc_store.ranking(conn, shop_id, as_of, settings)
    zero = abc_store.zero_spenders(conn, shop_id, as_of, settings)
    a_size, ab_size = class_sizes(len(rows), settings.a_share, settings.b_share)
    return {
        "shop_id": shop_id,
        "as_of": iso(as_of),
        "period_days": settings.period_days,
        "a_share": str(settings.a_share),
        "b_share": str(settings.b_share),
        "ranked_members": len(rows),
        "counts": {"A": a_size, "B": ab_size - a_size, "C": len(rows) - ab_size},
        "zero_spenders": zero,
        "members": [
            {"rank": r, "member_id": m, "spend": str(from_cents(s)),
             "last_purchase_at": iso(last), "abc_class": c}
            for r, m, s, last, c in rows
        ],
    }


@dataclass
class ProductAbc:
    shop_id: str
    start: datetime
    end: datetime
    a_cutoff: Decimal
    b_cutoff: Decimal
    rows: list[ProductRow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "shop_id": self.shop_id, "from": iso(self.start), "to": iso(self.end),
            "a_cutoff": str(self.a_cutoff), "b_cutoff": str(self.b_cutoff),
            "items": [product_record(r) for r in self.rows],
        }


def _pct(x: Decimal) -> str:
    return str((x * 100).quantize(Decimal("0.01")))


def product_record(row: ProductRow) -> dict[str, Any]:
    return {"rank": row.rank, "sku": row.sku, "sales": str(from_cents(row.sales_cents)),
            "share": _pct(row.share), "cumulative_items_pct": _pct(row.cumulative_items),
            "cumulative_sales_pct": _pct(row.cumulative_sales),
            "product_class": row.product_class}


def product_abc(conn: Connection, shop_id: str, start: datetime | None = None,
                end: datetime | None = None, days: int | None = None) -> ProductAbc:
    """Revenue ABC of items sold in completed trades over (start, end].

    By default the period is the configured number of days up to the shop's latest event time.
    """
    settings = _settings(conn, shop_id).products
    end = end or _as_of(conn, shop_id)
    start = start or end - timedelta(days=days or settings.period_days)
    rows = classify_products(abc_store.product_sales(conn, shop_id, start, end),
                             settings.a_cutoff, settings.b_cutoff)
    return ProductAbc(shop_id, start, end, settings.a_cutoff, settings.b_cutoff, rows)


def pareto_png(report: ProductAbc, path: Path) -> None:
    """The Pareto chart: cumulative item % against cumulative sales %, classes shaded."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    from matplotlib import pyplot as plt

    xs = [0.0] + [float(r.cumulative_items * 100) for r in report.rows]
    ys = [0.0] + [float(r.cumulative_sales * 100) for r in report.rows]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    try:
        colours = {"A": "#2e7d32", "B": "#f9a825", "C": "#c62828"}
        for cls, colour in colours.items():
            ranks = [r for r in report.rows if r.product_class == cls]
            if ranks:
                lo = float((ranks[0].rank - 1) / len(report.rows) * 100)
                hi = float(ranks[-1].cumulative_items * 100)
                ax.axvspan(lo, hi, color=colour, alpha=0.12,
                           label=f"class {cls}: {len(ranks)} items")
        ax.plot(xs, ys, color="#1a237e", linewidth=2)
        for cut in (report.a_cutoff, report.b_cutoff):
            ax.axhline(float(cut * 100), color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_xlabel("cumulative share of items (%)")
        ax.set_ylabel("cumulative share of sales (%)")
        ax.set_title(f"Product ABC (Pareto), shop {report.shop_id}, "
                     f"{report.start:%Y-%m-%d} to {report.end:%Y-%m-%d}")
        ax.grid(alpha=0.3)
        if report.rows:
            ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
