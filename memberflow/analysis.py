"""Customer analysis (SPEC §4): the level, time, amount, count, dormant and growth reports.

Each report covers a period of the shop's completed trades and is computed by PostgreSQL in
set-based SQL (no member is loaded into Python); Python only shapes the few rows that come back.

- **Period.** By default the 365 x 24 hours up to the shop's clock, (clock - 365 days, clock];
  or `days` x 24 hours; or whole shop days (`first_day`, `last_day`, in the shop's time zone),
  exactly as the product ABC report (`memberflow.abc_report.Period`).
- **Trades and revenue.** A completed trade counts in the period its `order.completed` is dated
  in. Revenue is its amount net of what was refunded (`amount - refunded`), the same money as a
  member's net spend. An *order value* is what the order was completed for (before refunds: the
  amount a coupon threshold is judged on at checkout).
- **Buyers** are the members with a completed trade in the period.
- **Clock.** The shop's clock is the pipeline clock (docs/time.md), as for dormancy tags and ABC
  classes; days are 24 hours, as in the tag rules.
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from memberflow.abc_report import NoData, Period, day_start, report_period, shop_clock
from memberflow.charts import thousands
from services.tiering import rfm, scores_store
from services.tiering.levels import discount
from shared.filters import MemberFilter
from shared.money import CENT, from_cents
from shared.shops import shop_configs

DEFAULT_DAYS = 365
COUNT_BANDS = ((1, 1, "1"), (2, 2, "2"), (3, 3, "3"), (4, 5, "4-5"), (6, 10, "6-10"),
               (11, None, "11+"))
PERCENTILES = (Decimal("0.1"), Decimal("0.25"), Decimal("0.5"), Decimal("0.75"),
               Decimal("0.9"), Decimal("0.99"))
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass
class Table:
    """One table of a report: named columns, rows as dicts (money as two-decimal strings), and
    optionally a totals row (written last in CSV and XLSX)."""

    columns: list[str]
    rows: list[dict[str, Any]]
    totals: dict[str, Any] | None = None


@dataclass
class Analysis:
    report: str
    shop_id: str
    period: Period
    tables: dict[str, Table]
    summary: dict[str, Any] = field(default_factory=dict)
    chart: Callable[[Analysis, Any], None] | None = None
    headline: str | None = None     # what the report covers, when not a period of trades
    extra: Any = None               # what the chart draws beyond the tables

    def describe(self) -> str:
        return self.headline or self.period.describe()

    def to_dict(self) -> dict[str, Any]:
        return {"report": self.report, "shop_id": self.shop_id, "covers": self.describe(),
                "period": self.period.to_dict(), "summary": self.summary,
                **{name: t.rows + ([t.totals] if t.totals else []) for name, t in
                   self.tables.items()}}

    def csv_text(self) -> str:
        """Each table under a `# name` line, with its totals row last; the summary first."""
        out = io.StringIO()
        out.write(f"# {self.report} report, shop {self.shop_id}: {self.describe()}\n")
        for key, value in self.summary.items():
            if not isinstance(value, (dict, list)):
                out.write(f"# {key}: {value}\n")
        for name, table in self.tables.items():
            out.write(f"# {name}\n")
            writer = csv.DictWriter(out, fieldnames=table.columns, extrasaction="ignore",
                                    lineterminator="\n")
            writer.writeheader()
            writer.writerows(_flat(r) for r in table.rows)
            if table.totals:
                writer.writerow(table.totals)
        return out.getvalue()

    def xlsx_bytes(self) -> bytes:
        """A sheet per table: headers in words, money and shares as numbers, dates as dates."""
        from openpyxl import Workbook
        from openpyxl.styles import Font

        book = Workbook()
        first = book.active
        assert first is not None
        book.remove(first)
        about = book.create_sheet("about")
        about.append([f"{self.report} report", self.shop_id])
        about.append(["covers", self.describe()])
        for key, value in self.summary.items():
            if not isinstance(value, (dict, list)):
                about.append([words(key), cell(value)])
        for name, table in self.tables.items():
            sheet = book.create_sheet(name[:31])
            sheet.append([words(c) for c in table.columns])
            for c in sheet[1]:
                c.font = Font(bold=True)
            for row in table.rows + ([table.totals] if table.totals else []):
                sheet.append([cell(_flat(row).get(c)) for c in table.columns])
            if table.totals:
                for c in sheet[sheet.max_row]:
                    c.font = Font(bold=True)
        out = io.BytesIO()
        book.save(out)
        return out.getvalue()

    def png_bytes(self) -> bytes | None:
        """The report's chart as PNG; None if this report has none."""
        if self.chart is None:
            return None
        from memberflow.charts import pyplot

        plt = pyplot()
        out = io.BytesIO()
        try:
            self.chart(self, plt)
            plt.gcf().savefig(out, format="png", dpi=110)
        finally:
            plt.close("all")
        return out.getvalue()

    def png(self, path: Path) -> bool:
        """Draw the report's chart to `path`; False if this report has none."""
        drawn = self.png_bytes()
        if drawn is not None:
            path.write_bytes(drawn)
        return drawn is not None


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """Lists (a member's tags) as "a|b", as every CSV memberflow writes has them."""
    return {k: "|".join(v) if isinstance(v, list) else v for k, v in row.items()}


def words(column: str) -> str:
    return column.replace("_pct", " %").replace("_", " ")


def cell(value: Any) -> Any:
    """A value as a spreadsheet cell: numbers as numbers, ISO dates and times as dates."""
    if isinstance(value, str):
        try:
            return Decimal(value) if value and value[0] in "-0123456789" and "-" not in value[1:] \
                and ":" not in value else _date(value)
        except ArithmeticError:
            return value
    return value


def _date(value: str) -> Any:
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        return value


def money(cents: int | Decimal | None) -> str:
    return str(from_cents(int(cents or 0)))


def share(part: int, whole: int) -> str:
    """A percentage with two decimals ("" of nothing)."""
    if not whole:
        return ""
    return str((Decimal(part) * 100 / Decimal(whole)).quantize(CENT, ROUND_HALF_UP))


def per(cents: int, n: int) -> str:
    return str((from_cents(cents) / n).quantize(CENT, ROUND_HALF_UP)) if n else "0.00"


# --- the shop and the period ---------------------------------------------------------------


@dataclass(frozen=True)
class Shop:
    shop_id: str
    zone: str
    configured: bool
    config: Any


def shop_of(conn: Connection, shop_id: str) -> Shop:
    entry = shop_configs(conn, [shop_id]).get(shop_id)
    if entry is None:
        return Shop(shop_id, "UTC", False, None)
    return Shop(shop_id, entry[1].timezone, True, entry[1])


# Reports that read the buyers' figures tiering keeps, over its period (see `period_of`).
KEPT_REPORTS = ("levels", "amounts", "rfm", "predicted")


