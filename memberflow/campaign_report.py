"""The campaign effect report: per campaign, channel and day — sent, clicked, conversions after
a click and after a mere send, revenue — each day marked provisional until it has settled.

Days are the shop's calendar days. Messages count on the day they were sent and clicks on the
day of the message's first click; an order credited to a click counts on the click's day, one
credited to a send (no click) on the send's day. A day's figures can change until every order
its clicks and sends could bring is in: until the campaign's longest window has passed after
the day, plus the lateness bound the campaigns worker still accepts events within, by the
newest event time read. After that they are final.

The campaigns worker judges lateness against each input partition's own newest event (so what
is refused does not depend on how the topics interleave), while finality is judged against
the newest event overall (so a quiet partition does not hold every report provisional): an
event from a partition that stayed silent for longer than the bound can still be applied to a
day already reported final. Credits stay exact; only the label was early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from services.campaigns import store
from shared.money import CENT, from_cents
from shared.outbound import iso
from shared.shops import shop_configs

COLUMNS = ("campaign_id", "channel", "day", "status", "sent", "clicked", "click_rate",
           "converted_members", "orders", "revenue", "conversion_rate", "send_orders",
           "send_revenue", "revenue_per_message")
# The other attribution models beside the credited last click, on each campaign's totals row of
# a CSV (`attribution_models`).
MODEL_COLUMNS = ("first_click_orders", "first_click_revenue", "linear_orders", "linear_revenue")
CSV_COLUMNS = (*COLUMNS, *MODEL_COLUMNS)     # the columns of `Report.table()`


class NoCampaigns(LookupError):
    """Nothing to report: the shop (or the campaign) has no messages."""


@dataclass
class Row:
    campaign_id: str
    channel: str
    day: date
    sent: int = 0
    clicked: int = 0
    converted: set[str] = field(default_factory=set)   # members converted after a click
    orders: int = 0
    revenue_cents: int = 0
    send_orders: int = 0
    send_revenue_cents: int = 0
    final: bool = False

    def record(self) -> dict[str, Any]:
        def rate(n: int, d: int) -> str | None:
            return str((Decimal(n) / d).quantize(Decimal("0.0001"))) if d else None

        revenue = self.revenue_cents + self.send_revenue_cents
        return {
            "campaign_id": self.campaign_id, "channel": self.channel,
            "day": self.day.isoformat(), "status": "final" if self.final else "provisional",
            "sent": self.sent, "clicked": self.clicked,
            "click_rate": rate(self.clicked, self.sent),
            "converted_members": len(self.converted), "orders": self.orders,
            "revenue": str(from_cents(self.revenue_cents)),
            "conversion_rate": rate(len(self.converted), self.clicked),
            "send_orders": self.send_orders,
            "send_revenue": str(from_cents(self.send_revenue_cents)),
            "revenue_per_message": str((from_cents(revenue) / self.sent).quantize(CENT))
            if self.sent else None,
        }


@dataclass
class Report:
    shop_id: str
    timezone: str
    settled_until: datetime | None    # figures of events before this can no longer change
    rows: list[Row]
    models: list[dict[str, Any]] = field(default_factory=list)   # see `attribution_models`

    def to_dict(self) -> dict[str, Any]:
        return {"shop_id": self.shop_id, "timezone": self.timezone,
                "settled_until": iso(self.settled_until) if self.settled_until else None,
                "rows": [r.record() for r in self.rows], "totals": self.totals(),
                "attribution_models": self.models}

    def table(self) -> list[dict[str, Any]]:
        """The rows by day, then a totals row per campaign (channel "all", no day) with its
        figures under the other attribution models: what a CSV holds."""
        models = {m["campaign_id"]: m for m in self.models}
        return [r.record() for r in self.rows] + [
            {**t, **{k: models.get(t["campaign_id"], {}).get(k) for k in MODEL_COLUMNS}}
            for t in self.totals()]

    def totals(self) -> list[dict[str, Any]]:
        """One line per campaign over all its days and channels."""
        merged: dict[str, Row] = {}
        for r in self.rows:
            t = merged.setdefault(r.campaign_id, Row(r.campaign_id, "all", r.day, final=True))
            t.day = min(t.day, r.day)
            t.sent += r.sent
            t.clicked += r.clicked
            t.converted |= r.converted
            t.orders += r.orders
            t.revenue_cents += r.revenue_cents
            t.send_orders += r.send_orders
            t.send_revenue_cents += r.send_revenue_cents
            t.final = t.final and r.final
        return [{**t.record(), "day": None} for _, t in sorted(merged.items())]


def campaign_report(conn: Connection, shop_id: str, campaign_id: str | None,
                    lateness: timedelta) -> Report:
    """The effect of the shop's campaigns (or one), from the campaigns worker's state."""
    entry = shop_configs(conn, [shop_id]).get(shop_id)
    zone = entry[1].timezone if entry else "UTC"
    only = "" if campaign_id is None else " AND campaign_id = %(c)s"
    params = {"s": shop_id, "c": campaign_id, "z": zone}
    rows: dict[tuple[str, str, date], Row] = {}

    def row(campaign: str, channel: str | None, day: date) -> Row:
        key = (campaign, channel or "unknown", day)
        return rows.setdefault(key, Row(*key))

    for c, ch, day, n in conn.exec_driver_sql(
            "SELECT campaign_id, channel, (sent_at AT TIME ZONE %(z)s)::date, count(*) "
            f"FROM campaign_sends WHERE shop_id = %(s)s{only} GROUP BY 1, 2, 3", params):
        row(c, ch, day).sent += n
    for c, ch, day, n in conn.exec_driver_sql(
            "SELECT k.campaign_id, s.channel, (k.first AT TIME ZONE %(z)s)::date, count(*) "
            "FROM (SELECT campaign_id, message_id, min(clicked_at) AS first FROM campaign_clicks "
            f"  WHERE shop_id = %(s)s{only} GROUP BY 1, 2) k LEFT JOIN campaign_sends s "
            "ON s.shop_id = %(s)s AND s.campaign_id = k.campaign_id "
            "AND s.message_id = k.message_id GROUP BY 1, 2, 3", params):
        row(c, ch, day).clicked += n
    for c, ch, kind, day, member, value in conn.exec_driver_sql(
            "SELECT o.campaign_id, s.channel, o.credit_kind, "
            "  (o.credited_at AT TIME ZONE %(z)s)::date, o.member_id, "
            "  GREATEST(COALESCE(o.completed_cents, o.paid_cents) - o.refunded_cents, 0) "
            "FROM campaign_orders o LEFT JOIN campaign_sends s ON s.shop_id = o.shop_id "
            "  AND s.campaign_id = o.campaign_id AND s.message_id = o.message_id "
            "WHERE o.shop_id = %(s)s AND o.campaign_id IS NOT NULL"
            + ("" if campaign_id is None else " AND o.campaign_id = %(c)s"), params):
        r = row(c, ch, day)
        if kind == "click":
            r.converted.add(member)
            r.orders += 1
            r.revenue_cents += value
        else:
            r.send_orders += 1
            r.send_revenue_cents += value
    if not rows:
        raise NoCampaigns(f"shop {shop_id!r} has no campaign messages"
                          + (f" for campaign {campaign_id!r}" if campaign_id else ""))

    # Every partition's clock has passed `newest`, so no event older than `newest - lateness`
    # can still be attributed (ingest refuses it as late).
    newest = store.settled_clock(conn)
    settled = newest - lateness if newest else None
    windows = store.campaign_windows(conn, {(shop_id, c) for c, _, _ in rows})
    tz = ZoneInfo(zone)
    for (campaign, _, day), r in rows.items():
        click, send = windows.get((shop_id, campaign), (store.DEFAULT_CLICK_WINDOW,
                                                        store.DEFAULT_SEND_WINDOW))
        day_end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz)
        r.final = settled is not None and day_end + max(click, send) <= settled
    return Report(shop_id, zone, settled, [rows[k] for k in sorted(rows)],
                  attribution_models(conn, shop_id, campaign_id))


def attribution_models(conn: Connection, shop_id: str, campaign_id: str | None
                       ) -> list[dict[str, Any]]:
    """The orders credited after a click, under three models side by side, per campaign.

    - last click (what is credited): the member's latest click within its campaign's click
      window before the order;
    - first click: the earliest of those clicks;
    - linear: each of those clicks gets an equal share of the order (fractions of orders).

    The clicks considered are the same for all three: every click of the member whose
    campaign's click window (default 48 hours) still covered the order when it converted.
    """
    rows = conn.exec_driver_sql(
        "WITH o AS (SELECT order_id, member_id, converted_at, campaign_id, "
        "    GREATEST(COALESCE(completed_cents, paid_cents) - refunded_cents, 0) AS value "
        "  FROM campaign_orders WHERE shop_id = %(s)s AND credit_kind = 'click' "
        "    AND campaign_id IS NOT NULL), "
        "k AS (SELECT o.order_id, o.value, c.campaign_id, "
        "    count(*) OVER (PARTITION BY o.order_id) AS n, row_number() OVER ("
        "      PARTITION BY o.order_id ORDER BY c.clicked_at, c.event_id) AS nth "
        "  FROM o JOIN campaign_clicks c ON c.shop_id = %(s)s AND c.member_id = o.member_id "
        "    AND c.clicked_at <= o.converted_at "
        "  LEFT JOIN campaigns g ON g.shop_id = c.shop_id AND g.campaign_id = c.campaign_id "
        "  WHERE o.converted_at <= c.clicked_at + make_interval(secs => "
        "    COALESCE(g.click_window_s, %(w)s))), "
        "last AS (SELECT campaign_id, count(*) AS orders, sum(value) AS value FROM o "
        "  GROUP BY 1), "
        "other AS (SELECT campaign_id, count(*) FILTER (WHERE nth = 1) AS first_orders, "
        "    COALESCE(sum(value) FILTER (WHERE nth = 1), 0) AS first_value, "
        "    sum(1.0 / n) AS linear_orders, sum(value::numeric / n) AS linear_value "
        "  FROM k GROUP BY 1) "
        "SELECT campaign_id, COALESCE(last.orders, 0) AS last_orders, "
        "  COALESCE(last.value, 0) AS last_value, COALESCE(first_orders, 0) AS first_orders, "
        "  COALESCE(first_value, 0) AS first_value, COALESCE(linear_orders, 0) AS linear_orders,"
        "  COALESCE(linear_value, 0) AS linear_value "
        "FROM last FULL JOIN other USING (campaign_id) ORDER BY campaign_id",
        {"s": shop_id, "w": int(store.DEFAULT_CLICK_WINDOW.total_seconds())}).all()
    return [{"campaign_id": r.campaign_id,
             "last_click_orders": r.last_orders,
             "last_click_revenue": str(from_cents(int(r.last_value))),
             "first_click_orders": r.first_orders,
             "first_click_revenue": str(from_cents(int(r.first_value))),
             "linear_orders": str(Decimal(r.linear_orders).quantize(CENT)),
             "linear_revenue": str((Decimal(r.linear_value) / 100).quantize(CENT))}
            for r in rows if campaign_id is None or r.campaign_id == campaign_id]


def write_xlsx(report: Report, path: Path) -> None:
    """The report as a workbook: one sheet by day, one of totals; money and rates as numbers."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheets = [(book.active, "by day", [r.record() for r in report.rows]),
              (book.create_sheet(), "totals", report.totals())]
    for sheet, title, records in sheets:
        assert sheet is not None
        sheet.title = title
        sheet.append([c.replace("_", " ") for c in COLUMNS])     # headers in words
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for rec in records:
            sheet.append([Decimal(rec[c]) if c in _DECIMALS and rec[c] is not None
                          else date.fromisoformat(rec[c]) if c == "day" and rec[c]
                          else rec[c] for c in COLUMNS])
        for cell in sheet["C"][1:]:         # the day, a date
            cell.number_format = "yyyy-mm-dd"
        for column in ("J", "M", "N"):    # revenue, send revenue, revenue per message
            for cell in sheet[column][1:]:
                cell.number_format = "#,##0.00"
        for column in ("G", "K"):         # click rate, conversion rate
            for cell in sheet[column][1:]:
                cell.number_format = "0.00%"
        sheet.freeze_panes = "A2"
    if report.models:
        models = book.create_sheet("attribution models")
        keys = list(report.models[0])
        models.append([k.replace("_", " ") for k in keys])
        for cell in models[1]:
            cell.font = Font(bold=True)
        for m in report.models:
            models.append([m[k] if k == "campaign_id" or isinstance(m[k], int)
                           else Decimal(m[k]) for k in keys])
    notes = book.create_sheet("about")
    notes.append(["shop", report.shop_id])
    notes.append(["time zone of days", report.timezone])
    notes.append(["settled until", iso(report.settled_until) if report.settled_until else "-"])
    notes.append(["provisional", "a day's figures can still change until its attribution "
                                 "windows (plus the lateness bound) have passed"])
    book.save(path)


