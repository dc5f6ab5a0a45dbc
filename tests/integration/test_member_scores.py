"""The scores tiering keeps in each member's record (`services.tiering.scores_store`), on a shop
loaded straight into PostgreSQL: RFM scores held to the documented rule worked in Python, the
changes a recompute plans, and the predicted value held to the report's own fit and used as a
filter. (The hand-worked shop in test_analysis.py has the worker keep them through the real
pipeline, publish them and tag by them.)"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from sqlalchemy import Connection, Engine

from memberflow import analysis
from memberflow.configure import apply_shop_config
from memberflow.readmodel import member_records
from services.tiering import abc_store, rfm, scores_store
from services.tiering.rfm import RfmSettings
from shared import tokens
from shared.db import make_engine
from shared.filters import MemberFilter
from shared.shopconfig import parse
from shared.topics import Topics
from tests.api_support import ApiServer

SHOP = "scored"
AS_OF = datetime(2026, 6, 30, 12, tzinfo=UTC)
DAY = timedelta(days=1)
Orders = dict[str, list[tuple[datetime, int, int]]]   # member: [(completed at, amount, refunded)]


def population(buyers: int, seed: int = 11) -> Orders:
    """Buyers inside the last 365 days: a third buy once, the others come back at their own
    rate, some stop; amounts in whole and odd cents, a few refunds."""
    rng = random.Random(seed)
    out: Orders = {}
    for i in range(buyers):
        first = AS_OF - timedelta(days=rng.uniform(2, 360))
        times = [first]
        if rng.random() > 0.33:
            gap = rng.uniform(5, 60)
            while times[-1] + timedelta(days=gap) < AS_OF and rng.random() > 0.15:
                times.append(times[-1] + timedelta(days=rng.uniform(0.3, 2) * gap))
        out[f"m{i:04d}"] = [(t, rng.choice([1990, 4550, 12001, 30000, rng.randint(100, 90000)]),
                             rng.choice([0] * 9 + [500])) for t in times]
    return out


def load(conn: Connection, orders: Orders) -> None:
    rows = [(SHOP, f"{m}-{i}", m, amount, at, refunded)
            for m, trades in orders.items() for i, (at, amount, refunded) in enumerate(trades)]
    conn.exec_driver_sql(
        "INSERT INTO member_orders (shop_id, order_id, member_id, amount_cents, completed_at, "
        "refund_requested_cents, refunded_cents) "
        "SELECT * , r FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], "
        "%s::timestamptz[], %s::bigint[]) AS u(s, o, m, a, c, r)",
        tuple(list(col) for col in zip(*rows, strict=True)))
    conn.exec_driver_sql(
        "INSERT INTO members (shop_id, member_id, completed_trades, gross_cents, refunded_cents, "
        "  spend_cents, first_purchase_at, last_purchase_at) "
        "SELECT shop_id, member_id, count(*), sum(amount_cents), sum(refunded_cents), "
        "  sum(amount_cents - refunded_cents), min(completed_at), max(completed_at) "
        "FROM member_orders WHERE shop_id = %s GROUP BY shop_id, member_id", (SHOP,))
    conn.exec_driver_sql("INSERT INTO abc_shops (shop_id, watermark) VALUES (%s, %s)",
                         (SHOP, AS_OF))
    conn.exec_driver_sql(
        "INSERT INTO stream_clocks (consumer, topic, partition, clock) "
        "VALUES ('tiering', 'memberflow.orders', 0, %s) ON CONFLICT (consumer, topic, partition) "
        "DO UPDATE SET clock = excluded.clock", (AS_OF,))


def expected_scores(orders: Orders, as_of: datetime, settings: RfmSettings
                    ) -> dict[str, tuple[int, int, int, str]]:
    """The rule of services/tiering/rfm.py, the slow way (days in UTC, the shop's zone here)."""
    start = as_of - timedelta(days=settings.period_days)
    values: dict[str, tuple[int, int, int]] = {}
    for member, trades in orders.items():
        inside = [(at, amount - refunded) for at, amount, refunded in trades
                  if start < at <= as_of]
        if not inside:
            continue
        days = {at.date() for at, _ in inside}
        recency = int((as_of - max(at for at, _ in inside)).total_seconds() // 86400)
        net = sum(n for _, n in inside)
        monetary = int((Decimal(net) / len(days)).quantize(Decimal(1), ROUND_HALF_UP))
        values[member] = (-recency, len(days), monetary)
    edges = [rfm.edges([v[i] for v in values.values()]) for i in range(3)]
    out = {}
    for member, v in values.items():
        r, f, m = (rfm.score(v[i], edges[i]) for i in range(3))
        out[member] = (r, f, m, rfm.segment_of(r, f, m, settings.segments))
    return out


def stored(conn: Connection) -> dict[str, tuple[int, int, int, str]]:
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in conn.exec_driver_sql(
        "SELECT member_id, r_score, f_score, m_score, segment FROM member_rfm "
        "WHERE shop_id = %s", (SHOP,))}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=1)
    yield engine
    engine.dispose()


