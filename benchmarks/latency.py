"""Latency at a fixed rate: from an event's time to the commit of the state it changed.

    python benchmarks/latency.py [--rate 2000] [--seconds 60] [--members 20000]

`memberflow up` runs HTTP ingest, and each worker in a process of its own, against an embedded
Tansu broker and PostgreSQL 16 (started with `track_commit_timestamp = on`). A shop with a level
ladder and a tag rule is configured; then storefront clients POST order and campaign events at a
fixed rate, each dated at the moment it is sent. Orders are placed and completed about half a
second apart; one in ten is preceded by a campaign message and a click, so its completion is
credited to the campaign.

Three kinds of state change are timed, each from the event time of the event that caused it to
the commit timestamp of the row that records it (PostgreSQL's own `pg_xact_commit_timestamp`):

- a level change (`level_changes`, caused by an order completion, through the tiering worker);
- a tag change (`tag_changes`, by a rule over the member's figures: tiering, then tagging);
- a credit (`campaign_orders`, the completion credited to a click, through the campaigns worker).

Customer ABC recomputes run meanwhile (the shop's trades change all the time). Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg
from workload import (
    batch_metrics,
    child_env,
    cpu_seconds,
    fresh_database,
    log_tail,
    postgres_cpu_by_session,
    start_process,
    stop_process,
    wait_until,
)

from memberflow.configure import apply_shop_config
from memberflow.runtime import WORKERS
from shared import kafka, tokens
from shared.config import Settings
from shared.embedded import EmbeddedBroker, EmbeddedDatabase, free_port
from shared.shopconfig import parse

SHOP = "latency-shop"
CONFIG = {
    "shop_id": SHOP, "name": "Latency shop", "timezone": "Asia/Shanghai",
    "levels": {"basis": "amount", "ladder": [
        {"name": "regular", "threshold": "100.00", "discount": "0.98"},
        {"name": "senior", "threshold": "500.00", "discount": "0.95"},
        {"name": "vip", "threshold": "2000.00", "discount": "0.90"},
        {"name": "supreme", "threshold": "5000.00", "discount": "0.85"}]},
    "tagging": {"tags": [{"id": "regular-buyer", "name": "回头客"}],
                "rules": [{"id": "r-regular", "tag": "regular-buyer",
                           "when": "spend >= 300 and trades >= 2"}]},
}
BATCH_EVERY_S = 0.01       # one request per client tick: rate * 10 ms events in it
COMPLETE_AFTER_S = 0.5     # an order is completed this long after it was placed
CLICK_BEFORE_S = 0.3       # a campaign click comes this long before the order


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Load:
    """The events still to send, each due at a moment relative to the start."""

    rate: int
    seconds: int
    members: int
    rng: random.Random = field(default_factory=lambda: random.Random(2026))
    ids: Any = field(default_factory=lambda: itertools.count(1))
    due: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def plan(self) -> None:
        """Orders, some with a campaign message and click first, until `rate * seconds`."""
        total = self.rate * self.seconds
        orders = 0
        while len(self.due) < total:
            orders += 1
            at = self.rng.uniform(CLICK_BEFORE_S, self.seconds - COMPLETE_AFTER_S)
            member = f"m{self.rng.randrange(self.members):06d}"
            order = f"o{orders:08d}"
            amount = f"{self.rng.randint(30, 600)}.{self.rng.randrange(100):02d}"
            if self.rng.random() < 0.1:
                message = f"msg-{orders}"
                self.due.append((at - CLICK_BEFORE_S, self._event(
                    member, "campaign.message_sent",
                    {"campaign_id": "flash-sale", "message_id": message, "channel": "sms"})))
                self.due.append((at - CLICK_BEFORE_S / 2, self._event(
                    member, "campaign.message_clicked",
                    {"campaign_id": "flash-sale", "message_id": message})))
            self.due.append((at, self._event(member, "order.placed", {
                "order_id": order, "amount": amount,
                "items": [{"sku": f"SKU-{self.rng.randrange(300):04d}", "qty": 1,
                           "unit_price": amount}]})))
            self.due.append((at + COMPLETE_AFTER_S, self._event(
                member, "order.completed", {"order_id": order, "amount": amount})))
        self.due.sort(key=lambda d: d[0])

    def _event(self, member: str, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"event_id": f"lat-{next(self.ids)}", "type": type_, "schema_version": 1,
                "shop_id": SHOP, "member_id": member, "payload": payload}


@dataclass
class Sent:
    events: int = 0
    requests: int = 0
    refused: int = 0
    answer_s: list[float] = field(default_factory=list)
    late_s: float = 0.0   # how far the sender fell behind its schedule at worst
    refusals: list[str] = field(default_factory=list)
    cpu_s: float = 0.0


async def send(load: Load, url: str, key: str) -> Sent:
    """POST the planned events at their moments, dated when they are sent."""
    sent = Sent()
    start = time.perf_counter()
    cpu_start = time.process_time()
    pending: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def post(body: list[dict[str, Any]]) -> None:
            began = time.perf_counter()
            async with http.post(url, json=body,
                                 headers={"Authorization": f"Bearer {key}"}) as resp:
                answer = await resp.read()
                if resp.status != 202:
                    sent.refused += 1
                    refused = [r for r in json.loads(answer).get("results", [])
                               if r.get("status") != "accepted"] or [answer[:300]]
                    sent.refusals.append(f"{resp.status} {refused[0]}")
            sent.answer_s.append(time.perf_counter() - began)

        index = 0
        tick = 0
        while index < len(load.due):
            tick += 1
            moment = tick * BATCH_EVERY_S
            await asyncio.sleep(max(0.0, start + moment - time.perf_counter()))
            sent.late_s = max(sent.late_s, time.perf_counter() - start - moment)
            body = []
            while index < len(load.due) and load.due[index][0] <= moment:
                body.append({**load.due[index][1], "occurred_at": now_iso()})
                index += 1
            if body:
                sent.events += len(body)
                sent.requests += 1
                task = asyncio.create_task(post(body))
                pending.add(task)
                task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    sent.cpu_s = time.process_time() - cpu_start
    return sent


def cpu_parts(pid: int, broker: EmbeddedBroker, db: EmbeddedDatabase) -> dict[str, float]:
    """CPU seconds used so far by `memberflow up` (ingest), its worker processes, PostgreSQL
    (all backends) and the broker."""
    postgres = psutil.Process(db.postmaster_pid)
    workers = psutil.Process(pid).children()
    return {"memberflow up (ingest)": cpu_seconds(pid) or 0.0,
            "its workers": sum(cpu_seconds(p.pid) or 0.0 for p in workers),
            "PostgreSQL": sum(cpu_seconds(p.pid) or 0.0
                              for p in [postgres, *postgres.children(recursive=True)]),
            "broker": (cpu_seconds(broker.pid) or 0.0) if broker.pid else 0.0,
            } | {f"  {p.cmdline()[4]}": cpu_seconds(p.pid) or 0.0 for p in workers
                 } | postgres_cpu_by_session(db)


LATENCY_SQL = {
    "level change": (
        "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - effective_from) "
        "FROM level_changes WHERE shop_id = %s AND cause = 'auto'"),
    "tag change": (
        "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - effective_at) "
        "FROM tag_changes WHERE shop_id = %s AND cause = 'rule'"),
    "credit": (
        "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - converted_at) "
        "FROM campaign_orders WHERE shop_id = %s AND credit_kind IS NOT NULL"),
}


class LockWaits:
    """Samples, every 20 ms, the memberflow sessions waiting on a lock, what each runs and what
    the session blocking it ran last: how long event processing waited on timed work (a
    session idle in its transaction shows its last statement)."""

    EVERY_S = 0.02

    def __init__(self, url: str) -> None:
        self.url = url
        self.waits: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockWaits:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(self.EVERY_S):
                for waiter, blocker in conn.execute(
                        "SELECT w.application_name || ': ' || left(regexp_replace(w.query, "
                        "'\\s+', ' ', 'g'), 40), left(regexp_replace(b.query, '\\s+', ' ', "
                        "'g'), 60) FROM pg_stat_activity w JOIN pg_stat_activity b "
                        "ON b.pid = (pg_blocking_pids(w.pid))[1] "
                        "WHERE w.wait_event_type = 'Lock' "
                        "AND w.application_name LIKE 'memberflow%'"):
                    key = (waiter, blocker)
                    self.waits[key] = self.waits.get(key, 0) + 1

    def report(self) -> list[str]:
        return [f"  ~{n * self.EVERY_S * 1000:6,.0f} ms  {waiter}\n{'':>12}behind: {query}"
                for (waiter, query), n in sorted(self.waits.items(), key=lambda kv: -kv[1])]


def quantiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return (f"{len(ordered):>7,}  p50 {q(0.50):7.1f}  p95 {q(0.95):7.1f}  p99 {q(0.99):7.1f}  "
            f"max {ordered[-1] * 1000:7.1f} ms")


def restart_with_commit_timestamps(root: Path) -> EmbeddedDatabase:
    db = EmbeddedDatabase(root / "pg").start()
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    db.stop()
    return EmbeddedDatabase(root / "pg").start()


async def main_async(args: argparse.Namespace, root: Path) -> None:
    db = restart_with_commit_timestamps(root)
    proc = None
    try:
        url, engine = fresh_database(db, "latency")
        settings = Settings()
        with engine.begin() as conn:
            apply_shop_config(conn, settings.topics, parse(CONFIG), "benchmark",
                              datetime.now(UTC))
            key = tokens.create(conn, name="latency-storefront", shops=None, rights=["ingest"],
                                expires_in=None, operator="benchmark").token
        engine.dispose()
        with EmbeddedBroker(log_path=root / "broker.log") as broker:
            await kafka.ensure_topics(broker.bootstrap, settings.topics.all, args.partitions)
            port = free_port()
            log = root / "up.log"
            proc = start_process(["-m", "memberflow", "up"], log, child_env(
                MEMBERFLOW_KAFKA=broker.bootstrap, MEMBERFLOW_DATABASE_URL=url,
                MEMBERFLOW_HTTP_PORT=str(port), MEMBERFLOW_PARTITIONS=str(args.partitions)))
            base = f"http://127.0.0.1:{port}"
            groups = {w: WORKERS[w](settings).topics for w in WORKERS}

            async def ready() -> bool:
                try:
                    async with aiohttp.ClientSession() as http, \
                            http.get(base + "/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, deadline_s=120, what="memberflow up ready", alive=proc)
            # One event, applied by every worker: each group has joined and has its partitions.
            warm = Load(1, 1, 1)
            warm.due = [(0.0, {**warm._event("warm-up", "order.completed", {
                "order_id": "warm-up", "amount": "1.00"}), "event_id": "warm-up"})]
            await send(warm, base + "/v1/events", key)

            async def caught_up() -> bool:
                for group, topics in groups.items():
                    if await kafka.group_lag(broker.bootstrap, group, topics):
                        return False
                return True

            await wait_until(caught_up, deadline_s=120, what="warm-up applied", alive=proc)
            load = Load(args.rate, args.seconds, args.members)
            load.plan()
            print(f"sending {len(load.due):,} events at {args.rate:,}/s for {args.seconds}s ...",
                  flush=True)
            cpu_before = cpu_parts(proc.pid, broker, db)
            with LockWaits(url) as locks:
                sent = await send(load, base + "/v1/events", key)
                await wait_until(caught_up, deadline_s=600, what="every event applied",
                                 alive=proc, interval_s=0.5)
            cpu = {k: v - cpu_before.get(k, 0.0)
           for k, v in cpu_parts(proc.pid, broker, db).items()}
            batches = await batch_metrics(port)
            timed = await batch_metrics(port, timed=True)
        with psycopg.connect(url) as conn:
            results = {kind: [float(r[0]) for r in conn.execute(sql, (SHOP,))]
                       for kind, sql in LATENCY_SQL.items()}
        answers = sorted(sent.answer_s)
        print(f"\nmemberflow latency: {sent.events:,} events at {args.rate:,}/s for "
              f"{args.seconds}s into `memberflow up` (each worker in a process of its own), "
              f"{os.cpu_count()} CPUs, embedded Tansu + PostgreSQL 16")
        print(f"sender: {sent.requests:,} requests of ~{args.rate * BATCH_EVERY_S:.0f} events, "
              f"{sent.refused} refused, at worst {sent.late_s * 1000:.0f} ms behind schedule; "
              f"202 answered in p50 {answers[len(answers) // 2] * 1000:.1f} ms, "
              f"p99 {answers[int(len(answers) * 0.99)] * 1000:.1f} ms")
        print("CPU seconds while sending and catching up: " + ", ".join(
            f"{k.strip()} {v:.1f}" for k, v in cpu.items()) + f" (the sender: {sent.cpu_s:.1f})")
        for refusal in sent.refusals[:3]:
            print(f"  refused: {refusal}")
        print("event time -> state committed:")
        for kind, values in results.items():
            print(f"  {kind:<14}{quantiles(values)}")
        for worker, (count, events, seconds) in batches.items():
            print(f"  {worker:<10} {count:>6,} batches of {events / max(count, 1):>6,.0f} events, "
                  f"{seconds / max(count, 1) * 1000:6.1f} ms each")
        for worker, (count, _, seconds) in timed.items():
            print(f"  {worker:<10} {count:>6,} steps of timed work, {seconds:.1f} s in all")
        print("sessions waiting on a lock (sampled every 20 ms):")
        print("\n".join(locks.report()) or "  none seen")
    except BaseException:
        if proc is not None:
            print(log_tail(root / "up.log"))
        raise
    finally:
        if proc is not None:
            stop_process(proc)
        db.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="events per second")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memberflow-latency-") as tmp:
        asyncio.run(main_async(args, Path(tmp)))


if __name__ == "__main__":
    main()
