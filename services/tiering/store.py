"""SQL for the tiering worker: the order ledger and members' figures (set-based, per batch)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection

from services.tiering.domain import MemberDelta, MemberKey, Order, OrderKey
from shared.events import OrderPlaced
from shared.member_events import Figures
from shared.money import to_cents


def lock_orders(conn: Connection, keys: Iterable[OrderKey]) -> dict[OrderKey, Order]:
    """Load and lock the ledger entries of the given orders."""
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
    rows = list(orders)
    if not rows:
        return
    conn.exec_driver_sql(
        "INSERT INTO member_orders (shop_id, order_id, member_id, amount_cents, completed_at, "
        "  completed_event_id, refund_requested_cents) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], "
        "  %b::timestamptz[], %b::text[], %b::bigint[]) "
        "ON CONFLICT (shop_id, order_id) DO UPDATE SET "
        "  amount_cents = excluded.amount_cents, completed_at = excluded.completed_at, "
        "  completed_event_id = excluded.completed_event_id, "
        "  refund_requested_cents = excluded.refund_requested_cents",
        ([o.shop_id for o in rows], [o.order_id for o in rows], [o.member_id for o in rows],
         [o.amount_cents for o in rows], [o.completed_at for o in rows],
         [o.completed_event_id for o in rows], [o.refund_requested_cents for o in rows]),
    )


def add_member_deltas(conn: Connection, deltas: dict[MemberKey, MemberDelta]
                      ) -> dict[MemberKey, Figures]:
    """Add each member's batch delta to their stored figures (creating the member if new).

    Returns every touched member's figures after the change.
    """
    if not deltas:
        return {}
    keys = sorted(deltas)  # a fixed order keeps concurrent batches from deadlocking
    d = [deltas[k] for k in keys]
    rows = conn.exec_driver_sql(
        "INSERT INTO members AS m (shop_id, member_id, completed_trades, gross_cents, "
        "  refunded_cents, spend_cents, first_purchase_at, last_purchase_at, region, region_at) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::bigint[], %b::bigint[], "
        "  %b::bigint[], %b::timestamptz[], %b::timestamptz[], %b::text[], %b::timestamptz[]) "
        "ON CONFLICT (shop_id, member_id) DO UPDATE SET "
        "  completed_trades = m.completed_trades + excluded.completed_trades, "
        "  gross_cents = m.gross_cents + excluded.gross_cents, "
        "  refunded_cents = m.refunded_cents + excluded.refunded_cents, "
        "  spend_cents = m.spend_cents + excluded.spend_cents, "
        "  first_purchase_at = LEAST(m.first_purchase_at, excluded.first_purchase_at), "
        "  last_purchase_at = GREATEST(m.last_purchase_at, excluded.last_purchase_at), "
        "  region = CASE WHEN excluded.region_at > m.region_at OR m.region_at IS NULL "
        "    THEN COALESCE(excluded.region, m.region) ELSE m.region END, "
        "  region_at = GREATEST(m.region_at, excluded.region_at), "
        "  updated_at = now() "
        "RETURNING m.shop_id, m.member_id, m.completed_trades, m.spend_cents, m.gross_cents, "
        "  m.refunded_cents, m.first_purchase_at, m.last_purchase_at, m.region",
        ([k[0] for k in keys], [k[1] for k in keys], [x.completed_trades for x in d],
         [x.gross_cents for x in d], [x.refunded_cents for x in d], [x.spend_cents for x in d],
         [x.first_purchase_at for x in d], [x.last_purchase_at for x in d],
         [x.region for x in d], [x.region_at for x in d]),
    ).all()
    return {(r[0], r[1]): Figures(*r[2:]) for r in rows}


def save_items(conn: Connection, events: Iterable[OrderPlaced]) -> set[OrderKey]:
    """Keep the lines of placed orders (once per order; a re-sent placement changes nothing).

    Returns the orders whose lines were new.
    """
    shops: list[str] = []
    orders: list[str] = []
    lines: list[int] = []
    skus: list[str] = []
    qtys: list[int] = []
    prices: list[int] = []
    for event in events:
        for line, item in enumerate(event.payload.items, start=1):
            shops.append(event.shop_id)
            orders.append(event.payload.order_id)
            lines.append(line)
            skus.append(item.sku)
            qtys.append(item.qty)
            prices.append(to_cents(item.unit_price))
    if not shops:
        return set()
    return {(r[0], r[1]) for r in conn.exec_driver_sql(
        "INSERT INTO order_items (shop_id, order_id, line, sku, qty, unit_price_cents) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::text[], %b::int[], "
        "  %b::bigint[]) ON CONFLICT DO NOTHING RETURNING shop_id, order_id",
        (shops, orders, lines, skus, qtys, prices),
    )}


def skus_bought(conn: Connection, orders: Iterable[OrderKey]) -> dict[MemberKey, set[str]]:
    """The items of those of the given orders that are completed, by the member who owns them."""
    keys = sorted(set(orders))
    if not keys:
        return {}
    out: dict[MemberKey, set[str]] = {}
    for shop_id, member_id, sku in conn.exec_driver_sql(
            "SELECT o.shop_id, o.member_id, i.sku FROM member_orders o "
            "JOIN order_items i ON i.shop_id = o.shop_id AND i.order_id = o.order_id "
            "WHERE (o.shop_id, o.order_id) IN (SELECT * FROM unnest(%b::text[], %b::text[])) "
            "AND o.completed_at IS NOT NULL",
            ([k[0] for k in keys], [k[1] for k in keys])):
        out.setdefault((shop_id, member_id), set()).add(sku)
    return out