def test_rfm_scores_follow_the_rule_and_a_recompute_plans_only_what_moved(
        engine: Engine) -> None:
    orders = population(300)
    settings = RfmSettings()
    with engine.begin() as conn:
        load(conn, orders)
        run, applied = scores_store.recompute_rfm(conn, SHOP, "UTC", AS_OF, settings, AS_OF)
        assert run.buyers == 300 and run.planned == len(applied) == 300
        assert stored(conn) == expected_scores(orders, AS_OF, settings)
        assert {c.old for c in applied} == {None}
        # Nothing moved: nothing planned.
        again, none = scores_store.recompute_rfm(conn, SHOP, "UTC", AS_OF, settings, AS_OF)
        assert again.planned == 0 and none == []

    # Time passes without a sale: buyers leave the period, everyone's recency grows.
    later = AS_OF + 120 * DAY
    with engine.begin() as conn:
        before = stored(conn)
        since: dict[str, datetime] = dict(conn.exec_driver_sql(
            "SELECT member_id, since FROM member_rfm WHERE shop_id = %s", (SHOP,)).tuples().all())
        run, applied = scores_store.recompute_rfm(conn, SHOP, "UTC", later, settings, later)
        after = stored(conn)
        want = expected_scores(orders, later, settings)
        assert after == want
        assert 0 < len(after) < len(before)
        changed = {c.member_id: c for c in applied}
        # Exactly the members whose scores or segment differ, each with its old segment.
        assert set(changed) == {m for m in before.keys() | after.keys()
                                if before.get(m) != after.get(m)}
        assert all(c.old == before[m][3] for m, c in changed.items() if m in before)
        assert all(c.new is None and c.scores is None for m, c in changed.items()
                   if m not in after)
        # `since` moves with the segment only.
        moved: dict[str, datetime] = dict(conn.exec_driver_sql(
            "SELECT member_id, since FROM member_rfm WHERE shop_id = %s", (SHOP,)).tuples().all())
        for member, at in moved.items():
            kept = before.get(member, (0, 0, 0, None))[3] == after[member][3]
            assert at == (since[member] if kept else later), member

    # A late trade (dated before the last recompute) and a refund reach the scores through the
    # ABC recompute's queue: nothing about the period's edges points at them.
    late, refunded = sorted(after)[:2]
    with engine.begin() as conn:
        amount = 75_000
        conn.exec_driver_sql(
            "INSERT INTO member_orders (shop_id, order_id, member_id, amount_cents, "
            "completed_at, refund_requested_cents, refunded_cents) VALUES (%s, %s, %s, %s, %s, "
            "0, 0)", (SHOP, f"{late}-late", late, amount, later - 30 * DAY))
        orders[late] = [*orders[late], (later - 30 * DAY, amount, 0)]
        at, paid, _ = orders[refunded][-1]
        conn.exec_driver_sql(
            "UPDATE member_orders SET refund_requested_cents = amount_cents, "
            "refunded_cents = amount_cents WHERE shop_id = %s AND order_id = %s",
            (SHOP, f"{refunded}-{len(orders[refunded]) - 1}"))
        orders[refunded] = [*orders[refunded][:-1], (at, paid, paid)]
        # One handed on by an ABC recompute, one still waiting on its queue.
        abc_store.note_changed(conn, [(SHOP, refunded)])
        assert abc_store.take_noted(conn, [SHOP]) == {SHOP: [refunded]}
        abc_store.note_changed(conn, [(SHOP, late)])
        scores_store.recompute_rfm(conn, SHOP, "UTC", later, settings, later)
        assert stored(conn) == expected_scores(orders, later, settings)
        assert conn.exec_driver_sql("SELECT count(*) FROM rfm_pending").scalar() == 0

    # A recompute that took its members off the queue and died before reading them: the next
    # reads every buyer again, so their change is not lost.
    dying = sorted(after)[2]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO member_orders (shop_id, order_id, member_id, amount_cents, "
            "completed_at, refund_requested_cents, refunded_cents) VALUES (%s, %s, %s, %s, %s, "
            "0, 0)", (SHOP, f"{dying}-late", dying, 60_000, later - 10 * DAY))
        orders[dying] = [*orders[dying], (later - 10 * DAY, 60_000, 0)]
        abc_store.note_changed(conn, [(SHOP, dying)])
        abc_store.take_noted(conn, [SHOP])
        assert scores_store.claim_rfm(conn, [SHOP], later, later) == [SHOP]
        # Taken with the one still waiting from above (the RFM recompute reads, never takes,
        # the ABC queue).
        assert scores_store.take_pending(conn, [SHOP]) == {SHOP: sorted([late, dying])}
    with engine.begin() as conn:
        scores_store.recompute_rfm(conn, SHOP, "UTC", later, settings, later)
        assert stored(conn) == expected_scores(orders, later, settings)
        assert conn.exec_driver_sql(
            "SELECT trades, spend_cents FROM member_rfm WHERE member_id = %s", (late,)).one() == (
            sum(1 for t, _, _ in orders[late] if later - 365 * DAY < t <= later),
            sum(a - r for t, a, r in orders[late] if later - 365 * DAY < t <= later))


