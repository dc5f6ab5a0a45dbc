"""Tiering use cases: trade figures, levels and customer ABC classes from the order stream.

Per batch (one transaction): lock the ledger entries and members the batch touches, apply the
domain event by event, save figures and order lines, move the clock of every inbound partition
read (events and pipeline ticks), then upgrade the members whose completed trades carry them over
a bar. Published with the batch, in read order, so that a reader of one partition sees exactly
the sequence an unbatched reading would give:

- per inbound event that changed a member's figures (or brought them items), one
  `member.figures_changed` with the figures after it, the items it brought and the clock of its
  partition after it, followed by the `member.level_changed` it caused;
- per inbound partition whose clock moved, one `stream.clock` to the same partition of the
  member-events topic.

Every id is derived from the input (the inbound event id, the partition and clock reading), so
a batch retried with other boundaries publishes the same messages.

Timed work (beside the batches, in transactions of its own): recompute the customer ABC classes
of shops whose trades changed or whose period slid with the clock (debounced per shop, never per
event) — claim the shop, rank its members (reading only), then apply the changes a part at a
time, publishing `member.abc_changed` with each part; recompute the RFM scores of shops whose
trades changed or whose clock moved an hour on the same way (`member.rfm_changed`); refit the
predicted value of each shop once a day of its clock (`services.tiering.scores_store`) — and
relay the messages operator commands left in the outbox for tiering.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from services.tiering import abc_store, domain, level_store, scores_store, store
from services.tiering.domain import MemberDelta, MemberFigures, MemberKey, Step
from services.tiering.level_store import LevelChange
from services.tiering.levels import Completion, LevelFacts, climb, upgraded_level
from services.tiering.policy import CustomerAbc, LevelPolicy
from services.tiering.rfm import RfmSettings
from shared import clocks as stream_clocks
from shared.archive import read_inbound
from shared.consumer import Batch, Contract, Output, TimedWork
from shared.events import ClockTicked, OrderCompleted, OrderPlaced, OrderRefunded
from shared.outbound import (
    AbcChanged,
    AbcPayload,
    ClockPayload,
    FiguresChanged,
    FiguresPayload,
    RfmChanged,
    RfmPayload,
    StreamClock,
    iso,
    output,
)
from shared.outbox import take_pending
from shared.shops import ConfigCache
from shared.topics import Topics

# A recompute that took t seconds is not repeated for the same shop within ABC_MAX_SHARE * t.
ABC_MAX_SHARE = 5
# Class changes applied per transaction. Their members stay locked until the part's outputs are
# acknowledged and it commits, and a batch of one of them waits that long: at 2,000 events/s,
# batches waited ~720 ms in a minute behind parts of 1,000 and ~380 ms behind parts of 250.
ABC_PART = 250
# RFM changes applied per transaction: nothing a batch reads is locked by them.
RFM_PART = 2_000
NAME = "tiering"
HANDLES = frozenset({"order.placed", "order.completed", "order.refunded", "clock.ticked"})
CLAIMS = HANDLES - {"clock.ticked"}   # a tick is applied idempotently: clocks only move on


@dataclass(frozen=True)
class TieringSection:
    """The parts of a shop's configuration tiering runs on."""

    levels: LevelPolicy | None
    customers: CustomerAbc
    rfm: RfmSettings
    zone: str