def period_of(conn: Connection, shop: Shop, first_day: date | None = None,
              last_day: date | None = None, days: int | None = None,
              report: str | None = None) -> Period:
    """The report's period (see the module docstring); NoData before the shop's first order.

    Naming none, the reports that can read what tiering keeps in the members' records
    (`KEPT_REPORTS`) cover its period: the RFM period up to tiering's last recompute of the
    shop's scores (at most minutes behind the clock while the shop sells, an hour when it does
    not), or up to its last daily fit for the predicted value. They then read each buyer's
    figures there instead of reading every order again. When nothing is kept, the 365 days up
    to the shop's clock, as the others."""
    if report in KEPT_REPORTS and first_day is None and last_day is None and days is None:
        kept = _kept(conn, shop)
        as_of = kept.rfm_as_of if report == "rfm" else kept.predicted_as_of
        if as_of is not None:
            return Period.rolling(as_of, _rfm_settings(shop).period_days, shop.zone,
                                  shop.configured)
    return report_period(conn, shop.shop_id, DEFAULT_DAYS, shop.zone, shop.configured,
                         first_day, last_day, days)


def _bounds(period: Period) -> tuple[str, dict[str, Any]]:
    """`o.completed_at` within the period, and its parameters."""
    low = ">=" if period.includes_start else ">"
    high = "<=" if period.includes_end else "<"
    return (f"o.completed_at {low} %(p_start)s AND o.completed_at {high} %(p_end)s",
            {"p_start": period.start, "p_end": period.end})


def _orders(period: Period) -> tuple[str, dict[str, Any]]:
    """The period's completed trades as `o` (FROM clause body), with their parameters."""
    within, params = _bounds(period)
    return (f"member_orders o WHERE o.shop_id = %(shop)s AND {within}", params)


NET = rfm.NET


# --- level analysis ------------------------------------------------------------------------


def level_analysis(conn: Connection, shop: Shop, period: Period, *,
                   kept: bool = True) -> Analysis:
    """Per level (members' current level): members, buyers, completed trades, revenue, its
    share, AOV and the level's discount; and level changes per month by cause. Over the period
    of the scores tiering keeps, each buyer's trades and spend are read from there."""
    orders, params = _orders(period)
    params |= {"shop": shop.shop_id, "tz": shop.zone}
    buyers = (f"SELECT o.member_id, count(*) AS trades, sum({NET}) AS net FROM {orders} "
              "GROUP BY o.member_id")
    if _kept_period(conn, shop, period, kept) is not None:
        buyers = ("SELECT member_id, trades, spend_cents AS net FROM member_rfm "
                  "WHERE shop_id = %(shop)s")
    rows = conn.exec_driver_sql(
        f"WITH b AS ({buyers}) "
        "SELECT m.level, count(*) AS members, count(b.member_id) AS buyers, "
        "  coalesce(sum(b.trades), 0) AS trades, coalesce(sum(b.net), 0) AS net "
        "FROM members m LEFT JOIN b ON b.member_id = m.member_id "
        "WHERE m.shop_id = %(shop)s GROUP BY m.level ORDER BY m.level", params).all()
    policy = shop.config.levels if shop.config is not None else None
    revenue = sum(int(r.net) for r in rows)
    table = Table(["level", "level_name", "members", "buyers", "completed_trades", "revenue",
                   "revenue_share_pct", "aov", "discount"], [
        {"level": r.level, "level_name": (policy.name_of(r.level) if policy and r.level
                                          else "no level"),
         "members": r.members, "buyers": r.buyers, "completed_trades": int(r.trades),
         "revenue": money(r.net), "revenue_share_pct": share(int(r.net), revenue),
         "aov": per(int(r.net), int(r.trades)), "discount": str(discount(policy, r.level, False))}
        for r in rows])
    trades = sum(int(r.trades) for r in rows)
    table.totals = {"level": "total", "members": sum(r.members for r in rows),
                    "buyers": sum(r.buyers for r in rows), "completed_trades": trades,
                    "revenue": money(revenue), "revenue_share_pct": share(revenue, revenue),
                    "aov": per(revenue, trades)}
    within = _bounds(period)[0].replace("o.completed_at", "c.effective_from")
    changes = conn.exec_driver_sql(
        "SELECT to_char(date_trunc('month', c.effective_from AT TIME ZONE %(tz)s), 'YYYY-MM') "
        "  AS month, c.cause, count(*) FILTER (WHERE c.new_level > c.old_level) AS up, "
        "  count(*) FILTER (WHERE c.new_level < c.old_level) AS down, count(*) AS changes "
        f"FROM level_changes c WHERE c.shop_id = %(shop)s AND {within} "
        "GROUP BY 1, 2 ORDER BY 1, 2", params).all()
    return Analysis("levels", shop.shop_id, period, {
        "levels": table,
        "level_changes": Table(["month", "cause", "up", "down", "changes"],
                               [dict(r._mapping) for r in changes])},
        {"members": table.totals["members"], "buyers": table.totals["buyers"],
         "completed_trades": trades, "revenue": money(revenue)}, _level_chart)


def _level_chart(report: Analysis, plt: Any) -> None:
    rows = report.tables["levels"].rows
    labels = [f"{r['level']} {r['level_name']}" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.bar(labels, [r["members"] for r in rows], color="#5c6bc0")
    left.set_title("members per level")
    left.yaxis.get_major_locator().set_params(integer=True)
    right.bar(labels, [float(r["revenue"]) for r in rows], color="#2e7d32")
    right.set_title("revenue per level (net of refunds)")
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=20)
        thousands(ax.yaxis)
    fig.suptitle(f"Levels, shop {report.shop_id}: {_span(report.period)}")
    fig.tight_layout()


def _span(period: Period) -> str:
    if period.first_day is not None:
        return f"{period.first_day} to {period.last_day} ({period.timezone})"
    return (f"{period.local(period.start):%Y-%m-%d} to {period.local(period.end):%Y-%m-%d} "
            f"({period.timezone})")


# --- time analysis -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Month:
    month: str
    trades: int
    net: int
    whole: bool     # the whole month lies in the period