_DECIMALS = {"click_rate", "revenue", "conversion_rate", "send_revenue", "revenue_per_message"}


def conversions_png(report: Report, path: Path) -> None:
    """Orders credited per day, a panel per channel: bars stacked by credit (after a click,
    after a mere send), summed over the campaigns shown; provisional days hatched."""
    from memberflow.charts import pyplot

    plt = pyplot()
    channels = sorted({r.channel for r in report.rows})
    first = min(r.day for r in report.rows)
    last = max(r.day for r in report.rows)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    # Over two months of days, weeks (from Monday) keep the bars wide enough to see.
    weekly = len(days) > 62
    if weekly:
        days = sorted({d - timedelta(days=d.weekday()) for d in days})
    fig, axes = plt.subplots(len(channels), 1, figsize=(11, 2.8 + 2.2 * len(channels)),
                             sharex=True, squeeze=False)
    for ax, channel in zip(axes[:, 0], channels, strict=True):
        clicks = dict.fromkeys(days, 0)
        sends = dict.fromkeys(days, 0)
        final = dict.fromkeys(days, True)
        for r in report.rows:
            if r.channel == channel:
                day = r.day - timedelta(days=r.day.weekday()) if weekly else r.day
                clicks[day] += r.orders
                sends[day] += r.send_orders
                final[day] = final[day] and r.final
        at = list(range(len(days)))
        hatch = ["" if final[d] else "//" for d in days]
        ax.bar(at, [clicks[d] for d in days], color="#1565c0", hatch=hatch,
               label="after a click (credited)", edgecolor="white")
        ax.bar(at, [sends[d] for d in days], bottom=[clicks[d] for d in days],
               color="#90caf9", hatch=hatch, label="after a send, no click", edgecolor="white")
        ax.set_ylabel(f"{channel}: orders")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1))
        ax.legend(loc="upper right", fontsize=8)
    step = max(1, len(days) // 12)
    axes[-1, 0].set_xticks(list(range(0, len(days), step)),
                           [d.isoformat() for d in days[::step]], rotation=30)
    axes[-1, 0].set_xlabel(f"{'week from' if weekly else 'day'} ({report.timezone}); hatched: "
                           "provisional, may still change")
    campaigns = sorted({r.campaign_id for r in report.rows})
    shown = ", ".join(campaigns[:4]) + (f" and {len(campaigns) - 4} more"
                                        if len(campaigns) > 4 else "")
    unit = "week" if weekly else "day"
    fig.suptitle(f"Orders credited per {unit}, shop {report.shop_id}: {shown}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
