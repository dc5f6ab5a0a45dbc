"""Campaign attribution through the real broker and PostgreSQL, on hand-worked scenarios: the
window boundary, competing campaigns, a click that arrives after its order, send-only credit,
refunds, members never targeted, and an event beyond the lateness bound."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from memberflow.campaign_report import campaign_report
from memberflow.configure import apply_shop_config
from memberflow.runtime import Stack
from services.campaigns import operations
from services.campaigns.operations import FileSender
from shared.audit import OperationRefused
from shared.db import make_engine
from shared.shopconfig import parse
from tests.support import pipeline, read_topic, scalar, unique_by_id

SHOP = "promo"
WORKERS = ("archiver", "tiering", "campaigns")
T0 = datetime(2026, 6, 1, tzinfo=UTC)
H = timedelta(hours=1)


def campaign(cid: str, click_hours: int, channel: str, **extra: Any) -> dict[str, Any]:
    return {"id": cid, "name": cid, "target": {"all": True},
            "offer": {"kind": "cash_off", "amount": "10.00", "min_spend": "99.00"},
            "channels": [channel], "starts_at": "2026-06-01T00:00:00Z",
            "ends_at": "2026-06-30T00:00:00Z",
            "attribution": {"click_window_hours": click_hours, "send_window_hours": 24},
            **extra}


CONFIG = {"shop_id": SHOP, "name": "Promo shop", "timezone": "UTC",
          "campaigns": [campaign("c-48", 48, "sms"), campaign("c-24", 24, "email")]}

_ids = itertools.count(1)


def ev(type_: str, member: str, at: datetime, **payload: Any) -> dict[str, Any]:
    return {"event_id": f"c{next(_ids):04d}", "type": type_, "schema_version": 1,
            "shop_id": SHOP, "member_id": member,
            "occurred_at": at.isoformat().replace("+00:00", "Z"), "payload": payload}


def sent(member: str, cid: str, at: datetime, channel: str = "sms") -> dict[str, Any]:
    return ev("campaign.message_sent", member, at, campaign_id=cid,
              message_id=f"{cid}:{member}", channel=channel)


def clicked(member: str, cid: str, at: datetime, message: str | None = None) -> dict[str, Any]:
    return ev("campaign.message_clicked", member, at, campaign_id=cid,
              message_id=message or f"{cid}:{member}")


def paid(member: str, order: str, amount: str, at: datetime) -> dict[str, Any]:
    return ev("order.paid", member, at, order_id=order, amount=amount)


def history() -> list[dict[str, Any]]:
    """As the storefront sends it: in time order, but for the few events sent late on purpose."""
    on_time = [
        # Exactly 48 hours after the click: credited. 48 hours and a second: not, and too
        # long after the send for a send credit.
        sent("m-edge", "c-48", T0), clicked("m-edge", "c-48", T0 + H),
        paid("m-edge", "o-edge", "120.00", T0 + H + 48 * H),
        sent("m-over", "c-48", T0), clicked("m-over", "c-48", T0 + H),
        paid("m-over", "o-over", "60.00", T0 + H + 48 * H + timedelta(seconds=1)),
        # Two campaigns compete: the latest click wins, though the other's window is longer.
        sent("m-compete", "c-48", T0), sent("m-compete", "c-24", T0, "email"),
        clicked("m-compete", "c-48", T0 + 2 * H), clicked("m-compete", "c-24", T0 + 5 * H),
        ev("order.completed", "m-compete", T0 + 10 * H, order_id="o-compete", amount="50.00"),
        sent("m-lateclick", "c-48", T0), paid("m-lateclick", "o-lateclick", "80.00", T0 + 3 * H),
        # Never clicked: the send gets the credit within its 24 hours.
        sent("m-sendonly", "c-24", T0, "email"),
        paid("m-sendonly", "o-sendonly", "40.00", T0 + 20 * H),
        # Credited, then partly refunded: still one conversion, revenue net of the refund.
        sent("m-refund", "c-48", T0), clicked("m-refund", "c-48", T0 + H),
        ev("order.completed", "m-refund", T0 + 2 * H, order_id="o-refund", amount="100.00"),
        ev("order.refunded", "m-refund", T0 + 30 * H, order_id="o-refund", amount="30.00"),
        # A click on a message never sent to the member: never targeted, never credited.
        clicked("m-stranger", "c-48", T0 + H, message="c-48:somebody-else"),
        paid("m-stranger", "o-stranger", "70.00", T0 + 2 * H),
        # The click comes after the order: the order is not the click's.
        sent("m-after", "c-48", T0 + 90 * timedelta(minutes=1)),
        paid("m-after", "o-after", "30.00", T0 + H), clicked("m-after", "c-48", T0 + 2 * H),
        paid("m-late", "o-late", "90.00", T0 + 2 * H),
        sent("m-late", "c-48", T0 + 5 * 24 * H),
    ]
    h = sorted(on_time, key=lambda e: e["occurred_at"])
    # Sent two hours late, after the order it precedes: it still credits it.
    h.insert(h.index(next(e for e in h if e["payload"].get("order_id") == "o-lateclick")) + 1,
             clicked("m-lateclick", "c-48", T0 + H))
    # Five days behind the stream when it arrives: refused as too late.
    return [*h, clicked("m-late", "c-48", T0 + H)]


EXPECTED = {
    "o-edge": ("click", "c-48"),
    "o-over": None,
    "o-compete": ("click", "c-24"),
    "o-lateclick": ("click", "c-48"),
    "o-sendonly": ("send", "c-24"),
    "o-refund": ("click", "c-48"),
    "o-stranger": None,
    "o-after": None,
    "o-late": None,
}


@pytest.fixture
def engine(stack: Stack) -> Iterator[Engine]:
    eng = make_engine(stack.database_url)
    with eng.begin() as conn:
        apply_shop_config(conn, stack.topics, parse(CONFIG), "test",
                          datetime.now(UTC))
    yield eng
    eng.dispose()


def credits(engine: Engine) -> dict[str, tuple[str, str] | None]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT order_id, credit_kind, campaign_id FROM campaign_orders "
            "WHERE shop_id = %s AND converted_at IS NOT NULL", (SHOP,)).all()
    return {r[0]: (r[1], r[2]) if r[1] else None for r in rows}


def test_hand_worked_credits_report_and_the_lateness_bound(stack: Stack,
                                                            engine: Engine) -> None:
    # Ended with a tick at the newest event, as `memberflow run` ends: every partition's
    # clock is there, so the report settles up to it less the bound.
    pipeline(stack, history(), workers=WORKERS, as_of=T0 + 5 * 24 * H)
    assert credits(engine) == EXPECTED

    with engine.connect() as conn:
        parked = conn.exec_driver_sql(
            "SELECT source, reason FROM dead_letters WHERE source = 'worker:campaigns'").all()
        report = campaign_report(conn, SHOP, None, timedelta(hours=24))
    assert len(parked) == 1 and "too late for campaign attribution" in parked[0][1]
    assert "behind the newest event of shop 'promo'" in parked[0][1]

    rows = {(r["campaign_id"], r["channel"], r["day"]): r
            for r in (row.record() for row in report.rows)}
    c48 = rows[("c-48", "sms", "2026-06-01")]
    assert (c48["sent"], c48["clicked"], c48["converted_members"], c48["orders"]) == (6, 6, 3, 3)
    assert c48["revenue"] == "270.00"  # 120 + 80 + (100 - 30 refunded)
    assert c48["click_rate"] == "1.0000" and c48["conversion_rate"] == "0.5000"
    assert c48["revenue_per_message"] == "45.00" and c48["status"] == "final"
    c24 = rows[("c-24", "email", "2026-06-01")]
    assert (c24["sent"], c24["clicked"], c24["orders"], c24["send_orders"]) == (2, 1, 1, 1)
    assert (c24["revenue"], c24["send_revenue"]) == ("50.00", "40.00")
    assert rows[("c-48", "unknown", "2026-06-01")]["clicked"] == 1   # the stranger's click
    assert rows[("c-48", "sms", "2026-06-06")]["status"] == "provisional"
    assert report.settled_until == T0 + 4 * 24 * H  # the newest event less the bound
    # The models side by side: o-compete (50.00) was clicked in c-48, then in c-24.
    assert report.models == [
        {"campaign_id": "c-24", "last_click_orders": 1, "last_click_revenue": "50.00",
         "first_click_orders": 0, "first_click_revenue": "0.00", "linear_orders": "0.50",
         "linear_revenue": "25.00"},
        {"campaign_id": "c-48", "last_click_orders": 3, "last_click_revenue": "270.00",
         "first_click_orders": 4, "first_click_revenue": "320.00", "linear_orders": "3.50",
         "linear_revenue": "295.00"}]

    published = [e for e in unique_by_id(read_topic(stack, stack.topics.credit_events))
                 if e["type"] == "campaign.order_credited"]
    final = {e["payload"]["order_id"]: e["payload"]["credit"] for e in published}
    assert {o: (c["kind"], c["campaign_id"]) for o, c in final.items() if c} == {
        o: c for o, c in EXPECTED.items() if c}


def _by_topic(events: list[dict[str, Any]], first: str) -> list[dict[str, Any]]:
    """Every event of one topic before any of the other (each member's order kept)."""
    head = [e for e in events if e["type"].startswith(first)]
    return head + [e for e in events if not e["type"].startswith(first)]


@pytest.mark.parametrize("variant", ["campaigns-first", "orders-first", "duplicated", "twice"])
def test_the_interleaving_of_topics_and_repeats_change_no_credit(
        stack: Stack, engine: Engine, variant: str) -> None:
    h = history()
    if variant == "campaigns-first":
        pipeline(stack, _by_topic(h, "campaign."), workers=WORKERS)
    elif variant == "orders-first":
        pipeline(stack, _by_topic(h, "order."), workers=WORKERS)
    elif variant == "duplicated":
        pipeline(stack, [e for e in h for _ in range(2)], workers=WORKERS)
    else:
        pipeline(stack, h, workers=WORKERS)
        pipeline(stack, h, workers=WORKERS)
    assert credits(engine) == EXPECTED
    with engine.connect() as conn:
        revenue = conn.exec_driver_sql(
            "SELECT COALESCE(completed_cents, paid_cents) - refunded_cents FROM campaign_orders "
            "WHERE order_id = 'o-refund'").scalar()
    assert revenue == 7000


def test_confirm_send_and_a_frozen_window(stack: Stack, engine: Engine,
                                          tmp_path: Path) -> None:
    # Twelve hours ago: what follows the send (a click, orders) must not lie in the future,
    # where the contract refuses event times.
    now = datetime.now(UTC).replace(microsecond=0) - 12 * H
    # Members and their levels come from trades (tiering); the campaign targets level 1.
    trades = [ev("order.completed", m, now - 48 * H, order_id=f"o-{m}", amount=amount)
              for m, amount in (("m-big", "150.00"), ("m-small", "20.00"))]
    config = {**CONFIG, "levels": {"basis": "amount", "ladder": [
        {"name": "regular", "threshold": "100.00", "discount": "0.98"}]},
        "campaigns": [*CONFIG["campaigns"], campaign(
            "c-live", 48, "sms", target={"levels": [1]},
            starts_at=(now - H).isoformat(), ends_at=(now + 240 * H).isoformat())]}
    topics = stack.topics
    with engine.begin() as conn:
        apply_shop_config(conn, topics, parse(config), "test", now)
    pipeline(stack, trades, workers=WORKERS)

    sender = FileSender(tmp_path / "outgoing")
    with engine.begin() as conn, pytest.raises(OperationRefused, match="not confirmed"):
        operations.send(conn, topics, SHOP, "c-live", sender, "ana", now)
    # Confirming after the window would freeze a campaign that can never be sent: refused,
    # and it stays a draft whose window can still move.
    with engine.begin() as conn, pytest.raises(OperationRefused, match="which has passed"):
        operations.confirm(conn, topics.credit_events, SHOP, "c-live", "ana", now + 241 * H)
    assert scalar(engine, "SELECT status FROM campaigns WHERE campaign_id = 'c-live'") == "draft"
    with engine.begin() as conn:
        done = operations.confirm(conn, topics.credit_events, SHOP, "c-live", "ana", now)
        n = operations.send(conn, topics, SHOP, "c-live", sender, "ana", now)
    assert done.audience == 1 and n == 1
    lines = sender.path(SHOP, "c-live").read_text().splitlines()
    assert len(lines) == 1 and '"member_id": "m-big"' in lines[0]

    # The window (and everything but the name) is frozen; deleting it is refused too.
    moved = {**config, "campaigns": [*CONFIG["campaigns"], campaign(
        "c-live", 48, "sms", target={"levels": [1]}, starts_at=(now - H).isoformat(),
        ends_at=(now + 480 * H).isoformat())]}
    with pytest.raises(OperationRefused, match="its time window cannot change"), \
            engine.begin() as conn:
        apply_shop_config(conn, topics, parse(moved), "test", now)
    with pytest.raises(OperationRefused, match="confirmed and cannot be deleted"), \
            engine.begin() as conn:
        apply_shop_config(conn, topics, parse(CONFIG | {"levels":
                                                                      config["levels"]}),
                          "test", now)
    with engine.begin() as conn, pytest.raises(OperationRefused, match="was sent at"):
        operations.send(conn, topics, SHOP, "c-live", sender, "ana", now)

    # The sent message reaches the worker through the outbox; a click and an order follow.
    follow = [clicked("m-big", "c-live", now + H, message="c-live:m-big:sms"),
              paid("m-big", "o-next", "200.00", now + 3 * H),
              paid("m-small", "o-small", "200.00", now + 3 * H)]
    pipeline(stack, follow, workers=WORKERS)
    got = credits(engine)
    assert got["o-next"] == ("click", "c-live") and got["o-small"] is None
    assert scalar(engine, "SELECT count(*) FROM campaign_sends WHERE campaign_id = 'c-live'") == 1
    archived = scalar(engine, "SELECT count(*) FROM events WHERE type = 'campaign.message_sent' "
                              "AND body::jsonb -> 'payload' ->> 'campaign_id' = 'c-live'")
    assert archived == 1


def test_revenue_is_exact_to_the_cent(stack: Stack, engine: Engine) -> None:
    h = [sent("m-cents", "c-48", T0), clicked("m-cents", "c-48", T0 + H)]
    h += [paid("m-cents", f"o-c{i}", "0.10", T0 + 2 * H) for i in range(3)]
    pipeline(stack, h, workers=WORKERS)
    with engine.connect() as conn:
        report = campaign_report(conn, SHOP, "c-48", timedelta(hours=24))
    [row] = [r.record() for r in report.rows]
    assert Decimal(row["revenue"]) == Decimal("0.30") and row["orders"] == 3
