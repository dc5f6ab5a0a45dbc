"""Tiering use cases: trade figures, levels and customer ABC classes from the order stream.

Per batch (one transaction): lock the touched ledger entries, apply the domain, save figures
and order lines, move each shop's event-time watermark, then upgrade the members whose
completed trades carry them over a bar. Published with the batch, in this order:
`member.figures_changed` for every member whose figures changed or who completed a trade,
`member.level_changed` for every upgrade, and one `shop.clock` per partition with the watermarks.

Per tick (between batches): recompute the customer ABC classes of shops that changed (debounced:
at most once per `abc_debounce` per shop, never per event) and publish `member.abc_changed`;
relay member events that operator commands left in the outbox.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import Connection

from services.tiering import abc_store, domain, level_store, store
from services.tiering.domain import MemberDelta, MemberKey, Order, OrderKey
from services.tiering.level_store import LevelChange
from services.tiering.levels import Completion, LevelFacts, climb, upgraded_level
from services.tiering.policy import CustomerAbc
from shared.consumer import Batch, Output
from shared.events import OrderCompleted, OrderPlaced, OrderRefunded
from shared.member_events import figures_changed, member_event, shop_clock, take_pending
from shared.shops import ConfigCache
from shared.topics import Topics

# A recompute that took t seconds is not repeated for the same shop within ABC_MAX_SHARE * t.
ABC_MAX_SHARE = 5


class TieringHandler:
    """Keeps each member's figures, level and customer ABC class current."""

    name = "tiering"
    handles = frozenset({"order.placed", "order.completed", "order.refunded"})
    # Placements and completions are idempotent by order (items once, region by time, an order
    # completes once); only a refund adds to what is there, so only refunds are claimed by id.
    claims_ids = frozenset({"order.refunded"})
    parks_rejects = False  # the archiver parks bad inbound events, once for every worker

    def __init__(self, topics: Topics, *, abc_debounce: timedelta = timedelta(seconds=5),
                 tick_seconds: float = 1.0) -> None:
        self.topics: tuple[str, ...] = (topics.orders,)
        self.event_topics = frozenset(self.topics)
        self.member_events = topics.member_events
        self.abc_debounce = abc_debounce
        self.tick_seconds = tick_seconds
        self._abc_cost: dict[str, tuple[datetime, float]] = {}  # shop -> (last run, seconds)
        self._configs = ConfigCache()

    def apply(self, conn: Connection, batch: Batch) -> list[Output]:
        # First, a share lock on the shops' configurations: a configuration being applied waits
        # for this batch (and this batch for it), so rules it adds are evaluated over history
        # that includes the batch, and the batch never mixes two versions.
        configs = self._configs.get(conn, {e.shop_id for e in batch.events}, share_lock=True)
        keys = [
            (e.shop_id, e.payload.order_id)
            for e in batch.events
            if isinstance(e, OrderCompleted | OrderRefunded)
        ]
        stored = store.lock_orders(conn, keys)
        changed, deltas = domain.apply(stored, batch.events)
        store.save_orders(conn, changed.values())
        placed = [e for e in batch.events if isinstance(e, OrderPlaced)]
        store.save_items(conn, placed)
        # Items bought matter only to goods rules; shops without any skip the lookups.
        with_goods = {s for s, (_, c) in configs.items() if c.tagging.goods_rules()}
        bought = self._bought(conn, {k: o for k, o in stored.items() if k[0] in with_goods},
                              {k: o for k, o in changed.items() if k[0] in with_goods},
                              [e for e in placed if e.shop_id in with_goods])
        # Figures go out when trades, refunds or items bought changed them, or the region.
        report = {k: bool(d.completed_trades or d.refunded_cents or k in bought)
                  for k, d in deltas.items() if d.region is not None or k in bought
                  or d.completed_trades or d.refunded_cents}
        figures = store.add_member_deltas(conn, deltas, report)
        watermarks: dict[str, datetime] = {}
        last: dict[tuple[str, str], tuple[datetime, str]] = {}
        for event in batch.events:
            seen = watermarks.get(event.shop_id)
            if seen is None or event.occurred_at > seen:
                watermarks[event.shop_id] = event.occurred_at
            member = (event.shop_id, event.member_id)
            if member not in last or event.occurred_at >= last[member][0]:
                last[member] = (event.occurred_at, event.event_id)
        clocks = abc_store.touch(conn, watermarks)
        first = batch.deliveries[0].ref if batch.deliveries else "-"
        outputs: list[Output] = []
        for key in sorted(figures):
            # An order's figures go to its owner even when a later event names someone else.
            at, event_id = last.get(key) or (watermarks[key[0]], first)
            outputs.append(figures_changed(
                self.member_events, key[0], key[1], figures[key], bought.get(key, ()), at,
                f"figures:{key[0]}:{key[1]}:{event_id}"))
        outputs += self._upgrade(conn, deltas)
        if clocks:
            outputs.append(shop_clock(self.member_events, clocks, f"clock:{first}"))
        return outputs

    @staticmethod
    def _bought(conn: Connection, stored: dict[OrderKey, Order], changed: dict[OrderKey, Order],
                placed: list[OrderPlaced]) -> dict[MemberKey, set[str]]:
        """Items bought in this batch, by member: those of orders it completed, and those of
        placements that arrive after their order's completion."""
        lines = {(e.shop_id, e.payload.order_id): {i.sku for i in e.payload.items}
                 for e in placed}
        completed = {k: o.member_id for k, o in changed.items()
                     if o.completed and not (k in stored and stored[k].completed)}
        lines |= store.order_skus(conn, completed.keys() - lines.keys())
        completed |= store.completed_owners(conn, lines.keys() - completed.keys())
        bought: dict[MemberKey, set[str]] = {}
        for order, member_id in completed.items():
            if order in lines:
                bought.setdefault((order[0], member_id), set()).update(lines[order])
        return bought

    def _upgrade(self, conn: Connection, deltas: dict[tuple[str, str], MemberDelta]
                 ) -> list[Output]:
        """Upgrade members whose new completed trades meet a higher level (upgrade only)."""
        by_shop: dict[str, dict[str, MemberDelta]] = defaultdict(dict)
        for (shop_id, member_id), delta in deltas.items():
            if delta.completions:
                by_shop[shop_id][member_id] = delta
        if not by_shop:
            return []
        configs = self._configs.get(conn, by_shop)
        changes: list[LevelChange] = []
        outputs: list[Output] = []
        for shop_id in sorted(by_shop):
            version, config = configs.get(shop_id, (0, None))
            policy = config.levels if config else None
            if policy is None or not policy.auto_upgrade:
                continue
            members = by_shop[shop_id]
            facts = level_store.load_facts(conn, shop_id, policy, sorted(members))
            for member_id in sorted(facts):
                now = facts[member_id]
                new_level = upgraded_level(policy, now)
                if new_level == now.level:
                    continue
                delta = members[member_id]
                before = LevelFacts(now.level, now.blacklisted,
                                    now.completed_trades - delta.completed_trades,
                                    now.qualifying_cents - delta.gross_cents)
                old = now.level
                for cause, level in climb(policy, before,
                                          [Completion(*c) for c in delta.completions], now):
                    change = LevelChange(shop_id, member_id, old, level, "auto",
                                         cause.occurred_at, event_id=cause.event_id,
                                         policy_version=version)
                    changes.append(change)
                    outputs.append(level_store.level_changed_event(
                        self.member_events, change, policy, now.blacklisted,
                        f"level:{shop_id}:{member_id}:{cause.event_id}:{level}"))
                    old = level
        level_store.record_changes(conn, changes)
        return outputs

    def tick(self, conn: Connection, now: datetime) -> list[Output]:
        outputs = take_pending(conn)
        due = abc_store.due_shops(conn, now, self.abc_debounce)
        if not due:
            return outputs
        configs = self._configs.get(conn, [shop for shop, _ in due])
        for shop_id, watermark in due:
            last = self._abc_cost.get(shop_id)
            if last is not None and now < last[0] + timedelta(seconds=ABC_MAX_SHARE * last[1]):
                continue  # a large shop: keep recomputes to a fifth of the worker's time
            entry = configs.get(shop_id)
            settings = entry[1].abc.customers if entry else CustomerAbc()
            # The period ends at the shop's event-time watermark, not the wall clock: a replay
            # of last year classifies members as live processing did then.
            started = time.perf_counter()
            outputs += self.recompute_abc(conn, shop_id, watermark, settings, now)
            self._abc_cost[shop_id] = (now, time.perf_counter() - started)
        return outputs

    def recompute_abc(self, conn: Connection, shop_id: str, as_of: datetime,
                      settings: CustomerAbc, now: datetime) -> list[Output]:
        run = abc_store.recompute(conn, shop_id, as_of, settings, now)
        stamp = as_of.isoformat()
        return [
            member_event(self.member_events, "member.abc_changed",
                         f"abc:{shop_id}:{c.member_id}:{stamp}:{c.new or '-'}", shop_id,
                         c.member_id, as_of,
                         {"old_class": c.old, "new_class": c.new, "as_of": stamp,
                          "period_days": settings.period_days})
            for c in run.changes
        ]
