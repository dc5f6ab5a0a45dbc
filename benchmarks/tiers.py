"""Customer ABC recomputes, level evaluation throughput and policy re-evaluation on embedded
PostgreSQL (figures printed, never asserted).

    python benchmarks/tiers.py [--members 100000,1000000] [--events 200000] [--quick] [--explain]

Every part runs on a fresh, migrated database of one embedded PostgreSQL 16 server (pgserver
wheel); no broker is needed.

  1. customer ABC: per size, member rows and their completed orders are bulk-loaded with
     INSERT ... SELECT generate_series (lognormal order amounts, one order per member plus ~1.5
     more per member skewed toward loyal members, ~8% partly refunded and ~1% fully, completed
     over 400 days so some fall outside the 365-day period), then VACUUM ANALYZE. Timed, each in
     its own transaction including COMMIT: `abc_store.recompute` a first time (every member gets
     a class: a full ranking), again after ~1% of members completed one more order (noted in
     `abc_pending` as the tiering worker notes them: an incremental recompute), and once more
     with nothing changed; and the read-only `abc_store.ranking`.
  2. level evaluation: order events (benchmarks/workload.py's stream) go through
     `TieringHandler.apply` in batches of --batch events, each in one transaction after
     `claim_event_ids`, as `BatchWorker.process` does (no Kafka: no positions, no decode, no
     publishing; the records are built beforehand, each on the orders partition its key
     hashes to), once for a shop with a 4-level marketplace ladder (amount basis, applied with
     `memberflow.configure.apply_shop_config`) and once for a shop without one.
  3. policy re-evaluation over the members of part 1: applying the ladder with
     `memberflow.configure.apply_shop_config` (which runs `operations.reevaluate`: every member
     who meets a level moves up, with a `level_changes` row and an outbox event each);
     `reevaluate` again with nothing left to move; and `reevaluate` with a custom ladder of
     365-day windows (window functions over every order; rolled back).

--explain prints EXPLAIN (ANALYZE, BUFFERS) of the statements `abc_store.recompute` runs (on the
largest size, nothing left to change) and of the windowed levels query.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import Connection, Engine, event
from workload import expected_totals, fresh_database, order_events, postgres

from memberflow.configure import apply_shop_config
from services.tiering import abc_store, level_store, operations
from services.tiering.handlers import TieringHandler
from services.tiering.policy import CustomerAbc, LevelPolicy
from shared.consumer import Batch, Delivery, Record, _settle_garbage_collector, claim_event_ids
from shared.embedded import EmbeddedDatabase
from shared.events import EventModel, digest, validate
from shared.shopconfig import ShopConfig
from shared.topics import Topics

SHOP = "bench-shop"        # the shop of workload.order_events, reused for every part
WARM_UP_SHOP = "bench-warm-up"
END = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)  # the latest completion is just before this
TOPICS = Topics()
LADDER = [{"name": "regular", "threshold": "100.00", "discount": "0.98"},
          {"name": "senior", "threshold": "500.00", "discount": "0.95"},
          {"name": "vip", "threshold": "2000.00", "discount": "0.90"},
          {"name": "supreme", "threshold": "5000.00", "discount": "0.85"}]
WINDOWED = LevelPolicy.model_validate({"preset": "custom", "ladder": [
    {"name": "regular", "min_amount": "100.00", "discount": "0.98"},
    {"name": "active", "min_amount": "500.00", "min_trades": 2, "within_days": 365,
     "discount": "0.95"},
    {"name": "vip", "min_amount": "2000.00", "min_trades": 3, "within_days": 365,
     "discount": "0.90"},
    {"name": "supreme", "min_amount": "5000.00", "min_trades": 5, "within_days": 180,
     "discount": "0.85"}]})

T = TypeVar("T")


def config(shop_id: str, levels: bool) -> ShopConfig:
    doc: dict[str, Any] = {"shop_id": shop_id, "name": "Benchmark shop"}
    if levels:
        doc["levels"] = {"basis": "amount", "ladder": LADDER}
    return ShopConfig.model_validate(doc)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def in_transaction(engine: Engine, fn: Callable[[Connection], T],
                   rollback: bool = False) -> tuple[T, float]:
    """Run fn in one transaction; seconds include the COMMIT (or ROLLBACK)."""
    started = time.perf_counter()
    with engine.connect() as conn:
        tx = conn.begin()
        try:
            result = fn(conn)
        except BaseException:
            tx.rollback()
            raise
        if rollback:
            tx.rollback()
        else:
            tx.commit()
    return result, time.perf_counter() - started


# ------------------------------------------------------------------------- 1. bulk-loaded shop

# One completed order per member, then 1.5 per member more drawn toward low member numbers (the
# loyal ones: power(random(), 3) puts ~22% of them on the first 1% of members). Amounts are
# lognormal around 90.00 (Box-Muller). ~1% of orders are refunded in full, ~7% in part.
_LOAD_ORDERS = """
INSERT INTO member_orders (shop_id, order_id, member_id, amount_cents, completed_at,
                           completed_event_id, refund_requested_cents)
