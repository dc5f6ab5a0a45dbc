"""Levels and customer ABC classes through the real broker and PostgreSQL, on a scripted shop
whose every expected level, level change and class was worked out by hand."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import Engine

from memberflow.configure import apply_shop_config
from memberflow.runtime import Services, Stack
from services.tiering import abc_store, operations
from services.tiering import handlers as tiering_handlers
from services.tiering.abc_store import stale_shops
from services.tiering.handlers import TieringHandler
from shared.audit import OperationRefused
from shared.db import make_engine
from shared.filters import MemberFilter
from shared.metrics import Metrics
from shared.shopconfig import parse
from tests.support import (
    key_header,
    pipeline,
    read_topic,
    shuffled_within_members,
    storefront_key,
    unique_by_id,
)

SHOP = "scripted"
END = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)  # the latest event: the ABC period ends here
CONFIG = {
    "shop_id": SHOP, "name": "Scripted shop",
    "levels": {"basis": "amount", "ladder": [
        {"name": "regular", "threshold": "100.00", "discount": "0.98"},
        {"name": "senior", "threshold": "500.00", "discount": "0.95"},
        {"name": "vip", "threshold": "2000.00", "discount": "0.90"},
        {"name": "supreme", "threshold": "5000.00", "discount": "0.85"},
    ]},
    "abc": {"customers": {"period_days": 365, "a_share": "0.05", "b_share": "0.20"}},
}

_ids = itertools.count(1)


def _event(type_: str, member: str, at: datetime, payload: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": f"e{next(_ids):04d}", "type": type_, "schema_version": 1,
            "shop_id": SHOP, "member_id": member,
            "occurred_at": at.isoformat().replace("+00:00", "Z"), "payload": payload}


def _trade(member: str, order: str, amount: str, at: datetime) -> list[dict[str, Any]]:
    """An order placed, paid and completed an hour apart (one item)."""
    items = [{"sku": f"sku-{order[-1]}", "qty": 1, "unit_price": amount}]
    return [
        _event("order.placed", member, at - timedelta(hours=2),
               {"order_id": order, "amount": amount, "items": items}),
        _event("order.paid", member, at - timedelta(hours=1),
               {"order_id": order, "amount": amount}),
        _event("order.completed", member, at, {"order_id": order, "amount": amount}),
    ]


def day(month: int, d: int, year: int = 2026) -> datetime:
    return datetime(year, month, d, 10, 0, tzinfo=UTC)


def scripted_history() -> list[dict[str, Any]]:
    h: list[dict[str, Any]] = []
    h += _trade("m-jump", "o-jump", "2500.00", day(3, 1))        # 0 -> 3 in one trade
    h += _trade("m-steps", "o-steps1", "60.00", day(2, 1))       # 60: still 0
    h += _trade("m-steps", "o-steps2", "60.00", day(3, 1))       # 120: -> 1
    h += _trade("m-steps", "o-steps3", "400.00", day(5, 1))      # 520: -> 2
    h += _trade("m-refund", "o-refund", "600.00", day(4, 1))     # 600: -> 2
    h.append(_event("order.refunded", "m-refund", day(4, 10),    # spend 0, level stays 2
                    {"order_id": "o-refund", "amount": "600.00"}))
    h += _trade("m-old", "o-old", "150.00", day(1, 1, 2025))     # level 1, outside the period
    h += _trade("f01", "o-f01", "300.00", day(6, 1))
    h += _trade("f02", "o-f02", "250.00", day(6, 1))             # tie on spend with f03:
    h += _trade("f03", "o-f03", "250.00", day(5, 1))             #   the older purchase ranks 5th
    h += _trade("f04a", "o-f04a", "200.00", day(4, 1))           # full tie: member id decides
    h += _trade("f04b", "o-f04b", "200.00", day(4, 1))
    for i, spend in enumerate(range(190, 60, -10), start=5):     # f05..f17: 190 .. 70
        h += _trade(f"f{i:02d}", f"o-f{i:02d}", f"{spend}.00", day(3, 15))
    h.append(_event("order.placed", "m-placed", END,             # never completed; ends the period
                    {"order_id": "o-placed", "amount": "80.00",
                     "items": [{"sku": "sku-x", "qty": 1, "unit_price": "80.00"}]}))
    return h


# Ranked (positive spend in the period): m-jump 2500, m-steps 520, f01 300, f02 250, f03 250,
# f04a 200, f04b 200, f05..f17: n = 20, so A = ceil(0.05*20) = 1 and A+B = ceil(0.2*20) = 4.
EXPECTED_CLASS = {"m-jump": "A", "m-steps": "B", "f01": "B", "f02": "B", "f03": "C",
                  "f04a": "C", "f04b": "C", **{f"f{i:02d}": "C" for i in range(5, 18)},
                  "m-refund": None, "m-old": None, "m-placed": None}
EXPECTED_LEVEL = {"m-jump": 3, "m-steps": 2, "m-refund": 2, "m-old": 1, "f01": 1, "f02": 1,
                  "f03": 1, "f04a": 1, "f04b": 1, "m-placed": 0,
                  **{f"f{i:02d}": 1 if 190 - (i - 5) * 10 >= 100 else 0 for i in range(5, 18)}}
DISCOUNT = {0: "1.00", 1: "0.98", 2: "0.95", 3: "0.90", 4: "0.85"}


@pytest.fixture
def engine(stack: Stack) -> Iterator[Engine]:
    eng = make_engine(stack.database_url)
    with eng.begin() as conn:
        apply_shop_config(conn, stack.topics, parse(CONFIG), "test",
                                     datetime.now(UTC))
    yield eng
    eng.dispose()


def final_state(engine: Engine) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT member_id, level, abc_class, completed_trades, gross_cents, spend_cents, "
            "last_purchase_at FROM members WHERE shop_id = %s", (SHOP,)).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_scripted_history_gives_the_expected_levels_events_and_classes(
        stack: Stack, engine: Engine) -> None:
    history = scripted_history()
    pipeline(stack, history)

    state = final_state(engine)
    assert {m: s[0] for m, s in state.items()} == EXPECTED_LEVEL
    assert {m: s[1] for m, s in state.items()} == EXPECTED_CLASS
    assert state["m-refund"][3:5] == (60000, 0)  # refunded in full: spend 0, level kept

    by_completion = {e["payload"]["order_id"]: e["event_id"] for e in history
                     if e["type"] == "order.completed"}
    events = unique_by_id(read_topic(stack, stack.topics.member_events))
    levels = sorted((e["member_id"], e["payload"]["old_level"], e["payload"]["new_level"],
                     e["payload"]["triggering_event_id"], e["payload"]["cause"],
                     e["payload"]["discount"])
                    for e in events if e["type"] == "member.level_changed")
    expected_changes = [("m-jump", 0, 3, by_completion["o-jump"], "auto", "0.90"),
                        ("m-steps", 0, 1, by_completion["o-steps2"], "auto", "0.98"),
                        ("m-steps", 1, 2, by_completion["o-steps3"], "auto", "0.95"),
                        ("m-refund", 0, 2, by_completion["o-refund"], "auto", "0.95"),
                        ("m-old", 0, 1, by_completion["o-old"], "auto", "0.98")]
    expected_changes += [(m, 0, 1, by_completion[f"o-{m}"], "auto", "0.98")
                         for m, lv in EXPECTED_LEVEL.items() if m.startswith("f") and lv == 1]
    assert levels == sorted(expected_changes)
    jump = next(e for e in events if e["type"] == "member.level_changed"
                and e["member_id"] == "m-jump")
    # The triggering trade is priced at the old level; the new discount applies after it.
    assert jump["payload"]["effective_from"] == "2026-03-01T10:00:00Z"
    assert jump["payload"]["new_level_name"] == "vip"

    classes = {e["member_id"]: e["payload"]["new_class"] for e in events
               if e["type"] == "member.abc_changed"}
    assert classes == {m: c for m, c in EXPECTED_CLASS.items() if c is not None}

    with engine.connect() as conn:
        abc = conn.exec_driver_sql(
            "SELECT watermark, ranked, zero_spenders, dirty FROM abc_shops WHERE shop_id = %s",
            (SHOP,)).one()
        history_rows = conn.exec_driver_sql(
            "SELECT count(*) FROM level_changes WHERE shop_id = %s", (SHOP,)).scalar()
    assert tuple(abc) == (END, 20, 1, False)
    assert history_rows == len(expected_changes)


@pytest.mark.parametrize("variant", ["twice", "duplicated", "shuffled"])
def test_replay_twice_duplicates_and_shuffles_end_in_the_same_state(
        stack: Stack, engine: Engine, variant: str) -> None:
    history = scripted_history()
    if variant == "twice":
        pipeline(stack, history)
        pipeline(stack, history)
    elif variant == "duplicated":
        pipeline(stack, [e for e in history for _ in range(2)])
    else:
        pipeline(stack, shuffled_within_members(history, seed=7))

    state = final_state(engine)
    assert {m: s[0] for m, s in state.items()} == EXPECTED_LEVEL
    assert {m: s[1] for m, s in state.items()} == EXPECTED_CLASS


def test_blacklist_policy_change_manual_levels_and_preview(stack: Stack, engine: Engine) -> None:
    history = scripted_history()
    pipeline(stack, history)
    topic = stack.topics.member_events
    now = datetime(2026, 7, 1, tzinfo=UTC)
    with engine.begin() as conn:
        assert operations.set_blacklist(conn, SHOP, ["f17"], True, "ops", "chargebacks") == 1

    # f17 (70.00) and f16 (80.00) buy 100.00 more: f16 moves up, blacklisted f17 does not.
    more = _trade("f16", "o-f16-2", "100.00", END + timedelta(hours=1))
    more += _trade("f17", "o-f17-2", "100.00", END + timedelta(hours=1))
    pipeline(stack, more)
    state = final_state(engine)
    assert state["f16"][0] == 1 and state["f17"][0] == 0

    # Preview a lower senior bar: changes nothing, says who would move.
    lower = parse({**CONFIG, "levels": {**CONFIG["levels"], "ladder": [
        {"name": "regular", "threshold": "100.00", "discount": "0.98"},
        {"name": "senior", "threshold": "250.00", "discount": "0.95"},
        {"name": "vip", "threshold": "2000.00", "discount": "0.90"},
        {"name": "supreme", "threshold": "5000.00", "discount": "0.85"}]}})
    assert lower.levels is not None
    with engine.begin() as conn:
        preview = operations.preview(conn, SHOP, lower.levels)
    # f01 (300.00), f02 and f03 (250.00) meet the new bar; m-steps and m-refund hold 2 already.
    assert preview.moved_up == 3
    assert preview.holding[2] == 5 and preview.holding[3] == 1
    assert final_state(engine) == state  # the preview changed nothing

    with engine.begin() as conn:
        result = apply_shop_config(conn, stack.topics, lower, "ops", now)
    assert result.changed and result.moved_up == preview.moved_up
    after = final_state(engine)
    assert {m for m in after if after[m][0] == 2} == {"m-steps", "m-refund", "f01", "f02", "f03"}

    # A manual downgrade sticks until a later qualifying trade; refused without a reason.
    with engine.begin() as conn:
        manual = operations.set_level(conn, topic, SHOP, MemberFilter(member_ids=("m-jump",)),
                                      1, "ops", "test account", now)
    assert manual.changed == 1 and final_state(engine)["m-jump"][0] == 1
    with pytest.raises(OperationRefused), engine.begin() as conn:
        operations.set_level(conn, topic, SHOP, MemberFilter(levels=(1,)), 4, "ops", " ", now)
    pipeline(stack, _trade("m-jump", "o-jump-2", "10.00", END + timedelta(days=1)))
    assert final_state(engine)["m-jump"][0] == 3

    with engine.connect() as conn:
        causes = [r[0] for r in conn.exec_driver_sql(
            "SELECT cause FROM level_changes WHERE shop_id = %s AND member_id = 'm-jump' "
            "ORDER BY id", (SHOP,))]
        pending = conn.exec_driver_sql(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL").scalar()
    assert causes == ["auto", "manual", "auto"]
    assert pending == 0  # the worker relayed the operator's changes
    relayed = {(e["payload"]["cause"], e["member_id"])
               for e in unique_by_id(read_topic(stack, topic))
               if e["type"] == "member.level_changed"}
    assert {("manual", "m-jump"), ("policy", "f02"), ("policy", "f03"),
            ("policy", "f01")} <= relayed


def test_storefront_reads_level_and_discount_over_http(stack: Stack, engine: Engine) -> None:
    pipeline(stack, scripted_history())

    async def fetch() -> list[tuple[int, dict[str, Any]]]:
        services = Services(stack, ["tiering"], Metrics(), http_port=0)
        await services.start()
        key = storefront_key(stack.database_url)
        try:
            out = []
            async with aiohttp.ClientSession() as http:
                for member in ("m-jump", "nobody"):
                    url = f"{services.http_url}/v1/shops/{SHOP}/members/{member}"
                    async with http.get(url, headers=key_header(key)) as resp:
                        out.append((resp.status, await resp.json()))
            return out
        finally:
            await services.close()

    (ok, record), (missing, error) = asyncio.run(fetch())
    assert ok == 200
    assert (record["level"], record["level_name"], record["discount"], record["abc_class"]) == (
        3, "vip", "0.90", "A")
    assert missing == 404 and "nobody" in error["error"]


CUSTOM = {
    "shop_id": "custom", "name": "Custom ladder",
    "levels": {"preset": "custom", "ladder": [
        {"name": "basic", "min_trades": 1, "discount": "1.00"},
        {"name": "loyal", "min_trades": 3, "within_days": 30, "discount": "0.95"},
        {"name": "important", "min_trades": 3, "min_amount": "1000.00", "within_days": 30,
         "discount": "0.90"},
    ]},
}


def _custom_trades(member: str, amounts_days: list[tuple[str, int]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, (amount, d) in enumerate(amounts_days):
        for e in _trade(member, f"o-{member}-{i}", amount, day(1, 1) + timedelta(days=d)):
            out.append({**e, "shop_id": "custom"})
    return out


def test_custom_ladder_with_recency_windows_in_event_time(stack: Stack, engine: Engine) -> None:
    with engine.begin() as conn:
        apply_shop_config(conn, stack.topics, parse(CUSTOM), "test",
                                     datetime.now(UTC))
    first = (_custom_trades("w-spread", [("100.00", 0), ("100.00", 40), ("100.00", 80)])
             + _custom_trades("w-burst", [("100.00", 0), ("100.00", 10), ("100.00", 20)])
             + _custom_trades("w-big", [("400.00", 0), ("400.00", 5), ("400.00", 10)])
             + _custom_trades("w-late", [("100.00", 0), ("100.00", 25)]))
    pipeline(stack, first)

    def levels() -> dict[str, int]:
        with engine.connect() as conn:
            return dict(conn.exec_driver_sql(
                "SELECT member_id, level FROM members WHERE shop_id = 'custom'").all())

    assert levels() == {"w-spread": 1, "w-burst": 2, "w-big": 3, "w-late": 1}
    # A trade that happened on day 10 arrives last: with it, three trades fall within 30 days.
    late = _custom_trades("w-late", [("100.00", 0), ("100.00", 25), ("100.00", 10)])[6:]
    pipeline(stack, late)
    assert levels() == {"w-spread": 1, "w-burst": 2, "w-big": 3, "w-late": 2}

    with engine.connect() as conn:
        preview = operations.preview(conn, "custom", parse(CUSTOM).levels)  # type: ignore[arg-type]
    assert preview.holding == {0: 0, 1: 1, 2: 2, 3: 1} and preview.moved_up == 0


def test_classes_applied_a_few_at_a_time_survive_a_worker_dying_midway(
        stack: Stack, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiering_handlers, "ABC_PART", 3)
    pipeline(stack, scripted_history())   # applied in parts of three by the worker
    assert {m: s[1] for m, s in final_state(engine).items()} == EXPECTED_CLASS

    # Every class forgotten, and with it what an incremental recompute starts from: the next
    # recompute ranks everyone again and has a change per ranked member to apply.
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE members SET abc_class = NULL WHERE shop_id = %s", (SHOP,))
        conn.exec_driver_sql("UPDATE abc_shops SET dirty = true, period_as_of = NULL "
                             "WHERE shop_id = %s", (SHOP,))

    def step(handler: TieringHandler) -> list[Any]:
        with engine.begin() as conn:
            return handler.tick(conn, datetime.now(UTC))

    dying = TieringHandler(stack.topics, abc_debounce=timedelta(0))
    step(dying)                     # claims the shop
    step(dying)                     # ranks its members
    assert len(step(dying)) == 3    # applies (and publishes) the first three changes, then dies
    dying.tick_reset()
    with engine.connect() as conn:
        assert stale_shops(conn) == 1   # still due: its recompute did not finish
    assert sum(1 for s in final_state(engine).values() if s[1] is not None) == 3

    fresh = TieringHandler(stack.topics, abc_debounce=timedelta(0))
    step(fresh)
    while fresh.tick_again():
        step(fresh)
    assert {m: s[1] for m, s in final_state(engine).items()} == EXPECTED_CLASS
    with engine.connect() as conn:
        assert stale_shops(conn) == 0


def test_a_recompute_under_way_holds_up_no_batch(stack: Stack, engine: Engine) -> None:
    """Batches note the members whose trades changed and touch their shop's row; a recompute
    planning or applying its changes must not make them wait (only the members a part is
    changing, for that part's transaction)."""
    pipeline(stack, scripted_history())
    member = next(iter(EXPECTED_CLASS))
    with engine.begin() as conn:
        abc_store.note_changed(conn, [(SHOP, member)])
        abc_store.touch(conn, {SHOP: END})

    def batch_writes(touch_shop: bool = True) -> None:
        """What a batch writes for the shop, refused if it would wait for a lock."""
        with engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            abc_store.note_changed(conn, [(SHOP, member)])
            if touch_shop:
                abc_store.touch(conn, {SHOP: END})

    handler = TieringHandler(stack.topics, abc_debounce=timedelta(0))
    with engine.begin() as conn:
        handler.tick(conn, datetime.now(UTC))            # claims the shop, takes the noted
    with engine.connect() as conn, conn.begin():
        assert handler.tick(conn, datetime.now(UTC)) == []   # plans, and is not committed yet
        # Only the shop's own row, at the very end of the plan, is shared: a plan's remembered
        # cuts are written there. Everything a batch writes besides it must not wait.
        batch_writes(touch_shop=False)
    while handler._applying and handler._applying[0].after is not None:
        with engine.connect() as conn, conn.begin():
            handler.tick(conn, datetime.now(UTC))        # a part, its outputs not yet sent
            batch_writes()
    with engine.begin() as conn:
        assert handler.tick(conn, datetime.now(UTC)) == []   # finishes: a step of its own
    # The shop's RFM scores, claimed with its classes: planning and applying them hold up no
    # batch either (their rows are tiering's alone; the plan writes the shop's row last).
    assert handler._rfm_claimed
    with engine.connect() as conn, conn.begin():
        assert handler.tick(conn, datetime.now(UTC)) == []
        batch_writes(touch_shop=False)
    while handler._rfm_applying and handler._rfm_applying[0].after is not None:
        with engine.connect() as conn, conn.begin():
            handler.tick(conn, datetime.now(UTC))
            batch_writes()
    with engine.begin() as conn:
        assert handler.tick(conn, datetime.now(UTC)) == []
    assert not handler.tick_again()
    assert {m: s[1] for m, s in final_state(engine).items()} == EXPECTED_CLASS
