"""ABC reports: customer classes (head count by spend) and product classes (by sales), as
tables for JSON/CSV and the product Pareto chart as PNG.

The product report covers one of two kinds of period, and says which, with its exact bounds:

* shop days: `first_day` to `last_day` are calendar days in the shop's time zone (its
  configured `timezone`; UTC for a shop without a configuration, as in the campaign report).
  Every order completed from 00:00:00 of the first day up to, not including, 00:00:00 of the day
  after the last counts: [start, end).
* rolling: the N x 24 hours ending at the shop's clock: (start, end], the same kind of period
  as the customer ABC classes'.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from memberflow.readmodel import iso
from services.tiering import abc_store
from services.tiering.abc import ProductRow, class_sizes, classify_products
from services.tiering.policy import AbcSettings
from shared.money import from_cents
from shared.outbound import iso as utc_iso
from shared.shops import shop_configs

CUSTOMER_COLUMNS = ("rank", "member_id", "spend", "last_purchase_at", "abc_class")
PRODUCT_COLUMNS = ("rank", "sku", "sales", "share", "cumulative_items_pct",
                   "cumulative_sales_pct", "product_class")


class NoData(LookupError):
    """The shop has no order events yet, so there is no period to report on."""


class BadPeriod(ValueError):
    """The options do not make a period: the last day before the first, or too many given."""


# A shop without a configuration has no zone of its own: its days are UTC days, as in the
# campaign report.
UNCONFIGURED_ZONE = "UTC"


def _shop(conn: Connection, shop_id: str) -> tuple[AbcSettings, str, bool]:
    """The shop's ABC settings, time zone, and whether it has a configuration."""
    entry = shop_configs(conn, [shop_id]).get(shop_id)
    if entry is None:
        return AbcSettings(), UNCONFIGURED_ZONE, False
    return entry[1].abc, entry[1].timezone, True


def shop_clock(conn: Connection, shop_id: str) -> datetime:
    """The shop's clock, where its reports end; NoData before its first order event."""
    end = abc_store.watermark(conn, shop_id)
    if end is None:
        raise NoData(f"shop {shop_id!r} has no order events yet")
    return end


def customer_abc(conn: Connection, shop_id: str) -> dict[str, Any]:
    """Head-count ABC of the shop's members over the period ending at its latest event time."""
    settings = _shop(conn, shop_id)[0].customers
    as_of = shop_clock(conn, shop_id)
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


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """00:00:00 of `day` in `zone` as a UTC instant: the first instant of that day, also where
    the zone's clocks skip midnight (fold 0 reads a skipped time with the offset before the
    change, which lands on the change) or repeat it (fold 0 is the first 00:00)."""
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class Period:
    """Which completed orders a product report counts: those completed from `start` (included
    or not) to `end` (included or not), UTC instants; days are the shop's, in `timezone`."""

    start: datetime
    end: datetime
    includes_start: bool
    includes_end: bool
    timezone: str
    first_day: date | None = None   # shop days: the first and the last day counted
    last_day: date | None = None
    rolling_days: int | None = None  # rolling: its length, in 24-hour days
    configured: bool = True         # False: the shop has no configuration (UTC days)

    @classmethod
    def days(cls, first_day: date, last_day: date, zone: str, configured: bool = True
             ) -> Period:
        """Shop days `first_day` to `last_day`, both whole: [first 00:00, day after last 00:00)."""
        if last_day < first_day:
            raise BadPeriod(f"the last day ({last_day}) is before the first ({first_day})")
        tz = ZoneInfo(zone)
        try:
            start, end = day_start(first_day, tz), day_start(last_day + timedelta(days=1), tz)
        except OverflowError:
            raise BadPeriod(f"{first_day} to {last_day} is beyond the dates a report can cover"
                            ) from None
        return cls(start, end, True, False, zone, first_day, last_day, configured=configured)

    @classmethod
    def rolling(cls, end: datetime, days: int, zone: str, configured: bool = True) -> Period:
        """The `days` x 24 hours ending at `end` (the shop's clock): (end - days x 24h, end]."""
        end = end.astimezone(UTC)
        return cls(end - timedelta(days=days), end, False, True, zone, rolling_days=days,
                   configured=configured)

    def local(self, at: datetime) -> datetime:
        """`at` on the shop's clock face."""
        return at.astimezone(ZoneInfo(self.timezone))

    def describe(self) -> str:
        """One line that names both bounds, whether each is included, and the zone."""
        zone = (f"time zone {self.timezone}" if self.configured
                else f"time zone {self.timezone}: the shop has no configuration")
        first = "from" if self.includes_start else "after"
        last = "up to and including" if self.includes_end else "up to, not including,"
        if self.first_day is not None:
            what = f"the shop's days {self.first_day} to {self.last_day}"
        else:
            what = f"the {self.rolling_days} x 24 hours up to the shop's clock"
        return (f"orders completed {first} {self.local(self.start).isoformat(sep=' ')} {last} "
                f"{self.local(self.end).isoformat(sep=' ')}: {what} ({zone})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "days" if self.first_day is not None else "rolling",
            "timezone": self.timezone,
            "first_day": self.first_day.isoformat() if self.first_day else None,
            "last_day": self.last_day.isoformat() if self.last_day else None,
            "rolling_days": self.rolling_days,
            "from": self.local(self.start).isoformat(),
            "to": self.local(self.end).isoformat(),
            "includes_from": self.includes_start, "includes_to": self.includes_end,
            "description": self.describe(),
        }