SELECT %(shop)s, 'o' || lpad(g::text, 9, '0'), 'm' || lpad(mem::text, 8, '0'), amount,
       %(end)s - interval '1 second' - random() * interval '400 days', 'ev-c' || g,
       CASE WHEN r < 0.01 THEN amount WHEN r < 0.08 THEN floor(amount * random())::bigint
            ELSE 0 END
FROM (SELECT g,
             CASE WHEN g <= %(n)s THEN g ELSE 1 + floor(%(n)s * power(random(), 3))::int END
               AS mem,
             greatest(100, round(exp(ln(9000) + 1.1 * sqrt(-2 * ln(1 - random()))
                                     * cos(2 * pi() * random()))))::bigint AS amount,
             random() AS r
      FROM generate_series(1, %(orders)s) AS g) s
"""

# The members' figures, as the tiering worker would have summed them from those orders.
_LOAD_MEMBERS = """
INSERT INTO members (shop_id, member_id, completed_trades, gross_cents, refunded_cents,
                     spend_cents, first_purchase_at, last_purchase_at, region, region_at)
SELECT shop_id, member_id, count(*), sum(amount_cents),
       sum(least(refund_requested_cents, amount_cents)),
       sum(amount_cents - least(refund_requested_cents, amount_cents)),
       min(completed_at), max(completed_at),
       (ARRAY['Shanghai', 'Beijing', 'Shenzhen', 'Hangzhou', 'Chengdu', 'Wuhan'])
         [1 + floor(random() * 6)::int], max(completed_at)
FROM member_orders WHERE shop_id = %(shop)s GROUP BY shop_id, member_id
"""

# ~1% of members complete one more order inside the period (the watermark does not move).
_ONE_PERCENT_MORE = """
WITH picked AS (
  SELECT member_id, greatest(100, round(exp(ln(9000) + 1.1 * sqrt(-2 * ln(1 - random()))
                                          * cos(2 * pi() * random()))))::bigint AS amount,
         %(as_of)s - random() * interval '30 days' AS at
  FROM members WHERE shop_id = %(shop)s AND random() < 0.01),
new AS (
  INSERT INTO member_orders (shop_id, order_id, member_id, amount_cents, completed_at,
                             completed_event_id, refund_requested_cents)
  SELECT %(shop)s, %(tag)s || member_id, member_id, amount, at, 'ev-' || %(tag)s || member_id, 0
  FROM picked
  RETURNING member_id, amount_cents, completed_at),
pending AS (  -- what the tiering worker notes for the next recompute
  INSERT INTO abc_pending (shop_id, member_id) SELECT %(shop)s, member_id FROM new
  ON CONFLICT DO NOTHING)
UPDATE members m SET completed_trades = m.completed_trades + 1,
  gross_cents = m.gross_cents + new.amount_cents, spend_cents = m.spend_cents + new.amount_cents,
  last_purchase_at = greatest(m.last_purchase_at, new.completed_at), updated_at = now()
