"""Pure rules for a member's trade figures: state + events -> new state. No I/O here.

An order counts once, when it is completed, however often its events are delivered; refunds
lower spend (never below zero for an order) but not the trade count. Completion and refunds meet
in the order's ledger entry, so they may arrive in any order and the figures come out the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from shared.events import EventModel, OrderCompleted, OrderPlaced, OrderRefunded
from shared.money import to_cents

OrderKey = tuple[str, str]    # (shop_id, order_id)
MemberKey = tuple[str, str]   # (shop_id, member_id)


@dataclass(frozen=True, slots=True)
class Order:
    """One order's ledger entry."""

    shop_id: str
    order_id: str
    member_id: str
    amount_cents: int | None = None
    completed_at: datetime | None = None
    completed_event_id: str | None = None
    refund_requested_cents: int = 0

    @property
    def key(self) -> OrderKey:
        return (self.shop_id, self.order_id)

    @property
    def completed(self) -> bool:
        return self.completed_at is not None

    @property
    def refunded_cents(self) -> int:
        """Refunds count against a completed order only, and never beyond its amount."""
        if self.amount_cents is None or not self.completed:
            return 0
        return min(self.refund_requested_cents, self.amount_cents)


@dataclass(slots=True)
class MemberDelta:
    """What a batch changes in one member's figures (added to the stored figures)."""

    completed_trades: int = 0
    gross_cents: int = 0
    refunded_cents: int = 0
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    region: str | None = None
    region_at: datetime | None = None
    # Orders this batch completed: (completing event id, completed at, amount in cents).
    completions: list[tuple[str, datetime, int]] = field(default_factory=list)

    @property
    def spend_cents(self) -> int:
        return self.gross_cents - self.refunded_cents

    def add_order_change(self, before: Order | None, after: Order) -> None:
        was_completed = before is not None and before.completed
        if after.completed and not was_completed:
            assert after.amount_cents is not None and after.completed_at is not None
            self.completed_trades += 1
            self.gross_cents += after.amount_cents
            self.first_purchase_at = _earliest(self.first_purchase_at, after.completed_at)
            self.last_purchase_at = _latest(self.last_purchase_at, after.completed_at)
            assert after.completed_event_id is not None
            self.completions.append(
                (after.completed_event_id, after.completed_at, after.amount_cents))
        self.refunded_cents += after.refunded_cents - (before.refunded_cents if before else 0)

    def see_region(self, region: str, at: datetime) -> None:
        """The region of the member's most recent order (by event time) wins."""
        if self.region_at is None or at > self.region_at:
            self.region, self.region_at = region, at

    @property
    def empty(self) -> bool:
        return (not self.completed_trades and not self.gross_cents and not self.refunded_cents
                and self.region_at is None)


@dataclass(frozen=True, slots=True)
class MemberFigures:
    """A member's stored trade figures (the one place their rules are applied)."""

    completed_trades: int = 0
    gross_cents: int = 0
    refunded_cents: int = 0
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    region: str | None = None
    region_at: datetime | None = None

    @property
    def spend_cents(self) -> int:
        return self.gross_cents - self.refunded_cents

    def plus(self, d: MemberDelta) -> MemberFigures:
        """The figures after a delta: counts add, purchase dates widen, the newest region wins."""
        region, region_at = self.region, self.region_at
        if d.region_at is not None and (region_at is None or d.region_at > region_at):
            region, region_at = d.region, d.region_at
        return MemberFigures(
            self.completed_trades + d.completed_trades, self.gross_cents + d.gross_cents,
            self.refunded_cents + d.refunded_cents,
            _earliest(self.first_purchase_at, d.first_purchase_at)
            if d.first_purchase_at else self.first_purchase_at,
            _latest(self.last_purchase_at, d.last_purchase_at)
            if d.last_purchase_at else self.last_purchase_at,
            region, region_at)


@dataclass(frozen=True, slots=True)
class Step:
    """What one event did to the member who owns it: its delta, and items it brought in.

    `skus` are the items the member bought through this event: those of the order it completed
    (None: look them up from the stored placement), or those of a placement that arrived after
    its order had completed."""

    event: EventModel
    member: MemberKey
    delta: MemberDelta
    completed: OrderKey | None = None
    skus: frozenset[str] | None = frozenset()


