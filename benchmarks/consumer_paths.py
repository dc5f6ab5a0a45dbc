"""The two consumer paths for the order stream, on the same data and the same PostgreSQL work.

    python benchmarks/consumer_paths.py [--events 100000] [--members 20000] [--partitions 4]
                                        [--per-event-events 3000]

For every path the same order events are produced to a fresh embedded Tansu broker; the path then
reads them from the start, in its own subprocess, against a fresh database. The
database work is identical: each chunk of records goes through `BatchWorker.process` with the
`TieringHandler` (claim positions, decode, claim event ids, tiering domain and store, store
positions, COMMIT), in a thread so the event loop keeps fetching.

  batchworker    the project's BatchWorker (aiokafka getmany, up to 5,000 records per batch)
  batchworker-nogc  the same with Python's cyclic garbage collector disabled in the worker
                 process: a diagnostic of what the collector costs, not a way to run
  faust-take     a Faust agent iterating stream.take_events(1000, within=0.2) (take() with the
                 events' offsets, which the positions need)
  faust-each     a Faust agent iterating stream.events(), one transaction per event (timed over
                 the first --per-event-events records only: it is far too slow for all of them)
  aiokafka-noop  getmany in a consumer group, no processing: the aiokafka ceiling
  faust-noop     a Faust agent on take_events(1000, within=0.2), no processing: Faust's ceiling

Each path is timed from its partition assignment (Tansu holds a group's first JoinGroup for half
the session timeout) until its stored positions cover every record (or, for the no-op paths,
until it has received every record). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from workload import (
    Totals,
    Workload,
    child_env,
    cpu_seconds,
    fresh_database,
    log_tail,
    member_totals,
    peak_rss_mb,
    postgres,
    start_process,
    stop_process,
    stored_positions_total,
    wait_until,
    workload,
)

from services.tiering.handlers import TieringHandler
from shared import kafka
from shared.consumer import BatchWorker, Delivery, Handler
from shared.db import make_engine
from shared.embedded import EmbeddedBroker
from shared.metrics import Metrics
from shared.topics import Topics

TOPICS = Topics()
PATHS = ("batchworker", "batchworker-nogc", "faust-take", "faust-each", "aiokafka-noop",
         "faust-noop")
TAKE_MAX, TAKE_WITHIN_S = 1000, 0.2


# ---------------------------------------------------------------- child processes (one per path)

class Status:
    """JSON lines the child appends for the parent: when it got its partitions, when it is done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sent: set[str] = set()

    def say(self, what: str, **extra: Any) -> None:
        if what in self.sent:
            return
        self.sent.add(what)
        with self.path.open("a") as fh:
            fh.write(json.dumps({"what": what, "t": time.time(), **extra}) + "\n")


def tiering_worker(bootstrap: str, database_url: str) -> BatchWorker:
    """A BatchWorker whose `process` does the tiering transaction (its consumer stays unused
    on the Faust paths). Built inside the running event loop."""
    handler = cast(Handler, TieringHandler(TOPICS))  # its `topics` is a tuple[str]
    return BatchWorker(handler, bootstrap=bootstrap,
                       engine=make_engine(database_url, pool_size=2),
                       producer=kafka.producer(bootstrap), dead_letter_topic=TOPICS.dead_letters,
                       metrics=Metrics())


async def run_batchworker(args: argparse.Namespace, status: Status) -> None:
    worker = tiering_worker(args.bootstrap, args.database_url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(worker.run(stop))
    while not worker.consumer.assignment() and not task.done():
        await asyncio.sleep(0.01)
    status.say("assigned")
    await task


class _SayAssigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, status: Status) -> None:
        self.status = status

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if assigned:
            self.status.say("assigned")


async def run_aiokafka_noop(args: argparse.Namespace, status: Status) -> None:
    consumer = AIOKafkaConsumer(**kafka.consumer_config(args.bootstrap, "bench-aiokafka-noop"))
    await consumer.start()
    consumer.subscribe([TOPICS.orders], listener=_SayAssigned(status))
    try:
        seen = 0
        while seen < args.expect:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            seen += sum(len(records) for records in batch.values())
        status.say("done", seen=seen)
        await asyncio.Event().wait()  # until SIGTERM
    finally:
        await consumer.stop()


def run_faust(args: argparse.Namespace, status: Status) -> None:
    import faust

    mode = args.child
    app = faust.App(f"bench-{mode}", broker=f"kafka://{args.bootstrap}",
                    broker_session_timeout=10, store="memory://", web_enabled=False,
                    datadir=str(Path(args.data_dir) / mode), topic_partitions=args.partitions)
    topic = app.topic(TOPICS.orders, value_serializer="raw")

    def on_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        if any(tp.topic == TOPICS.orders for tp in assigned):
            status.say("assigned")

    # mode's annotation of receivers is narrower than what it calls them with
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    def delivery(event: Any) -> Delivery:
        m = event.message
        return Delivery(m.topic, m.partition, m.offset, m.key, m.value, int(m.timestamp * 1000))

    async def agent(stream: Any) -> None:
        worker = None if mode == "faust-noop" else tiering_worker(args.bootstrap,
                                                                   args.database_url)
        seen = 0
        if mode == "faust-each":
            assert worker is not None
            async for event in stream.events():
                await asyncio.to_thread(worker.process, [delivery(event)])
            return
        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            if worker is not None:
                await asyncio.to_thread(worker.process, [delivery(e) for e in events])
            seen += len(events)
            if seen >= args.expect:
                status.say("done", seen=seen)

    app.agent(topic, name="orders")(agent)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