def time_analysis(conn: Connection, shop: Shop, period: Period) -> Analysis:
    """Completed trades and revenue by day of week x hour of day, and by month, in the shop's
    time zone."""
    orders, params = _orders(period)
    params |= {"shop": shop.shop_id}
    # One pass: the trades per quarter hour of UTC (35,000 rows a year), each quarter then
    # put in its hour of the shop's clock here. Every zone's offset and every daylight-saving
    # change is a whole number of quarter hours, so a quarter lies in one hour of any zone;
    # converting the quarters instead of every trade spares PostgreSQL most of its work.
    zone = ZoneInfo(shop.zone)
    quarters = conn.exec_driver_sql(
        "SELECT date_bin('15 minutes', o.completed_at, '2000-01-01 00:00+00') AS at, "
        f"  count(*) AS trades, sum({NET}) AS net FROM {orders} GROUP BY 1", params).all()
    cells: dict[tuple[int, int], list[int]] = {}
    monthly: dict[str, list[int]] = {}
    for at, n, net in quarters:
        local = at.astimezone(zone)
        for figures in (cells.setdefault((local.isoweekday(), local.hour), [0, 0]),
                        monthly.setdefault(f"{local:%Y-%m}", [0, 0])):
            figures[0] += n
            figures[1] += int(net)
    # The period's months (growth's buckets; the last, where the period ends, holds a trade
    # at its very end), from the first with a trade to the last: a gap is a month with none; a
    # month is whole when it lies wholly in the period.
    starts = bucket_starts(period, "month")
    calendar = [(begin, begin >= period.start and following <= period.end)
                for begin, following in itertools.pairwise(starts)] + [(starts[-1], False)]
    months = []
    for begin, whole in calendar:
        month = f"{begin.astimezone(zone):%Y-%m}"
        if monthly and min(monthly) <= month <= max(monthly):
            n, net = monthly.get(month, [0, 0])
            months.append(_Month(month, n, net, whole))
    grid = {key: (n, net) for key, (n, net) in cells.items()}
    trades = sum(t for t, _ in grid.values())
    revenue = sum(n for _, n in grid.values())
    heat = Table(["day_of_week", *[f"h{h:02d}" for h in range(24)], "trades"], [
        {"day_of_week": WEEKDAYS[d - 1], **{f"h{h:02d}": grid.get((d, h), (0, 0))[0]
                                            for h in range(24)},
         "trades": sum(grid.get((d, h), (0, 0))[0] for h in range(24))}
        for d in range(1, 8)])
    heat.totals = {"day_of_week": "total", **{
        f"h{h:02d}": sum(grid.get((d, h), (0, 0))[0] for d in range(1, 8)) for h in range(24)},
        "trades": trades}
    by_month = Table(["month", "whole", "completed_trades", "revenue", "revenue_share_pct"], [
        {"month": r.month, "whole": r.whole, "completed_trades": r.trades,
         "revenue": money(r.net), "revenue_share_pct": share(int(r.net), revenue)}
        for r in months],
        {"month": "total", "completed_trades": trades, "revenue": money(revenue),
         "revenue_share_pct": share(revenue, revenue)})
    busiest = max(grid.items(), key=lambda kv: (kv[1][0], kv[0]), default=None)
    # Seasons are judged on whole months (a period's first and last are often cut short),
    # unless the period holds none.
    judged = [r for r in months if r.whole] or months
    peak = max(judged, key=lambda r: (r.trades, r.month), default=None)
    slack = min(judged, key=lambda r: (r.trades, r.month), default=None)
    return Analysis("time", shop.shop_id, period, {"weekday_hour": heat, "months": by_month}, {
        "timezone": shop.zone, "completed_trades": trades, "revenue": money(revenue),
        "busiest_hour": (f"{WEEKDAYS[busiest[0][0] - 1]} {busiest[0][1]:02d}:00"
                         if busiest else None),
        "peak_month": peak.month if peak else None,
        "slack_month": slack.month if slack else None}, _time_chart)


def _time_chart(report: Analysis, plt: Any) -> None:
    heat = report.tables["weekday_hour"].rows
    months = report.tables["months"].rows
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7.5),
                                      gridspec_kw={"height_ratios": [3, 2]})
    values = [[r[f"h{h:02d}"] for h in range(24)] for r in heat]
    image = top.imshow(values, aspect="auto", cmap="YlOrRd")
    top.set_yticks(range(7), WEEKDAYS)
    top.set_xticks(range(24), [f"{h:02d}" for h in range(24)])
    top.set_xlabel(f"hour of day ({report.period.timezone})")
    top.set_title("completed trades by day of week and hour")
    fig.colorbar(image, ax=top, label="completed trades")
    bottom.bar([m["month"] for m in months], [m["completed_trades"] for m in months],
               color=["#5c6bc0" if m["whole"] else "#c5cae9" for m in months])
    cut = any(not m["whole"] for m in months)
    bottom.set_title("completed trades by month" + (
        " (pale: only partly in the period)" if cut else ""))
    bottom.yaxis.get_major_locator().set_params(integer=True)
    bottom.tick_params(axis="x", labelrotation=45)
    fig.suptitle(f"Time, shop {report.shop_id}: {_span(report.period)}")
    fig.tight_layout()


# --- amount analysis -----------------------------------------------------------------------


NICE = (1, 2, 5)


def nice_step(span: Decimal, buckets: int = 8) -> Decimal:
    """A round bucket width (1, 2 or 5 times a power of ten, at least 1) giving about
    `buckets` buckets over `span`."""
    if span <= 0:
        return Decimal(1)
    raw = span / buckets
    power = Decimal(1)
    while power * 10 <= raw:
        power *= 10
    for n in NICE:
        if power * n >= raw:
            return power * n
    return power * 10


def default_edges(high: Decimal, buckets: int = 8) -> list[Decimal]:
    """Bucket edges from the data: round steps up to about the 95th percentile, the last
    bucket open (so one huge order does not squash every other bucket)."""
    step = nice_step(high, buckets)
    return [step * i for i in range(1, buckets + 1)]


def buckets_of(edges: Sequence[Decimal]) -> list[tuple[Decimal, Decimal | None, str]]:
    """[0, e1), [e1, e2), ..., [en, ∞), labelled like "100-200" and "800+"."""
    bounds = [Decimal(0), *edges]
    out = []
    for i, low in enumerate(bounds):
        high = bounds[i + 1] if i + 1 < len(bounds) else None
        label = f"{low:f}+" if high is None else f"{low:f}-{high:f}"
        out.append((low, high, label))
    return out


def parse_edges(text: str) -> list[Decimal]:
    """"50,100,200" -> edges; refused unless positive and rising."""
    try:
        edges = [Decimal(x.strip()) for x in text.split(",") if x.strip()]
    except ArithmeticError:
        raise ValueError(f"buckets: {text!r} is not a list of amounts like 50,100,200") from None
    if not edges or any(e <= 0 for e in edges) or edges != sorted(set(edges)):
        raise ValueError(f"buckets: {text!r} must be positive amounts in rising order")
    return edges


