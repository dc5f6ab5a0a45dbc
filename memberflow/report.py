"""The readable summary printed at the end of a demo or run."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from memberflow.abc_report import product_abc
from services.tiering.levels import discount
from shared.money import CENT, format_cents, from_cents
from shared.shops import shop_configs

BUCKETS = ((0, 1), (1, 10_000), (10_000, 50_000), (50_000, 100_000), (100_000, 500_000),
           (500_000, None))  # net spend in cents: 0, <100, 100-500, 500-1k, 1k-5k, 5k+


@dataclass
class PipelineFigures:
    replayed: int
    rejected: int
    seconds: float
    http_accepted: int
    http_rejected: int
    duplicates: int = 0                 # accepted before: counted once
    late: int = 0                       # too late for campaign attribution
    lags: dict[str, int] | None = None  # measured consumer lag per worker after catching up


def _bucket_label(lo: int, hi: int | None) -> str:
    if lo == 0 and hi == 1:
        return "0 (no net spend)"
    if hi is None:
        return f"{lo // 100:,}+"
    return f"{lo // 100:,}-{hi // 100:,}"


def summary(conn: Connection, shop_id: str, pipe: PipelineFigures) -> str:
    """A plain-text report of the pipeline run and the shop's members."""
    m = conn.execute(text(
        "SELECT count(*) AS customers, count(*) FILTER (WHERE completed_trades > 0) AS buyers, "
        "count(*) FILTER (WHERE completed_trades > 1) AS repeat, "
        "coalesce(sum(completed_trades), 0) AS trades, coalesce(sum(gross_cents), 0) AS gross, "
        "coalesce(sum(refunded_cents), 0) AS refunded, coalesce(sum(spend_cents), 0) AS net "
        "FROM members WHERE shop_id = :s"), {"s": shop_id}).one()
    archived = conn.execute(text("SELECT count(*) FROM events WHERE shop_id = :s"),
                            {"s": shop_id}).scalar_one()
    parked = conn.execute(text(
        "SELECT source_ref, reason FROM dead_letters ORDER BY id LIMIT 8")).all()
    top = conn.execute(text(
        "SELECT member_id, region, completed_trades, spend_cents FROM members WHERE shop_id = :s "
        "ORDER BY spend_cents DESC, member_id LIMIT 10"), {"s": shop_id}).all()
    dist = []
    for lo, hi in BUCKETS:
        n = conn.execute(text(
            "SELECT count(*) FROM members WHERE shop_id = :s AND completed_trades > 0 "
            "AND spend_cents >= :lo AND (CAST(:hi AS bigint) IS NULL OR spend_cents < :hi)"),
            {"s": shop_id, "lo": lo, "hi": hi}).scalar_one()
        dist.append((_bucket_label(lo, hi), n))

    rate = pipe.replayed / pipe.seconds if pipe.seconds else 0.0
    repeat_share = m.repeat / m.buyers if m.buyers else 0.0
    aov = (from_cents(m.net) / m.trades).quantize(CENT) if m.trades else CENT * 0
    lines = [
        f"memberflow summary: shop {shop_id}",
        "",
        "Pipeline",
        f"  events replayed       {pipe.replayed:,} in {pipe.seconds:.1f} s, caught up "
        f"({rate:,.0f} events/s end to end)",
        f"  rejected              {pipe.rejected:,} replayed line(s) + {pipe.http_rejected} "
        f"over HTTP, parked as dead letters",
        f"  accepted over HTTP    {pipe.http_accepted}",
        f"  duplicates skipped    {pipe.duplicates:,} (repeated event ids, counted once)",
        f"  too late to attribute {pipe.late:,} (counted for levels and tags, not campaigns)",
        f"  archived              {archived:,} distinct events in PostgreSQL",
        "  consumer lag          " + (", ".join(f"{w} {n:,}" for w, n in sorted(
            pipe.lags.items())) if pipe.lags is not None else "not measured"),
        "",
        "Members",
        f"  customers             {m.customers:,} ({m.buyers:,} with completed trades, "
        f"{m.repeat:,} repeat buyers = {repeat_share:.0%})",
        f"  completed trades      {m.trades:,}",
        f"  gross / refunds / net {format_cents(m.gross)} / {format_cents(m.refunded)} / "
        f"{format_cents(m.net)}",
        f"  average order value   {aov:,.2f} (net spend per completed trade)",
        "",
        "Buyers by net spend",
    ]
    widest = max((n for _, n in dist), default=0) or 1
    for label, n in dist:
        lines.append(f"  {label:>16}  {'#' * max(1 if n else 0, round(30 * n / widest)):<30} {n:,}")
    lines += ["", "Top 10 members by net spend"]
    for r in top:
        lines.append(f"  {r.member_id:<12} {r.region or '-':<14} {r.completed_trades:>4} trades  "
                     f"{format_cents(r.spend_cents):>12}")
    lines += _tiers(conn, shop_id)
    lines += _tags(conn, shop_id)
    lines += _campaigns(conn, shop_id)
    lines += _analysis(conn, shop_id)
    if parked:
        lines += ["", "Dead letters (memberflow dead-letters list shows all)"]
        lines += [f"  {r.source_ref}: {r.reason}" for r in parked]
    return "\n".join(lines)


