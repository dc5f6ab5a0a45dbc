"""The pure rules for a member's trade figures (services/tiering/domain.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.tiering.domain import (
    MemberDelta,
    MemberFigures,
    MemberKey,
    Order,
    OrderKey,
    apply,
    apply_steps,
    complete,
    refund,
)
from shared.events import EventModel, OrderCompleted, OrderRefunded, validate
from shared.money import from_cents, to_cents

SHOP = "shop-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FAST = settings(max_examples=100, deadline=None, database=None)
_ids = itertools.count()


def _envelope(type_: str, member: str, at: datetime, payload: dict[str, Any],
              event_id: str | None, shop: str) -> EventModel:
    return validate({
        "event_id": event_id or f"evt-{next(_ids)}",
        "type": type_,
        "schema_version": 1,
        "shop_id": shop,
        "member_id": member,
        "occurred_at": at.isoformat(),
        "payload": payload,
    })


def completed(order: str, cents: int, at: datetime = T0, member: str = "m1",
              event_id: str | None = None, shop: str = SHOP) -> OrderCompleted:
    event = _envelope("order.completed", member, at,
                      {"order_id": order, "amount": str(from_cents(cents))}, event_id, shop)
    assert isinstance(event, OrderCompleted)
    return event


def refunded(order: str, cents: int, at: datetime = T0, member: str = "m1",
             event_id: str | None = None, shop: str = SHOP) -> OrderRefunded:
    event = _envelope("order.refunded", member, at,
                      {"order_id": order, "amount": str(from_cents(cents))}, event_id, shop)
    assert isinstance(event, OrderRefunded)
    return event


def placed(order: str, region: str | None, at: datetime = T0, member: str = "m1",
           event_id: str | None = None, shop: str = SHOP) -> EventModel:
    payload: dict[str, Any] = {"order_id": order, "amount": "1.00",
                               "items": [{"sku": "sku-1", "qty": 1, "unit_price": "1.00"}]}
    if region is not None:
        payload["region"] = region
    return _envelope("order.placed", member, at, payload, event_id, shop)


def paid(order: str, cents: int, member: str = "m1") -> EventModel:
    return _envelope("order.paid", member, T0,
                     {"order_id": order, "amount": str(from_cents(cents))}, None, SHOP)


def viewed(member: str = "m1") -> EventModel:
    return _envelope("member.viewed", member, T0, {"sku": "sku-1"}, None, SHOP)


def one_member(events: Iterable[EventModel], member: str = "m1",
               orders: dict[OrderKey, Order] | None = None) -> MemberDelta:
    _, deltas = apply(orders or {}, events)
    return deltas[(SHOP, member)]


# --- examples ---------------------------------------------------------------------------------


def test_completion_counts_one_trade_with_its_amount_and_time() -> None:
    delta = one_member([completed("o1", 1250, T0)])
    assert delta.completed_trades == 1
    assert delta.gross_cents == 1250
    assert delta.refunded_cents == 0
    assert delta.spend_cents == 1250
    assert delta.first_purchase_at == delta.last_purchase_at == T0


def test_completion_records_the_order_ledger_entry() -> None:
    event = completed("o1", 1250, T0, event_id="evt-done")
    changed, _ = apply({}, [event])
    assert changed == {(SHOP, "o1"): Order(SHOP, "o1", "m1", amount_cents=1250, completed_at=T0,
                                           completed_event_id="evt-done")}


def test_second_completion_of_an_order_changes_nothing() -> None:
    first = complete(None, completed("o1", 1000, T0))
    again = completed("o1", 1000, T0 + timedelta(hours=1))
    assert complete(first, again) is first

    delta = one_member([completed("o1", 1000, T0), again])
    assert (delta.completed_trades, delta.gross_cents) == (1, 1000)
    assert delta.last_purchase_at == T0


def test_second_completion_in_a_later_batch_changes_nothing() -> None:
    stored, _ = apply({}, [completed("o1", 1000, T0)])
    changed, deltas = apply(stored, [completed("o1", 1000, T0)])
    assert changed == {}
    delta = deltas[(SHOP, "m1")]
    assert (delta.completed_trades, delta.gross_cents, delta.refunded_cents) == (0, 0, 0)
    assert delta.first_purchase_at is None


def test_refund_lowers_spend_but_not_the_trade_count() -> None:
    delta = one_member([completed("o1", 1000), refunded("o1", 300)])
    assert delta.completed_trades == 1
    assert delta.gross_cents == 1000
    assert delta.refunded_cents == 300
    assert delta.spend_cents == 700


def test_refund_before_completion_counts_once_completed() -> None:
    early = one_member([refunded("o1", 300)])
    assert (early.completed_trades, early.refunded_cents, early.spend_cents) == (0, 0, 0)

    stored, _ = apply({}, [refunded("o1", 300)])
    assert stored[(SHOP, "o1")].refund_requested_cents == 300
    assert stored[(SHOP, "o1")].refunded_cents == 0
    later = one_member([completed("o1", 1000)], orders=stored)
    assert (later.completed_trades, later.gross_cents, later.refunded_cents) == (1, 1000, 300)
    assert later.spend_cents == 700


def test_refund_before_completion_in_the_same_batch_counts_once() -> None:
    delta = one_member([refunded("o1", 300), completed("o1", 1000)])
    assert (delta.completed_trades, delta.refunded_cents, delta.spend_cents) == (1, 300, 700)


def test_refund_of_an_order_never_completed_counts_nothing() -> None:
    delta = one_member([refunded("o1", 300), refunded("o1", 200)])
    assert (delta.completed_trades, delta.gross_cents, delta.refunded_cents) == (0, 0, 0)


def test_refunds_are_capped_at_the_order_amount() -> None:
    delta = one_member([completed("o1", 1000), refunded("o1", 600), refunded("o1", 600)])
    assert delta.refunded_cents == 1000
    assert delta.spend_cents == 0


def test_refund_beyond_the_amount_before_completion_is_capped_too() -> None:
    delta = one_member([refunded("o1", 5000), completed("o1", 1000)])
    assert (delta.gross_cents, delta.refunded_cents, delta.spend_cents) == (1000, 1000, 0)


def test_further_refunds_on_a_fully_refunded_order_add_nothing() -> None:
    stored, _ = apply({}, [completed("o1", 1000), refunded("o1", 1000)])
    delta = one_member([refunded("o1", 100)], orders=stored)
    assert delta.refunded_cents == 0
    assert delta.spend_cents == 0


def test_refund_of_one_order_does_not_spill_onto_another() -> None:
    delta = one_member([completed("o1", 1000), completed("o2", 500), refunded("o2", 900)])
    assert (delta.gross_cents, delta.refunded_cents, delta.spend_cents) == (1500, 500, 1000)


def test_first_and_last_purchase_are_earliest_and_latest_completion_whatever_the_arrival() -> None:
    late, early, middle = T0 + timedelta(days=9), T0, T0 + timedelta(days=3)
    delta = one_member([completed("o1", 100, late), completed("o2", 100, early),
                        completed("o3", 100, middle)])
    assert delta.first_purchase_at == early
    assert delta.last_purchase_at == late


def test_refund_time_does_not_move_purchase_dates() -> None:
    delta = one_member([completed("o1", 100, T0), refunded("o1", 50, T0 + timedelta(days=30))])
    assert delta.first_purchase_at == delta.last_purchase_at == T0


def test_region_comes_from_the_latest_placement_by_event_time() -> None:
    delta = one_member([placed("o2", "south", T0 + timedelta(days=1)), placed("o1", "north", T0)])
    assert delta.region == "south"
    assert delta.region_at == T0 + timedelta(days=1)


def test_placement_without_region_leaves_the_region_alone() -> None:
    delta = one_member([placed("o1", "north", T0), placed("o2", None, T0 + timedelta(days=1))])
    assert delta.region == "north"


def test_placement_alone_does_not_count_a_trade() -> None:
    delta = one_member([placed("o1", "north")])
    assert (delta.completed_trades, delta.gross_cents, delta.first_purchase_at) == (0, 0, None)


def test_payment_and_browsing_events_change_no_figures() -> None:
    changed, deltas = apply({}, [paid("o1", 1000), viewed()])
    assert changed == {} and deltas == {}


def test_apply_leaves_the_stored_orders_untouched() -> None:
    stored, _ = apply({}, [completed("o1", 1000)])
    snapshot = dict(stored)
    apply(stored, [refunded("o1", 100), completed("o2", 200)])
    assert stored == snapshot


def test_only_touched_orders_are_returned_as_changed() -> None:
    stored, _ = apply({}, [completed("o1", 1000), completed("o2", 2000)])
    changed, _ = apply(stored, [refunded("o2", 100), completed("o3", 300)])
    assert set(changed) == {(SHOP, "o2"), (SHOP, "o3")}
    assert changed[(SHOP, "o2")].refund_requested_cents == 100


def test_later_events_count_for_the_member_who_owns_the_order() -> None:
    stored, _ = apply({}, [completed("o1", 1000, member="alice")])
    _, deltas = apply(stored, [refunded("o1", 400, member="bob")])
    assert deltas[(SHOP, "alice")].refunded_cents == 400
    assert deltas[(SHOP, "bob")].refunded_cents == 0


def test_the_same_order_id_in_two_shops_is_two_orders() -> None:
    changed, deltas = apply({}, [completed("o1", 1000, shop="a"), completed("o1", 2000, shop="b"),
                                 refunded("o1", 500, shop="b")])
    assert set(changed) == {("a", "o1"), ("b", "o1")}
    assert (deltas[("a", "m1")].gross_cents, deltas[("a", "m1")].refunded_cents) == (1000, 0)
    assert (deltas[("b", "m1")].gross_cents, deltas[("b", "m1")].refunded_cents) == (2000, 500)


def test_refund_on_an_incomplete_order_accumulates_requests() -> None:
    order = refund(refund(None, refunded("o1", 100)), refunded("o1", 250))
    assert order.refund_requested_cents == 350
    assert not order.completed
    assert order.refunded_cents == 0


# --- properties -------------------------------------------------------------------------------
#
# A small world: a few members in two shops, each order owned by one member with one amount and
# one completion time (a completion may be delivered more than once under different event ids).


@dataclass(frozen=True)
class OrderFact:
    shop: str
    order: str
    member: str
    cents: int
    completed_at: datetime


@dataclass
class Totals:
    completed_trades: int = 0
    gross_cents: int = 0
    refunded_cents: int = 0
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    region: str | None = None
    region_at: datetime | None = None
    completed_orders: set[OrderKey] = field(default_factory=set)

    @property
    def spend_cents(self) -> int:
        return self.gross_cents - self.refunded_cents

    def figures(self) -> tuple[Any, ...]:
        return (self.completed_trades, self.gross_cents, self.refunded_cents, self.spend_cents,
                self.first_purchase_at, self.last_purchase_at, self.region)

    def add(self, delta: MemberDelta) -> None:
        """Fold a batch's delta into the stored figures, as the store does."""
        self.completed_trades += delta.completed_trades
        self.gross_cents += delta.gross_cents
        self.refunded_cents += delta.refunded_cents
        first, last = delta.first_purchase_at, delta.last_purchase_at
        if first is not None and (self.first_purchase_at is None
                                  or first < self.first_purchase_at):
            self.first_purchase_at = first
        if last is not None and (self.last_purchase_at is None or last > self.last_purchase_at):
            self.last_purchase_at = last
        if delta.region_at is not None and (self.region_at is None
                                            or delta.region_at > self.region_at):
            self.region, self.region_at = delta.region, delta.region_at


