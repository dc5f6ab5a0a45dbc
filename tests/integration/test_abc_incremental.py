"""Customer ABC recomputes that look only at what moved (services/tiering/abc_store.py) give the
classes a full ranking gives, on random histories: trades arriving, refunds, ties, the period
sliding with the clock, members entering and leaving the population."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection, Engine

from services.tiering import abc_store
from services.tiering.policy import CustomerAbc
from shared.db import make_engine
from tests.oracles import Spender, classify_customers

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = CustomerAbc(period_days=30, a_share=Decimal("0.10"), b_share=Decimal("0.30"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def oracle(conn: Connection, shop: str, as_of: datetime) -> dict[str, str]:
    rows = conn.exec_driver_sql(
        "SELECT member_id, sum(amount_cents - refunded_cents), max(completed_at) "
        "FROM member_orders WHERE shop_id = %s AND completed_at > %s AND completed_at <= %s "
        "GROUP BY member_id", (shop, as_of - timedelta(days=SETTINGS.period_days), as_of)).all()
    return classify_customers([Spender(m, int(s), last) for m, s, last in rows],
                              SETTINGS.a_share, SETTINGS.b_share)


def complete(conn: Connection, shop: str, order_id: str, member: str, amount: int,
             at: datetime) -> None:
    """A completed order in the ledger, as the tiering worker saves it."""
    conn.exec_driver_sql(
        "INSERT INTO member_orders (shop_id, order_id, member_id, amount_cents, completed_at, "
        "completed_event_id, refund_requested_cents, refunded_cents) "
        "VALUES (%s, %s, %s, %s, %s, %s, 0, 0)", (shop, order_id, member, amount, at,
                                                 f"e-{order_id}"))


def stored(conn: Connection, shop: str) -> dict[str, str]:
    return dict(conn.exec_driver_sql(
        "SELECT member_id, abc_class FROM members WHERE shop_id = %s "
        "AND abc_class IS NOT NULL", (shop,)).tuples().all())


@pytest.mark.parametrize("seed", range(12))
def test_incremental_recomputes_equal_a_full_ranking(engine: Engine, seed: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    full = abc_store._plan_all
    fulls: list[str] = []

    def counted(*args: Any) -> abc_store.AbcRun:
        fulls.append("full")
        return full(*args)

    monkeypatch.setattr(abc_store, "_plan_all", counted)
    monkeypatch.setattr(abc_store, "_INCREMENTAL_SHARE", 10.0)  # small shops: stay incremental
    rng = random.Random(seed)
    shop = f"shop-{seed}"
    # Ids compared byte-wise, as the ranking compares them, whatever the script.
    members = [f"{rng.choice(['m', 'M', 'é', '中', 'z'])}{i:03d}"
               for i in range(rng.randint(5, 60))]
    orders: dict[str, tuple[str, datetime, int]] = {}
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO members (shop_id, member_id) SELECT %s, unnest(%b::text[])",
            (shop, members))
        conn.exec_driver_sql("INSERT INTO abc_shops (shop_id, watermark) VALUES (%s, %s)",
                             (shop, T0))
    clock = T0
    for _ in range(12):
        changed: set[str] = set()
        with engine.begin() as conn:
            for _ in range(rng.randint(0, 25)):
                member = rng.choice(members)
                if orders and rng.random() < 0.2:   # a refund, possibly the whole amount
                    order_id = rng.choice(sorted(orders))
                    owner, _, amount = orders[order_id]
                    conn.exec_driver_sql(
                        "UPDATE member_orders SET refunded_cents = least(amount_cents, "
                        "refunded_cents + %s) WHERE shop_id = %s AND order_id = %s",
                        (rng.randint(1, amount), shop, order_id))
                    changed.add(owner)
                    continue
                order_id = f"o{len(orders)}"
                # Late trades too, and equal amounts and times: ties break by member id.
                at = clock - timedelta(days=rng.choice([0, 0, 1, 5, 29, 31]),
                                       hours=rng.choice([0, 0, 3]))
                amount = rng.choice([100, 100, 250, 999, 5000])
                orders[order_id] = (member, at, amount)
                complete(conn, shop, order_id, member, amount, at)
                changed.add(member)
            abc_store.note_changed(conn, [(shop, m) for m in sorted(changed)])
        clock += timedelta(days=rng.choice([0, 1, 3, 10]))
        with engine.begin() as conn:
            abc_store.recompute(conn, shop, clock, SETTINGS, datetime.now(UTC))
            assert stored(conn, shop) == oracle(conn, shop, clock)
    assert len(fulls) <= 3   # the first ranking, and again only when nobody was ranked


def test_a_run_applies_only_its_own_changes_and_one_that_died_is_cleared(engine: Engine) -> None:
    shop = "shop-runs"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO members (shop_id, member_id) SELECT %s, unnest(%b::text[])",
            (shop, ["a", "b", "c", "d"]))
        conn.exec_driver_sql("INSERT INTO abc_shops (shop_id, watermark) VALUES (%s, %s)",
                             (shop, T0))
        for i, (member, amount) in enumerate([("a", 900), ("b", 500), ("c", 100)]):
            complete(conn, shop, f"o{i}", member, amount, T0)
        abc_store.recompute(conn, shop, T0, SETTINGS, datetime.now(UTC))
    # A recompute plans changes and its worker dies before applying any of them.
    with engine.begin() as conn:
        complete(conn, shop, "o9", "d", 5000, T0)
        abc_store.note_changed(conn, [(shop, "d")])
    with engine.begin() as conn:
        abc_store.claim(conn, [shop], datetime.now(UTC), T0)
        died = abc_store.plan(conn, shop, T0, SETTINGS, abc_store.take_noted(conn, [shop])[shop])
    assert died.planned > 0
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM abc_changes WHERE run = %s",
                                    (died.run,)).scalar_one() == died.planned
        # The next recompute ranks everyone again; what the dead run left is never applied.
        abc_store.claim(conn, [shop], datetime.now(UTC), T0)
        run = abc_store.plan(conn, shop, T0, SETTINGS, abc_store.take_noted(conn, [shop])[shop])
        assert run.run != died.run
        conn.exec_driver_sql(   # a change of another run, planted: not this run's to apply
            "INSERT INTO abc_changes (shop_id, run, member_id, old, new) "
            "VALUES (%s, %s, 'c', 'C', 'A')", (shop, died.run))
        applied, after = abc_store.apply_part(conn, run, "", 100)
        assert after is None and "c" not in {c.member_id for c in applied if c.new == "A"}
        abc_store.finish(conn, run)
        assert stored(conn, shop) == oracle(conn, shop, T0)
        assert conn.exec_driver_sql("SELECT count(*) FROM abc_changes WHERE shop_id = %s "
                                    "AND run = %s", (shop, run.run)).scalar_one() == 0
