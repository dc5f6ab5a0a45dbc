"""The growth and churn report against its definition worked member by member in Python, on a
shop of two years loaded straight into PostgreSQL: trades on the very instants where months and
weeks begin and where a trade turns dormant or lost, periods of rolling hours and of whole days,
months and weeks in a zone eight hours from UTC. And the time report against each trade put in
its hour of the shop's clock, in zones with daylight saving and with offsets of 5:45."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from memberflow import analysis
from memberflow.abc_report import Period, day_start
from memberflow.configure import apply_shop_config
from shared.db import make_engine
from shared.shopconfig import parse
from shared.topics import Topics
from tests.integration.test_member_scores import AS_OF, DAY, SHOP, Orders, load

DORMANT, LOST = 60, 150


def history(members: int, seed: int) -> Orders:
    """Members joining over two years, buying at their own pace, many stopping; a share of
    trades put exactly where the report's edges fall."""
    rng = random.Random(seed)
    zone = ZoneInfo("Asia/Shanghai")
    edges = [day_start(date(y, m, 1), zone) for y in (2024, 2025, 2026)
             for m in range(1, 13)]
    edges += [day_start(date(2026, 6, 29) - timedelta(weeks=w), zone)
              for w in range(60)]
    out: Orders = {}
    for i in range(members):
        at = AS_OF - DAY * rng.uniform(1, 730)
        times = []
        while at <= AS_OF and len(times) < 12:
            times.append(at)
            if rng.random() < 0.25:
                break
            at += DAY * rng.choice([rng.uniform(1, 40), DORMANT, LOST, rng.uniform(50, 200)])
        if rng.random() < 0.3:
            times[0] = rng.choice(edges)
        out[f"g{i:04d}"] = [(t, 1000, 0) for t in times if t <= AS_OF]
    return {m: t for m, t in out.items() if t}


def expected(orders: Orders, period: Period, unit: str) -> list[tuple[int, ...]]:
    """Per bucket: new, active, returning, dormant, lost, by the report's definition."""
    def inside(t: datetime) -> bool:
        after = t >= period.start if period.includes_start else t > period.start
        before = t <= period.end if period.includes_end else t < period.end
        return after and before

    starts = analysis.bucket_starts(period, unit)
    rows = []
    for start, following in itertools.pairwise(starts):
        end = min(following, period.end)
        new = active = dormant = lost = 0
        for trades in orders.values():
            times = [t for t, _, _ in trades]
            in_bucket = [t for t in times if start <= t < following and inside(t)]
            active += bool(in_bucket)
            new += bool(in_bucket) and min(times) in in_bucket
            by_end = [t for t in times if t <= end]
            if by_end:
                age = end - max(by_end)
                lost += age >= DAY * LOST
                dormant += DAY * DORMANT <= age < DAY * LOST
        rows.append((new, active, active - new, dormant, lost))
    return rows


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=1)
    yield engine
    engine.dispose()


def test_growth_is_its_definition_member_by_member(engine: Engine) -> None:
    orders = history(700, seed=5)
    with engine.begin() as conn:
        load(conn, orders)
        apply_shop_config(conn, Topics(), parse({"shop_id": SHOP, "name": "Growing",
                                                 "timezone": "Asia/Shanghai"}), "test", AS_OF)
    with engine.connect() as conn:
        shop = analysis.shop_of(conn, SHOP)
        periods = [analysis.period_of(conn, shop),
                   analysis.period_of(conn, shop, days=200),
                   analysis.period_of(conn, shop, first_day=date(2025, 3, 1),
                                      last_day=date(2025, 11, 17))]
        totals = [0] * 5
        for period in periods:
            for unit in ("month", "week"):
                report = analysis.growth_analysis(conn, shop, period, unit, DORMANT, LOST)
                got = [(r["new"], r["active"], r["returning"], r["dormant"], r["lost"])
                       for r in report.tables["growth"].rows]
                assert got == expected(orders, period, unit), (period.describe(), unit)
                columns = zip(*got, strict=True)
                totals = [a + sum(col) for a, col in zip(totals, columns, strict=True)]
    assert all(totals), totals     # new, active, returning, dormant and lost all seen


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kathmandu"])
def test_time_puts_each_trade_in_its_hour_of_the_shops_clock(engine: Engine, zone: str) -> None:
    orders = history(400, seed=9)
    with engine.begin() as conn:
        load(conn, orders)
        apply_shop_config(conn, Topics(), parse({"shop_id": SHOP, "name": "Timed",
                                                 "timezone": zone}), "test", AS_OF)
    with engine.connect() as conn:
        shop = analysis.shop_of(conn, SHOP)
        period = analysis.period_of(conn, shop)
        report = analysis.time_analysis(conn, shop, period)
    local = [t.astimezone(ZoneInfo(zone)) for trades in orders.values() for t, _, _ in trades
             if period.start < t <= period.end]
    cells = Counter((analysis.WEEKDAYS[t.weekday()], f"h{t.hour:02d}") for t in local)
    assert {(r["day_of_week"], h): r[h] for r in report.tables["weekday_hour"].rows
            for h in r if h.startswith("h") and r[h]} == dict(cells)
    months = Counter(f"{t:%Y-%m}" for t in local)
    assert {m["month"]: m["completed_trades"] for m in report.tables["months"].rows
            if m["completed_trades"]} == dict(months)