MEMBERS = [(shop, member) for shop in ("s1", "s2") for member in ("m1", "m2")]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[OrderFact], list[EventModel]]:
    """Order facts and a deduplicated list of order events about them."""
    n_orders = draw(st.integers(min_value=1, max_value=5))
    facts = [
        OrderFact(shop, f"o{i}", member, draw(st.integers(min_value=0, max_value=50_000)),
                  T0 + timedelta(hours=draw(st.integers(min_value=0, max_value=500))))
        for i, (shop, member) in enumerate(
            draw(st.lists(st.sampled_from(MEMBERS), min_size=n_orders, max_size=n_orders)))
    ]
    n_places = draw(st.integers(min_value=0, max_value=6))
    # Distinct placement times: which region is "latest" is then never a tie.
    place_hours = draw(st.lists(st.integers(min_value=0, max_value=500), min_size=n_places,
                                max_size=n_places, unique=True))
    # (order index, None) is a completion; (order index, (cents, hour)) a refund.
    specs = st.tuples(st.integers(0, n_orders - 1), st.none() | st.tuples(
        st.integers(min_value=1, max_value=60_000), st.integers(min_value=0, max_value=500)))
    pool: list[EventModel] = []
    for i, (index, refund_spec) in enumerate(draw(st.lists(specs, min_size=1, max_size=16))):
        fact = facts[index]
        if refund_spec is None:
            pool.append(completed(fact.order, fact.cents, fact.completed_at, fact.member,
                                  event_id=f"c{i}", shop=fact.shop))
        else:
            cents, hours = refund_spec
            pool.append(refunded(fact.order, cents, T0 + timedelta(hours=hours),
                                 fact.member, event_id=f"r{i}", shop=fact.shop))
    for i, hours in enumerate(place_hours):
        shop, member = draw(st.sampled_from(MEMBERS))
        region = draw(st.sampled_from(["north", "south", "east", None]))
        pool.append(placed(f"p{i}", region, T0 + timedelta(hours=hours), member,
                           event_id=f"p{i}", shop=shop))
    # The stream may redeliver events; the framework drops repeated event ids before apply().
    redelivered = draw(st.lists(st.sampled_from(pool), max_size=6))
    delivered = draw(st.permutations(pool + redelivered))
    unique = list({e.event_id: e for e in delivered}.values())
    return facts, unique


