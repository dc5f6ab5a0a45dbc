"""Every customer-analysis report on one large shop (figures printed, never asserted).

    python benchmarks/analysis.py [--members 1000000] [--runs 2]

A fresh embedded PostgreSQL 16 database gets the bulk-loaded shop of benchmarks/tiers.py
(members with their completed orders over 400 days: 2.5 orders per member, lognormal amounts,
~8% refunded in part or whole), a shop configuration with a four-level ladder (so every member
has a level name), a level for each member by spend, and the pipeline clock at the newest
order.

First the scores the tiering worker keeps in each member's record, each step in its own
transaction as the worker runs it: an RFM recompute scoring every buyer for the first time
(every one a change to store), one after ~1% of members bought again, one with nothing moved,
and a refit of the predicted value. Then each report is built as `memberflow report NAME
--shop S` builds it (the default period: for levels, amounts, RFM and predicted value that of
the kept scores, whose figures they read; else the 365 days up to the clock), `--runs` times
(the first run reads from a cold cache); the four that read kept figures are built afresh from
the orders too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from tiers import SHOP, load_shop, one_percent_more
from workload import fresh_database, postgres

from memberflow import analysis
from memberflow.configure import apply_shop_config
from services.tiering import scores_store
from shared.shopconfig import parse
from shared.topics import Topics

LADDER = {"basis": "amount", "ladder": [
    {"name": "银卡", "threshold": "200.00", "discount": "0.98"},
    {"name": "金卡", "threshold": "500.00", "discount": "0.95"},
    {"name": "铂金卡", "threshold": "1000.00", "discount": "0.92"},
    {"name": "钻石卡", "threshold": "3000.00", "discount": "0.88"}]}


def prepare(engine: Engine, members: int) -> tuple[int, int, float]:
    loaded = load_shop(engine, members)
    with engine.begin() as conn:
        apply_shop_config(conn, Topics(), parse({"shop_id": SHOP, "name": "基准店",
                                                 "levels": LADDER}),
                          "bench", datetime.now(UTC))
        conn.exec_driver_sql(
            "INSERT INTO stream_clocks (consumer, topic, partition, clock) "
            "VALUES ('tiering', 'memberflow.orders', 0, %s)", (loaded.as_of,))
    return loaded.members, loaded.orders, loaded.load_s


def build(engine: Engine, name: str, kept: bool = True) -> tuple[float, Any]:
    started = time.perf_counter()
    with engine.connect() as conn:
        shop = analysis.shop_of(conn, SHOP)
        if name == "dormant":
            report = analysis.dormant_members(conn, shop, 180)
        else:
            period = analysis.period_of(conn, shop, report=name)
            make = analysis.BY_PERIOD[name]
            report = make(conn, shop, period) if kept else make(  # type: ignore[call-arg]
                conn, shop, period, kept=False)
    return time.perf_counter() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, postgres(Path(tmp)) as db:
        _, engine = fresh_database(db, "analysis")
        members, orders, load_s = prepare(engine, args.members)
        print(f"shop: {members:,} members, {orders:,} completed orders (loaded in "
              f"{load_s:.1f} s); the 365 days up to the clock; each report {args.runs} runs")
        print(f"yardstick: one pass over the shop's orders (count and sum) "
              f"{' / '.join(f'{s:.2f}' for s in yardstick(engine, args.runs))} s: the "
              "figures below are this machine's, and compare with others through it")
        kept_scores(engine)
        print(f"{'report':<18} {'runs (s)':<22} answer")
        for name, kept in [(n, True) for n in ("levels", "time", "amounts", "counts",
                                               "dormant", "growth", "rfm", "coupons",
                                               "predicted")] + [
                (n, False) for n in analysis.KEPT_REPORTS]:
            runs = []
            for _ in range(args.runs):
                seconds, report = build(engine, name, kept)
                runs.append(seconds)
            first = next(iter(report.tables.values()))
            label = name if kept else f"{name}, afresh"
            print(f"{label:<18} {' / '.join(f'{s:.2f}' for s in runs):<22} "
                  f"{len(first.rows)} rows; {_gist(report.summary)}")
        engine.dispose()


def yardstick(engine: Engine, runs: int) -> list[float]:
    """The seconds PostgreSQL takes to read every order of the shop once, `runs` times."""
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*), sum(amount_cents) FROM member_orders "
                                 "WHERE shop_id = %s", (SHOP,)).one()
        out.append(time.perf_counter() - started)
    return out


def kept_scores(engine: Engine) -> None:
    print(f"{'kept':<24} {'s':>6}  changes")
    with engine.connect() as conn:
        shop = analysis.shop_of(conn, SHOP)
        as_of = analysis.shop_clock(conn, SHOP)
    assert as_of is not None

    def rfm(what: str) -> None:
        started = time.perf_counter()
        with engine.begin() as conn:
            run, _ = scores_store.recompute_rfm(conn, SHOP, shop.zone, as_of, shop.config.rfm,
                                                datetime.now(UTC))
        print(f"{what:<24} {time.perf_counter() - started:6.2f}  {run.planned:,} of "
              f"{run.buyers:,} buyers")

    rfm("rfm, first")
    one_percent_more(engine, as_of, 0.7, "x")
    rfm("rfm, 1% bought again")
    rfm("rfm, nothing moved")
    started = time.perf_counter()
    with engine.begin() as conn:
        note = scores_store.predict(conn, SHOP, shop.zone, as_of, shop.config.rfm)
    print(f"{'predicted value refit':<24} {time.perf_counter() - started:6.2f}  {note[:60]}")


def _gist(summary: dict[str, Any]) -> str:
    shown = [f"{k} {v}" for k, v in summary.items()
             if not isinstance(v, (dict, list)) and len(str(v)) < 40][:3]
    return ", ".join(shown)


if __name__ == "__main__":
    main()