FROM new WHERE m.shop_id = %(shop)s AND m.member_id = new.member_id
"""


@dataclass
class Loaded:
    members: int
    orders: int
    in_period: int       # orders completed within the 365-day period
    as_of: datetime
    load_s: float
    vacuum_s: float


def load_shop(engine: Engine, members: int) -> Loaded:
    def load(conn: Connection) -> None:
        conn.exec_driver_sql("SELECT setseed(0.2026)")
        conn.exec_driver_sql(_LOAD_ORDERS, {"shop": SHOP, "end": END, "n": members,
                                            "orders": members * 5 // 2})
        conn.exec_driver_sql(_LOAD_MEMBERS, {"shop": SHOP})

    _, load_s = in_transaction(engine, load)
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE members")
        conn.exec_driver_sql("VACUUM ANALYZE member_orders")
    vacuum_s = time.perf_counter() - started
    with engine.begin() as conn:
        as_of = conn.exec_driver_sql(
            "SELECT max(completed_at) FROM member_orders WHERE shop_id = %s", (SHOP,)
        ).scalar_one()
        conn.exec_driver_sql("INSERT INTO abc_shops (shop_id, watermark, dirty) "
                             "VALUES (%s, %s, true)", (SHOP, as_of))
        n_members, n_orders, in_period = conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM members WHERE shop_id = %(s)s), count(*), "
            "count(*) FILTER (WHERE completed_at > %(a)s - interval '365 days') "
            "FROM member_orders WHERE shop_id = %(s)s", {"s": SHOP, "a": as_of}).one()
    return Loaded(int(n_members), int(n_orders), int(in_period), as_of, load_s, vacuum_s)


@dataclass
class AbcFigures:
    seconds: float
    ranked: int
    zero_spenders: int
    changes: int
    by_change: dict[str, int] = field(default_factory=dict)  # "old->new" -> members


def recompute(engine: Engine, as_of: datetime) -> AbcFigures:
    (run, applied), seconds = in_transaction(
        engine, lambda conn: abc_store.recompute(conn, SHOP, as_of, CustomerAbc(),
                                                 datetime.now(UTC)))
    by_change: dict[str, int] = {}
    for c in applied:
        key = f"{c.old or '-'}->{c.new or '-'}"
        by_change[key] = by_change.get(key, 0) + 1
    return AbcFigures(seconds, run.ranked, run.zero_spenders, len(applied),
                      dict(sorted(by_change.items())))


@dataclass
class AbcSize:
    loaded: Loaded
    first: AbcFigures
    second: AbcFigures
    noop: AbcFigures
    changed_members: int      # members who completed one more order before the second run
    settled: AbcFigures       # another 1%, once vacuum has passed over the first run's rows
    ranking_s: float
    ranking_rows: int


def one_percent_more(engine: Engine, as_of: datetime, seed: float, tag: str) -> int:
    """~1% of the shop's members complete one more order in the 30 days before `as_of`."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"SELECT setseed({seed})")
        return int(conn.exec_driver_sql(_ONE_PERCENT_MORE, {
            "shop": SHOP, "as_of": as_of, "tag": tag}).rowcount)


def abc_part(engine: Engine, loaded: Loaded) -> AbcSize:
    first = recompute(engine, loaded.as_of)
    rows, ranking_s = in_transaction(
        engine, lambda conn: abc_store.ranking(conn, SHOP, loaded.as_of, CustomerAbc()))

    # Right after the first ranking: its rows are fresh, never vacuumed (the worst case).
    changed = one_percent_more(engine, loaded.as_of, 0.7, "x")
    second = recompute(engine, loaded.as_of)
    noop = recompute(engine, loaded.as_of)
    # What autovacuum does soon after a large recompute; then another 1% of members buy.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("members", "member_orders", "abc_period"):
            conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
    one_percent_more(engine, loaded.as_of, 0.3, "y")
    settled = recompute(engine, loaded.as_of)
    return AbcSize(loaded, first, second, noop, changed, settled, ranking_s, len(rows))


# ---------------------------------------------------------------------- 3. policy re-evaluation

@dataclass
class Reevaluation:
    members: int
    apply_s: float          # apply_shop_config with the ladder: reevaluate + record + outbox
    moved_up: int
    again_s: float          # reevaluate once more: nobody moves
    again_moved: int
    load_facts_s: float     # of which level_store.load_facts (the members' rows into Python)
    windowed_s: float       # reevaluate, custom 365/180-day ladder, all at 0 (rolled back)
    windowed_moved: int
    level_histogram: dict[int, int] = field(default_factory=dict)


def reevaluation_part(engine: Engine, members: int) -> Reevaluation:
    now = datetime.now(UTC)
    cfg = config(SHOP, levels=True)
    ladder = cfg.levels
    assert ladder is not None
    # First, while every member is still at level 0, so the windowed ladder moves them too.
    windowed, windowed_s = in_transaction(
        engine, lambda conn: operations.reevaluate(conn, TOPICS.member_events, SHOP, 1,
                                                   WINDOWED, now), rollback=True)
    result, apply_s = in_transaction(
        engine, lambda conn: apply_shop_config(conn, TOPICS, cfg, "bench", now))
    again, again_s = in_transaction(
        engine, lambda conn: operations.reevaluate(conn, TOPICS.member_events, SHOP,
                                                   result.version, ladder, now))
    _, load_facts_s = in_transaction(
        engine, lambda conn: level_store.load_facts(conn, SHOP, ladder), rollback=True)
    with engine.connect() as conn:
        histogram = {int(lv): int(n) for lv, n in conn.exec_driver_sql(
            "SELECT level, count(*) FROM members WHERE shop_id = %s GROUP BY level "
            "ORDER BY level", (SHOP,))}
    return Reevaluation(members, apply_s, result.moved_up, again_s, again, load_facts_s,
                        windowed_s, windowed, histogram)


