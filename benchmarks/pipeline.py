"""Throughput and memory of the order pipeline on embedded Tansu + PostgreSQL (never asserted).

    python benchmarks/pipeline.py [--events 100000] [--members 20000] [--partitions 4]

Stages, each on a fresh broker and a fresh database:
  a. raw broker round trip: the pipeline's order-event bytes produced with aiokafka and read back
     by a plain getmany consumer (no processing): the yardstick;
  i. what ingest costs, nobody consuming: validate + produce alone (no archive), the Ingestor as
     `replay` runs it (validate, archive in PostgreSQL, publish, commit: acknowledged = durable),
     and `POST /v1/events` with 1,000-event batches from 4 clients;
  b. end to end: `memberflow worker tiering` as a subprocess, the same events replayed with the
     Ingestor; timed from replay start until the group lag is 0 and the members table shows
     every event;
  c. the same with every worker (archiver, tiering, tagging, campaigns) in one process, as
     `memberflow up` runs them;
  d. the same workers, each in a process of its own (a deployment's layout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from workload import (
    Totals,
    Workload,
    batch_metrics,
    child_env,
    cpu_seconds,
    fresh_database,
    log_tail,
    member_totals,
    peak_rss_mb,
    postgres,
    postgres_cpu_by_session,
    start_process,
    stop_process,
    wait_until,
    workload,
)

from memberflow.runtime import WORKERS
from services.ingest.handlers import Ingestor
from services.ingest.http import make_app
from services.ingest.replay import replay
from shared import kafka, tokens
from shared.config import Settings
from shared.embedded import EmbeddedBroker, EmbeddedDatabase, free_port
from shared.events import decode
from shared.http import HttpServer
from shared.keys import CachedTokens
from shared.metrics import Metrics
from shared.topics import Topics

WARM_UP = {"event_id": "warm-up-1", "type": "order.placed", "schema_version": 1,
           "shop_id": "bench-warm-up", "member_id": "w1", "occurred_at": "2026-04-30T00:00:00Z",
           "payload": {"order_id": "w-o1", "amount": "1.00",
                       "items": [{"sku": "W", "qty": 1, "unit_price": "1.00"}]}}
# b: the tiering worker alone; c: every worker in one process, as `memberflow up` runs them;
# d: every worker in a process of its own, as a deployment runs them.
STAGES = ([["tiering"]], [list(WORKERS)], [[w] for w in WORKERS])
HTTP_BATCH = 1000
HTTP_CLIENTS = 4


@dataclass
class Raw:
    produce_s: float
    consume_s: float


@dataclass
class Ingest:
    plain_s: float          # validate + produce, no archive
    archive_first_s: float  # the Ingestor: validate, archive, publish, commit
    http_s: float           # POST /v1/events in batches of HTTP_BATCH


@dataclass
class EndToEnd:
    processes: list[list[str]]       # the workers each `memberflow worker` process runs
    seconds: float
    replay_s: float
    peak_rss_mb: list[float | None]  # per process
    totals: Totals
    batches: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # n, events, s
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per part of the stack
    error: str | None = None

    @property
    def label(self) -> str:
        return " | ".join("+".join(workers) for workers in self.processes)


async def raw_round_trip(bootstrap: str, wl: Workload, partitions: int) -> Raw:
    topic = "bench.raw"
    await kafka.ensure_topics(bootstrap, [topic], partitions)
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        started = time.perf_counter()
        sends = [await producer.send(topic, value, key=key) for key, value in wl.wire]
        await asyncio.gather(*sends)
        produce_s = time.perf_counter() - started
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(**kafka.consumer_config(bootstrap, None))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started = time.perf_counter()
        seen = 0
        while seen < len(wl):
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            seen += sum(len(records) for records in batch.values())
        consume_s = time.perf_counter() - started
    finally:
        await consumer.stop()

    return Raw(produce_s, consume_s)


async def ingest_costs(db: EmbeddedDatabase, bootstrap: str, wl: Workload,
                       partitions: int) -> Ingest:
    """The cost of acknowledging only what is durable, on the same events."""
    topics = Topics("bench.plain.")
    await kafka.ensure_topics(bootstrap, topics.all, partitions)
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        started = time.perf_counter()
        for start in range(0, len(wl), 2000):
            sends = []
            for line in wl.lines[start:start + 2000]:
                event = decode(line)
                sends.append(await producer.send(topics.for_type(event.type), event.to_json(),
                                                 key=event.key))
            await asyncio.gather(*sends)
        plain_s = time.perf_counter() - started

        topics = Topics("bench.archived.")
        await kafka.ensure_topics(bootstrap, topics.all, partitions)
        _, engine = fresh_database(db, "ingest_archive_first")
        try:
            report = await replay(wl.items(), Ingestor(engine, producer, topics, Metrics(),
                                                       source="replay"))
        finally:
            engine.dispose()
        archive_first_s = report.seconds

        topics = Topics("bench.http.")
        await kafka.ensure_topics(bootstrap, topics.all, partitions)
        _, engine = fresh_database(db, "ingest_http")
        try:
            http_s = await _http_ingest(Ingestor(engine, producer, topics, Metrics(),
                                                 source="http"), wl)
        finally:
            engine.dispose()
    finally:
        await producer.stop()
    return Ingest(plain_s, archive_first_s, http_s)


async def _http_ingest(ingestor: Ingestor, wl: Workload) -> float:
    """Seconds for HTTP_CLIENTS clients to POST every event, HTTP_BATCH per request."""
    with ingestor.engine.begin() as conn:
        key = tokens.create(conn, name="bench-storefront", shops=None, rights=["ingest"],
                            expires_in=None, operator="benchmark").token
    # The key's rate is not limited here: this measures what ingest costs.
    server = await HttpServer.start(make_app(ingestor, Metrics(),
                                             keys=CachedTokens(ingestor.engine)),
                                    "127.0.0.1", 0)
    port = server.port
    bodies = [b"[" + b",".join(wl.lines[i:i + HTTP_BATCH]) + b"]"
              for i in range(0, len(wl), HTTP_BATCH)]
    queue = list(reversed(bodies))
    refused = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal refused
        while queue:
            body = queue.pop()
            async with session.post(f"http://127.0.0.1:{port}/v1/events", data=body,
                                    headers={"Content-Type": "application/json",
                                             "Authorization": f"Bearer {key}"}) as r:
                await r.read()
                refused += r.status != 202
    try:
        started = time.perf_counter()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            await asyncio.gather(*(client(session) for _ in range(HTTP_CLIENTS)))
        seconds = time.perf_counter() - started
    finally:
        await server.stop()
    if refused:
        raise RuntimeError(f"{refused} HTTP batches were not answered 202")
    return seconds


async def _caught_up(bootstrap: str, groups: dict[str, tuple[str, ...]]) -> bool:
    for group, topics in groups.items():
        if await kafka.group_lag(bootstrap, group, topics):
            return False
    return True


async def end_to_end(db: EmbeddedDatabase, wl: Workload, processes: list[list[str]],
                     root: Path, partitions: int) -> EndToEnd:
    name = "e2e_" + "__".join("_".join(w.replace("-", "_") for w in ws) for ws in processes)
    url, engine = fresh_database(db, name)
    topics = Topics()
    settings = Settings(topic_prefix=topics.prefix)
    groups = {w: WORKERS[w](settings).topics for workers in processes for w in workers}
    logs = [root / f"{name}-{i}.log" for i in range(len(processes))]
    ports = [free_port() for _ in processes]
    seen = Totals(0, 0, 0)
    with EmbeddedBroker(log_path=root / f"{name}-broker.log") as broker:
        await kafka.ensure_topics(broker.bootstrap, topics.all, partitions)
        procs = [start_process(["-m", "memberflow", "worker", *workers, "--kafka",
                                broker.bootstrap, "--database-url", url, "--metrics-port",
                                str(port)], log, child_env(MEMBERFLOW_PARTITIONS=str(partitions)))
                 for workers, port, log in zip(processes, ports, logs, strict=True)]
        producer = kafka.producer(broker.bootstrap)
        await producer.start()
        ingestor = Ingestor(engine, producer, topics, Metrics(), source="replay")

        async def caught_up() -> bool:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker process exited with {proc.returncode}")
            return await _caught_up(broker.bootstrap, groups)

        try:
            # One event from another shop: once it is committed, every group has its partitions.
            await ingestor.submit([("warm-up", WARM_UP)])
            await wait_until(caught_up, deadline_s=90, what="warm-up event applied",
                             interval_s=0.2)
            started = time.perf_counter()
            cpu_before = _cpu_parts(procs, ["+".join(ws) for ws in processes], broker, db)
            report = await replay(wl.items(), ingestor)

            async def done() -> bool:
                nonlocal seen
                if not await caught_up():
                    return False
                seen = await asyncio.to_thread(member_totals, engine)
                return seen == wl.expected

            finished = await wait_until(done, deadline_s=600, what="lag 0 and all members",
                                        interval_s=0.2)
            cpu_after = _cpu_parts(procs, ["+".join(ws) for ws in processes], broker, db)
            cpu = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
            rss = [peak_rss_mb(proc.pid) for proc in procs]
            batches: dict[str, tuple[int, float, float]] = {}
            for port in ports:
                batches.update(await batch_metrics(port))
            return EndToEnd(processes, finished - started, report.seconds, rss, seen, batches,
                            cpu)
        except (TimeoutError, RuntimeError) as exc:
            return EndToEnd(processes, float("nan"), float("nan"),
                            [peak_rss_mb(proc.pid) for proc in procs], seen,
                            error=f"{exc}\n" + "\n".join(log_tail(log) for log in logs))
        finally:
            await producer.stop()
            for proc in procs:
                stop_process(proc)
            engine.dispose()


def _cpu_parts(procs: list[subprocess.Popen[bytes]], names: list[str], broker: EmbeddedBroker,
               db: EmbeddedDatabase) -> dict[str, float]:
    """CPU seconds used so far by each part of the stack (PostgreSQL: all its backends)."""
    postgres = psutil.Process(db.postmaster_pid)
    pg = [postgres, *postgres.children(recursive=True)]
    parts = {
        "workers": sum(cpu_seconds(p.pid) or 0.0 for p in procs),
        "ingest (replay)": cpu_seconds(os.getpid()) or 0.0,
        "PostgreSQL": sum(cpu_seconds(p.pid) or 0.0 for p in pg),
        "broker": cpu_seconds(broker.pid) or 0.0 if broker.pid else 0.0,
    }
    if len(procs) > 1:
        for proc, name in zip(procs, names, strict=True):
            parts[f"  {name}"] = cpu_seconds(proc.pid) or 0.0
    return parts | postgres_cpu_by_session(db)


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f}" if seconds == seconds and seconds > 0 else f"{'-':>10}"


def report(n: int, args: argparse.Namespace, raw: Raw, ingest: Ingest,
           runs: list[tuple[str, EndToEnd]],
           expected: Totals) -> str:
    round_trip = raw.produce_s + raw.consume_s

    def x_raw(seconds: float) -> str:
        return f"{round_trip / seconds:.2f}" if seconds == seconds else "-"

    rows = [
        ("a. raw produce (aiokafka, no validation)", raw.produce_s, "", ""),
        ("a. raw consume (getmany, no processing)", raw.consume_s, "", ""),
        ("a. raw round trip (produce + consume)", round_trip, "1.00", ""),
        ("i. validate + produce, no archive", ingest.plain_s, x_raw(ingest.plain_s), ""),
        ("i. Ingestor: validate, archive, produce", ingest.archive_first_s,
         x_raw(ingest.archive_first_s), ""),
        (f"i. POST /v1/events, {HTTP_BATCH:,} per request", ingest.http_s,
         x_raw(ingest.http_s), ""),
    ]
    for stage, run in runs:
        ratio = x_raw(run.seconds)
        rss = " + ".join(f"{r:,.0f}" for r in run.peak_rss_mb if r) + " MiB"
        rows.append((f"{stage}. end to end: {run.label}", run.seconds, ratio, rss))
        rows.append(("   replay meanwhile (validate, archive, produce)", run.replay_s, "", ""))
    out = [f"\nmemberflow pipeline: {n:,} order events, {args.members:,} members, "
           f"{args.partitions} partitions, {os.cpu_count()} CPUs, embedded Tansu + PostgreSQL 16",
           f"{'stage':<50}{'events/s':>10}{'seconds':>9}{'x raw':>7}  peak RSS per process",
           "-" * 100]
    out += [f"{label:<50}{_rate(n, s)}{s:>9.2f}{ratio:>7}  {rss}"
            for label, s, ratio, rss in rows]
    out.append("\nlabels: workers joined by + share one process; | separates processes. "
               "x raw = events/s of the stage / raw round-trip events/s. Archive-first costs "
               f"{ingest.archive_first_s / ingest.plain_s:.1f}x the time of validate + produce.")
    for stage, run in runs:
        for worker, (count, events, seconds) in run.batches.items():
            size = events / max(count, 1)
            out.append(f"{stage}. {worker:<8} {count:>4,} batches of {size:>5,.0f} records; "
                       f"{seconds:5.1f}s inside process() = {seconds / run.seconds:4.0%} of wall,"
                       f" {events / max(seconds, 1e-9):>7,.0f} records/s there")
        if run.cpu:
            total = sum(v for k, v in run.cpu.items() if not k.startswith(" "))
            out.append(f"{stage}. CPU seconds: " + ", ".join(
                f"{k.strip()} {v:.1f}" for k, v in run.cpu.items()) +
                f"; {total:.1f} in all = {total / run.seconds:.2f} of {os.cpu_count()} cores, "
                f"{total / n * 1e6:,.0f} µs per event")
        state = "matches" if run.totals == expected else f"DIFFERS (expected {expected})"
        out.append(f"{stage}. members table {state}: {run.totals}")
        if run.error:
            out.append(f"{stage}. FAILED: {run.error}")
    return "\n".join(out)


async def main_async(args: argparse.Namespace, root: Path) -> None:
    print(f"generating {args.events:,} order events over {args.members:,} members ...",
          flush=True)
    wl = workload(args.events, args.members)
    print("a. raw broker round trip ...", flush=True)
    with EmbeddedBroker(log_path=root / "raw-broker.log") as broker:
        raw = await raw_round_trip(broker.bootstrap, wl, args.partitions)
    runs = []
    ingest = Ingest(float("nan"), float("nan"), float("nan"))
    with postgres(root) as db:
        if "i" in args.stages:
            print("i. what ingest costs ...", flush=True)
            with EmbeddedBroker(log_path=root / "ingest-broker.log") as broker:
                ingest = await ingest_costs(db, broker.bootstrap, wl, args.partitions)
        for stage, processes in zip("bcd", STAGES, strict=True):
            if stage not in args.stages:
                continue
            print(f"{stage}. end to end, worker processes: "
                  f"{' | '.join('+'.join(ws) for ws in processes)} ...", flush=True)
            runs.append((stage, await end_to_end(db, wl, processes, root, args.partitions)))
    print(report(len(wl), args, raw, ingest, runs, wl.expected))
    print("\nfigures as JSON:", json.dumps({
        "raw": raw.__dict__, "ingest": ingest.__dict__,
        "runs": [{k: v for k, v in r.__dict__.items() if k != "error"} for _, r in runs]},
        default=str))


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup of brokers and workers


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--stages", default="ibcd",
                        help="which stages to run besides the raw round trip (default: ibcd)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memberflow-bench-") as tmp:
        asyncio.run(main_async(args, Path(tmp)))


if __name__ == "__main__":
    main()