def expected_totals(facts: Sequence[OrderFact], events: Sequence[EventModel]
                    ) -> dict[MemberKey, Totals]:
    """The figures straight from the rules, independent of arrival order."""
    out: dict[MemberKey, Totals] = {}
    by_key = {(f.shop, f.order): f for f in facts}
    completions = {(e.shop_id, e.payload.order_id) for e in events
                   if isinstance(e, OrderCompleted)}
    requested: dict[OrderKey, int] = {}
    for e in events:
        if isinstance(e, OrderRefunded):
            key = (e.shop_id, e.payload.order_id)
            requested[key] = requested.get(key, 0) + to_cents(e.payload.amount)
    for key in completions:
        fact = by_key[key]
        t = out.setdefault((fact.shop, fact.member), Totals())
        t.completed_trades += 1
        t.completed_orders.add(key)
        t.gross_cents += fact.cents
        t.refunded_cents += min(requested.get(key, 0), fact.cents)
        t.first_purchase_at = min(filter(None, [t.first_purchase_at, fact.completed_at]))
        t.last_purchase_at = max(filter(None, [t.last_purchase_at, fact.completed_at]))
    for e in events:
        if e.type == "order.placed" and e.payload.region:
            t = out.setdefault((e.shop_id, e.member_id), Totals())
            if t.region_at is None or e.occurred_at > t.region_at:
                t.region, t.region_at = e.payload.region, e.occurred_at
    return out


