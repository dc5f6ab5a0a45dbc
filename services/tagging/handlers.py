"""Tagging use case: automatic tags from the member-events topic, one transaction per batch.

The tiering worker is the one source of members' figures, levels and classes; this worker reads
what it publishes (`member.figures_changed`, `member.level_changed`, `member.abc_changed`,
`shop.clock`) and keeps its own copy of each member's facts, so rules see a member exactly as far
as this worker has read. Per batch:

1. take a share lock on the configurations of the shops in the batch (a configuration being
   applied waits for the batch; the batch never mixes two versions of a shop's rules);
2. fold the events into the members' facts and move the shops' clocks (per partition);
3. evaluate the rules for every member the batch touched, and for every member for whom a
   time-based rule may have turned while the clock moved (found by index, not by a scan);
4. store the tag changes with their causes and publish one `member.tags_changed` per member.

Every step is idempotent (facts are snapshots, clocks only move forward, tags follow rules), so
redelivery and duplicates change nothing; effectively-once comes from `shared.consumer`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from services.tagging import store
from services.tagging.domain import (
    ClockKey,
    MemberKey,
    RuleSet,
    TagChange,
    decide,
    fold,
)
from shared.consumer import Batch, Output
from shared.deadletter import dead_letter
from shared.events import Problem
from shared.member_events import MemberEventIn, ShopClock, UnreadableMemberEvent, read
from shared.shops import ConfigCache
from shared.topics import Topics


class TaggingHandler:
    """Keeps every member's automatic tags equal to the shop's rules."""

    name = "tagging"
    handles: frozenset[str] = frozenset()
    event_topics: frozenset[str] = frozenset()   # member events are read here, not as inbound
    claims_ids: frozenset[str] = frozenset()     # every step is idempotent (see above)
    parks_rejects = False

    def __init__(self, topics: Topics) -> None:
        self.topics: tuple[str, ...] = (topics.member_events,)
        self.member_events = topics.member_events
        self.dead_letters = topics.dead_letters
        self._configs = ConfigCache()
        self._rules: dict[str, RuleSet] = {}     # compiled rules by shop, at its last version

    def rulesets(self, conn: Connection, shops: set[str]) -> dict[str, RuleSet]:
        """The shops' compiled rules, share-locking their configurations until commit."""
        configs = self._configs.get(conn, shops, share_lock=True)
        for shop_id, (version, config) in configs.items():
            if shop_id not in self._rules or self._rules[shop_id].version != version:
                self._rules[shop_id] = RuleSet.from_config(version, config)
        return {s: self._rules[s] for s in configs}

    def apply(self, conn: Connection, batch: Batch) -> list[Output]:
        outputs: list[Output] = []
        events: list[tuple[int, MemberEventIn]] = []
        for d in batch.deliveries:
            try:
                event = read(d.value)
            except UnreadableMemberEvent as exc:
                letter = dead_letter(f"worker:{self.name}", d.ref, d.value,
                                     [Problem("", str(exc))])
                outputs.append(Output(self.dead_letters, None, letter.to_json(), "dead_letter"))
                continue
            if event is not None:
                events.append((d.partition, event))
        if not events:
            return outputs

        seen: dict[ClockKey, datetime] = {}
        members: set[MemberKey] = set()
        for partition, event in events:
            if isinstance(event, ShopClock):
                for shop_id, mark in event.watermarks.items():
                    where = (shop_id, partition)
                    seen[where] = max(mark, seen.get(where, mark))
            else:
                members.add((event.shop_id, event.member_id))
        rules = self.rulesets(conn, {s for s, _ in members} | {s for s, _ in seen})

        updates = fold(store.lock_facts(conn, members), events)
        store.save_facts(conn, updates)
        moved = store.advance_clocks(conn, seen)

        # Members for whom a time-based rule may have turned while the clock moved.
        timed: set[MemberKey] = set()
        for (shop_id, partition), (before, after) in sorted(moved.items()):
            shop_rules = rules.get(shop_id)
            if shop_rules is not None and shop_rules.thresholds:
                timed.update((shop_id, m) for m in store.crossed(
                    conn, shop_id, partition, shop_rules.thresholds, before, after)
                    if (shop_id, m) not in updates)
        timed_facts = store.lock_facts(conn, timed)

        parts = {(k[0], u.partition) for k, u in updates.items()}
        parts |= {(k[0], p) for k, (p, _) in timed_facts.items()}
        clock = store.clocks(conn, parts)
        held = store.holdings(conn, set(updates) | set(timed_facts))

        changes: list[TagChange] = []
        for key in sorted(updates):
            update, shop_rules = updates[key], rules.get(key[0])
            if shop_rules is None or update.at is None:
                continue
            changes += decide(shop_rules, key[1], held.get(key, {}), update.facts,
                              clock.get((key[0], update.partition)), update.skus, update.at,
                              update.event_id)
        for key in sorted(timed_facts):
            partition, facts = timed_facts[key]
            shop_rules, now = rules[key[0]], clock[(key[0], partition)]
            before = moved[(key[0], partition)][0]
            changes += decide(shop_rules, key[1], held.get(key, {}), facts, now, (), before,
                              f"clock:{key[0]}:{now.isoformat()}", time_only=True)
        store.record(conn, changes)
        return outputs + store.events_for(self.member_events, changes, held, "-")
