"""Re-deciding the credit of orders: the one place credits change, for the worker and for
operator actions (a campaign confirmed or re-defined) alike.

Credits are a function of what is stored (clicks, sends, audiences, windows) and never of the
order events arrived in, so a click that arrives after the order it precedes re-opens that order
and a replay in any interleaving of the topics ends with the same credits.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from sqlalchemy import Connection

from services.campaigns import store
from services.campaigns.domain import Credit, Order, credit
from services.campaigns.store import OrderKey, StoredOrder
from shared.consumer import Output
from shared.member_events import iso, member_event


def reattribute(conn: Connection, keys: Collection[OrderKey]
                ) -> list[tuple[OrderKey, StoredOrder, Credit | None]]:
    """Decide the orders' credits again; store and return those that changed."""
    orders = store.lock_orders(conn, keys)
    if not orders:
        return []
    members = {(shop, o.member_id) for (shop, _), o in orders.items()}
    reach = store.reach(conn, {shop for shop, _ in orders})
    since = min(o.converted_at - reach[shop] for (shop, _), o in orders.items())
    clicks, sends = store.touches(conn, members, since)
    campaigns = store.campaigns_for(conn, members, sends)
    changed: list[tuple[OrderKey, StoredOrder, Credit | None]] = []
    for key in sorted(orders):
        shop, order_id = key
        stored = orders[key]
        member = (shop, stored.member_id)
        new = credit(Order(order_id, stored.member_id, stored.converted_at),
                     clicks.get(member, ()), sends.get(member, ()), campaigns.get(shop, {}))
        # The channel is the message's, joined from its send where reports need it: a click
        # can arrive before its send, and a credit must not depend on which came first.
        new = replace(new, channel=None) if new else None
        if new != stored.credit:
            changed.append((key, stored, new))
    store.save_credits(conn, {key: new for key, _, new in changed})
    return changed


def credit_events(topic: str, changed: list[tuple[OrderKey, StoredOrder, Credit | None]]
                  ) -> list[Output]:
    """`campaign.order_credited`: an order's credit was given, moved or withdrawn."""
    def body(c: Credit | None) -> dict[str, object] | None:
        return None if c is None else {
            "kind": c.kind, "campaign_id": c.campaign_id, "message_id": c.message_id,
            "credited_at": iso(c.credited_at)}

    out = []
    for (shop, order_id), stored, new in changed:
        name = f"{new.kind}:{new.campaign_id}:{new.message_id}" if new else "none"
        out.append(member_event(
            topic, "campaign.order_credited", f"credit:{shop}:{order_id}:{name}", shop,
            stored.member_id, stored.converted_at,
            {"order_id": order_id, "credit": body(new), "previous": body(stored.credit)}))
    return out