# ----------------------------------------------------------------------------- --explain

@contextlib.contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The (statement, parameters) pairs the engine sends to the server meanwhile."""
    seen: list[tuple[str, Any]] = []

    def hook(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
             executemany: bool) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def explain(engine: Engine, label: str, run: Callable[[Connection], Any]) -> str:
    """EXPLAIN ANALYZE of every statement `run` sends, replayed in order, all rolled back."""
    with captured(engine) as statements:
        in_transaction(engine, run, rollback=True)
    out = []

    def replay(conn: Connection) -> None:
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith(("WITH", "SELECT", "UPDATE")):
                continue
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement,
                                        parameters).scalars().all()
            out.append(f"--- {label}: {' '.join(statement.split())[:160]} ...")
            out.extend(plan)

    in_transaction(engine, replay, rollback=True)
    return "\n".join(out)


# ------------------------------------------------------------------ 2. level evaluation rate

@dataclass
class Throughput:
    policy: bool
    events: int
    completed: int
    batches: int
    seconds: float
    level_changes: int           # member.level_changed outputs
    level_change_rows: int       # rows in level_changes
    members_match: bool          # members table equals the independent oracle

    @property
    def completed_per_s(self) -> float:
        return self.completed / self.seconds

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


PARTITIONS = 4


def records(events: list[EventModel]) -> list[Record]:
    """The events as the worker loop hands them to the handler: decoded, with their digests,
    each read from the orders partition its key hashes to (the stream clocks are per
    partition)."""
    partitioner = DefaultPartitioner()
    partitions = list(range(PARTITIONS))
    offsets = [0] * PARTITIONS
    out = []
    for e in events:
        value = e.to_json()
        p = partitioner(e.key, partitions, partitions)
        out.append(Record(Delivery(TOPICS.orders, p, offsets[p], e.key, value, 0), e, digest(e)))
        offsets[p] += 1
    return out


def _feed(engine: Engine, handler: TieringHandler, fed: list[Record],
          batch: int) -> tuple[int, int]:
    """BatchWorker.process without Kafka; returns (batches, level_changed outputs)."""
    batches = changes = 0
    for start in range(0, len(fed), batch):
        chunk = fed[start:start + batch]
        with engine.begin() as conn:
            new = claim_event_ids(conn, handler.name, chunk).fresh
            outputs = handler.apply(conn, Batch(new, [r.delivery for r in chunk]))
        batches += 1
        changes += sum(1 for o in outputs if o.type == "member.level_changed")
    return batches, changes


def level_throughput(db: EmbeddedDatabase, events: list[EventModel], warm_up: list[EventModel],
                     expected: Any, policy: bool, batch: int) -> Throughput:
    _, engine = fresh_database(db, f"tiers_levels_{'policy' if policy else 'none'}")
    try:
        if policy:
            with engine.begin() as conn:
                for shop in (SHOP, WARM_UP_SHOP):
                    apply_shop_config(conn, TOPICS, config(shop, levels=True), "bench",
                                      datetime.now(UTC))
        handler = TieringHandler(TOPICS)
        _feed(engine, handler, records(warm_up), batch)
        fed = records(events)
        (batches, changes), seconds = timed(lambda: _feed(engine, handler, fed, batch))
        with engine.connect() as conn:
            rows = int(conn.exec_driver_sql(
                "SELECT count(*) FROM level_changes WHERE shop_id = %s", (SHOP,)).scalar_one())
            got = conn.exec_driver_sql(
                "SELECT count(*), coalesce(sum(completed_trades), 0), "
                "coalesce(sum(spend_cents), 0) FROM members WHERE shop_id = %s",
                (SHOP,)).one()
        match = (int(got[0]), int(got[1]), int(got[2])) == (
            expected.members, expected.completed_trades, expected.spend_cents)
        completed = sum(1 for e in events if e.type == "order.completed")
        return Throughput(policy, len(events), completed, batches, seconds, changes, rows, match)
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------ report

def server_settings(db: EmbeddedDatabase) -> str:
    with psycopg.connect(db.url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        values = [f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"  # type: ignore[index]
                  for name in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather")]
    return f"PostgreSQL {version[0] if version else '?'} ({', '.join(values)})"


def report(abc: list[AbcSize], levels: list[Throughput], policies: list[Reevaluation],
           batch: int) -> str:
    out = ["", "1. customer ABC recompute (abc_store.recompute, one transaction each, incl. "
           "COMMIT; default settings: 365 days, A 5%, B 20%)",
           f"{'members':>10}{'orders':>11}{'in period':>11}{'load s':>8}{'vacuum s':>9}"
           f"{'ranked':>10}{'zero':>6}{'first s':>9}{'changes':>10}{'+1% s':>8}{'changes':>9}"
           f"{'no-op s':>9}{'ranking s':>10}{'+1% vacuumed s':>16}", "-" * 136]
    for a in abc:
        ld = a.loaded
        out.append(f"{ld.members:>10,}{ld.orders:>11,}{ld.in_period:>11,}{ld.load_s:>8.1f}"
                   f"{ld.vacuum_s:>9.1f}{a.first.ranked:>10,}{a.first.zero_spenders:>6,}"
                   f"{a.first.seconds:>9.2f}{a.first.changes:>10,}{a.second.seconds:>8.2f}"
                   f"{a.second.changes:>9,}{a.noop.seconds:>9.2f}{a.ranking_s:>10.2f}"
                   f"{a.settled.seconds:>16.2f}")
    for a in abc:
        out.append(f"   {a.loaded.members:,} members: first run {a.first.by_change}; "
                   f"{a.changed_members:,} members completed one more order, then "
                   f"{a.second.by_change}; no-op run changed {a.noop.changes}; ranking returned "
                   f"{a.ranking_rows:,} rows")
    if levels:
        base = next((t for t in levels if not t.policy), None)
        out += ["", f"2. level evaluation: TieringHandler.apply after claim_event_ids, "
                f"{batch:,} events per transaction, no Kafka",
                f"{'level policy':<28}{'events':>9}{'completed':>11}{'batches':>9}"
                f"{'seconds':>9}{'events/s':>10}{'completed/s':>13}{'lvl changes':>13}"
                f"{'x none':>8}", "-" * 110]
        for t in levels:
            ratio = (f"{base.completed_per_s / t.completed_per_s:.2f}"
                     if base and t.completed_per_s else "-")
            label = "4-level marketplace, amount" if t.policy else "none (no shop config)"
            out.append(f"{label:<28}{t.events:>9,}{t.completed:>11,}{t.batches:>9,}"
                       f"{t.seconds:>9.2f}{t.events_per_s:>10,.0f}{t.completed_per_s:>13,.0f}"
                       f"{t.level_changes:>13,}{ratio:>8}")
        for t in levels:
            state = "matches" if t.members_match else "DIFFERS from"
            out.append(f"   policy={'yes' if t.policy else 'no'}: members table {state} the "
                       f"oracle; level_changes rows {t.level_change_rows:,}")
        out.append("   x none = seconds with the policy / seconds without (completed/s ratio)")
    if policies:
        out += ["", "3. policy re-evaluation over the members of part 1 (one transaction each, "
                "incl. COMMIT)",
                f"{'members':>10}{'apply ladder s':>16}{'moved up':>10}{'again s':>9}"
                f"{'moved':>7}{'load_facts s':>14}{'windowed s':>12}{'would move':>12}",
                "-" * 90]
        for r in policies:
            out.append(f"{r.members:>10,}{r.apply_s:>16.2f}{r.moved_up:>10,}{r.again_s:>9.2f}"
                       f"{r.again_moved:>7,}{r.load_facts_s:>14.2f}{r.windowed_s:>12.2f}"
                       f"{r.windowed_moved:>12,}")
        for r in policies:
            out.append(f"   {r.members:,} members by level after the ladder: "
                       f"{r.level_histogram}")
        out.append("   apply ladder = apply_shop_config (reevaluate, level_changes "
                   "rows, outbox events); again = reevaluate with nothing to move; windowed = "
                   "reevaluate with a custom ladder of 365/180-day windows "
                   "from level 0, rolled back")
    return "\n".join(out)


def figures(abc: list[AbcSize], levels: list[Throughput],
            policies: list[Reevaluation]) -> dict[str, Any]:
    return {
        "abc": [{"members": a.loaded.members, "orders": a.loaded.orders,
                 "load_s": round(a.loaded.load_s, 2), "ranked": a.first.ranked,
                 "first_s": round(a.first.seconds, 3), "first_changes": a.first.changes,
                 "second_s": round(a.second.seconds, 3), "second_changes": a.second.changes,
                 "noop_s": round(a.noop.seconds, 3), "ranking_s": round(a.ranking_s, 3),
                 "settled_s": round(a.settled.seconds, 3), "settled_changes": a.settled.changes}
                for a in abc],
        "levels": [{"policy": t.policy, "events": t.events, "completed": t.completed,
                    "seconds": round(t.seconds, 3), "completed_per_s": round(t.completed_per_s),
                    "level_changes": t.level_changes} for t in levels],
        "reevaluate": [{k: round(v, 3) if isinstance(v, float) else v
                        for k, v in asdict(r).items() if k != "level_histogram"}
                       for r in policies],
    }


def run(args: argparse.Namespace, root: Path) -> None:
    sizes = [10_000] if args.quick else [int(s) for s in args.members.split(",") if s]
    n_events = 20_000 if args.quick else args.events
    abc: list[AbcSize] = []
    policies: list[Reevaluation] = []
    levels: list[Throughput] = []
    explained = ""
    with postgres(root) as db:
        print(f"{server_settings(db)}, {os.cpu_count()} CPUs", flush=True)
        for n in sizes:
            _, engine = fresh_database(db, f"tiers_{n}")
            try:
                print(f"1. loading {n:,} members ...", flush=True)
                loaded = load_shop(engine, n)
                print(f"   {loaded.orders:,} orders in {loaded.load_s:.1f}s, vacuum analyze "
                      f"{loaded.vacuum_s:.1f}s; customer ABC ...", flush=True)
                abc.append(abc_part(engine, loaded))
                if args.explain and n == max(sizes):
                    explained += explain(engine, "recompute (nothing to change)", partial(
                        abc_store.recompute, shop_id=SHOP, as_of=loaded.as_of,
                        settings=CustomerAbc(), now=datetime.now(UTC)))
                if "3" in args.parts:
                    print("3. policy re-evaluation ...", flush=True)
                    policies.append(reevaluation_part(engine, n))
                if args.explain and n == max(sizes):
                    explained += "\n" + explain(engine, "windowed levels", partial(
                        level_store.windowed_levels, shop_id=SHOP, policy=WINDOWED,
                        member_ids=None))
            finally:
                engine.dispose()
            with psycopg.connect(db.url, autocommit=True) as conn:  # free the disk
                conn.execute(f'DROP DATABASE IF EXISTS "tiers_{n}" WITH (FORCE)')
        if n_events and "2" in args.parts:
            print(f"2. level evaluation: generating and validating {n_events:,} order events "
                  f"over {args.level_members:,} members ...", flush=True)
            dicts = order_events(n_events, args.level_members)
            expected = expected_totals(dicts)
            events = [validate(d) for d in dicts]
            warm_up = [validate({**d, "event_id": f"w-{d['event_id']}", "shop_id": WARM_UP_SHOP})
                       for d in dicts[:500]]
            _settle_garbage_collector()  # as BatchWorker.run does in a worker process
            for policy in (False, True):
                print(f"   policy={'yes' if policy else 'no'} ...", flush=True)
                levels.append(level_throughput(db, events, warm_up, expected, policy,
                                               args.batch))
    if explained:
        print("\nEXPLAIN (ANALYZE, BUFFERS), largest size:\n" + explained)
    print(report(abc, levels, policies, args.batch))
    print("\nfigures as JSON:", json.dumps(figures(abc, levels, policies), default=str))


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the PostgreSQL server's cleanup


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--members", default="100000,1000000",
                        help="comma-separated shop sizes for parts 1 and 3")
    parser.add_argument("--events", type=int, default=200_000,
                        help="order events for part 2 (0 skips it)")
    parser.add_argument("--level-members", type=int, default=20_000,
                        help="members the part 2 order events are spread over")
    parser.add_argument("--batch", type=int, default=5000, help="events per transaction (part 2)")
    parser.add_argument("--parts", default="123",
                        help="which parts to run besides loading (default: 123)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 10,000 members and 20,000 events")
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN ANALYZE of the recompute and windowed levels SQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memberflow-tiers-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