def test_predicted_values_are_the_reports_and_filter_the_win_back_list(engine: Engine) -> None:
    orders = population(600)
    settings = RfmSettings()
    with engine.begin() as conn:
        load(conn, orders)
        apply_shop_config(conn, Topics(), parse({"shop_id": SHOP, "name": "Scored",
                                                 "timezone": "UTC"}), "test", AS_OF)
        note = scores_store.predict(conn, SHOP, "UTC", AS_OF, settings)
    assert note.startswith("BG/NBD r ")
    with engine.connect() as conn:
        shop = analysis.shop_of(conn, SHOP)
        period = analysis.period_of(conn, shop, report="predicted")
        report = analysis.predicted_value(conn, shop, period, kept=False)
        records = {r["member_id"]: r for r in member_records(conn, SHOP)}
        # The report reading the kept predictions lists what fitting afresh lists.
        read = analysis.predicted_value(conn, shop, period)
    assert report.summary.pop("predictions") == "fitted for this report"
    assert read.summary.pop("predictions").endswith("as of 2026-06-30T12:00:00+00:00")
    assert read.summary == report.summary
    diff = [(a, b) for a, b in zip(read.tables["members"].rows, report.tables["members"].rows,
                                   strict=True) if a != b]
    assert not diff, diff[:3]
    drawn = read.png_bytes()
    assert drawn is not None and drawn[:4] == b"\x89PNG"
    # The same fit: every buyer's record carries the report's figures.
    listed = report.tables["members"].rows
    assert len(listed) == len(records) == 600
    for row in listed:
        record = records[row["member_id"]]
        assert (record["p_alive"], record["expected_purchases"], record["expected_value"]) == (
            row["p_alive"], row["expected_purchases"], row["expected_value"]), row
    # "Probability active at most 0.3 and spend at least 1,000": the report's win-back list.
    wanted = MemberFilter(max_p_alive=Decimal("0.3"), min_spend=Decimal("1000"))
    with engine.connect() as conn:
        chosen = {r["member_id"] for r in member_records(conn, SHOP, wanted)}
        win_back = analysis.predicted_value(conn, shop, period, max_p_alive=Decimal("0.3"),
                                            min_spend=Decimal("1000"), kept=False)
        valuable = {r["member_id"] for r in member_records(
            conn, SHOP, MemberFilter(min_expected_value=Decimal("100")))}
    assert chosen and chosen == {r["member_id"] for r in win_back.tables["members"].rows}
    assert valuable and valuable == {r["member_id"] for r in listed
                                     if Decimal(r["expected_value"]) >= 100}

    # The console shows the kept predictions, the most valuable buyers first.
    with engine.begin() as conn:
        reader = tokens.create(conn, name="analyst", shops=[SHOP], rights=["read"],
                               expires_in=None, operator="test").token
    with ApiServer(engine) as api:
        page = api.call("GET", f"/console/shops/{SHOP}/analysis/predicted",
                        headers={"Cookie": f"mf_console={reader}"})
    assert page.status == 200, page.text
    assert "kept in the members&#39; records by tiering" in page.text
    top = max(listed, key=lambda r: (Decimal(r["expected_value"]), r["member_id"]))
    assert page.text.count('/members/m') == 200
    assert f'/members/{top["member_id"]}"' in page.text

    # A period too short for a fit: the shop's predictions go, and its note says why.
    short = RfmSettings(period_days=7)
    with engine.begin() as conn:
        note = scores_store.predict(conn, SHOP, "UTC", AS_OF, short)
        assert note.startswith("no predictions: ") and "at least 200 buyers" in note
        assert conn.exec_driver_sql("SELECT count(*) FROM member_predictions").scalar() == 0
        assert conn.exec_driver_sql(
            "SELECT predicted_note FROM abc_shops WHERE shop_id = %s", (SHOP,)).scalar() == note


