"""SQL for the tiering worker: the order ledger and members' figures (set-based, per batch)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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


def add_member_deltas(conn: Connection, deltas: dict[MemberKey, MemberDelta],
                      report: Mapping[MemberKey, bool] | None = None
                      ) -> dict[MemberKey, Figures]:
    """Add each member's batch delta to their stored figures (creating the member if new).

    Returns the figures after the change of the members in `report`: always for those mapped
    to True, and for those mapped to False only if their region changed.
    """
    if not deltas:
        return {}
    report = report or {}
    wanted = sorted(report)
    keys = sorted(deltas)  # a fixed order keeps concurrent batches from deadlocking
    d = [deltas[k] for k in keys]
    rows = conn.exec_driver_sql(
        # `before` reads the rows as they were: every part of one statement sees one snapshot.
        "WITH w AS (SELECT * FROM unnest(%b::text[], %b::text[], %b::bool[]) AS w(s, m, always)), "
        "before AS (SELECT shop_id, member_id, region FROM members "
        "  WHERE (shop_id, member_id) IN (SELECT s, m FROM w WHERE NOT always)), "
        "up AS (INSERT INTO members AS m (shop_id, member_id, completed_trades, gross_cents, "
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
        "  m.refunded_cents, m.first_purchase_at, m.last_purchase_at, m.region) "
        # Only the rows asked for come back: most members of a batch only placed an order.
        "SELECT up.* FROM up JOIN w ON up.shop_id = w.s AND up.member_id = w.m "
        "LEFT JOIN before b ON b.shop_id = up.shop_id AND b.member_id = up.member_id "
        "WHERE w.always OR up.region IS DISTINCT FROM b.region",
        ([k[0] for k in wanted], [k[1] for k in wanted], [report[k] for k in wanted],
         [k[0] for k in keys], [k[1] for k in keys], [x.completed_trades for x in d],
         [x.gross_cents for x in d], [x.refunded_cents for x in d], [x.spend_cents for x in d],
         [x.first_purchase_at for x in d], [x.last_purchase_at for x in d],
         [x.region for x in d], [x.region_at for x in d]),
    ).all()
    return {(r[0], r[1]): Figures(*r[2:]) for r in rows}


def save_items(conn: Connection, events: Iterable[OrderPlaced]) -> None:
    """Keep the lines of placed orders (once per order; a re-sent placement changes nothing)."""
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
        return
    conn.exec_driver_sql(
        "INSERT INTO order_items (shop_id, order_id, line, sku, qty, unit_price_cents) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::text[], %b::int[], "
        "  %b::bigint[]) ON CONFLICT DO NOTHING",
        (shops, orders, lines, skus, qtys, prices),
    )


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


def completed_owners(conn: Connection, orders: Iterable[OrderKey]) -> dict[OrderKey, str]:
    """Of the given orders, those already completed, with the member who owns each."""
    keys = sorted(set(orders))
    if not keys:
        return {}
    return {(r[0], r[1]): r[2] for r in conn.exec_driver_sql(
        "SELECT shop_id, order_id, member_id FROM member_orders "
        "WHERE (shop_id, order_id) IN (SELECT * FROM unnest(%b::text[], %b::text[])) "
        "AND completed_at IS NOT NULL",
        ([k[0] for k in keys], [k[1] for k in keys]))}