def run_in_batches(events: Sequence[EventModel], cuts: Iterable[int]
                   ) -> tuple[dict[OrderKey, Order], dict[MemberKey, Totals]]:
    """Apply consecutive batches, storing each batch's changed orders and summing its deltas."""
    stored: dict[OrderKey, Order] = {}
    totals: dict[MemberKey, Totals] = {}
    bounds = [0, *sorted(set(cuts)), len(events)]
    for lo, hi in itertools.pairwise(bounds):
        changed, deltas = apply(stored, events[lo:hi])
        stored = {**stored, **changed}
        for member, delta in deltas.items():
            totals.setdefault(member, Totals()).add(delta)
    return stored, totals


def figures(totals: dict[MemberKey, Totals]) -> dict[MemberKey, tuple[Any, ...]]:
    """Members with anything to show (a delta that changed nothing is not a figure)."""
    empty = Totals().figures()
    return {m: t.figures() for m, t in totals.items() if t.figures() != empty}


@FAST
@given(histories())
def test_one_batch_matches_the_rules(history: tuple[list[OrderFact], list[EventModel]]) -> None:
    facts, events = history
    _, totals = run_in_batches(events, [])
    assert figures(totals) == figures(expected_totals(facts, events))


@FAST
@given(st.data())
def test_any_arrival_order_and_any_batching_yields_the_same_figures(data: st.DataObject) -> None:
    _, events = data.draw(histories())
    _, reference = run_in_batches(events, [])
    shuffled = data.draw(st.permutations(events))
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(events)), max_size=4))
    stored, totals = run_in_batches(shuffled, cuts)
    assert figures(totals) == figures(reference)
    # The ledger agrees too: the same orders end completed with the same refund requests.
    one_shot_stored, _ = run_in_batches(events, [])
    assert {k: (o.completed, o.amount_cents, o.completed_at, o.refund_requested_cents)
            for k, o in stored.items()} == \
           {k: (o.completed, o.amount_cents, o.completed_at, o.refund_requested_cents)
            for k, o in one_shot_stored.items()}


