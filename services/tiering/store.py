"""SQL for the tiering worker: the order ledger and members' figures (set-based, per batch)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection

from services.tiering.domain import MemberFigures, MemberKey, Order, OrderKey
from shared.events import OrderPlaced
from shared.money import to_cents


def lock_orders(conn: Connection, keys: Iterable[OrderKey]) -> dict[OrderKey, Order]:
    """Load and lock the ledger entries of the given orders (those that have one)."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    rows = conn.exec_driver_sql(
        "SELECT shop_id, order_id, member_id, amount_cents, completed_at, completed_event_id, "
        "refund_requested_cents FROM member_orders "
        "WHERE (shop_id, order_id) IN (SELECT * FROM unnest(%b::text[], %b::text[])) "
        "ORDER BY shop_id, order_id FOR UPDATE",
        ([k[0] for k in keys], [k[1] for k in keys]),
    ).all()
    return {(r[0], r[1]): Order(*r) for r in rows}


_FIGURES = ("completed_trades, gross_cents, refunded_cents, first_purchase_at, "
            "last_purchase_at, region, region_at")


Standing = tuple[int, bool]
"""A member's level and whether they are blacklisted."""


def lock_members(conn: Connection, keys: Iterable[MemberKey]
                 ) -> tuple[dict[MemberKey, MemberFigures], dict[MemberKey, Standing]]:
    """The stored figures and standing of these members (those that exist), locked for the
    batch."""
    ordered = sorted(set(keys))  # a fixed order keeps concurrent batches from deadlocking
    if not ordered:
        return {}, {}
    rows = conn.exec_driver_sql(
        f"SELECT shop_id, member_id, level, blacklisted, {_FIGURES} FROM members "
        "WHERE (shop_id, member_id) IN (SELECT * FROM unnest(%b::text[], %b::text[])) "
        "ORDER BY shop_id, member_id FOR UPDATE",
        ([k[0] for k in ordered], [k[1] for k in ordered])).all()
    return ({(r[0], r[1]): MemberFigures(*r[4:]) for r in rows},
            {(r[0], r[1]): (int(r[2]), bool(r[3])) for r in rows})


def save(conn: Connection, orders: Iterable[Order], placed: Iterable[OrderPlaced],
         figures: Mapping[MemberKey, MemberFigures]) -> None:
    """Store a batch's ledger entries, the lines of its placed orders (once per order: a re-sent
    placement changes nothing) and members' figures as the domain computed them (creating
    members seen first), in one statement."""
    o = list(orders)
    lines = [(e.shop_id, e.payload.order_id, line, item.sku, item.qty, to_cents(item.unit_price))
             for e in placed for line, item in enumerate(e.payload.items, start=1)]
    keys = sorted(figures)  # a fixed order keeps concurrent batches from deadlocking
    f = [figures[k] for k in keys]
    if not (o or lines or keys):
        return
    li: list[tuple[Any, ...]] = list(zip(*lines, strict=True)) if lines else [()] * 6
    # Each part runs once, whatever the outer statement; an empty part changes nothing.
    conn.exec_driver_sql(
        "WITH ledger AS ("
        "  INSERT INTO member_orders (shop_id, order_id, member_id, amount_cents, completed_at, "
        "    completed_event_id, refund_requested_cents, refunded_cents) "
        "  SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], "
        "    %b::timestamptz[], %b::text[], %b::bigint[], %b::bigint[]) "
        "  ON CONFLICT (shop_id, order_id) DO UPDATE SET "
        "    amount_cents = excluded.amount_cents, completed_at = excluded.completed_at, "
        "    completed_event_id = excluded.completed_event_id, "
        "    refund_requested_cents = excluded.refund_requested_cents, "
        "    refunded_cents = excluded.refunded_cents), "
        "lines AS ("
        "  INSERT INTO order_items (shop_id, order_id, line, sku, qty, unit_price_cents) "
        "  SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::text[], %b::int[], "
        "    %b::bigint[]) ON CONFLICT DO NOTHING) "
        f"INSERT INTO members AS m (shop_id, member_id, {_FIGURES}, spend_cents) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::bigint[], %b::bigint[], "
        "  %b::timestamptz[], %b::timestamptz[], %b::text[], %b::timestamptz[], %b::bigint[]) "
        "ON CONFLICT (shop_id, member_id) DO UPDATE SET "
        "  completed_trades = excluded.completed_trades, gross_cents = excluded.gross_cents, "
        "  refunded_cents = excluded.refunded_cents, spend_cents = excluded.spend_cents, "
        "  first_purchase_at = excluded.first_purchase_at, "
        "  last_purchase_at = excluded.last_purchase_at, region = excluded.region, "
        "  region_at = excluded.region_at, updated_at = now()",
        ([x.shop_id for x in o], [x.order_id for x in o], [x.member_id for x in o],
         [x.amount_cents for x in o], [x.completed_at for x in o],
         [x.completed_event_id for x in o], [x.refund_requested_cents for x in o],
         [x.refunded_cents for x in o],
         *(list(col) for col in li),
         [k[0] for k in keys], [k[1] for k in keys], [x.completed_trades for x in f],
         [x.gross_cents for x in f], [x.refunded_cents for x in f],
         [x.first_purchase_at for x in f], [x.last_purchase_at for x in f],
         [x.region for x in f], [x.region_at for x in f], [x.spend_cents for x in f]))


def order_skus(conn: Connection, orders: Iterable[OrderKey]) -> dict[OrderKey, set[str]]:
    """The items of the given orders, as stored from their placements."""
    keys = sorted(set(orders))
    out: dict[OrderKey, set[str]] = {}
    if not keys:
        return out
    for shop_id, order_id, sku in conn.exec_driver_sql(
            "SELECT shop_id, order_id, sku FROM order_items "
            "WHERE (shop_id, order_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
            ([k[0] for k in keys], [k[1] for k in keys])):
        out.setdefault((shop_id, order_id), set()).add(sku)
    return out
