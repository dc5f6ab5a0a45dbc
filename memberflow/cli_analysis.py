"""`memberflow report levels|time|amounts|counts|dormant|growth`: the customer analysis
(`memberflow.analysis`) as JSON, CSV or XLSX, with its chart as PNG."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from memberflow.cli_common import connection
from memberflow.cli_options import Amount, db_opt, dir_opt

DAY = click.DateTime(["%Y-%m-%d"])


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--shop", required=True),
        click.option("--days", type=click.IntRange(1, 3660),
                     help="the N x 24 hours up to the shop's clock (default 365)"),
        click.option("--from", "first_day", type=DAY, help="the first shop day (YYYY-MM-DD)"),
        click.option("--to", "last_day", type=DAY, help="the last shop day (YYYY-MM-DD)"),
        click.option("--format", "fmt", type=click.Choice(["json", "csv", "xlsx"]),
                     default="json"),
        click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
                     help="write here instead of printing (needed for xlsx)"),
        click.option("--chart", type=click.Path(dir_okay=False, path_type=Path),
                     help="also draw the report's chart to this PNG file"),
        db_opt, dir_opt,
    ]):
        func = option(func)
    return func


def _run(build: Callable[..., Any], shop: str, days: int | None, first_day: datetime | None,
         last_day: datetime | None, fmt: str, out: Path | None, chart: Path | None,
         database_url: str | None, data_dir: Path | None, *, name: str,
         with_period: bool = True) -> None:
    from memberflow import analysis
    from memberflow.abc_report import BadPeriod, NoData

    if fmt == "xlsx" and out is None:
        raise click.UsageError("--format xlsx writes a file: give --out FILE.xlsx")
    try:
        with connection(database_url, data_dir, shop=shop) as conn:
            where = analysis.shop_of(conn, shop)
            if with_period:
                period = analysis.period_of(conn, where, first_day.date() if first_day else None,
                                            last_day.date() if last_day else None, days, name)
                report = build(conn, where, period)
            else:
                report = build(conn, where)
    except (NoData, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except BadPeriod as exc:
        raise click.UsageError(str(exc)) from None
    if fmt == "xlsx":
        assert out is not None
        out.write_bytes(report.xlsx_bytes())
    else:
        text = (json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
                if fmt == "json" else report.csv_text())
        if out is None:
            click.echo(text, nl=False)
        else:
            out.write_text(text, encoding="utf-8")
    if out is not None:
        click.echo(f"{report.report} report written to {out}", err=True)
    if chart is not None and report.png(chart):
        click.echo(f"chart written to {chart}", err=True)


@click.command("levels")
@_common
def report_levels(**kw: Any) -> None:
    """Per level: members, buyers, completed trades, revenue and its share, AOV, discount; and
    level changes per month by cause."""
    from memberflow.analysis import level_analysis
    _run(level_analysis, name="levels", **kw)


@click.command("time")
@_common
def report_time(**kw: Any) -> None:
    """Completed trades and revenue by day of week x hour (a heatmap) and by month, in the
    shop's time zone: the peak and slack seasons."""
    from memberflow.analysis import time_analysis
    _run(time_analysis, name="time", **kw)


@click.command("amounts")
@_common
@click.option("--order-buckets", help="order-value bucket edges, e.g. 50,100,200,500 "
                                      "(default: round steps chosen from the data)")
@click.option("--spend-buckets", help="buyers' spend bucket edges (default: from the data)")
def report_amounts(order_buckets: str | None, spend_buckets: str | None, **kw: Any) -> None:
    """Order values and buyers' net spend in buckets, with mean, median and percentiles."""
    from memberflow.analysis import amount_analysis, parse_edges

    try:
        orders = parse_edges(order_buckets) if order_buckets else None
        spend = parse_edges(spend_buckets) if spend_buckets else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _run(lambda conn, shop, period: amount_analysis(conn, shop, period, orders, spend),
         name="amounts", **kw)


@click.command("counts")
@_common
def report_counts(**kw: Any) -> None:
    """Buyers by how many trades they completed (1, 2, 3, 4-5, 6-10, 11+) and the repeat rate."""
    from memberflow.analysis import count_analysis
    _run(count_analysis, name="counts", **kw)


@click.command("rfm")
@_common
def report_rfm(**kw: Any) -> None:
    """Buyers' recency, frequency and monetary scores (1-4, from the shop's quartiles), their
    segments by the shop's map, and the R x F grid."""
    from memberflow.analysis import rfm_analysis
    _run(rfm_analysis, name="rfm", **kw)


@click.command("coupons")
@_common
def report_coupons(**kw: Any) -> None:
    """Suggested "满 X 减 Y" coupons from the order values, with how each was chosen."""
    from memberflow.analysis import coupon_analysis
    _run(coupon_analysis, name="coupons", **kw)


@click.command("predicted")
@_common
@click.option("--horizon", "horizon_days", type=click.IntRange(1, 3650),
              help="predict this many days ahead (default: the shop's rfm: horizon_days, 90)")
@click.option("--max-p-alive", type=click.FloatRange(0, 1),
              help="list only buyers at most this likely to be still active (e.g. 0.3)")
@click.option("--min-spend", type=Amount(), help="... who spent at least this in the period")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
def report_predicted(horizon_days: int | None, max_p_alive: float | None, min_spend: Decimal | None,
                     limit: int, **kw: Any) -> None:
    """Per buyer: the probability of being still active, expected purchases and expected value
    in the horizon (BG/NBD and Gamma-Gamma fitted on the shop's buyers of the period)."""
    from memberflow.analysis import predicted_value
    cap = Decimal(str(max_p_alive)) if max_p_alive is not None else None
    _run(lambda conn, shop, period: predicted_value(conn, shop, period, horizon_days, cap,
                                                    min_spend, limit),
         name="predicted", **kw)


@click.command("growth")
@_common
@click.option("--unit", type=click.Choice(["month", "week"]), default="month")
@click.option("--dormant-after", type=click.IntRange(1), default=180, show_default=True,
              help="days without a trade after which a member counts as dormant")
@click.option("--lost-after", type=click.IntRange(2), default=365, show_default=True,
              help="days without a trade after which a member counts as lost")
def report_growth(unit: str, dormant_after: int, lost_after: int, **kw: Any) -> None:
    """Per month or week: new, active, returning members; dormant and lost at its end."""
    from memberflow.analysis import growth_analysis
    _run(lambda conn, shop, period: growth_analysis(conn, shop, period, unit, dormant_after,
                                                    lost_after), name="growth", **kw)


@click.command("dormant")
@click.option("--shop", required=True)
@click.option("--days", "n_days", type=click.IntRange(1, 36_500),
              help="no purchase for this many days")
@click.option("--cycle-days", type=click.IntRange(1, 3650),
              help="or: the product's use cycle in days ...")
@click.option("--multiple", type=Amount(), help="... times this (default 2)")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="list at most this many (biggest spenders first; the count is of all)")
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "xlsx"]), default="json")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path))
@db_opt
@dir_opt
def report_dormant(shop: str, n_days: int | None, cycle_days: int | None,
                   multiple: Decimal | None, limit: int, fmt: str, out: Path | None,
                   database_url: str | None, data_dir: Path | None) -> None:
    """Members who bought and have not for N days (N given, or the use cycle times a multiple),
    with the command that tags them and the campaign target that reaches them."""
    from memberflow.analysis import dormant_days, dormant_members

    try:
        days = dormant_days(n_days, cycle_days, multiple)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _run(lambda conn, where: dormant_members(conn, where, days, limit), shop, None, None, None,
         fmt, out, None, database_url, data_dir, name="dormant", with_period=False)