@dataclass
class ProductAbc:
    shop_id: str
    period: Period
    a_cutoff: Decimal
    b_cutoff: Decimal
    rows: list[ProductRow]

    @property
    def start(self) -> datetime:
        return self.period.start

    @property
    def end(self) -> datetime:
        return self.period.end

    def to_dict(self) -> dict[str, Any]:
        return {
            "shop_id": self.shop_id, "timezone": self.period.timezone,
            "from": utc_iso(self.start), "to": utc_iso(self.end),
            "period": self.period.to_dict(),
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


def _product_sales(conn: Connection, shop_id: str, period: Period) -> dict[str, int]:
    """Sales per item (qty times unit price) of the orders completed in the period."""
    low = ">=" if period.includes_start else ">"
    high = "<=" if period.includes_end else "<"
    rows = conn.exec_driver_sql(
        "SELECT i.sku, sum(i.qty::bigint * i.unit_price_cents) FROM order_items i "
        "JOIN member_orders o ON o.shop_id = i.shop_id AND o.order_id = i.order_id "
        f"WHERE i.shop_id = %s AND o.completed_at {low} %s AND o.completed_at {high} %s "
        "GROUP BY i.sku",
        (shop_id, period.start, period.end),
    ).all()
    return {sku: int(total) for sku, total in rows}


def report_period(conn: Connection, shop_id: str, default_days: int, zone: str,
                  configured: bool, first_day: date | None, last_day: date | None,
                  days: int | None) -> Period:
    """The period the options name (see the module docstring); `default_days` when they name
    none.

    No day: the `days` (default: `default_days`) x 24 hours up to the shop's clock. Both days: those
    shop days. One day and `days`: that many shop days from `first_day` or up to `last_day`.
    Only `last_day`: `default_days` shop days up to it. Only `first_day`: the shop
    days from it to the day of the shop's clock.
    """
    length = days or default_days
    if first_day is None and last_day is None:
        return Period.rolling(shop_clock(conn, shop_id), length, zone, configured)
    if first_day is not None and last_day is not None:
        if days is not None:
            raise BadPeriod("give the first and the last day, or one of them and a number of "
                            "days, not all three")
        return Period.days(first_day, last_day, zone, configured)
    if first_day is None:
        assert last_day is not None
        first_day = _shift(last_day, 1 - length)
    elif days is not None:
        last_day = _shift(first_day, days - 1)
    else:
        last_day = shop_clock(conn, shop_id).astimezone(ZoneInfo(zone)).date()
        if last_day < first_day:
            raise BadPeriod(f"the first day ({first_day}) is after the shop's clock "
                            f"(its day {last_day}, {zone})")
    return Period.days(first_day, last_day, zone, configured)


def _shift(day: date, days: int) -> date:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        raise BadPeriod(f"{days:+} days from {day} is beyond the dates a report can cover"
                        ) from None


def product_abc(conn: Connection, shop_id: str, first_day: date | None = None,
                last_day: date | None = None, days: int | None = None) -> ProductAbc:
    """Revenue ABC of items sold in the completed trades of a period (see `report_period`).

    By default the period is the configured number of days up to the shop's clock.
    """
    settings, zone, configured = _shop(conn, shop_id)
    period = report_period(conn, shop_id, settings.products.period_days, zone, configured,
                           first_day, last_day, days)
    products = settings.products
    rows = classify_products(_product_sales(conn, shop_id, period),
                             products.a_cutoff, products.b_cutoff)
    return ProductAbc(shop_id, period, products.a_cutoff, products.b_cutoff, rows)


def pareto_png(report: ProductAbc, path: Path) -> None:
    """The Pareto chart: cumulative item % against cumulative sales %, classes shaded."""
    from memberflow.charts import pyplot

    plt = pyplot()

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
        # The A items by name, in a box where the curve leaves room (the first 12 of them).
        a_items = [r.sku for r in report.rows if r.product_class == "A"]
        if a_items:
            named = ", ".join(a_items[:12]) + (f", and {len(a_items) - 12} more"
                                                if len(a_items) > 12 else "")
            ax.text(20, 40, "\n".join(textwrap.wrap(f"A items: {named}", 48)), fontsize=8,
                    color="#1b5e20", va="bottom",
                    bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#2e7d32"})
        for cut in (report.a_cutoff, report.b_cutoff):
            ax.axhline(float(cut * 100), color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_xlabel("cumulative share of items (%)")
        ax.set_ylabel("cumulative share of sales (%)")
        period = report.period
        if period.first_day is not None:
            span = f"{period.first_day} to {period.last_day} ({period.timezone} days)"
        else:
            zone = ZoneInfo(period.timezone)
            span = (f"{report.start.astimezone(zone):%Y-%m-%d %H:%M} to "
                    f"{report.end.astimezone(zone):%Y-%m-%d %H:%M} ({period.timezone})")
        ax.set_title(f"Product ABC (Pareto), shop {report.shop_id}, {span}")
        ax.grid(alpha=0.3)
        if report.rows:
            ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
