"""Tagging figures (printed, never asserted).

    python benchmarks/tags.py [--members 1000000] [--rules 100] [--events 200000] [--parts 123]

1. rule evaluations: a shop's 100 `when` rules (mixed: spend, trades, aov, region, level,
   class, days since the last purchase) evaluated in Python (`RuleSet.holding_rules`, as the
   worker does per member) over N synthetic members;
2. one rule re-evaluated over N members stored in PostgreSQL, as `config apply` does when an
   operator changes it: the SQL selection alone, the preview, and the apply (selection, tag
   holdings, `tag_changes`, one outbox event per member whose tags changed), first giving the
   tag to every member it holds for, then narrowing the rule;
3. the tagging worker's batch path without Kafka: a year of `member.figures_changed`
   deliveries (each one more completed trade of a member drawn with a long tail from 100k, on
   the member-events partition its key hashes to; after every 1,000, a `stream.clock` to each
   partition, as tiering publishes them) read with the worker's reader (`contract.read`) and
   applied with `TaggingHandler.apply`, 5,000 deliveries per transaction, with the 100 rules
   configured (and with 10).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from workload import fresh_database, postgres

from memberflow.configure import apply_shop_config
from services.tagging import operations
from services.tagging.domain import RuleSet
from services.tagging.handlers import TaggingHandler
from services.tagging.rules import MemberFacts
from shared.consumer import Batch, Delivery, Record
from shared.outbound import (
    ClockPayload,
    Figures,
    FiguresChanged,
    FiguresPayload,
    StreamClock,
    iso,
    output,
)
from shared.shopconfig import ShopConfig
from shared.topics import Topics

SHOP = "bench-shop"
TOPICS = Topics("bench.")
CLOCK = datetime(2026, 11, 1, tzinfo=UTC)
REGIONS = ("Shanghai", "Zhejiang", "Beijing", "Guangdong", "Sichuan", None)
PARTITIONS = 4


def rules(n: int) -> list[str]:
    """N conditions of the kinds operators write, with varied bars."""
    rng = random.Random(5)
    templates = [
        lambda: f"spend >= {rng.randrange(100, 5000)} and trades >= {rng.randrange(1, 8)}",
        lambda: f"days_since_last_purchase >= {rng.randrange(30, 365)}",
        lambda: f"aov >= {rng.randrange(50, 800)}.50 or level >= {rng.randrange(1, 4)}",
        lambda: f'region in ["Shanghai", "Zhejiang"] and spend > {rng.randrange(0, 900)}',
        lambda: f'abc in ["A", "B"] and not (days_since_last_purchase > {rng.randrange(30, 90)})',
        lambda: f"trades == 1 and first_purchase >= 2026-0{rng.randrange(1, 9)}-01",
    ]
    return [templates[i % len(templates)]() for i in range(n)]


def config(conditions: list[str]) -> ShopConfig:
    return ShopConfig.model_validate({
        "shop_id": SHOP, "name": "Benchmark shop", "timezone": "UTC",
        "tagging": {"tags": [{"id": f"t{i:03d}", "name": f"Tag {i}"}
                             for i in range(len(conditions))],
                    "rules": [{"id": f"r{i:03d}", "tag": f"t{i:03d}", "when": c}
                              for i, c in enumerate(conditions)]}})


def facts(rng: random.Random) -> MemberFacts:
    trades = rng.choice((0, 1, 1, 1, 2, 2, 3, 5, 8, 13))
    if not trades:
        return MemberFacts(region=rng.choice(REGIONS))
    gross = trades * rng.randrange(2_000, 80_000)
    refunded = gross // 10 if rng.random() < 0.1 else 0
    last = CLOCK - timedelta(seconds=rng.randrange(400 * 86400))
    first = last - timedelta(seconds=rng.randrange(200 * 86400))
    return MemberFacts(trades, gross - refunded, gross, refunded, first, last,
                       rng.choice(REGIONS), rng.choice((0, 0, 1, 1, 2, 3, 4)),
                       rng.choice(("A", "B", "C", "C", "C", None)))


def timed(label: str, fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    print(f"   {label:<58} {seconds:8.2f} s")
    return result, seconds


def evaluation(members: int, n_rules: int) -> None:
    print(f"1. rule evaluation in Python: {n_rules} rules x {members:,} members")
    rng = random.Random(7)
    population = [facts(rng) for _ in range(members)]
    ruleset = RuleSet.from_config(1, config(rules(n_rules)))
    held, seconds = timed("RuleSet.holding_rules over every member", lambda: sum(
        len(ruleset.holding_rules(f, CLOCK)) for f in population))
    print(f"   {members * n_rules / seconds:,.0f} rule evaluations/s "
          f"({members / seconds:,.0f} members/s with all {n_rules} rules); "
          f"{held:,} tags held ({held / members:.1f} per member)")
    one = ruleset.when[0][2]
    _, seconds = timed(f"one rule ({one.text}) over every member",
                       lambda: sum(one.holds(f, CLOCK) for f in population))
    print(f"   {members / seconds:,.0f} evaluations/s of one rule")


def load_members(engine: Any, members: int) -> None:
    rng = random.Random(11)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            with cur.copy("COPY tag_members (shop_id, member_id, partition, completed_trades, "
                          "spend_cents, gross_cents, refunded_cents, first_purchase_at, "
                          "last_purchase_at, region, level, abc_class) FROM STDIN") as copy:
                for i in range(members):
                    f = facts(rng)
                    copy.write_row((SHOP, f"m{i:07d}", i % PARTITIONS, f.completed_trades,
                                    f.spend_cents,
                                    f.gross_cents, f.refunded_cents, f.first_purchase_at,
                                    f.last_purchase_at, f.region, f.level, f.abc_class))
            for p in range(PARTITIONS):
                cur.execute("INSERT INTO tag_clocks (partition, watermark) VALUES (%s, %s)",
                            (p, CLOCK))
            # Members the operator commands select from: tiering's table.
            cur.execute("INSERT INTO members (shop_id, member_id) "
                        "SELECT shop_id, member_id FROM tag_members")
            cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def reevaluation(root: Path, members: int) -> None:
    print(f"\n2. one rule re-evaluated over {members:,} members in PostgreSQL")
    with postgres(root) as db:
        _, engine = fresh_database(db, "bench_tags")
        try:
            _, seconds = timed("load members (COPY)", lambda: load_members(engine, members))
            wide = config(["spend >= 500 and trades >= 3"])
            narrow = config(["spend >= 2000 and trades >= 3"])
            rule = RuleSet.from_config(1, wide).when[0][2]
            with engine.connect() as conn:
                matched, _ = timed("SQL selection alone (rule_members)",
                                   lambda: len(operations.rule_members(conn, SHOP, rule)))
            with engine.begin() as conn:
                result, seconds = timed("apply: tag given to every member it holds for",
                                        lambda: apply_shop_config(conn, TOPICS,
                                                                  wide, "bench", CLOCK).tags)
            print(f"   {matched:,} members match; {result[0].gained:,} gained the tag "
                  f"({result[0].gained / seconds:,.0f} tag changes/s incl. outbox)")
            with engine.connect() as conn:
                timed("preview of the narrower rule", lambda: operations.preview(conn, narrow))
            with engine.begin() as conn:
                result, seconds = timed("apply: the narrower rule",
                                        lambda: apply_shop_config(conn, TOPICS,
                                                                  narrow, "bench", CLOCK).tags)
            print(f"   {result[0].lost:,} lost the tag, {result[0].after:,} keep it")
        finally:
            engine.dispose()


def worker(root: Path, events: int, n_rules: int) -> None:
    print(f"\n3. tagging worker batches (no Kafka): {events:,} member.figures_changed, "
          f"{n_rules} rules")
    rng = random.Random(13)
    partitioner = DefaultPartitioner()
    partitions = list(range(PARTITIONS))
    offsets = [0] * PARTITIONS
    deliveries = []

    def deliver(partition: int, key: bytes | None, value: bytes) -> None:
        deliveries.append(Delivery(TOPICS.member_events, partition, offsets[partition], key,
                                   value, 0))
        offsets[partition] += 1

    members: dict[str, MemberFacts] = {}
    start = CLOCK - timedelta(days=365)
    for i in range(events):
        # A member's next trade: figures grow one completed order at a time, as in a shop.
        member = f"m{int(100_000 * rng.random() ** 2):06d}"
        at = start + timedelta(seconds=i * 365 * 86400 // events)
        f = members.get(member) or MemberFacts(region=rng.choice(REGIONS))
        amount = rng.randrange(2_000, 80_000)
        f = members[member] = replace(
            f, completed_trades=f.completed_trades + 1, spend_cents=f.spend_cents + amount,
            gross_cents=f.gross_cents + amount, first_purchase_at=f.first_purchase_at or at,
            last_purchase_at=at)
        figures = Figures.of(f.completed_trades, f.spend_cents, f.gross_cents, f.refunded_cents,
                             f.first_purchase_at, f.last_purchase_at, f.region)
        out = output(TOPICS.member_events, FiguresChanged(
            event_id=f"figures:f{i}:{member}", shop_id=SHOP, member_id=member, occurred_at=at,
            payload=FiguresPayload(**figures.fields(), cause_event_id=f"f{i}", clock=at)))
        assert out.key is not None
        deliver(partitioner(out.key, partitions, partitions), out.key, out.value)
        if i % 1000 == 999:  # tiering's clock after each of its batches, on every partition
            for p in partitions:
                clock = output(TOPICS.member_events, StreamClock(
                    event_id=f"clock:{TOPICS.orders}:{p}:{iso(at)}",
                    payload=ClockPayload(partition=p, clock=at)), partition=p)
                deliver(p, None, clock.value)
    with postgres(root) as db:
        _, engine = fresh_database(db, "bench_tag_worker")
        try:
            with engine.begin() as conn:
                apply_shop_config(conn, TOPICS, config(rules(n_rules)), "bench", CLOCK)
            handler = TaggingHandler(TOPICS)
            read = handler.contract.read

            def feed() -> int:
                published = 0
                for start in range(0, len(deliveries), 5000):
                    chunk = deliveries[start:start + 5000]
                    records = []
                    for d in chunk:  # as BatchWorker.process reads them
                        decoded = read(d.value)
                        if decoded is not None:
                            records.append(Record(d, *decoded))
                    with engine.begin() as conn:
                        published += len(handler.apply(conn, Batch(records, chunk)))
                return published

            published, seconds = timed("read + TaggingHandler.apply, 5,000 deliveries a batch",
                                       feed)
            with engine.connect() as conn:
                changes = conn.exec_driver_sql("SELECT count(*) FROM tag_changes").scalar_one()
            print(f"   {len(deliveries) / seconds:,.0f} member events/s; {changes:,} tag changes "
                  f"({changes / seconds:,.0f}/s), {published:,} member.tags_changed published")
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--parts", default="123", help="which parts to run, e.g. 13")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memberflow-bench-tags-") as tmp:
        if "1" in args.parts:
            evaluation(args.members, args.rules)
        if "2" in args.parts:
            reevaluation(Path(tmp) / "a", args.members)
        if "3" in args.parts:
            for n in sorted({10, args.rules}):  # a typical shop's handful, and the 100 above
                worker(Path(tmp) / f"b{n}", args.events, n)


if __name__ == "__main__":
    main()
