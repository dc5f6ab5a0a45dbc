"""Campaigns use case: messages sent and clicked, orders, and their credits, one transaction
per batch, from the orders and campaigns topics.

Per batch (records decoded and their ids claimed by the worker loop):

1. lateness: an event more than the lateness bound behind the newest event of its shop on its
   stream (orders, or campaign messages) is not attributed; it is parked on the dead-letter
   topic with that reason (it still counts for levels, tags and figures). Ingest judges this
   in archive order, per shop and stream, and says so to the sender; its verdict travels
   with the event (the `memberflow-late` header), so a replay of the archive refuses exactly
   what live processing refused. Records produced straight to Kafka
   carry no verdict: they are judged here against the newest event of their shop read on their
   partition, which depends only on that partition's order;
2. store sends, clicks and orders (earliest payment or completion, amounts, refunds), and move
   the clock of each partition read (ticks included: reports settle as time passes);
3. re-decide the credit of every order the batch touched, and of every stored order a newly
   arrived click or send could credit (converted within the longest window after it);
4. publish `campaign.order_credited` for each credit given, moved or withdrawn.

No windowed state lives in memory: windows are decided in PostgreSQL and `domain.credit` on
event time, so a worker restarted or killed at any point resumes where the state says.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection

from services.campaigns import store
from services.campaigns.credits import credit_events, reattribute
from services.campaigns.domain import Click, Send
from services.campaigns.store import OrderChange, OrderKey
from shared import clocks
from shared.archive import BEHIND_HEADER, LATE_HEADER, read_inbound
from shared.consumer import Batch, Contract, Output, TimedWork
from shared.events import (
    EventModel,
    MemberEventModel,
    MessageClicked,
    MessageSent,
    OrderCompleted,
    OrderPaid,
    OrderRefunded,
    Problem,
)
from shared.money import to_cents
from shared.outbox import take_pending
from shared.topics import Topics

NAME = "campaigns"
APPLIED = frozenset({"campaign.message_sent", "campaign.message_clicked", "order.paid",
                     "order.completed", "order.refunded"})
HANDLES = APPLIED | {"clock.ticked"}   # ticks move the clock reports settle by


class CampaignHandler:
    """Credits orders to the campaign messages that brought them (last click, else last send)."""

    name = NAME

    def __init__(self, topics: Topics, *, lateness: timedelta = timedelta(hours=24)) -> None:
        self.topics: tuple[str, ...] = (topics.orders, topics.campaigns)
        self.credit_events = topics.credit_events
        self.lateness = lateness
        self.contract = Contract(
            read=read_inbound, handles=HANDLES, claims=APPLIED, route=topics.home,
            timed=TimedWork(1.0, lambda conn, now: take_pending(conn, NAME)))

    def apply(self, conn: Connection, batch: Batch) -> list[Output]:
        if not batch.records:
            return []
        parts = {(r.delivery.topic, r.delivery.partition) for r in batch.records}
        stream = clocks.lock_stream_clocks(conn, NAME, parts)
        moved: dict[tuple[str, int], datetime] = {}
        keys = {(r.event.shop_id, r.delivery.topic, r.delivery.partition)
                for r in batch.records if r.event.type in APPLIED}
        marks = store.lock_watermarks(conn, keys)
        accepted: list[EventModel] = []
        for r in batch.records:
            event = r.event
            where = (r.delivery.topic, r.delivery.partition)
            if where not in stream or event.occurred_at > stream[where]:
                stream[where] = moved[where] = event.occurred_at
            if event.type not in APPLIED:
                continue  # a tick: time passes
            key = (event.shop_id, *where)
            mark = marks.get(key)
            verdict = r.delivery.header(LATE_HEADER)
            if verdict is None:  # not judged by ingest: judge it here, per shop and partition
                late = mark is not None and event.occurred_at < mark - self.lateness
                behind = (mark - event.occurred_at) if late and mark is not None else None
            else:
                late = verdict == b"1"
                seconds = r.delivery.header(BEHIND_HEADER)
                behind = timedelta(seconds=int(seconds)) if late and seconds and \
                    seconds.isdigit() else None
            if mark is None or event.occurred_at > mark:
                marks[key] = event.occurred_at
            if late:
                batch.park(r, [self._late(event, behind)])
                continue
            accepted.append(event)
        store.save_watermarks(conn, marks)
        clocks.save_stream_clocks(conn, NAME, moved)

        sends = [(e.shop_id, Send(e.payload.campaign_id, e.payload.message_id, e.member_id,
                                  e.payload.channel, e.occurred_at))
                 for e in accepted if isinstance(e, MessageSent)]
        clicks = [(e.shop_id, Click(e.payload.campaign_id, e.payload.message_id, e.member_id,
                                    e.occurred_at, e.event_id))
                  for e in accepted if isinstance(e, MessageClicked)]
        orders = _fold_orders(accepted)
        store.save_sends(conn, sends)
        store.save_clicks(conn, clicks)
        store.save_orders(conn, orders)

        affected: set[OrderKey] = set(orders)
        if sends or clicks:
            reach = store.reach(conn, {shop for shop, _ in sends + clicks})
            spans = [(shop, s.member_id, s.sent_at, s.sent_at + reach[shop]) for shop, s in sends]
            spans += [(shop, c.member_id, c.clicked_at, c.clicked_at + reach[shop])
                      for shop, c in clicks]
            affected |= store.orders_near(conn, spans)
        return credit_events(self.credit_events, reattribute(conn, affected))

    def _late(self, event: MemberEventModel, behind: timedelta | None) -> Problem:
        how = f"{behind} behind" if behind is not None else "more than the bound behind"
        return Problem("occurred_at", (
            f"too late for campaign attribution: {event.occurred_at.isoformat()} is {how} the "
            f"newest event of shop {event.shop_id!r} on its stream; the bound is "
            f"{self.lateness} (the event counts everywhere else)"))


def _fold_orders(events: list[EventModel]) -> dict[OrderKey, OrderChange]:
    """What the batch says of each order: earliest conversion, amounts, refunds."""
    out: dict[OrderKey, OrderChange] = {}
    for e in events:
        if not isinstance(e, OrderPaid | OrderCompleted | OrderRefunded):
            continue
        key = (e.shop_id, e.payload.order_id)
        change = out.setdefault(key, OrderChange(e.member_id))
        cents = to_cents(e.payload.amount)
        if isinstance(e, OrderRefunded):
            change.refunded_cents += cents
            continue
        if change.converted_at is None or e.occurred_at < change.converted_at:
            change.converted_at = e.occurred_at
        if isinstance(e, OrderPaid):
            change.paid_cents = change.paid_cents if change.paid_cents is not None else cents
        else:
            change.completed_cents = (change.completed_cents if change.completed_cents is not None
                                      else cents)
    return out