def amount_analysis(conn: Connection, shop: Shop, period: Period,
                    order_edges: list[Decimal] | None = None,
                    spend_edges: list[Decimal] | None = None, *, kept: bool = True) -> Analysis:
    """Order values (what each completed trade was for) and buyers' net spend in the period:
    buckets, mean, median and percentiles.

    Each population is read once, as a histogram (how many orders, or buyers, have each value
    in cents: a hundred thousand values, not millions), and the figures come from it here:
    percentiles as PostgreSQL's percentile_cont (linear between the two nearest values), but
    exact. Over the period of the scores tiering keeps, the buyers' spend is theirs."""
    orders, params = _orders(period)
    params |= {"shop": shop.shop_id}
    order_hist, refunded = Histogram.read(
        conn, "SELECT coalesce(o.amount_cents, 0) AS v, count(*) AS n, "
        f"coalesce(sum(o.refunded_cents), 0) AS also FROM {orders} GROUP BY 1", params)
    if not order_hist.n:
        raise NoData(f"shop {shop.shop_id!r} has no completed trade in the period")
    if _kept_period(conn, shop, period, kept) is not None:
        spend_sql = ("SELECT spend_cents AS v, count(*) AS n, 0 AS also FROM member_rfm "
                     "WHERE shop_id = %(shop)s GROUP BY 1")
    else:
        spend_sql = (f"SELECT net AS v, count(*) AS n, 0 AS also FROM (SELECT o.member_id, "
                     f"sum({NET}) AS net FROM {orders} GROUP BY o.member_id) b GROUP BY 1")
    spend_hist, _ = Histogram.read(conn, spend_sql, params)
    fractions = [*PERCENTILES, Decimal("0.95")]
    order_q = order_hist.percentiles(fractions)
    spend_q = spend_hist.percentiles(fractions)
    order_edges = order_edges or default_edges(from_cents(int(order_q[-1])))
    spend_edges = spend_edges or default_edges(from_cents(max(int(spend_q[-1]), 1)))

    def figures(hist: Histogram, q: list[Fraction]) -> dict[str, Any]:
        return {"count": hist.n, "mean": per(hist.total, hist.n),
                **{f"p{int(p * 100)}": money((Decimal(x.numerator) / x.denominator).quantize(
                    Decimal(1), ROUND_HALF_UP)) for p, x in zip(PERCENTILES, q, strict=False)}}

    order_figures = figures(order_hist, order_q)
    spend_figures = figures(spend_hist, spend_q)
    return Analysis("amounts", shop.shop_id, period, {
        "order_values": _bucket_table(order_hist.bucketed(order_edges), "orders", order_hist.n),
        "buyer_spend": _bucket_table(spend_hist.bucketed(spend_edges), "buyers", spend_hist.n),
        "figures": Table(["of", "count", "mean", *[f"p{int(p * 100)}" for p in PERCENTILES]], [
            {"of": "order value", **order_figures}, {"of": "buyer net spend", **spend_figures}])},
        {"completed_trades": order_hist.n, "aov": per(order_hist.total - refunded, order_hist.n),
         "median_order_value": order_figures["p50"], "buyers": spend_hist.n,
         "order_buckets": ",".join(f"{e:f}" for e in order_edges),
         "spend_buckets": ",".join(f"{e:f}" for e in spend_edges)}, _amount_chart)


@dataclass(frozen=True)
class Histogram:
    """How many of a population have each value (whole cents), values rising."""

    values: Any   # numpy int64 arrays
    counts: Any

    @classmethod
    def of(cls, pairs: Sequence[tuple[int, int]]) -> Histogram:
        import numpy as np

        ordered = sorted(pairs)
        return cls(np.array([v for v, _ in ordered], dtype=np.int64),
                   np.array([c for _, c in ordered], dtype=np.int64))

    @classmethod
    def read(cls, conn: Connection, sql: str, params: dict[str, Any]
             ) -> tuple[Histogram, int]:
        """From a query of (v, n, also) rows, fetched as two arrays in one row; and the sum of
        `also` (a figure read in the same pass)."""
        import numpy as np

        values, counts, also = conn.exec_driver_sql(
            "SELECT array_agg(v ORDER BY v), array_agg(n ORDER BY v), coalesce(sum(also), 0) "
            f"FROM ({sql}) h", params).one()
        return cls(np.array(values or [], dtype=np.int64),
                   np.array(counts or [], dtype=np.int64)), int(also)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def total(self) -> int:
        return int((self.values * self.counts).sum())

    def percentiles(self, fractions: Sequence[Decimal]) -> list[Fraction]:
        """percentile_cont, exactly: at position q x (n - 1) of the sorted values, linear
        between the two around it."""
        import numpy as np

        if not len(self.values):
            return []
        ends = np.cumsum(self.counts)      # last position + 1 of each value

        def at(i: int) -> int:
            return int(self.values[int(np.searchsorted(ends, i, side="right"))])

        out = []
        for q in fractions:
            pos = Fraction(str(q)) * (int(ends[-1]) - 1)
            low = math.floor(pos)
            out.append(at(low) + (at(math.ceil(pos)) - at(low)) * (pos - low))
        return out

    def bucketed(self, edges: list[Decimal]) -> list[tuple[str, int, int]]:
        """(label, how many, their sum in cents) per bucket of `buckets_of(edges)`; a value
        equal to an edge goes in the bucket above it (as width_bucket does)."""
        import numpy as np

        cuts = np.searchsorted(self.values, [int(e * 100) for e in edges], side="left")
        bounds = [0, *(int(c) for c in cuts), len(self.values)]
        counts = np.concatenate([[0], np.cumsum(self.counts)])
        sums = np.concatenate([[0], np.cumsum(self.values * self.counts)])
        return [(label, int(counts[bounds[i + 1]] - counts[bounds[i]]),
                 int(sums[bounds[i + 1]] - sums[bounds[i]]))
                for i, (_, _, label) in enumerate(buckets_of(edges))]


def _bucket_table(rows: list[tuple[str, int, int]], what: str, total: int) -> Table:
    cumulative = 0
    out = []
    for label, n, cents in rows:
        cumulative += n
        out.append({"bucket": label, what: n, "share_pct": share(n, total),
                    "cumulative_pct": share(cumulative, total), "sum": money(cents)})
    return Table(["bucket", what, "share_pct", "cumulative_pct", "sum"], out,
                 {"bucket": "total", what: total, "share_pct": share(total, total),
                  "sum": money(sum(c for _, _, c in rows))})


def _amount_chart(report: Analysis, plt: Any) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, name, what, colour in ((left, "order_values", "orders", "#5c6bc0"),
                                   (right, "buyer_spend", "buyers", "#2e7d32")):
        rows = report.tables[name].rows
        ax.bar([r["bucket"] for r in rows], [r[what] for r in rows], color=colour)
        ax.set_title(f"{words(name)} ({what} per bucket)")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(axis="x", labelrotation=35)
    fig.suptitle(f"Amounts, shop {report.shop_id}: {_span(report.period)}")
    fig.tight_layout()


# --- count analysis and dormant members ----------------------------------------------------


def count_analysis(conn: Connection, shop: Shop, period: Period) -> Analysis:
    """Buyers by their number of completed trades in the period (1, 2, 3, 4-5, 6-10, 11+), and
    the repeat rate (buyers with two or more)."""
    orders, params = _orders(period)
    params |= {"shop": shop.shop_id}
    found: dict[int, int] = {int(n): int(c) for n, c in conn.exec_driver_sql(
        f"SELECT n, count(*) FROM (SELECT count(*) AS n FROM {orders} GROUP BY o.member_id) c "
        "GROUP BY n", params).all()}
    buyers = sum(found.values())
    if not buyers:
        raise NoData(f"shop {shop.shop_id!r} has no completed trade in the period")
    rows = []
    for low, high, label in COUNT_BANDS:
        n = sum(c for k, c in found.items() if k >= low and (high is None or k <= high))
        trades = sum(k * c for k, c in found.items() if k >= low and (high is None or k <= high))
        rows.append({"completed_trades": label, "buyers": n, "share_pct": share(n, buyers),
                     "trades": trades})
    repeat = buyers - found.get(1, 0)
    return Analysis("counts", shop.shop_id, period, {
        "trade_counts": Table(["completed_trades", "buyers", "share_pct", "trades"], rows, {
            "completed_trades": "total", "buyers": buyers, "share_pct": share(buyers, buyers),
            "trades": sum(k * c for k, c in found.items())})},
        {"buyers": buyers, "repeat_buyers": repeat, "repeat_rate_pct": share(repeat, buyers)},
        _count_chart)