@FAST
@given(st.data())
def test_figures_stay_consistent_after_every_batch(data: st.DataObject) -> None:
    _, events = data.draw(histories())
    events = data.draw(st.permutations(events))
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(events)), max_size=4))))
    stored: dict[OrderKey, Order] = {}
    totals: dict[MemberKey, Totals] = {}
    for lo, hi in itertools.pairwise([0, *cuts, len(events)]):
        changed, deltas = apply(stored, events[lo:hi])
        stored = {**stored, **changed}
        for member, delta in deltas.items():
            totals.setdefault(member, Totals()).add(delta)
        for member, t in totals.items():
            assert t.spend_cents >= 0
            assert 0 <= t.refunded_cents <= t.gross_cents
            completed_orders = {k for k, o in stored.items()
                                if o.completed and (o.shop_id, o.member_id) == member}
            assert t.completed_trades == len(completed_orders)
            assert t.gross_cents == sum(stored[k].amount_cents or 0 for k in completed_orders)
            assert t.refunded_cents == sum(stored[k].refunded_cents for k in completed_orders)
            if completed_orders:
                times = [stored[k].completed_at for k in completed_orders]
                assert t.first_purchase_at == min(times)  # type: ignore[type-var]
                assert t.last_purchase_at == max(times)  # type: ignore[type-var]
            else:
                assert t.first_purchase_at is t.last_purchase_at is None


@FAST
@given(st.integers(min_value=1, max_value=10**8), st.lists(
    st.integers(min_value=1, max_value=10**8), max_size=5))
def test_an_order_never_refunds_more_than_its_amount(cents: int, refunds: list[int]) -> None:
    events: list[EventModel] = [refunded("o1", r) for r in refunds]
    events.insert(len(events) // 2, completed("o1", cents))
    delta = one_member(events)
    assert delta.refunded_cents == min(sum(refunds), cents)
    assert delta.spend_cents == cents - min(sum(refunds), cents) >= 0
    assert delta.gross_cents == cents


# --- steps: what each event did, for the figures published per event -------------------------


def test_steps_name_each_event_that_changed_figures_with_its_owner_and_items() -> None:
    stored = {(SHOP, "o0"): Order(SHOP, "o0", "m1", 500, T0, "c0")}
    events = [placed("o1", "north", member="m2", event_id="p1"),
              completed("o1", 1000, member="m2", event_id="c1"),
              placed("o0", None, member="m3", event_id="p0"),        # after its completion
              refunded("o1", 200, member="m2", event_id="r1"),
              completed("o2", 700, member="m2", event_id="c2")]
    _, deltas, steps = apply_steps(stored, events)
    assert [(s.event.event_id, s.member, s.completed, s.skus) for s in steps] == [
        ("p1", (SHOP, "m2"), None, frozenset()),                      # a region
        ("c1", (SHOP, "m2"), (SHOP, "o1"), frozenset({"sku-1"})),    # items placed in the batch
        ("p0", (SHOP, "m1"), None, frozenset({"sku-1"})),             # items go to the owner
        ("r1", (SHOP, "m2"), None, frozenset()),
        ("c2", (SHOP, "m2"), (SHOP, "o2"), None),                     # items to look up
    ]
    total = MemberDelta()
    for s in steps:
        if s.member == (SHOP, "m2"):
            for field in ("completed_trades", "gross_cents", "refunded_cents"):
                setattr(total, field, getattr(total, field) + getattr(s.delta, field))
    d = deltas[(SHOP, "m2")]
    assert (total.completed_trades, total.gross_cents, total.refunded_cents) == (
        d.completed_trades, d.gross_cents, d.refunded_cents)


@FAST
@given(st.data())
def test_figures_after_each_step_end_at_the_batch_figures(data: st.DataObject) -> None:
    _, events = data.draw(histories())
    _, deltas, steps = apply_steps({}, events)
    running: dict[MemberKey, MemberFigures] = {}
    for s in steps:
        running[s.member] = running.get(s.member, MemberFigures()).plus(s.delta)
    for member, delta in deltas.items():
        assert running.get(member, MemberFigures()) == MemberFigures().plus(delta)