def _earliest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b < a else a


def _latest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def complete(order: Order | None, event: OrderCompleted) -> Order:
    """Record a completed trade; a second completion of the same order changes nothing."""
    if order is not None and order.completed:
        return order
    if order is None:
        return Order(event.shop_id, event.payload.order_id, event.member_id,
                     to_cents(event.payload.amount), event.occurred_at, event.event_id)
    return Order(order.shop_id, order.order_id, order.member_id, to_cents(event.payload.amount),
                 event.occurred_at, event.event_id, order.refund_requested_cents)


def refund(order: Order | None, event: OrderRefunded) -> Order:
    """Record a refund; it may arrive before the completion it refunds."""
    cents = to_cents(event.payload.amount)
    if order is None:
        return Order(event.shop_id, event.payload.order_id, event.member_id,
                     refund_requested_cents=cents)
    return Order(order.shop_id, order.order_id, order.member_id, order.amount_cents,
                 order.completed_at, order.completed_event_id,
                 order.refund_requested_cents + cents)


def apply(orders: dict[OrderKey, Order], events: Iterable[EventModel]
          ) -> tuple[dict[OrderKey, Order], dict[MemberKey, MemberDelta]]:
    """Apply new (never seen) order events to the ledger entries they touch.

    Returns the changed ledger entries and each touched member's delta. `orders` holds the
    stored entries for the events' orders; it is not modified.
    """
    changed, deltas, _ = apply_steps(orders, events)
    return changed, deltas


def apply_steps(orders: dict[OrderKey, Order], events: Iterable[EventModel]
                ) -> tuple[dict[OrderKey, Order], dict[MemberKey, MemberDelta], list[Step]]:
    """`apply`, also saying what each event did (the events that changed something, in order).

    `orders` holds the stored entries for the events' orders, placements included (a placement
    of an order completed before brings its items to the order's owner)."""
    current = dict(orders)
    deltas: dict[MemberKey, MemberDelta] = {}
    steps: list[Step] = []
    placed: dict[OrderKey, frozenset[str]] = {}   # items of the batch's placements
    for event in events:
        if not isinstance(event, OrderPlaced | OrderCompleted | OrderRefunded):
            continue
        member = deltas.get((event.shop_id, event.member_id))
        if member is None:
            member = deltas[(event.shop_id, event.member_id)] = MemberDelta()
        if isinstance(event, OrderPlaced):
            key = (event.shop_id, event.payload.order_id)
            skus = frozenset(i.sku for i in event.payload.items)
            placed.setdefault(key, skus)
            step = MemberDelta()
            if event.payload.region:
                member.see_region(event.payload.region, event.occurred_at)
                step.see_region(event.payload.region, event.occurred_at)
            order = current.get(key)
            if order is not None and order.completed:
                buyer = (order.shop_id, order.member_id)
                if buyer != (event.shop_id, event.member_id) and not step.empty:
                    steps.append(Step(event, (event.shop_id, event.member_id), step))
                    step = MemberDelta()
                steps.append(Step(event, buyer, step, skus=skus))
            elif not step.empty:
                steps.append(Step(event, (event.shop_id, event.member_id), step))
            continue
        if isinstance(event, OrderCompleted):
            key = (event.shop_id, event.payload.order_id)
            before = current.get(key)
            after = complete(before, event)
        elif isinstance(event, OrderRefunded):
            key = (event.shop_id, event.payload.order_id)
            before = current.get(key)
            after = refund(before, event)
        else:
            continue
        if after is before:
            continue
        # Figures belong to the member who owns the order, whoever the later event names.
        owner_key = (after.shop_id, after.member_id)
        owner = deltas.get(owner_key)
        if owner is None:
            owner = deltas[owner_key] = MemberDelta()
        owner.add_order_change(before, after)
        step = MemberDelta()
        step.add_order_change(before, after)
        current[key] = after
        newly = after.completed and not (before is not None and before.completed)
        if newly or not step.empty:
            steps.append(Step(event, owner_key, step, key if newly else None,
                              placed.get(key) if newly else frozenset()))
    changed = {k: v for k, v in current.items() if orders.get(k) is not v}
    return changed, deltas, steps
