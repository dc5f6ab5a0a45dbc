"""Tiering use cases: load the touched ledger entries, apply the domain, save."""

from __future__ import annotations

from sqlalchemy import Connection

from services.tiering import domain, store
from shared.consumer import Batch, Output
from shared.events import OrderCompleted, OrderRefunded
from shared.topics import Topics


class TieringHandler:
    """Keeps each member's completed-trade count, spend, first/last purchase and region."""

    name = "tiering"
    handles = frozenset({"order.placed", "order.completed", "order.refunded"})
    claims_ids = True
    parks_rejects = False  # the archiver parks bad inbound events, once for every worker

    def __init__(self, topics: Topics) -> None:
        self.topics = (topics.orders,)
        self.event_topics = frozenset(self.topics)

    def apply(self, conn: Connection, batch: Batch) -> list[Output]:
        keys = [
            (e.shop_id, e.payload.order_id)
            for e in batch.events
            if isinstance(e, OrderCompleted | OrderRefunded)
        ]
        stored = store.lock_orders(conn, keys)
        changed, deltas = domain.apply(stored, batch.events)
        store.save_orders(conn, changed.values())
        store.add_member_deltas(conn, deltas)
        return []
