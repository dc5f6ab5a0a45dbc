"""Tags through the real broker and PostgreSQL: tiering publishes figures, levels, classes and
shop clocks; the tagging worker applies rule, goods and time-based tags. Every expected tag and
tag change below was worked out by hand from the scripted history."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from memberflow.configure import apply_shop_config
from memberflow.readmodel import member_records, tag_history
from memberflow.runtime import Stack
from services.tagging import operations
from shared.audit import OperationRefused
from shared.db import make_engine
from shared.filters import MemberFilter
from shared.shopconfig import parse
from tests.support import pipeline, read_topic, shuffled_within_members, unique_by_id

SHOP = "tagged"
WORKERS = ("archiver", "tiering", "tagging")
CONFIG: dict[str, Any] = {
    "shop_id": SHOP, "name": "Tagged shop", "timezone": "UTC",
    "levels": {"basis": "amount", "ladder": [
        {"name": "regular", "threshold": "100.00", "discount": "0.98"},
        {"name": "senior", "threshold": "500.00", "discount": "0.95"}]},
    "tagging": {
        "groups": [{"id": "value", "name": "Value", "groups": [{"id": "top", "name": "Top"}]},
                   {"id": "life", "name": "Lifecycle"}],
        "tags": [
            {"id": "big", "name": "Big spender", "group": "top"},
            {"id": "senior", "name": "Senior or above", "group": "value"},
            {"id": "dormant", "name": "No purchase for 180 days", "group": "life"},
            {"id": "east", "name": "East coast"},
            {"id": "tea", "name": "Tea buyer"},
            {"id": "care", "name": "Personal care"},
            {"id": "care-done", "name": "Cared for"},
        ],
        "rules": [
            {"id": "r-big", "tag": "big", "when": "spend >= 500 and trades >= 2"},
            {"id": "r-senior", "tag": "senior", "when": "level >= 2"},
            {"id": "r-dormant", "tag": "dormant", "when": "days_since_last_purchase >= 180"},
            {"id": "r-east", "tag": "east", "when": 'region in ["Zhejiang", "Shanghai"]'},
            {"id": "g-tea", "tag": "tea", "goods": ["SKU-TEA-1", "SKU-TEA-2"]},
        ],
    },
}

_ids = itertools.count(1)


def at(month: int, day: int) -> datetime:
    return datetime(2026, month, day, 10, 0, tzinfo=UTC)


def _event(type_: str, member: str, when: datetime, payload: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": f"t{next(_ids):04d}", "type": type_, "schema_version": 1,
            "shop_id": SHOP, "member_id": member,
            "occurred_at": when.isoformat().replace("+00:00", "Z"), "payload": payload}


def placed(member: str, order: str, amount: str, when: datetime, sku: str = "SKU-1",
           region: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"order_id": order, "amount": amount,
                               "items": [{"sku": sku, "qty": 1, "unit_price": amount}]}
    if region:
        payload["region"] = region
    return _event("order.placed", member, when - timedelta(hours=1), payload)


def completed(member: str, order: str, amount: str, when: datetime) -> dict[str, Any]:
    return _event("order.completed", member, when, {"order_id": order, "amount": amount})


def trade(member: str, order: str, amount: str, when: datetime, **kw: Any) -> list[dict[str, Any]]:
    return [placed(member, order, amount, when, **kw), completed(member, order, amount, when)]


def first_part() -> list[dict[str, Any]]:
    """Up to July 5th."""
    h: list[dict[str, Any]] = []
    h += trade("m-big", "o-big1", "300.00", at(3, 1))
    h += trade("m-big", "o-big2", "300.00", at(3, 2))           # 600 in 2 trades: big, senior
    h += trade("m-fell", "o-fell1", "300.00", at(3, 1))
    h += trade("m-fell", "o-fell2", "300.00", at(3, 2))         # big, senior
    h += trade("m-sleep", "o-sleep", "50.00", at(1, 1))         # dormant from 6-30 10:00
    h += trade("m-back", "o-back1", "50.00", at(1, 2))          # dormant from 7-1 10:00
    h += trade("m-east", "o-east", "80.00", at(5, 1), region="Zhejiang")
    h += trade("m-tea", "o-tea", "20.00", at(4, 1), sku="SKU-TEA-1")
    h.append(completed("m-tea-late", "o-tea-late", "25.00", at(4, 2)))  # completion first,
    h.append(placed("m-tea-late", "o-tea-late", "25.00", at(4, 2), sku="SKU-TEA-2"))  # items late
    h.append(placed("m-tea-open", "o-tea-open", "30.00", at(4, 3), sku="SKU-TEA-1"))  # never done
    h += trade("m-clock", "o-clock1", "10.00", at(7, 5))        # moves the shop's clock
    return h


def second_part() -> list[dict[str, Any]]:
    """July 6th to 15th."""
    h: list[dict[str, Any]] = []
    h.append(_event("order.refunded", "m-fell", at(7, 6),       # 400 left: big goes, the
                    {"order_id": "o-fell2", "amount": "200.00"}))  # level (senior) stays
    h += trade("m-back", "o-back2", "50.00", at(7, 10))         # no longer dormant
    h += trade("m-clock", "o-clock2", "10.00", at(7, 15))
    return h


def history() -> list[dict[str, Any]]:
    return first_part() + second_part()


EXPECTED = {
    "m-big": ["big", "senior"],
    "m-fell": ["senior"],
    "m-sleep": ["dormant"],
    "m-back": [],
    "m-east": ["east"],
    "m-tea": ["tea"],
    "m-tea-late": ["tea"],
    "m-tea-open": [],
    "m-clock": [],
}


@pytest.fixture
def engine(stack: Stack) -> Iterator[Engine]:
    eng = make_engine(stack.database_url)
    with eng.begin() as conn:
        apply_shop_config(conn, stack.topics, parse(CONFIG), "test",
                          datetime.now(UTC))
    yield eng
    eng.dispose()


def tags_of(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return {r["member_id"]: r["tags"] for r in member_records(conn, SHOP)}


def changes_of(engine: Engine, member: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [(h["tag_id"], h["action"], h["cause"], h["rule_id"], h["effective_at"])
                for h in tag_history(conn, SHOP, member)]


def test_rule_goods_and_time_tags_follow_the_history(stack: Stack, engine: Engine) -> None:
    pipeline(stack, first_part(), workers=WORKERS)
    pipeline(stack, second_part(), workers=WORKERS)

    assert tags_of(engine) == EXPECTED
    # Time-based: the tag takes effect when day 180 passed in event time, not when it was seen,
    # and goes when the member buys again.
    assert changes_of(engine, "m-sleep") == [
        ("dormant", "added", "rule", "r-dormant", "2026-06-30T10:00:00Z")]
    assert changes_of(engine, "m-back") == [
        ("dormant", "added", "rule", "r-dormant", "2026-07-01T10:00:00Z"),
        ("dormant", "removed", "rule", "r-dormant", "2026-07-10T10:00:00Z")]
    assert changes_of(engine, "m-fell") == [
        ("big", "added", "rule", "r-big", "2026-03-02T10:00:00Z"),
        ("senior", "added", "rule", "r-senior", "2026-03-02T10:00:00Z"),
        ("big", "removed", "rule", "r-big", "2026-07-06T10:00:00Z")]
    assert [c[:4] for c in changes_of(engine, "m-tea-late")] == [
        ("tea", "added", "goods", "g-tea")]

    # Every change was published; the last event of each member carries their tags now.
    events = [e for e in unique_by_id(read_topic(stack, stack.topics.tag_events))
              if e["type"] == "member.tags_changed"]
    last: dict[str, list[str]] = {}
    for e in events:
        last[e["member_id"]] = e["payload"]["tags"]
    assert last == {m: t for m, t in EXPECTED.items() if t or m == "m-back"}
    big = next(e for e in events if e["member_id"] == "m-big")
    assert big["payload"]["added"][0] == {"tag_id": "big", "cause": "rule", "rule_id": "r-big",
                                          "operator": None, "reason": None,
                                          "effective_at": big["occurred_at"]}
    # The worker's facts are tiering's figures, as far as it has read.
    with engine.connect() as conn:
        differ = conn.exec_driver_sql(
            "SELECT count(*) FROM tag_members t JOIN members m USING (shop_id, member_id) "
            "WHERE (t.spend_cents, t.completed_trades, t.level, t.last_purchase_at) IS DISTINCT "
            "FROM (m.spend_cents, m.completed_trades, m.level, m.last_purchase_at)").scalar()
    assert differ == 0


@pytest.mark.parametrize("variant", ["twice", "duplicated", "shuffled"])
def test_replays_duplicates_and_reordering_end_with_the_same_tags(
        stack: Stack, engine: Engine, variant: str) -> None:
    h = history()
    if variant == "twice":
        pipeline(stack, h, workers=WORKERS)
        pipeline(stack, h, workers=WORKERS)
    elif variant == "duplicated":
        pipeline(stack, [e for e in h for _ in range(2)], workers=WORKERS)
    else:
        pipeline(stack, shuffled_within_members(h, seed=11), workers=WORKERS)
    assert tags_of(engine) == EXPECTED
    with engine.connect() as conn:
        doubled = conn.exec_driver_sql(
            "SELECT count(*) FROM (SELECT member_id, tag_id FROM tag_changes "
            "WHERE action = 'added' AND cause = 'goods' GROUP BY 1, 2 HAVING count(*) > 1) x"
        ).scalar()
    assert doubled == 0  # a goods tag is earned once, however often the trade is delivered


def test_rule_change_preview_and_reevaluation(stack: Stack, engine: Engine) -> None:
    pipeline(stack, history(), workers=WORKERS)
    topic = stack.topics.tag_events
    now = datetime(2026, 8, 1, tzinfo=UTC)
    changed = {**CONFIG, "tagging": {**CONFIG["tagging"], "rules": [
        {"id": "r-big", "tag": "big", "when": "spend >= 300"},                # wider
        {"id": "r-senior", "tag": "senior", "when": "level >= 2"},
        {"id": "r-dormant", "tag": "dormant", "when": "days_since_last_purchase >= 200"},
        {"id": "r-east", "tag": "east", "when": 'region in ["Zhejiang", "Shanghai"]'},
        {"id": "g-tea", "tag": "tea", "goods": ["SKU-TEA-2"]},               # narrower
    ]}}
    new = parse(changed)
    with engine.connect() as conn:
        assert operations.preview_rule(conn, SHOP, "spend >= 300") == 2      # m-big, m-fell
        with pytest.raises(OperationRefused, match="unknown field 'spnd'"):
            operations.preview_rule(conn, SHOP, "spnd >= 300")
        preview = {o.tag_id: (o.before, o.after, o.gained, o.lost)
                   for o in operations.preview(conn, new)}
    assert tags_of(engine) == EXPECTED  # a preview changes nothing
    # big: m-fell (400) gains; dormant: m-sleep (197 days at 7-15) loses; tea: m-tea loses.
    assert preview == {"big": (1, 2, 1, 0), "dormant": (1, 0, 0, 1), "tea": (2, 1, 0, 1)}

    with engine.begin() as conn:
        result = apply_shop_config(conn, stack.topics, new, "ops", now)
    assert {o.tag_id: (o.before, o.after, o.gained, o.lost) for o in result.tags} == preview
    after = tags_of(engine)
    assert after["m-fell"] == ["big", "senior"]
    assert after["m-sleep"] == [] and after["m-tea"] == [] and after["m-tea-late"] == ["tea"]
    assert changes_of(engine, "m-tea")[-1][:4] == ("tea", "removed", "goods", "g-tea")
    pipeline(stack, [], workers=WORKERS)  # the tiering worker relays the outbox
    relayed = {(e["member_id"], tuple(e["payload"]["tags"]))
               for e in unique_by_id(read_topic(stack, topic))
               if e["type"] == "member.tags_changed" and e["payload"]["added"]
               and e["payload"]["added"][0]["operator"] == "ops"}
    assert relayed == {("m-fell", ("big", "senior"))}


def test_manual_tagging_add_move_remove_and_refusals(stack: Stack, engine: Engine) -> None:
    pipeline(stack, history(), workers=WORKERS)
    topic = stack.topics.tag_events
    now = datetime(2026, 8, 1, tzinfo=UTC)
    everyone_senior = MemberFilter(tags=("senior",))
    with engine.begin() as conn:
        added = operations.add_to(conn, topic, SHOP, everyone_senior, "care", "ana", "call them",
                                  now)
        again = operations.add_to(conn, topic, SHOP, everyone_senior, "care", "ana", "again", now)
        moved = operations.move_to(conn, topic, SHOP, MemberFilter(member_ids=("m-big",)),
                                   "care", "care-done", "ana", "called", now)
        tea = operations.add_to(conn, topic, SHOP, MemberFilter(member_ids=("m-east", "m-x")),
                                "tea", "ana", "sample sent", now)
    assert (added.selected, added.changed) == (2, 2)
    assert again.changed == 0                      # add to: members already holding keep it
    assert (moved.selected, moved.changed) == (1, 1)
    assert tea.missing == ["m-x"]
    t = tags_of(engine)
    assert t["m-big"] == ["big", "care-done", "senior"]   # move to: care left, care-done gained
    assert t["m-fell"] == ["care", "senior"] and t["m-east"] == ["east", "tea"]
    assert changes_of(engine, "m-big")[-2:] == [
        ("care", "removed", "manual", None, "2026-08-01T00:00:00Z"),
        ("care-done", "added", "manual", None, "2026-08-01T00:00:00Z")]

    with engine.connect() as conn:
        listed = [r["member_id"] for r in member_records(conn, SHOP,
                                                         MemberFilter(tags=("care", "senior")))]
    assert listed == ["m-fell"]

    for bad, match in [(lambda c: operations.add_to(c, topic, SHOP, everyone_senior, "big",
                                                    "ana", "x", now), "follows rule 'r-big'"),
                       (lambda c: operations.remove(c, topic, SHOP, everyone_senior, "nope",
                                                    "ana", "x", now), "no tag 'nope'"),
                       (lambda c: operations.move_to(c, topic, SHOP, everyone_senior, "care",
                                                     "care", "ana", "x", now), "two different")]:
        with pytest.raises(OperationRefused, match=match), engine.begin() as conn:
            bad(conn)

    with engine.begin() as conn:
        removed = operations.remove(conn, topic, SHOP, MemberFilter(tags=("care",)), "care",
                                    "ana", "campaign over", now)
        marked = operations.set_important(conn, SHOP, ["m-big", "m-x"], True, "ana", "VIP")
    assert removed.changed == 1 and marked == 1
    with engine.connect() as conn:
        important = [r["member_id"] for r in member_records(conn, SHOP,
                                                            MemberFilter(important=True))]
        audit = conn.exec_driver_sql(
            "SELECT action FROM audit_log WHERE shop_id = %s ORDER BY id", (SHOP,)).all()
    assert important == ["m-big"]
    assert [a[0] for a in audit] == ["tags.add", "tags.add", "tags.move", "tags.add",
                                     "tags.remove", "important.add"]

    # A later trade re-evaluates the rules but leaves what operators did alone.
    pipeline(stack, trade("m-big", "o-big3", "10.00", at(8, 2)), workers=WORKERS)
    assert tags_of(engine)["m-big"] == ["big", "care-done", "senior"]


def test_deleting_groups_and_tags(stack: Stack, engine: Engine) -> None:
    pipeline(stack, history(), workers=WORKERS)
    now = datetime(2026, 8, 1, tzinfo=UTC)
    tagging = CONFIG["tagging"]
    without_life = {**CONFIG, "tagging": {**tagging, "groups": tagging["groups"][:1]}}
    # The group still holds the dormant tag in the applied configuration: refused, nothing kept.
    with pytest.raises(OperationRefused, match="group 'life' cannot be deleted while it holds "
                                               "tag 'dormant'"), engine.begin() as conn:
        apply_shop_config(conn, stack.topics, parse({**without_life, "tagging": {
            **without_life["tagging"],
            "tags": [t for t in tagging["tags"] if t["id"] != "dormant"],
            "rules": [r for r in tagging["rules"] if r["tag"] != "dormant"]}}), "ops", now)
    assert tags_of(engine) == EXPECTED

    # Move the tag out first; then the empty group can go. Deleting a tag takes it from members.
    moved = [dict(t, group=None) if t["id"] == "dormant" else t for t in tagging["tags"]]
    with engine.begin() as conn:
        apply_shop_config(conn, stack.topics,
                          parse({**CONFIG, "tagging": {**tagging, "tags": moved}}), "ops", now)
        result = apply_shop_config(conn, stack.topics, parse({**without_life, "tagging": {
            **without_life["tagging"], "tags": [t for t in moved if t["id"] != "east"],
            "rules": [r for r in tagging["rules"] if r["tag"] != "east"]}}), "ops", now)
    assert [(o.tag_id, o.lost, o.after) for o in result.tags] == [("east", 1, 0)]
    assert tags_of(engine)["m-east"] == []
    assert changes_of(engine, "m-east")[-1][:3] == ("east", "removed", "config")