def _tiers(conn: Connection, shop_id: str) -> list[str]:
    """Members and revenue per level; customer and product ABC classes."""
    entry = shop_configs(conn, [shop_id]).get(shop_id)
    policy = entry[1].levels if entry else None
    rows = conn.execute(text(
        "SELECT level, count(*) AS n, coalesce(sum(spend_cents), 0) AS spend, "
        "coalesce(sum(completed_trades), 0) AS trades FROM members WHERE shop_id = :s "
        "GROUP BY level ORDER BY level"), {"s": shop_id}).all()
    total = sum(r.spend for r in rows) or 1
    lines = ["", "Levels (members, net spend, share, average order value, next-order discount)"]
    for r in rows:
        name = policy.name_of(r.level) if policy and r.level else "not a member"
        aov = format_cents(r.spend // r.trades) if r.trades else "-"
        lines.append(f"  {r.level} {name:<13} {r.n:>7,}  {format_cents(r.spend):>14}  "
                     f"{r.spend / total:>5.1%}  {aov:>9}  x{discount(policy, r.level, False)}")
    changes = conn.execute(text(
        "SELECT cause, count(*) FROM level_changes WHERE shop_id = :s GROUP BY cause "
        "ORDER BY cause"), {"s": shop_id}).all()
    lines.append("  level changes         " + (", ".join(f"{n:,} {c}" for c, n in changes)
                                               or "none"))
    abc = conn.execute(text(
        "SELECT computed_as_of, ranked, zero_spenders FROM abc_shops WHERE shop_id = :s"),
        {"s": shop_id}).first()
    if abc is None or abc.computed_as_of is None:
        return lines
    counts: dict[str, int] = dict(conn.execute(text(
        "SELECT abc_class, count(*) FROM members WHERE shop_id = :s AND abc_class IS NOT NULL "
        "GROUP BY abc_class"), {"s": shop_id}).all())
    ending = f"{abc.computed_as_of:%Y-%m-%d %H:%M}"
    lines += ["", f"Customer ABC (spend over the period ending {ending} UTC, the pipeline "
                  "clock)",
              f"  A {counts.get('A', 0):,}   B {counts.get('B', 0):,}   C {counts.get('C', 0):,}"
              f"   ({abc.ranked:,} ranked; {abc.zero_spenders:,} zero spenders kept apart)"]
    products = product_abc(conn, shop_id)
    sales = sum(r.sales_cents for r in products.rows) or 1
    parts = []
    for cls in "ABC":
        rows_of = [r for r in products.rows if r.product_class == cls]
        share = sum(r.sales_cents for r in rows_of) / sales
        parts.append(f"{cls} {len(rows_of):,} items / {share:.0%} of sales")
    lines += ["", f"Product ABC ({len(products.rows):,} items sold): " + ", ".join(parts)]
    return lines


def _tags(conn: Connection, shop_id: str) -> list[str]:
    """Members per tag, and tag changes by cause."""
    entry = shop_configs(conn, [shop_id]).get(shop_id)
    if entry is None or not entry[1].tagging.tags:
        return []
    tagging = entry[1].tagging
    counts: dict[str, int] = dict(conn.execute(text(
        "SELECT tag_id, count(*) FROM member_tags WHERE shop_id = :s GROUP BY tag_id"),
        {"s": shop_id}).tuples().all())
    how: dict[str, str] = {}
    for rule in tagging.rules:
        how.setdefault(rule.tag, f"when {rule.when}" if rule.when
                       else f"buys {', '.join(rule.goods or ())}")
    lines = ["", "Tags (members holding each; how it is applied)"]
    for tag in tagging.tags:
        lines.append(f"  {tag.id:<18} {counts.get(tag.id, 0):>7,}  {how.get(tag.id, 'by hand')}")
    changes = conn.execute(text(
        "SELECT cause || ' ' || action, count(*) FROM tag_changes WHERE shop_id = :s "
        "GROUP BY 1 ORDER BY 1"), {"s": shop_id}).tuples().all()
    lines.append("  tag changes           " + (", ".join(f"{n:,} {c}" for c, n in changes)
                                             or "none"))
    return lines


def _analysis(conn: Connection, shop_id: str) -> list[str]:
    """RFM segments and the coupon suggestion of the last 365 days, in short."""
    from memberflow import analysis
    from memberflow.abc_report import NoData

    try:
        shop = analysis.shop_of(conn, shop_id)
        period = analysis.period_of(conn, shop)
        rfm = analysis.rfm_analysis(conn, shop, analysis.period_of(conn, shop, report="rfm"))
        coupons = analysis.coupon_analysis(conn, shop, period)
    except NoData:
        return []
    segments = ", ".join(f"{r['name']} {r['buyers']:,}" for r in rfm.tables["segments"].rows)
    offers = ", ".join(r["coupon"] for r in coupons.tables["suggestions"].rows)
    return ["", "Customer analysis, last 365 days (memberflow report levels, time, amounts, "
                "counts, dormant, growth, rfm, coupons, predicted)",
            f"  RFM segments          {segments}",
            f"  coupons suggested     {offers or 'none'}"]


def _campaigns(conn: Connection, shop_id: str) -> list[str]:
    """Each campaign's messages, clicks and credited orders (the effect report in short)."""
    from datetime import timedelta

    from memberflow.campaign_report import NoCampaigns, campaign_report
    from shared.config import Settings

    lateness = timedelta(hours=Settings().campaign_lateness_hours)
    try:
        report = campaign_report(conn, shop_id, None, lateness)
    except NoCampaigns:
        return []
    lines = ["", "Campaigns (memberflow report campaign: by channel and day, provisional or "
                 "final)"]
    for t in report.totals():
        lines.append(
            f"  {t['campaign_id']:<12} {t['sent']:>6,} sent  {t['clicked']:>5,} clicked  "
            f"{t['orders']:>4,} orders after a click ({t['revenue']:>10})  "
            f"{t['send_orders']:>4,} after a send ({t['send_revenue']:>10})  {t['status']}")
    return lines
