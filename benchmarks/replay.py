"""Rebuilding state from the archive: speed, memory per worker, bytes per event (never asserted).

    python benchmarks/replay.py [--events 1000000] [--members 1000000] [--partitions 4]

On embedded Tansu + PostgreSQL:
  1. the archive is filled with N order events as ingest stores them (no broker involved);
  2. every worker starts in a process of its own (a deployment's layout) on an empty state;
  3. `memberflow replay --from-archive`'s routine republishes the archive, timed on its own and
     until every worker's lag is 0 and the members table shows every event;
  4. printed: both rates, the raw broker round trip of the same bytes as the yardstick, each
     worker's peak resident memory, CPU by part of the stack, and the bytes per event of every
     table and of the WAL written while the state was rebuilt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from pipeline import WARM_UP, raw_round_trip
from sqlalchemy import Engine
from workload import (
    Totals,
    Workload,
    child_env,
    cpu_seconds,
    expected_totals,
    fresh_database,
    log_tail,
    member_totals,
    order_events,
    peak_rss_mb,
    postgres,
    postgres_cpu_by_session,
    start_process,
    stop_process,
    wait_until,
)

from memberflow.runtime import WORKERS
from services.ingest.handlers import Ingestor
from services.ingest.recovery import republish
from shared import archive, kafka
from shared.config import Settings
from shared.embedded import EmbeddedBroker, EmbeddedDatabase, free_port
from shared.events import decode
from shared.metrics import Metrics
from shared.topics import Topics

FILL_CHUNK = 5000


def generate(n: int, members: int) -> tuple[Workload, float]:
    started = time.perf_counter()
    events = order_events(n, members)
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    wire = [(ev.key, ev.to_json()) for ev in map(decode, lines)]
    return Workload(lines, wire, expected_totals(events)), time.perf_counter() - started


def fill_archive(engine: Engine, wl: Workload) -> float:
    """The archive as ingest leaves it, written straight into PostgreSQL."""
    started = time.perf_counter()
    for start in range(0, len(wl), FILL_CHUNK):
        chunk = [decode(line) for line in wl.lines[start:start + FILL_CHUNK]]
        with engine.begin() as conn:
            archive.store(conn, chunk)
    return time.perf_counter() - started


def wal_bytes(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").scalar_one())


def table_bytes(engine: Engine) -> list[tuple[str, int, int, int]]:
    """(table, rows, heap + TOAST bytes, index bytes) of every table holding data."""
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        rows = conn.exec_driver_sql(
            "SELECT c.relname, c.reltuples::bigint, pg_table_size(c.oid), pg_indexes_size(c.oid) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname = 'public' "
            "AND pg_table_size(c.oid) + pg_indexes_size(c.oid) > 65536 "
            "ORDER BY pg_table_size(c.oid) + pg_indexes_size(c.oid) DESC").all()
    return [(str(r[0]), max(int(r[1]), 0), int(r[2]), int(r[3])) for r in rows]


@dataclass
class Rebuild:
    fill_s: float
    archive_wal: int                       # bytes of WAL the archive fill wrote
    published: int = 0
    refused: int = 0
    republish_s: float = float("nan")
    seconds: float = float("nan")          # republish start -> every worker caught up
    rss: dict[str, float | None] = field(default_factory=dict)
    state_wal: int = 0                     # bytes of WAL written while rebuilding
    tables: list[tuple[str, int, int, int]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    totals: Totals = field(default_factory=lambda: Totals(0, 0, 0))
    error: str | None = None


async def rebuild(db: EmbeddedDatabase, wl: Workload, root: Path, partitions: int) -> Rebuild:
    url, engine = fresh_database(db, "replay_bench")
    topics = Topics()
    settings = Settings(topic_prefix=topics.prefix)
    print(f"filling the archive with {len(wl):,} events ...", flush=True)
    wal_0 = wal_bytes(engine)
    out = Rebuild(fill_archive(engine, wl), 0)
    out.archive_wal = wal_bytes(engine) - wal_0
    names = list(WORKERS)
    groups = {w: WORKERS[w](settings).topics for w in names}
    logs = [root / f"replay-{w}.log" for w in names]
    with EmbeddedBroker(log_path=root / "replay-broker.log") as broker:
        await kafka.ensure_topics(broker.bootstrap, topics.all, partitions)
        procs = [start_process(["-m", "memberflow", "worker", w, "--kafka", broker.bootstrap,
                                "--database-url", url, "--metrics-port", str(free_port())],
                               log, child_env(MEMBERFLOW_PARTITIONS=str(partitions)))
                 for w, log in zip(names, logs, strict=True)]
        producer = kafka.producer(broker.bootstrap)
        await producer.start()

        async def caught_up() -> bool:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker process exited with {proc.returncode}")
            for group, group_topics in groups.items():
                if await kafka.group_lag(broker.bootstrap, group, group_topics):
                    return False
            return True

        async def done() -> bool:
            if not await caught_up():
                return False
            out.totals = await asyncio.to_thread(member_totals, engine)
            return out.totals == wl.expected

        def cpu() -> dict[str, float]:
            pg = psutil.Process(db.postmaster_pid)
            parts = {w: cpu_seconds(p.pid) or 0.0 for w, p in zip(names, procs, strict=True)}
            parts["republish"] = cpu_seconds(os.getpid()) or 0.0
            parts["PostgreSQL"] = sum(cpu_seconds(p.pid) or 0.0
                                      for p in [pg, *pg.children(recursive=True)])
            parts["broker"] = (cpu_seconds(broker.pid) or 0.0) if broker.pid else 0.0
            return parts | postgres_cpu_by_session(db)

        try:
            ingestor = Ingestor(engine, producer, topics, Metrics(), source="replay")
            await ingestor.submit([("warm-up", WARM_UP)])
            await wait_until(caught_up, deadline_s=120, what="warm-up event applied",
                             interval_s=0.2)
            print("replaying the archive into the workers ...", flush=True)
            wal_2, cpu_0 = wal_bytes(engine), cpu()
            started = time.perf_counter()
            out.published, out.refused = await republish(engine, producer, topics)
            out.republish_s = time.perf_counter() - started
            finished = await wait_until(done, deadline_s=7200, what="lag 0 and all members",
                                        interval_s=0.5)
            out.seconds = finished - started
            cpu_1 = cpu()
            out.cpu = {k: cpu_1[k] - cpu_0.get(k, 0.0) for k in cpu_1}
            out.state_wal = wal_bytes(engine) - wal_2
        except (TimeoutError, RuntimeError) as exc:
            out.error = f"{exc}\n" + "\n".join(log_tail(log) for log in logs)
        finally:
            out.rss = {w: peak_rss_mb(p.pid) for w, p in zip(names, procs, strict=True)}
            await producer.stop()
            for proc in procs:
                stop_process(proc)
    out.tables = table_bytes(engine)
    engine.dispose()
    return out


def report(n: int, args: argparse.Namespace, raw_s: float, gen_s: float, r: Rebuild) -> str:
    def rate(seconds: float) -> str:
        return f"{n / seconds:,.0f} events/s" if seconds == seconds and seconds > 0 else "-"

    out = [f"memberflow replay from the archive: {n:,} order events, {args.members:,} members, "
           f"{args.partitions} partitions, {os.cpu_count()} CPUs, embedded Tansu + PostgreSQL 16",
           f"generated in {gen_s:.1f}s; archive filled in {r.fill_s:.1f}s ({rate(r.fill_s)}), "
           f"WAL {r.archive_wal / n:,.0f} B/event",
           f"raw broker round trip of the same bytes: {rate(raw_s)}",
           f"republish (archive -> broker):  {rate(r.republish_s)} ({r.republish_s:.1f}s, "
           f"{r.published:,} published, {r.refused} refused)",
           f"state rebuilt (every worker):   {rate(r.seconds)} ({r.seconds:.1f}s, "
           f"{raw_s / r.seconds:.2f}x raw); 10M events at this rate: "
           f"{10_000_000 / n * r.seconds / 60:.1f} min",
           "peak RSS per worker: " + ", ".join(f"{w} {m:,.0f} MiB" for w, m in r.rss.items()
                                               if m),
           "CPU seconds during the rebuild: " + ", ".join(
               f"{k.strip()} {v:.1f}" for k, v in r.cpu.items()),
           f"members table {'matches' if r.totals == args.expected else 'DIFFERS'}: {r.totals}",
           f"WAL written while rebuilding: {r.state_wal / n:,.0f} B/event",
           "", f"{'table':<24}{'rows':>12}{'table B/event':>15}{'index B/event':>15}"]
    heap_all = index_all = 0
    for name, rows, heap, index in r.tables:
        out.append(f"{name:<24}{rows:>12,}{heap / n:>15,.0f}{index / n:>15,.0f}")
        heap_all += heap
        index_all += index
    out.append(f"{'all':<24}{'':>12}{heap_all / n:>15,.0f}{index_all / n:>15,.0f}")
    if r.error:
        out.append(f"FAILED: {r.error}")
    return "\n".join(out)


async def main_async(args: argparse.Namespace, root: Path) -> None:
    print(f"generating {args.events:,} order events over {args.members:,} members ...",
          flush=True)
    wl, gen_s = generate(args.events, args.members)
    print("raw broker round trip ...", flush=True)
    with EmbeddedBroker(log_path=root / "raw-broker.log") as broker:
        raw = await raw_round_trip(broker.bootstrap, wl, args.partitions)
    with postgres(root) as db:
        r = await rebuild(db, wl, root, args.partitions)
    args.expected = wl.expected
    print(report(len(wl), args, raw.produce_s + raw.consume_s, gen_s, r))
    print("\nfigures as JSON:", json.dumps(asdict(r), default=str))


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memberflow-replay-") as tmp:
        asyncio.run(main_async(args, Path(tmp)))


if __name__ == "__main__":
    main()