def _count_chart(report: Analysis, plt: Any) -> None:
    rows = report.tables["trade_counts"].rows
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.bar([r["completed_trades"] for r in rows], [r["buyers"] for r in rows], color="#5c6bc0")
    ax.set_xlabel("completed trades in the period")
    ax.set_ylabel("buyers")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"Trade counts, shop {report.shop_id}: {_span(report.period)}; repeat rate "
                 f"{report.summary['repeat_rate_pct']}%")
    fig.tight_layout()


def dormant_days(days: int | None, cycle_days: int | None, multiple: Decimal | None) -> int:
    """N given directly, or as the product's use cycle times a multiple (90 x 2 = 180)."""
    if (days is None) == (cycle_days is None):
        raise ValueError("dormant: give the days, or the use cycle (and a multiple, default 2)")
    if days is not None:
        return days
    assert cycle_days is not None
    n = (Decimal(cycle_days) * (multiple or Decimal(2))).to_integral_value(ROUND_HALF_UP)
    if n < 1:
        raise ValueError("dormant: the cycle times the multiple is under one day")
    return int(n)


def dormant_filter(days: int) -> MemberFilter:
    """Members who bought (net spend > 0) and have not for `days` x 24 hours up to the shop's
    clock: exactly what `--dormant-days N --min-spend 0.01` selects for tagging or a campaign."""
    return MemberFilter(dormant_days=days, min_spend=Decimal("0.01"))


def dormant_members(conn: Connection, shop: Shop, days: int, limit: int = 1000) -> Analysis:
    """The dormant members (see `dormant_filter`), biggest spenders first."""
    from memberflow.readmodel import count_members, member_records

    clock = shop_clock(conn, shop.shop_id)
    selection = dormant_filter(days)
    total = count_members(conn, shop.shop_id, selection)
    rows = member_records(conn, shop.shop_id, selection, sort="-spend", limit=limit)
    for r in rows:
        last = datetime.fromisoformat(r["last_purchase_at"].replace("Z", "+00:00"))
        r["days_since_last_purchase"] = int((clock - last) / timedelta(days=1))
    period = Period.rolling(clock, days, shop.zone, shop.configured)
    return Analysis("dormant", shop.shop_id, period, {"dormant_members": Table(
        ["member_id", "level", "level_name", "last_purchase_at", "days_since_last_purchase",
         "completed_trades", "spend", "abc_class", "tags"], rows)},
        {"dormant_days": days, "dormant_members": total, "listed": len(rows),
         "as_of": clock.astimezone(UTC).isoformat().replace("+00:00", "Z"),
         "tag_them": f"memberflow tags add TAG --shop {shop.shop_id} --reason WHY "
                     f"--dormant-days {days} --min-spend 0.01",
         "campaign_target": {"dormant_days": days, "min_spend": "0.01"}},
        headline=f"members who spent something and completed no trade in the {days} x 24 hours "
                 f"up to the shop's clock ({period.local(clock).isoformat(sep=' ')}, "
                 f"{shop.zone})")


# --- growth and churn ----------------------------------------------------------------------


def bucket_starts(period: Period, unit: str) -> list[datetime]:
    """The UTC instants where the shop's months (or ISO weeks, from Monday) begin, from the one
    holding the period's start to the first at or after its end."""
    zone = ZoneInfo(period.timezone)
    first = period.local(period.start).date()
    day = first.replace(day=1) if unit == "month" else first - timedelta(days=first.weekday())
    out = []
    while True:
        out.append(day_start(day, zone))
        if out[-1] >= period.end:
            return out
        if unit == "month":
            day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            day += timedelta(days=7)


