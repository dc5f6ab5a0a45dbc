"""Tagging use case: automatic tags from the member-events topic, one transaction per batch.

The tiering worker is the one source of members' figures, levels and classes; this worker reads
what it publishes (`member.figures_changed`, `member.state`, `member.level_changed`,
`member.abc_changed`, `member.rfm_changed`, `stream.clock`) and keeps its own copy of each
member's facts, so rules see a member exactly as far as this worker has read. It publishes on
its own topic (`tag-events`), so it never reads its own output.

Each partition of member-events is read in order, message by message, and the same sequence
always records the same tag changes, however it was batched:

- a member's figures change at the clock their message carries (the clock of their stream
  after the event: the event's own time, or later when the event came late). Before the new
  facts apply, time passes to that instant under the old ones; then every rule is judged;
- a stream clock moves time on for every member of the partition: each bar a time-based rule
  can turn at is visited in order and the change dated at the bar, found by index for members
  not in the batch;
- a member is never judged at an instant before one already judged, so each member's history
  is in order.

Every step is idempotent (facts are snapshots, clocks only move forward, tags follow rules), so
redelivery and duplicates change nothing; effectively-once comes from `shared.consumer`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection

from services.tagging import store
from services.tagging.domain import (
    Holding,
    MemberKey,
    MemberView,
    RuleSet,
    TagChange,
    advance,
    on_event,
)
from services.tagging.rules import MemberFacts
from shared.consumer import Batch, Contract, Output, TimedWork, Undecodable
from shared.events import Problem
from shared.outbound import (
    AbcChanged,
    FiguresChanged,
    LevelChanged,
    MemberState,
    OutboundModel,
    RfmChanged,
    StatePayload,
    StreamClock,
    UnreadableOutbound,
    decode,
)
from shared.outbox import take_pending
from shared.shops import ConfigCache, all_shop_ids
from shared.topics import Topics

NAME = "tagging"
READ = frozenset({"member.figures_changed", "member.state", "member.level_changed",
                  "member.abc_changed", "member.rfm_changed", "stream.clock"})


def read_member_event(value: bytes) -> tuple[OutboundModel, None] | None:
    """Tiering's messages this worker acts on; None for the others on the topic."""
    try:
        event = decode(value)
    except UnreadableOutbound as exc:
        raise Undecodable([Problem("", str(exc))]) from None
    return (event, None) if event.type in READ else None


def _facts(facts: MemberFacts, event: FiguresChanged | MemberState) -> MemberFacts:
    f = event.payload
    level, abc_class, segment = ((f.level, f.abc_class, f.rfm_segment)
                                 if isinstance(f, StatePayload)
                                 else (facts.level, facts.abc_class, facts.rfm_segment))
    return MemberFacts(f.completed_trades, f.spend_cents, f.gross_cents, f.refunded_cents,
                       f.first_purchase_at, f.last_purchase_at, f.region, level, abc_class,
                       segment)


