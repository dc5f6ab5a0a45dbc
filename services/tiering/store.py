"""SQL for the tiering worker: the order ledger and members' figures (set-based, per batch)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Connection

from services.tiering.domain import MemberFigures, MemberKey, Order, OrderKey
from shared.db import copy_in
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


def save_orders(conn: Connection, orders: Iterable[Order]) -> None:
    rows = [(o.shop_id, o.order_id, o.member_id, o.amount_cents, o.completed_at,
             o.completed_event_id, o.refund_requested_cents, o.refunded_cents) for o in orders]
    if not rows:
        return
    copy_in(conn, "member_orders_in", (
        ("shop_id", "text"), ("order_id", "text"), ("member_id", "text"),
        ("amount_cents", "int8"), ("completed_at", "timestamptz"),
        ("completed_event_id", "text"), ("refund_requested_cents", "int8"),
        ("refunded_cents", "int8")), rows)
    conn.exec_driver_sql(
        "INSERT INTO member_orders (shop_id, order_id, member_id, amount_cents, completed_at, "
        "  completed_event_id, refund_requested_cents, refunded_cents) "
        "SELECT * FROM member_orders_in "
        "ON CONFLICT (shop_id, order_id) DO UPDATE SET "
        "  amount_cents = excluded.amount_cents, completed_at = excluded.completed_at, "
        "  completed_event_id = excluded.completed_event_id, "
        "  refund_requested_cents = excluded.refund_requested_cents, "
        "  refunded_cents = excluded.refunded_cents")


_FIGURES = ("completed_trades, gross_cents, refunded_cents, first_purchase_at, "
            "last_purchase_at, region, region_at")


def lock_members(conn: Connection, keys: Iterable[MemberKey]) -> dict[MemberKey, MemberFigures]:
    """The stored figures of these members (those that exist), locked for the batch."""
    ordered = sorted(set(keys))  # a fixed order keeps concurrent batches from deadlocking
    if not ordered:
        return {}
    rows = conn.exec_driver_sql(
        f"SELECT shop_id, member_id, {_FIGURES} FROM members "
        "WHERE (shop_id, member_id) IN (SELECT * FROM unnest(%b::text[], %b::text[])) "
        "ORDER BY shop_id, member_id FOR UPDATE",
        ([k[0] for k in ordered], [k[1] for k in ordered])).all()
    return {(r[0], r[1]): MemberFigures(*r[2:]) for r in rows}


def save_members(conn: Connection, figures: Mapping[MemberKey, MemberFigures]) -> None:
    """Store members' figures as computed by the domain (creating members seen first)."""
    if not figures:
        return
    copy_in(conn, "members_in", (
        ("shop_id", "text"), ("member_id", "text"), ("completed_trades", "int4"),
        ("gross_cents", "int8"), ("refunded_cents", "int8"), ("first_purchase_at", "timestamptz"),
        ("last_purchase_at", "timestamptz"), ("region", "text"), ("region_at", "timestamptz"),
        ("spend_cents", "int8")),
        ((k[0], k[1], f.completed_trades, f.gross_cents, f.refunded_cents, f.first_purchase_at,
          f.last_purchase_at, f.region, f.region_at, f.spend_cents)
         for k, f in sorted(figures.items())))
    conn.exec_driver_sql(
        f"INSERT INTO members AS m (shop_id, member_id, {_FIGURES}, spend_cents) "
        "SELECT * FROM members_in "
        "ON CONFLICT (shop_id, member_id) DO UPDATE SET "
        "  completed_trades = excluded.completed_trades, gross_cents = excluded.gross_cents, "
        "  refunded_cents = excluded.refunded_cents, spend_cents = excluded.spend_cents, "
        "  first_purchase_at = excluded.first_purchase_at, "
        "  last_purchase_at = excluded.last_purchase_at, region = excluded.region, "
        "  region_at = excluded.region_at, updated_at = now()")


def save_items(conn: Connection, events: Iterable[OrderPlaced]) -> None:
    """Keep the lines of placed orders (once per order; a re-sent placement changes nothing)."""
    rows = [(e.shop_id, e.payload.order_id, line, item.sku, item.qty, to_cents(item.unit_price))
            for e in events for line, item in enumerate(e.payload.items, start=1)]
    if not rows:
        return
    copy_in(conn, "order_items_in", (
        ("shop_id", "text"), ("order_id", "text"), ("line", "int4"), ("sku", "text"),
        ("qty", "int4"), ("unit_price_cents", "int8")), rows)
    conn.exec_driver_sql(
        "INSERT INTO order_items (shop_id, order_id, line, sku, qty, unit_price_cents) "
        "SELECT * FROM order_items_in ON CONFLICT DO NOTHING")


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