@pytest.mark.parametrize("segments", [
    list(rfm.DEFAULT_SEGMENTS),
    [rfm.Segment(id="big", name="大客户", m="4"), rfm.Segment(id="recent", name="近期", r="3-4"),
     rfm.Segment(id="mid", name="mid", r="2", f="2-3", m="1-2")]])
def test_the_segment_map_in_sql_is_the_python_one(engine: Engine,
                                                  segments: list[rfm.Segment]) -> None:
    with engine.connect() as conn:
        found = {(r, f, m): s for r, f, m, s in conn.exec_driver_sql(
            "SELECT r_score, f_score, m_score, " + rfm.segment_sql(segments) + " FROM "
            "generate_series(1, 4) r_score, generate_series(1, 4) f_score, "
            "generate_series(1, 4) m_score")}
    assert len(found) == 64
    assert found == {k: rfm.segment_of(*k, segments) for k in found}
    # The default map names every pattern; the shop's own leaves gaps, named "others".
    assert (rfm.OTHERS in found.values()) is (segments[0].id == "big")


def test_a_refit_is_due_a_day_of_clock_later_and_never_twice_at_once(engine: Engine) -> None:
    orders = population(20)
    now = datetime(2026, 12, 6, 8, tzinfo=UTC)     # wall time; the clock is the shop's
    with engine.begin() as conn:
        load(conn, orders)
        scores_store.recompute_rfm(conn, SHOP, "UTC", AS_OF, RfmSettings(), now)
        assert scores_store.due_predicted(conn, now, AS_OF) == [SHOP]
        assert scores_store.claim_predicted(conn, [SHOP], now, AS_OF) == [SHOP]
        # Claimed: no other worker takes it while the fit runs ...
        assert scores_store.due_predicted(conn, now, AS_OF) == []
        assert scores_store.claim_predicted(conn, [SHOP], now, AS_OF) == []
        # ... unless the claim is older than its lease (the worker died).
        later = now + scores_store.PREDICTED_LEASE
        assert scores_store.due_predicted(conn, later, AS_OF) == [SHOP]
        scores_store.predict(conn, SHOP, "UTC", AS_OF, RfmSettings())
        assert scores_store.due_predicted(conn, later, AS_OF + 23 * timedelta(hours=1)) == []
        assert scores_store.due_predicted(conn, later, AS_OF + DAY) == [SHOP]