def growth_analysis(conn: Connection, shop: Shop, period: Period, unit: str = "month",
                    dormant_after: int = 180, lost_after: int = 365) -> Analysis:
    """Per month (or week) of the period, in the shop's time zone:

    - new: members whose first completed trade ever falls in it;
    - active: members with a completed trade in it; returning: active, and bought before it;
    - dormant and lost, at its end (the period's end for the last one): members whose last
      completed trade by then is at least `dormant_after` (but less than `lost_after`), or at
      least `lost_after`, 24-hour days old: the dormancy tags' clock and day.
    """
    if unit not in ("month", "week"):
        raise ValueError(f"unit: {unit!r} is not month or week")
    if not 0 < dormant_after < lost_after:
        raise ValueError("lost days must be more than dormant days, and both above 0")
    starts = bucket_starts(period, unit)
    # Each bucket's end: where the next begins, but never after the period's end.
    ends = [min(s, period.end) for s in starts[1:]]
    # One pass over every member's trades up to the period's end in time order (the
    # member-orders index's own order), each with whether it is the member's first and with
    # their next trade:
    # - new: a member is new in the bucket of their first trade ever, when in the period;
    # - active: a member is active in a bucket once, at their last trade of the period in it
    #   (the one with no next trade, or the next in a later bucket);
    # - dormant and lost: a member's last trade by an end t is the trade o with o <= t < the
    #   next one; o counts as dormant at the ends from o + dormant to before the next trade,
    #   and as lost from o + lost.
    # The ends are shifted here instead of every trade there: "o + dormant > end" counts the
    # ends e with e - dormant < o, that is e - dormant + 1 microsecond <= o (24-hour days: the
    # session's zone is UTC). PostgreSQL only places each trade and its next among the sorted
    # instants where any of that changes (a binary search each, width_bucket: converting
    # every trade's time to the shop's zone would cost seconds) and counts the trades alike;
    # what a place means is worked out here, once per place.
    tick = timedelta(microseconds=1)
    dormant_ends = [e - timedelta(days=dormant_after) + tick for e in ends]
    lost_ends = [e - timedelta(days=lost_after) + tick for e in ends]
    next_ends = [e + tick for e in ends]
    # Within the period: from `opens` (included) to `closes` (excluded).
    opens = period.start if period.includes_start else period.start + tick
    closes = period.end + tick if period.includes_end else period.end
    at_marks = sorted({*starts, *dormant_ends, *lost_ends, opens, closes})
    next_marks = sorted({*starts, *next_ends})
    places = conn.exec_driver_sql(
        "WITH o AS (SELECT completed_at AS at, lag(completed_at) OVER w IS NULL AS first, "
        "  lead(completed_at) OVER w AS next FROM member_orders "
        "  WHERE shop_id = %(shop)s AND completed_at IS NOT NULL AND completed_at <= %(p_end)s "
        "  WINDOW w AS (PARTITION BY member_id ORDER BY completed_at)) "
        "SELECT width_bucket(at, %(at_marks)s::timestamptz[]), first, "
        "  CASE WHEN next IS NULL THEN -1 "
        "    ELSE width_bucket(next, %(next_marks)s::timestamptz[]) END, count(*) "
        "FROM o GROUP BY 1, 2, 3", {"shop": shop.shop_id, "p_end": period.end,
                                    "at_marks": at_marks, "next_marks": next_marks}).all()
    active, new = [0] * (len(starts) + 1), [0] * (len(starts) + 1)
    dormant_at, lost_at = [0] * (len(ends) + 2), [0] * (len(ends) + 2)

    def up_to(marks: list[datetime], mark: datetime | None) -> int:
        return bisect.bisect_right(marks, mark) if mark is not None else 0

    for at_place, first, next_place, n in places:
        # Trades at a place lie from the mark before it (none for the first) to the next: as
        # many marks of each kind lie at or before them as at or before that mark.
        mark = at_marks[at_place - 1] if at_place else None
        first_dormant, first_lost = up_to(dormant_ends, mark) + 1, up_to(lost_ends, mark) + 1
        bucket = up_to(starts, mark)
        inside = mark is not None and opens <= mark < closes
        if next_place == -1:
            last_end, last_in_bucket = len(ends), inside
        else:
            after = next_marks[next_place - 1] if next_place else None
            last_end = up_to(next_ends, after)
            last_in_bucket = inside and up_to(starts, after) > bucket
        if last_in_bucket:
            active[bucket] += n
        if first and inside:
            new[bucket] += n
        # Dormant at the ends first_dormant .. min(first_lost - 1, last_end), lost at the
        # ends first_lost .. last_end (first_lost is never before first_dormant).
        stop = min(first_lost, last_end + 1)
        if first_dormant < stop:
            dormant_at[first_dormant] += n
            dormant_at[stop] -= n
        if first_lost <= last_end:
            lost_at[first_lost] += n
            lost_at[last_end + 1] -= n
    dormant_by_end = list(itertools.accumulate(dormant_at))
    lost_by_end = list(itertools.accumulate(lost_at))
    zone = ZoneInfo(shop.zone)
    rows = []
    for k, (start, following, end) in enumerate(zip(starts[:-1], starts[1:], ends,
                                                    strict=True), start=1):
        n_active, n_new = active[k], new[k]
        local = start.astimezone(zone)
        rows.append({
            unit: f"{local:%Y-%m}" if unit == "month" else f"{local:%G-W%V}",
            "from": period.local(max(start, period.start)).isoformat(),
            "to": period.local(end).isoformat(),
            # Cut by the period: its first and last months are often only partly in it.
            "whole": start >= period.start and end == following,
            "new": n_new, "active": n_active, "returning": n_active - n_new,
            "dormant": dormant_by_end[k], "lost": lost_by_end[k]})
    return Analysis("growth", shop.shop_id, period, {"growth": Table(
        [unit, "from", "to", "whole", "new", "active", "returning", "dormant", "lost"], rows)},
        {"unit": unit, "dormant_after_days": dormant_after, "lost_after_days": lost_after},
        _growth_chart)


def _growth_chart(report: Analysis, plt: Any) -> None:
    rows = report.tables["growth"].rows
    unit = report.summary["unit"]
    labels = [r[unit] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    at = range(len(rows))
    top.bar(at, [r["returning"] for r in rows], color="#5c6bc0", label="returning")
    top.bar(at, [r["new"] for r in rows], bottom=[r["returning"] for r in rows],
            color="#66bb6a", label="new")
    top.set_title("active members: new and returning")
    top.legend()
    bottom.plot(at, [r["dormant"] for r in rows], marker="o", color="#f9a825", label="dormant")
    bottom.plot(at, [r["lost"] for r in rows], marker="o", color="#c62828", label="lost")
    bottom.set_title(f"at the end of each {unit}: dormant (no trade for "
                     f"{report.summary['dormant_after_days']} days) and lost "
                     f"({report.summary['lost_after_days']} days)")
    bottom.legend()
    if not any(r["dormant"] or r["lost"] for r in rows):
        bottom.text(0.5, 0.5, f"no member dormant or lost at any {unit}'s end",
                    transform=bottom.transAxes, ha="center", va="center", color="#616161")
    # Every other label when there are many (weeks of half a year).
    step = 2 if len(rows) > 16 else 1
    bottom.set_xticks(list(at)[::step], labels[::step], rotation=45)
    for ax in (top, bottom):
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1))
    fig.suptitle(f"Growth and churn, shop {report.shop_id}: {_span(report.period)}")
    fig.tight_layout()


# --- RFM -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scored:
    segment: str
    r_score: int
    f_score: int
    buyers: int
    trades: int
    spend: int
    r_edges: list[int]
    f_edges: list[int]
    m_edges: list[int]


def _rfm_settings(shop: Shop) -> rfm.RfmSettings:
    return shop.config.rfm if shop.config is not None else rfm.RfmSettings()


def _kept(conn: Connection, shop: Shop) -> scores_store.Kept:
    return scores_store.kept(conn, shop.shop_id, shop.zone, _rfm_settings(shop))


def _kept_period(conn: Connection, shop: Shop, period: Period, kept: bool
                 ) -> scores_store.Kept | None:
    """What tiering keeps for the shop (`scores_store.Kept`) when `period` is exactly that of
    its RFM scores and their figures (and `kept`), else None."""
    if not kept:
        return None
    stored = _kept(conn, shop)
    if stored.rfm_as_of is None or period != Period.rolling(
            stored.rfm_as_of, _rfm_settings(shop).period_days, shop.zone, shop.configured):
        return None
    return stored


def _kept_source(shop: Shop, as_of: datetime) -> str:
    return ("kept in the members' records by tiering, as of "
            f"{as_of.astimezone(ZoneInfo(shop.zone)).isoformat()}")


