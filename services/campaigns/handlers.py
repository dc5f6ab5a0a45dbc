"""Campaigns use case: messages sent and clicked, orders, and their credits, one transaction
per batch, from the orders and campaigns topics.

Per batch:

1. decode the records; claim the ids of the events this worker applies (a repeat is skipped);
2. judge lateness per input partition, in the partition's own order: an event further behind
   the newest event time read from its partition than the lateness bound is refused, parked
   on the dead-letter topic with that reason, never applied. The partition's order is fixed by
   the history, so which events are refused does not depend on how the two topics interleave;
3. store sends, clicks and orders (earliest payment or completion, amounts, refunds);
4. re-decide the credit of every order the batch touched, and of every stored order a newly
   arrived click or send could credit (converted within the longest window after it);
5. publish `campaign.order_credited` for each credit given, moved or withdrawn.

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
from shared.consumer import Batch, Output, claim_event_ids
from shared.deadletter import dead_letter
from shared.events import (
    EventModel,
    EventRejected,
    MessageClicked,
    MessageSent,
    OrderCompleted,
    OrderPaid,
    OrderRefunded,
    Problem,
    decode,
)
from shared.money import to_cents
from shared.topics import Topics

APPLIED = frozenset({"campaign.message_sent", "campaign.message_clicked", "order.paid",
                     "order.completed", "order.refunded"})


class CampaignHandler:
    """Credits orders to the campaign messages that brought them (last click, else last send)."""

    name = "campaigns"
    handles: frozenset[str] = frozenset()
    event_topics: frozenset[str] = frozenset()   # decoded here, where partitions are known
    claims_ids: frozenset[str] = frozenset()     # claimed here, before judging lateness
    parks_rejects = False                        # the archiver parks undecodable events

    def __init__(self, topics: Topics, *, lateness: timedelta = timedelta(hours=24)) -> None:
        self.topics: tuple[str, ...] = (topics.orders, topics.campaigns)
        self.member_events = topics.member_events
        self.dead_letters = topics.dead_letters
        self.lateness = lateness

    def apply(self, conn: Connection, batch: Batch) -> list[Output]:
        read: list[tuple[tuple[str, int], str, EventModel]] = []
        for d in batch.deliveries:
            try:
                read.append(((d.topic, d.partition), d.ref, decode(d.value)))
            except EventRejected:
                continue  # parked once, by the archiver
        if not read:
            return []
        fresh_ids = {e.event_id for e in claim_event_ids(
            conn, self.name, [e for _, _, e in read if e.type in APPLIED])}

        # Lateness, judged per partition in its own order; every readable event moves the mark.
        marks = store.lock_watermarks(conn, {p for p, _, _ in read})
        outputs: list[Output] = []
        accepted: list[EventModel] = []
        for part, ref, event in read:
            mark = marks.get(part)
            if event.event_id in fresh_ids:
                fresh_ids.discard(event.event_id)  # a repeat within the batch is a duplicate
                if mark is not None and event.occurred_at < mark - self.lateness:
                    outputs.append(self._late(ref, event, mark))
                    continue
                accepted.append(event)
            if mark is None or event.occurred_at > mark:
                marks[part] = event.occurred_at
        store.save_watermarks(conn, marks)

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
        return outputs + credit_events(self.member_events, reattribute(conn, affected))

    def _late(self, ref: str, event: EventModel, mark: datetime) -> Output:
        behind = mark - event.occurred_at
        problem = Problem("occurred_at", (
            f"too late for campaign attribution: {event.occurred_at.isoformat()} is {behind} "
            f"behind this stream's newest event ({mark.isoformat()}); the bound is "
            f"{self.lateness}"))
        letter = dead_letter(f"worker:{self.name}", ref, event.to_json(), [problem])
        return Output(self.dead_letters, None, letter.to_json(), "dead_letter")


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