class TieringHandler:
    """Keeps each member's figures, level and customer ABC class current."""

    name = NAME

    def __init__(self, topics: Topics, *, abc_debounce: timedelta = timedelta(seconds=5),
                 tick_seconds: float = 1.0) -> None:
        self.topics: tuple[str, ...] = (topics.orders,)
        self.member_events = topics.member_events
        self.abc_debounce = abc_debounce
        self.contract = Contract(
            read=read_inbound,
            handles=HANDLES,
            claims=CLAIMS, route=topics.home,
            timed=TimedWork(tick_seconds, self.tick, self.tick_again, self.tick_reset))
        self._abc_cost: dict[str, tuple[datetime, float]] = {}  # shop -> (last run, seconds)
        # Shops claimed for a recompute: (shop, as of, settings, the members noted changed).
        self._claimed: deque[tuple[str, datetime, CustomerAbc, list[str]]] = deque()
        self._applying: deque[_Recompute] = deque()
        self._rfm_cost: dict[str, tuple[datetime, float]] = {}
        # Shops claimed for an RFM recompute: (shop, as of, settings, members handed on).
        self._rfm_claimed: deque[tuple[str, datetime, TieringSection, list[str]]] = deque()
        self._rfm_applying: deque[_RfmRecompute] = deque()
        self._predicting: deque[tuple[str, datetime, TieringSection]] = deque()
        self._predict_cost: dict[str, tuple[datetime, float]] = {}
        self._configs = ConfigCache()

    def _sections(self, conn: Connection, shops: set[str], *, share_lock: bool = False
                  ) -> dict[str, tuple[int, TieringSection]]:
        return {s: (v, TieringSection(c.levels, c.abc.customers, c.rfm, c.timezone))
                for s, (v, c) in self._configs.get(conn, shops, share_lock=share_lock).items()}

    def apply(self, conn: Connection, batch: Batch) -> list[Output]:
        orders_events = [r for r in batch.records if not isinstance(r.event, ClockTicked)]
        shops = {r.event.shop_id for r in orders_events}
        # First, a share lock on the shops' configurations: a configuration being applied waits
        # for this batch (and this batch for it), so a new level policy is evaluated over
        # history that includes the batch, and the batch never mixes two versions.
        sections = self._sections(conn, shops, share_lock=True)
        events = [r.event for r in orders_events]
        keys = {(e.shop_id, e.payload.order_id) for e in events
                if isinstance(e, OrderCompleted | OrderRefunded | OrderPlaced)}
        stored = store.lock_orders(conn, keys)
        changed, deltas, steps = domain.apply_steps(stored, events)
        before, standing = store.lock_members(conn, {s.member for s in steps} | set(deltas))
        after = {k: before.get(k, MemberFigures()).plus(d) for k, d in deltas.items()}
        store.save(conn, changed.values(), [e for e in events if isinstance(e, OrderPlaced)],
                   after)
        abc_store.note_changed(conn, sorted(k for k, d in deltas.items()
                                            if d.completed_trades or d.refunded_cents))

        # The clock of every partition read, after each record (ticks move it too).
        parts = {(r.delivery.topic, r.delivery.partition) for r in batch.records}
        clocks = stream_clocks.lock_stream_clocks(conn, NAME, parts)
        moved: dict[tuple[str, int], datetime] = {}
        clock_after: dict[str, datetime] = {}   # event id -> its partition's clock after it
        newest: dict[str, datetime] = {}
        for r in batch.records:
            where = (r.delivery.topic, r.delivery.partition)
            t = r.event.occurred_at
            if where not in clocks or t > clocks[where]:
                clocks[where] = moved[where] = t
            clock_after[r.event.event_id] = clocks[where]
            shop_id = getattr(r.event, "shop_id", None)   # ticks belong to no shop
            if shop_id is not None and (shop_id not in newest or t > newest[shop_id]):
                newest[shop_id] = t
        stream_clocks.save_stream_clocks(conn, NAME, moved)
        abc_store.touch(conn, {s: newest[s] for s in shops})

        skus = self._skus(conn, steps)
        levels = self._upgrade(conn, deltas, sections, after, standing)
        outputs: list[Output] = []
        running = dict(before)
        for i, step in enumerate(steps):
            figures = running.get(step.member, MemberFigures()).plus(step.delta)
            running[step.member] = figures
            e = step.event
            outputs.append(output(self.member_events, FiguresChanged(
                event_id=f"figures:{e.event_id}:{step.member[1]}", shop_id=step.member[0],
                member_id=step.member[1], occurred_at=e.occurred_at,
                payload=FiguresPayload.of(
                    figures.completed_trades, figures.spend_cents, figures.gross_cents,
                    figures.refunded_cents, figures.first_purchase_at, figures.last_purchase_at,
                    figures.region, cause_event_id=e.event_id,
                    skus_bought=sorted(skus.get(i, ())), clock=clock_after[e.event_id]))))
            outputs += levels.get(e.event_id, [])
        for (topic, partition), at in sorted(moved.items()):
            outputs.append(output(self.member_events, StreamClock(
                event_id=f"clock:{topic}:{partition}:{iso(at)}",
                payload=ClockPayload(partition=partition, clock=at)), partition=partition))
        return outputs

    @staticmethod
    def _skus(conn: Connection, steps: list[Step]) -> dict[int, frozenset[str]]:
        """Items bought per step: its own, or those of the stored placement of the order it
        completed (looked up in one query)."""
        wanted = {s.completed for s in steps if s.skus is None and s.completed is not None}
        found = store.order_skus(conn, wanted)
        out: dict[int, frozenset[str]] = {}
        for i, s in enumerate(steps):
            items = s.skus if s.skus is not None else frozenset(
                found.get(s.completed, ()) if s.completed else ())
            if items:
                out[i] = items
        return out

    def _upgrade(self, conn: Connection, deltas: dict[MemberKey, MemberDelta],
                 sections: dict[str, tuple[int, TieringSection]],
                 after: dict[MemberKey, MemberFigures], standing: dict[MemberKey, store.Standing]
                 ) -> dict[str, list[Output]]:
        """Upgrade members whose new completed trades meet a higher level (upgrade only).

        The facts are the figures after the batch and the standing locked with them; only
        ladders with recency windows (`within_days`) ask the order ledger.
        Returns the `member.level_changed` messages by the id of the trade that caused them."""
        by_shop: dict[str, dict[str, MemberDelta]] = defaultdict(dict)
        for (shop_id, member_id), delta in deltas.items():
            if delta.completions:
                by_shop[shop_id][member_id] = delta
        changes: list[LevelChange] = []
        outputs: dict[str, list[Output]] = defaultdict(list)
        for shop_id in sorted(by_shop):
            version, section = sections.get(shop_id, (0, None))
            policy = section.levels if section else None
            if policy is None or not policy.auto_upgrade:
                continue
            members = by_shop[shop_id]
            if policy.windows():
                facts = level_store.load_facts(conn, shop_id, policy, sorted(members))
            else:
                facts = {}
                for member_id in members:
                    level, blacklisted = standing.get((shop_id, member_id), (0, False))
                    figures = after[(shop_id, member_id)]
                    facts[member_id] = LevelFacts(level, blacklisted, figures.completed_trades,
                                                  figures.gross_cents)
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
                    outputs[cause.event_id].append(level_store.level_changed_event(
                        self.member_events, change, policy, now.blacklisted,
                        f"level:{shop_id}:{member_id}:{cause.event_id}:{level}"))
                    old = level
        level_store.record_changes(conn, changes)
        return outputs

    # --- timed work: outbox relay, customer ABC recomputes ------------------------------------

    def tick(self, conn: Connection, now: datetime) -> list[Output]:
        """One step of timed work, in a transaction of its own (`again` says whether another
        follows at once): apply the next part of a planned recompute, or plan the next claimed
        shop, or relay the outbox and claim the shops due a recompute."""
        if self._applying:
            job = self._applying[0]
            if job.after is None:
                # A step of its own, without outputs to wait for: the shop's row, which every
                # batch of the shop updates, is locked only for this short transaction.
                abc_store.finish(conn, job.run)
                self._abc_cost[job.run.shop_id] = (now, time.perf_counter() - job.started)
                self._applying.popleft()
                return []
            applied, after = abc_store.apply_part(conn, job.run, job.after, ABC_PART)
            job.after = after  # a failed transaction drops the job (`tick_reset`)
            return self._abc_changed(job, applied)
        if self._claimed:
            shop_id, as_of, settings, noted = self._claimed.popleft()
            started = time.perf_counter()
            run = abc_store.plan(conn, shop_id, as_of, settings, noted)
            self._applying.append(_Recompute(run, settings, started))
            return []
        if self._rfm_applying:
            rfm_job = self._rfm_applying[0]
            if rfm_job.after is None:
                scores_store.finish_rfm(conn, rfm_job.run)
                self._rfm_cost[rfm_job.run.shop_id] = (now, time.perf_counter() - rfm_job.started)
                self._rfm_applying.popleft()
                return []
            changed, rfm_job.after = scores_store.apply_rfm_part(conn, rfm_job.run, rfm_job.after,
                                                                 RFM_PART)
            return self._rfm_changed(rfm_job.run, changed)
        if self._rfm_claimed:
            shop_id, as_of, rfm_section, members = self._rfm_claimed.popleft()
            started = time.perf_counter()
            rfm_run = scores_store.plan_rfm(conn, shop_id, rfm_section.zone, as_of,
                                            rfm_section.rfm, members)
            self._rfm_applying.append(_RfmRecompute(rfm_run, started))
            return []
        if self._predicting:
            shop_id, as_of, section = self._predicting.popleft()
            started = time.perf_counter()
            scores_store.predict(conn, shop_id, section.zone, as_of, section.rfm)
            self._predict_cost[shop_id] = (now, time.perf_counter() - started)
            return []
        outputs = take_pending(conn, NAME)
        clock = stream_clocks.pipeline_clock(conn)
        if clock is None:
            return outputs
        due = []
        for shop_id in abc_store.due_shops(conn, now, self.abc_debounce, clock):
            if _rested(self._abc_cost.get(shop_id), now):
                due.append(shop_id)
        claimed = abc_store.claim(conn, due, now, clock) if due else []
        taken = abc_store.take_noted(conn, claimed)
        rfm_due = [s for s in scores_store.due_rfm(conn, now, self.abc_debounce, clock)
                   if _rested(self._rfm_cost.get(s), now)]
        rfm_claimed = scores_store.claim_rfm(conn, rfm_due, now, clock) if rfm_due else []
        handed = scores_store.take_pending(conn, rfm_claimed)
        predicted = [s for s in scores_store.due_predicted(conn, now, clock)
                     if _rested(self._predict_cost.get(s), now)]
        predicted = scores_store.claim_predicted(conn, predicted, now, clock) if predicted else []
        sections = self._sections(conn, set(claimed) | set(rfm_claimed) | set(predicted))
        for shop_id in claimed:
            entry = sections.get(shop_id)
            # The period ends at the pipeline clock, not the wall clock: a replay of last year
            # classifies members as live processing did then.
            self._claimed.append((shop_id, clock, entry[1].customers if entry else CustomerAbc(),
                                  taken[shop_id]))
        def of(shop_id: str) -> TieringSection:
            return sections[shop_id][1] if shop_id in sections else _UNCONFIGURED

        self._rfm_claimed.extend((s, clock, of(s), handed[s]) for s in rfm_claimed)
        self._predicting.extend((s, clock, of(s)) for s in predicted)
        return outputs

    def tick_again(self) -> bool:
        return bool(self._claimed or self._applying or self._rfm_claimed or self._rfm_applying
                    or self._predicting)

    def tick_reset(self) -> None:
        """A step failed: drop the plans (the claimed shops stay due and are taken again; a
        refit claimed is taken again after its lease)."""
        for queue in (self._claimed, self._applying, self._rfm_claimed, self._rfm_applying,
                      self._predicting):
            queue.clear()

    def _rfm_changed(self, run: scores_store.RfmRun, changes: list[scores_store.RfmChange]
                     ) -> list[Output]:
        stamp = iso(run.as_of)
        return [
            output(self.member_events, RfmChanged(
                event_id=f"rfm:{run.shop_id}:{c.member_id}:{stamp}:{c.new or '-'}:"
                         f"{''.join(map(str, c.scores or ()))}",
                shop_id=run.shop_id, member_id=c.member_id, occurred_at=run.as_of,
                payload=RfmPayload(
                    old_segment=c.old, new_segment=c.new,
                    r_score=c.scores[0] if c.scores else None,
                    f_score=c.scores[1] if c.scores else None,
                    m_score=c.scores[2] if c.scores else None,
                    as_of=run.as_of, period_days=run.period_days)))
            for c in changes
        ]

    def _abc_changed(self, job: _Recompute, changes: list[abc_store.ClassChange]
                     ) -> list[Output]:
        as_of, shop_id = job.run.as_of, job.run.shop_id
        stamp = iso(as_of)
        return [
            output(self.member_events, AbcChanged(
                event_id=f"abc:{shop_id}:{c.member_id}:{stamp}:{c.new or '-'}", shop_id=shop_id,
                member_id=c.member_id, occurred_at=as_of,
                payload=AbcPayload(old_class=c.old, new_class=c.new,
                                   as_of=as_of, period_days=job.settings.period_days)))
            for c in changes
        ]


def _rested(last: tuple[datetime, float] | None, now: datetime) -> bool:
    """Whether a shop whose last recompute ran at `last[0]` for `last[1]` seconds may have
    another: recomputes of a large shop are kept to a fifth of the time."""
    return last is None or now >= last[0] + timedelta(seconds=ABC_MAX_SHARE * last[1])


_UNCONFIGURED = TieringSection(None, CustomerAbc(), RfmSettings(), "UTC")


@dataclass
class _RfmRecompute:
    run: scores_store.RfmRun
    started: float
    after: str | None = ""


@dataclass
class _Recompute:
    """A customer ABC recompute planned and being applied, a part per transaction."""

    run: abc_store.AbcRun
    settings: CustomerAbc
    started: float
    after: str | None = ""   # the member id the next part starts after; None: all applied
