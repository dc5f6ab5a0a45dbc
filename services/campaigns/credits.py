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
from shared.outbound import CreditBody, CreditPayload, OrderCredited, output


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
    """`campaign.order_credited`: an order's credit was given, moved or withdrawn.

    The id names the order, the credit before and the credit after, so it determines the
    content: a batch retried with other boundaries publishes the same messages."""
    def body(c: Credit | None) -> CreditBody | None:
        return None if c is None else CreditBody(kind=c.kind,
                                                 campaign_id=c.campaign_id,
                                                 message_id=c.message_id,
                                                 credited_at=c.credited_at)

    def name(c: Credit | None) -> str:
        return f"{c.kind}:{c.campaign_id}:{c.message_id}" if c else "none"

    return [output(topic, OrderCredited(
        event_id=f"credit:{shop}:{order_id}:{name(stored.credit)}->{name(new)}", shop_id=shop,
        member_id=stored.member_id, occurred_at=stored.converted_at,
        payload=CreditPayload(order_id=order_id, credit=body(new), previous=body(stored.credit))))
        for (shop, order_id), stored, new in changed]