def child_main(args: argparse.Namespace) -> None:
    status = Status(Path(args.status))
    if args.child.startswith("batchworker"):
        if args.child == "batchworker-nogc":
            gc.disable()
        asyncio.run(run_batchworker(args, status))
    elif args.child == "aiokafka-noop":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_aiokafka_noop(args, status))
    else:
        run_faust(args, status)


# ---------------------------------------------------------------------------- the parent side

@dataclass
class Figure:
    path: str
    records: int
    seconds: float
    peak_rss_mb: float | None
    cpu_s: float | None = None
    totals: Totals | None = None
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")


def _read_status(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    return {m["what"]: m["t"] for m in map(json.loads, path.read_text().splitlines())}


async def measure(path: str, bootstrap: str, wl: Workload, db: Any, root: Path,
                  args: argparse.Namespace) -> Figure:
    records = min(args.per_event_events, len(wl)) if path == "faust-each" else len(wl)
    url, engine = fresh_database(db, path.replace("-", "_"))
    status_file, log = root / f"{path}.status", root / f"{path}.log"
    proc = start_process(
        [str(Path(__file__).resolve()), "--child", path, "--bootstrap", bootstrap,
         "--database-url", url, "--status", str(status_file), "--data-dir", str(root),
         "--expect", str(records), "--partitions", str(args.partitions)],
        log, child_env())
    try:
        async def status_has(what: str) -> bool:
            return what in _read_status(status_file)

        await wait_until(lambda: status_has("assigned"), deadline_s=90, what="assignment",
                         alive=proc, interval_s=0.02)
        cpu_before = cpu_seconds(proc.pid) or 0.0
        if path.endswith("noop"):
            await wait_until(lambda: status_has("done"), deadline_s=300, what="all records",
                             alive=proc)
            finished = _read_status(status_file)["done"]
        else:
            async def applied() -> bool:
                n = await asyncio.to_thread(stored_positions_total, engine, "tiering")
                return n >= records
            await wait_until(applied, deadline_s=600, what="all records applied", alive=proc)
            finished = time.time()
        cpu = (cpu_seconds(proc.pid) or 0.0) - cpu_before
        seconds = finished - _read_status(status_file)["assigned"]
        totals = member_totals(engine) if not path.endswith("noop") else None
        return Figure(path, records, seconds, peak_rss_mb(proc.pid), cpu, totals)
    except (TimeoutError, RuntimeError) as exc:
        return Figure(path, records, float("nan"), peak_rss_mb(proc.pid),
                      error=f"{exc}\n{log_tail(log)}")
    finally:
        stop_process(proc)
        engine.dispose()


async def produce(bootstrap: str, wl: Workload, partitions: int) -> None:
    await kafka.ensure_topics(bootstrap, TOPICS.all, partitions)
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        sends = [await producer.send(TOPICS.orders, value, key=key) for key, value in wl.wire]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def report(figures: Sequence[Figure], wl: Workload, args: argparse.Namespace) -> str:
    base = next((f.rate for f in figures if f.path == "batchworker"), float("nan"))
    width = max(len(f.path) for f in figures) + 2
    out = [f"\norder-stream consumer paths: {len(wl):,} order events, {args.members:,} members, "
           f"{args.partitions} partitions, {os.cpu_count()} CPUs, embedded Tansu + PostgreSQL 16",
           f"{'path':<{width}}{'records':>9}{'seconds':>9}{'events/s':>10}{'vs batch':>9}"
           f"{'CPU s':>7}{'peak RSS':>10}  members table", "-" * 97]
    for f in figures:
        if f.totals is None:
            check = "-"
        elif f.records < len(wl):
            check = "partial run"
        else:
            check = "matches" if f.totals == wl.expected else f"DIFFERS: {f.totals}"
        rss = f"{f.peak_rss_mb:,.0f} MiB" if f.peak_rss_mb else "-"
        cpu = f"{f.cpu_s:.1f}" if f.cpu_s is not None else "-"
        out.append(f"{f.path:<{width}}{f.records:>9,}{f.seconds:>9.2f}{f.rate:>10,.0f}"
                   f"{f.rate / base:>9.2f}{cpu:>7}{rss:>10}  {check}")
        if f.error:
            out.append(f"  {f.path} FAILED: {f.error}")
    return "\n".join(out)


async def parent_main(args: argparse.Namespace, root: Path) -> None:
    print(f"generating {args.events:,} order events over {args.members:,} members ...",
          flush=True)
    wl = workload(args.events, args.members)
    figures = []
    with postgres(root) as db:
        for path in args.paths:
            print(f"{path} ...", flush=True)
            # A broker per path: the same records, and no consumer group left from another path.
            with EmbeddedBroker(log_path=root / f"{path}-broker.log") as broker:
                await produce(broker.bootstrap, wl, args.partitions)
                figures.append(await measure(path, broker.bootstrap, wl, db, root, args))
    print(report(figures, wl, args))
    print("\nfigures as JSON:", json.dumps([
        {"path": f.path, "records": f.records, "seconds": f.seconds, "events_per_s": f.rate,
         "cpu_s": f.cpu_s, "peak_rss_mb": f.peak_rss_mb,
         "error": f.error and f.error.splitlines()[0]} for f in figures]))


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup of brokers and workers


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--per-event-events", type=int, default=3000,
                        help="records timed on the faust-each path")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    for hidden in ("--child", "--bootstrap", "--database-url", "--status", "--data-dir"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
        return
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="memberflow-paths-") as tmp:
        asyncio.run(parent_main(args, Path(tmp)))


if __name__ == "__main__":
    main()