def rfm_analysis(conn: Connection, shop: Shop, period: Period, *,
                 kept: bool = True) -> Analysis:
    """Buyers' RFM scores over the period, their segments (the shop's map), and the R x F grid.
    Recency counts to the period's end (the shop's clock by default).

    When the period is that of the scores tiering keeps (`default_period`), they are read from
    the members' records (`kept=False` scores the buyers afresh all the same)."""
    segments = _rfm_settings(shop).segments
    stored = _kept_period(conn, shop, period, kept)
    if stored is not None:
        edges = stored.edges
        assert edges is not None and stored.rfm_as_of is not None   # kept: scored
        grouped = conn.exec_driver_sql(
            "SELECT r_score, f_score, m_score, count(*) AS buyers, sum(trades) AS trades, "
            "  sum(spend_cents) AS spend, %(r)s::bigint[] AS r_edges, "
            "  %(f)s::bigint[] AS f_edges, %(m)s::bigint[] AS m_edges "
            "FROM member_rfm WHERE shop_id = %(shop)s GROUP BY 1, 2, 3",
            {"shop": shop.shop_id, "r": edges["r"], "f": edges["f"], "m": edges["m"]}).all()
        source = _kept_source(shop, stored.rfm_as_of)
    else:
        orders, params = _orders(period)
        values = rfm.values_sql(orders, NET)
        # Grouped by the 64 possible score triples: a few dozen rows reach Python, each named
        # by the shop's segment map.
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")   # that grouping sorts ~1M rows
        grouped = conn.exec_driver_sql(rfm.scored_sql(values, (
            "SELECT g.*, e.r AS r_edges, e.f AS f_edges, e.m AS m_edges FROM ("
            "  SELECT r_score, f_score, m_score, count(*) AS buyers, sum(trades) AS trades, "
            "    sum(spend) AS spend FROM (SELECT v.trades, v.spend, {scores} FROM v, e) s "
            "  GROUP BY 1, 2, 3) g, e")), params | {"shop": shop.shop_id, "tz": shop.zone}).all()
        source = "computed for this report"
    rows = [_Scored(rfm.segment_of(r.r_score, r.f_score, r.m_score, segments), r.r_score,
                    r.f_score, r.buyers, r.trades, r.spend, r.r_edges, r.f_edges, r.m_edges)
            for r in grouped]
    if not rows:
        raise NoData(f"shop {shop.shop_id!r} has no completed trade in the period")
    buyers = sum(r.buyers for r in rows)
    spend = sum(int(r.spend) for r in rows)
    order = [s.id for s in segments]
    by_segment: dict[str, list[int]] = {}
    grid = {(r, f): 0 for r in range(1, 5) for f in range(1, 5)}
    for r in rows:
        figures = by_segment.setdefault(r.segment, [0, 0, 0])
        figures[0] += r.buyers
        figures[1] += int(r.trades)
        figures[2] += int(r.spend)
        grid[(r.r_score, r.f_score)] += r.buyers
    names_of = rfm.segment_names(segments)
    table = Table(["segment", "name", "buyers", "share_pct", "spend", "spend_share_pct",
                   "trades", "aov"], [
        {"segment": sid, "name": names_of.get(sid, "others"), "buyers": n,
         "share_pct": share(n, buyers), "spend": money(cents),
         "spend_share_pct": share(cents, spend), "trades": trades, "aov": per(cents, trades)}
        for sid, (n, trades, cents) in sorted(
            by_segment.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)],
        {"segment": "total", "buyers": buyers, "share_pct": share(buyers, buyers),
         "spend": money(spend), "spend_share_pct": share(spend, spend),
         "trades": sum(v[1] for v in by_segment.values()),
         "aov": per(spend, sum(v[1] for v in by_segment.values()))})
    first = rows[0]
    return Analysis("rfm", shop.shop_id, period, {
        "segments": table,
        "recency_frequency": Table(["r_score", *[f"f{f}" for f in range(1, 5)]], [
            {"r_score": r, **{f"f{f}": grid[(r, f)] for f in range(1, 5)}}
            for r in range(4, 0, -1)])},
        {"buyers": buyers,
         # Recency's edges back in days (it is scored on its negation).
         "recency_edges_days": ", ".join(str(-x) for x in sorted(set(first.r_edges),
                                                                 reverse=True)),
         "frequency_edges_days": ", ".join(str(x) for x in sorted(set(first.f_edges))),
         "monetary_edges": ", ".join(money(x) for x in sorted(set(first.m_edges))),
         "scores": source},
        _rfm_chart)


def _rfm_chart(report: Analysis, plt: Any) -> None:
    grid = report.tables["recency_frequency"].rows
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8),
                                      gridspec_kw={"width_ratios": [1, 1.3]})
    values = [[row[f"f{f}"] for f in range(1, 5)] for row in grid]
    image = left.imshow(values, cmap="Blues")
    left.set_xticks(range(4), ["F1", "F2", "F3", "F4"])
    left.set_yticks(range(4), ["R4", "R3", "R2", "R1"])
    darkest = max(max(row) for row in values) or 1
    for y, row in enumerate(values):
        for x, n in enumerate(row):
            left.text(x, y, f"{n:,}", ha="center", va="center", fontsize=9,
                      color="white" if n > darkest / 2 else "black")
    left.set_title("buyers by recency (R4: most recent) and frequency")
    fig.colorbar(image, ax=left)
    rows = report.tables["segments"].rows
    right.barh([r["name"] for r in rows][::-1], [r["buyers"] for r in rows][::-1],
               color="#5c6bc0")
    right.set_title("buyers per segment")
    right.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"RFM, shop {report.shop_id}: {_span(report.period)}")
    fig.tight_layout()


# --- coupon suggestion ---------------------------------------------------------------------


def coupon_analysis(conn: Connection, shop: Shop, period: Period) -> Analysis:
    """Suggested "满 X 减 Y" coupons from the period's order values (`memberflow.coupons`)."""
    from memberflow.coupons import suggest, verdict

    orders, params = _orders(period)
    histogram = {int(v): int(n) for v, n in conn.exec_driver_sql(
        "SELECT floor(coalesce(o.amount_cents, 0) / 100.0)::bigint AS v, count(*) "
        f"FROM {orders} GROUP BY 1", params | {"shop": shop.shop_id}).all()}
    if not histogram:
        raise NoData(f"shop {shop.shop_id!r} has no completed trade in the period")
    found = suggest(histogram)
    total = sum(histogram.values())
    report = Analysis("coupons", shop.shop_id, period, {"suggestions": Table(
        ["coupon", "threshold", "face_value", "discount_pct", "just_below_pct",
         "at_or_above_pct", "lift", "given_away", "net"], [s.to_dict() for s in found])},
        {"orders": total, "how": "thresholds: round values between the 25th and 90th "
         "percentile of order values; face value: at most 6% of the threshold (1-2-5 series); "
         "just below: orders from 80% of the threshold up to it; lift: what they would add "
         "reaching it (upper bound); given away: the face value on every order at or above it "
         "and on every lifted one; net = lift - given away; the best three by net",
         "verdict": verdict(found)},
        _coupon_chart)
    report.extra = histogram
    return report


def _coupon_chart(report: Analysis, plt: Any) -> None:
    from memberflow.coupons import percentile

    histogram: dict[int, int] = report.extra
    top = percentile(histogram, Decimal("0.99"))
    width = max(1, int(nice_step(Decimal(top), 80)))
    bins: dict[int, int] = {}
    for value, n in histogram.items():
        if value <= top:
            bins[value // width * width] = bins.get(value // width * width, 0) + n
    fig, ax = plt.subplots(figsize=(11, 4.8))
    ax.bar(list(bins), list(bins.values()), width=width, align="edge", color="#90a4ae")
    for i, s in enumerate(report.tables["suggestions"].rows):
        ax.axvline(s["threshold"], color="#c62828", linewidth=1.5)
        # Staggered: thresholds close together would write over each other.
        ax.text(s["threshold"], ax.get_ylim()[1] * (0.95 - 0.09 * i), f" {s['coupon']}",
                color="#c62828", va="top", fontsize=10)
    ax.set_xlabel(f"order value (buckets of {width}; up to the 99th percentile)")
    ax.set_ylabel("orders")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"Coupon suggestion, shop {report.shop_id}: {_span(report.period)}")
    fig.tight_layout()