class TaggingHandler:
    """Keeps every member's automatic tags equal to the shop's rules."""

    name = NAME

    def __init__(self, topics: Topics) -> None:
        self.topics: tuple[str, ...] = (topics.member_events,)
        self.tag_events = topics.tag_events
        # Every step is idempotent (see above): no id claims needed. Timed work relays the tag
        # changes operators made (the outbox, tagging's own messages only).
        self.contract = Contract(read=read_member_event, handles=READ,
                                 timed=TimedWork(1.0, lambda conn, now: take_pending(conn, NAME)))
        self._configs = ConfigCache()
        self._rules: dict[str, RuleSet] = {}     # compiled rules by shop, at its last version

    def rulesets(self, conn: Connection, shops: set[str]) -> dict[str, RuleSet]:
        """The shops' compiled rules, share-locking their configurations until commit (a
        configuration being applied waits for the batch; a batch never mixes two versions)."""
        configs = self._configs.get(conn, shops, share_lock=True)
        for shop_id, (version, config) in configs.items():
            if shop_id not in self._rules or self._rules[shop_id].version != version:
                self._rules[shop_id] = RuleSet.from_config(version, config)
        return {s: self._rules[s] for s in configs}

    def apply(self, conn: Connection, batch: Batch) -> list[Output]:
        items: list[tuple[int, OutboundModel]] = [(r.delivery.partition, r.event)
                                                   for r in batch.records]
        if not items:
            return []
        keys = {(e.shop_id, e.member_id) for _, e in items if not isinstance(e, StreamClock)}
        clocked = {p for p, e in items if isinstance(e, StreamClock)}
        shops = {s for s, _ in keys} | (set(all_shop_ids(conn)) if clocked else set())
        rules = self.rulesets(conn, shops)
        timed = {s: r for s, r in rules.items() if r.thresholds}
        clocks = store.lock_clocks(conn, {p for p, _ in items})
        views: dict[MemberKey, MemberView] = {}
        before: dict[MemberKey, dict[str, Holding]] = {}
        self._load(conn, keys, views, before, default_partition={
            (e.shop_id, e.member_id): p for p, e in items if not isinstance(e, StreamClock)})

        changes: list[TagChange] = []
        for partition, event in items:
            frontier = clocks.get(partition)
            if isinstance(event, StreamClock):
                at = event.payload.clock
                if frontier is not None and at <= frontier:
                    continue
                changes += self._pass_time(conn, partition, frontier, at, timed, views, before)
                clocks[partition] = at
                continue
            key = (event.shop_id, event.member_id)
            view = views[key]
            view.partition = partition
            if frontier is not None and (view.evaluated_at is None
                                         or view.evaluated_at < frontier):
                view.evaluated_at = frontier  # judged with everyone when the clock last moved
            shop_rules = rules.get(event.shop_id, RuleSet(event.shop_id, 0))
            if isinstance(event, FiguresChanged | MemberState):
                at = event.payload.clock or event.occurred_at
                skus = event.payload.skus_bought if isinstance(event, FiguresChanged) else ()
                changes += on_event(shop_rules, view, _facts(view.facts, event), at, skus,
                                    event.event_id)
            elif isinstance(event, LevelChanged):
                changes += on_event(shop_rules, view,
                                    replace(view.facts, level=event.payload.new_level),
                                    view.evaluated_at or event.occurred_at, (), event.event_id)
            elif isinstance(event, AbcChanged):
                changes += on_event(shop_rules, view,
                                    replace(view.facts, abc_class=event.payload.new_class),
                                    view.evaluated_at or event.occurred_at, (), event.event_id)
            elif isinstance(event, RfmChanged):
                changes += on_event(shop_rules, view,
                                    replace(view.facts, rfm_segment=event.payload.new_segment),
                                    view.evaluated_at or event.occurred_at, (), event.event_id)
        store.save_views(conn, views)
        store.save_clocks(conn, clocks)
        store.record(conn, changes)
        return store.events_for(self.tag_events, changes, before)

    def _load(self, conn: Connection, keys: set[MemberKey], views: dict[MemberKey, MemberView],
              before: dict[MemberKey, dict[str, Holding]],
              default_partition: dict[MemberKey, int]) -> None:
        """Bring members into the batch's views (locked), with their tags."""
        wanted = keys - views.keys()
        if not wanted:
            return
        known = store.lock_views(conn, wanted)
        held = store.holdings(conn, wanted)
        for key in wanted:
            partition, facts, evaluated = known.get(
                key, (default_partition.get(key, 0), MemberFacts(), None))
            views[key] = MemberView(key[0], key[1], partition, facts, dict(held.get(key, {})),
                                    evaluated)
            before[key] = held.get(key, {})

    def _pass_time(self, conn: Connection, partition: int, frontier: datetime | None,
                   until: datetime, timed: dict[str, RuleSet], views: dict[MemberKey, MemberView],
                   before: dict[MemberKey, dict[str, Holding]]) -> list[TagChange]:
        """The partition's clock moved to `until`: judge everyone on it whose rules may turn."""
        # Members not in the batch, found by index from their stored facts; members in the
        # batch are judged from their facts as the batch has them.
        found: set[MemberKey] = set()
        for shop_id, shop_rules in sorted(timed.items()):
            found.update((shop_id, m) for m in store.crossed(
                conn, shop_id, partition, shop_rules.thresholds, frontier, until))
        self._load(conn, found - views.keys(), views, before, {})
        changes: list[TagChange] = []
        for key in sorted(views):
            view = views[key]
            timed_rules = timed.get(key[0])
            if view.partition != partition or timed_rules is None:
                continue
            if frontier is not None and (view.evaluated_at is None
                                         or view.evaluated_at < frontier):
                view.evaluated_at = frontier
            changes += advance(timed_rules, view, until)
        return changes