# --- predicted value -----------------------------------------------------------------------

P_ALIVE_BANDS = (Decimal("0.1"), Decimal("0.3"), Decimal("0.5"), Decimal("0.7"), Decimal("0.9"))


def predicted_value(conn: Connection, shop: Shop, period: Period,
                    horizon_days: int | None = None, max_p_alive: Decimal | None = None,
                    min_spend: Decimal | None = None, limit: int = 1000, *,
                    kept: bool = True) -> Analysis:
    """Per buyer of the period: the probability of still being an active customer, expected
    purchases in the next `horizon_days`, and their expected value (BG/NBD x Gamma-Gamma,
    `services.tiering.clv`, fitted on this shop's buyers of the period).

    A buyer's summary: x = purchase days after the first, t_x and T = days from the first
    purchase to the last and to the period's end (in weeks for the models), m = their mean
    net spend per repeat purchase day. The fit reads the buyers grouped by equal summaries;
    the predictions go back to PostgreSQL, which ranks the buyers (biggest expected value
    first) among those with `max_p_alive` / `min_spend` (net, in the period) if given.

    The horizon is the shop's (`rfm: horizon_days`) unless given. When the period and horizon
    are those of tiering's last daily fit (`default_period`), its predictions are read from the
    members' records (`kept=False` fits afresh all the same).
    """
    from services.tiering import clv

    settings = _rfm_settings(shop)
    horizon_days = horizon_days or settings.horizon_days
    stored = _kept(conn, shop) if kept else None
    params: dict[str, Any] = {"shop": shop.shop_id, "tz": shop.zone}
    if (stored is not None and stored.fit is not None and stored.predicted_as_of is not None
            and horizon_days == settings.horizon_days and period == Period.rolling(
                stored.predicted_as_of, settings.period_days, shop.zone, shop.configured)):
        fitted = stored.fit
        source = ("(SELECT member_id, repeat_days AS x, days_first_to_last AS t_x, "
                  "  days_since_first AS t_big, spend_cents AS spend, p_alive AS alive, "
                  "  expected_purchases AS expected, expected_value_cents AS value "
                  "  FROM member_predictions WHERE shop_id = %(shop)s) v")
        how = _kept_source(shop, stored.predicted_as_of)
    else:
        orders, order_params = _orders(period)
        params |= order_params
        try:
            fitted = scores_store.fit(conn, orders, params, horizon_days)
        except scores_store.NoBuyers:
            raise NoData(f"shop {shop.shop_id!r} has no completed trade in the period"
                         ) from None
        except clv.TooLittleData as exc:
            raise NoData(f"shop {shop.shop_id!r}: {exc}") from None
        source, how = "predicted_values v", "fitted for this report"
    purchases, values = fitted.purchases, fitted.values
    params |= {"max_alive": float(max_p_alive) if max_p_alive is not None else 2.0,
               "min_spend": int(min_spend * 100) if min_spend is not None else None,
               "limit": limit}
    chosen = ("v.alive <= %(max_alive)s AND "
              "(%(min_spend)s::bigint IS NULL OR v.spend >= %(min_spend)s::bigint)")
    rows = conn.exec_driver_sql(
        f"SELECT v.*, count(*) OVER () AS chosen FROM {source} WHERE {chosen} "
        # By value in whole cents, as kept and shown (ties then by member id).
        "ORDER BY round(v.value) DESC, v.member_id LIMIT %(limit)s", params).all()
    bands = conn.exec_driver_sql(
        "SELECT width_bucket(v.alive, %(bands)s::float8[]) AS band, count(*), "
        f"  sum(v.expected), sum(v.value) FROM {source} GROUP BY 1",
        params | {"bands": [float(b) for b in P_ALIVE_BANDS]}).all()
    edges = [Decimal(0), *P_ALIVE_BANDS, Decimal(1)]
    by_band = {int(b): (int(n), float(e), float(val)) for b, n, e, val in bands}
    buyers = sum(n for n, _, _ in by_band.values())
    band_rows = []
    for i in range(len(edges) - 1):
        n, e, val = by_band.get(i, (0, 0.0, 0.0))
        band_rows.append({"p_alive": f"{edges[i]}-{edges[i + 1]}", "buyers": n,
                          "share_pct": share(n, buyers),
                          "expected_purchases": f"{e:.1f}", "expected_value": money(round(val))})
    return Analysis("predicted", shop.shop_id, period, {
        "members": Table(["member_id", "p_alive", "expected_purchases", "expected_value",
                          "repeat_days", "days_first_to_last", "days_since_first", "spend"], [
            {"member_id": r.member_id, "p_alive": f"{r.alive:.3f}",
             "expected_purchases": f"{r.expected:.3f}", "expected_value": money(round(r.value)),
             "repeat_days": r.x, "days_first_to_last": r.t_x, "days_since_first": r.t_big,
             "spend": money(r.spend)} for r in rows]),
        "p_alive_bands": Table(["p_alive", "buyers", "share_pct", "expected_purchases",
                                "expected_value"], band_rows)},
        {"horizon_days": horizon_days, "buyers": buyers,
         "chosen": rows[0].chosen if rows else 0, "listed": len(rows),
         "bg_nbd": (f"r {purchases.r:.4f}, alpha {purchases.alpha:.4f}, a {purchases.a:.4f}, "
                    f"b {purchases.b:.4f} (weeks)"),
         "gamma_gamma": f"p {values.p:.4f}, q {values.q:.4f}, gamma {values.gamma:.4f}",
         "fit": ("a parameter lies at the edge of the search: these buyers do not behave as "
                 "the models assume, read the predictions with care"
                 if fitted.at_limit else "good"),
         "expected_purchases": f"{fitted.expected_total:.1f}", "predictions": how},
        _predicted_chart)


def _predicted_chart(report: Analysis, plt: Any) -> None:
    bands = report.tables["p_alive_bands"].rows
    labels = [b["p_alive"] for b in bands]
    horizon = report.summary["horizon_days"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.bar(labels, [b["buyers"] for b in bands], color="#5c6bc0")
    left.set_title("buyers by probability of being still active")
    left.yaxis.get_major_locator().set_params(integer=True)
    right.bar(labels, [float(b["expected_value"]) for b in bands], color="#2e7d32")
    right.set_title(f"expected value of their purchases in the next {horizon} days")
    for ax in (left, right):
        ax.set_xlabel("probability active")
        thousands(ax.yaxis)
    fig.suptitle(f"Predicted value, shop {report.shop_id}: {_span(report.period)}")
    fig.tight_layout()


# Every report over a period with its default settings, by the name `memberflow report` gives it
# (the dormant list, over no period, apart).
BY_PERIOD: dict[str, Callable[[Connection, Shop, Period], Analysis]] = {
    "levels": level_analysis, "time": time_analysis, "amounts": amount_analysis,
    "counts": count_analysis, "growth": growth_analysis, "rfm": rfm_analysis,
    "coupons": coupon_analysis, "predicted": predicted_value}
