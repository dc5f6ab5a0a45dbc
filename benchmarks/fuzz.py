"""The long fuzz run: 10^5 hostile inputs against the embedded stack, counts printed.

The suite's fuzz test (tests/integration/test_fuzz.py) sends a few hundred inputs per run; this
sends as many as asked, the same kinds (memberflow/fuzzing.py: valid events with one part
replaced, removed, repeated or cut), most over HTTP as a storefront would and a share produced
straight to the inbound Kafka topics as a foreign producer would. Then it waits until every
worker has caught up and checks what the suite checks:

- no answer is a 5xx and no worker died;
- every refusal over HTTP is exactly one dead letter;
- every record produced straight to Kafka was archived or parked exactly as the contract says.

It prints the answers by status, the refusals by field, the fates of the Kafka records and the
rate; it exits 1 when a check fails. Nothing here is a timing assertion.

    python benchmarks/fuzz.py                     # 100,000 inputs, a fifth straight to Kafka
    python benchmarks/fuzz.py --inputs 5000 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaProducer

from memberflow.fuzzing import expected_fates, hostile
from memberflow.runtime import WORKERS, Services, Stack, open_stack
from shared import tokens
from shared.config import Settings
from shared.db import make_engine
from shared.events import EventRejected, decode, digest
from shared.metrics import Metrics


async def post_all(url: str, bodies: list[bytes], concurrency: int, key: str) -> list[int]:
    statuses = [0] * len(bodies)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(len(bodies)):
        queue.put_nowait(n)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            async with session.post(url, data=bodies[n],
                                    headers={"Content-Type": "application/json",
                                             "Authorization": f"Bearer {key}"}) as r:
                await r.read()
                statuses[n] = r.status

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return statuses


def storefront_key(database_url: str) -> str:
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            return tokens.create(conn, name="fuzz-storefront", shops=None, rights=["ingest"],
                                 expires_in=None, operator="fuzz").token
    finally:
        engine.dispose()


async def run(stack: Stack, args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    n_kafka = int(args.inputs * args.kafka_share)
    n_http = args.inputs - n_kafka
    bodies = [hostile(rng, n) for n in range(n_http)]
    topics = stack.topics
    records = [(rng.choice([topics.orders, topics.campaigns]), hostile(rng, n))
               for n in range(n_http, args.inputs)]

    services = Services(stack, list(WORKERS), Metrics(), http_port=0)
    await services.start()
    failures: list[str] = []
    try:
        assert services.http_url is not None
        started = time.perf_counter()
        statuses = await post_all(services.http_url + "/v1/events", bodies, args.concurrency,
                                  storefront_key(stack.database_url))
        http_s = time.perf_counter() - started
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
        await producer.start()
        try:
            for topic, raw in records:
                await producer.send(topic, raw, key=rng.choice([None, b"fuzz/m1"]))
            await producer.flush()
        finally:
            await producer.stop()
        await services.wait_caught_up(deadline_s=3600)
        total_s = time.perf_counter() - started
        try:
            services.check()
        except RuntimeError as exc:
            failures.append(f"a worker died: {exc!r}")
    finally:
        await services.close()

    accepted: dict[str, bytes] = {}
    for body, status in zip(bodies, statuses, strict=True):
        if status == 202:
            event = decode(body)
            accepted[event.event_id] = digest(event)
    archived, parked = expected_fates(records, accepted, topics)
    engine = make_engine(stack.database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            letters_http = conn.exec_driver_sql(
                "SELECT count(*) FROM dead_letters WHERE source = 'http'").scalar_one()
            letters_workers = conn.exec_driver_sql(
                "SELECT count(*) FROM dead_letters WHERE source LIKE 'worker:%%' "
                "AND reason NOT LIKE '%%too late for campaign attribution%%'").scalar_one()
            late = conn.exec_driver_sql(
                "SELECT count(*) FROM dead_letters "
                "WHERE reason LIKE '%%too late for campaign attribution%%'").scalar_one()
            in_archive = conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
            fields = conn.exec_driver_sql(
                "SELECT coalesce(problems->0->>'field', '-'), count(*) FROM dead_letters "
                "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 12").all()
            members = conn.exec_driver_sql("SELECT count(*) FROM members").scalar_one()
    finally:
        engine.dispose()

    by_status = Counter(statuses)
    server_errors = sum(n for s, n in by_status.items() if s >= 500)
    rejected_http = n_http - len(accepted)
    valid_kafka = sum(1 for _, raw in records if _valid(raw))
    print(f"inputs: {args.inputs:,} (seed {args.seed}): {n_http:,} over HTTP with "
          f"{args.concurrency} clients, {n_kafka:,} straight to Kafka")
    print("HTTP answers: " + ", ".join(f"{s}: {n:,}" for s, n in sorted(by_status.items())))
    print(f"  {len(accepted):,} accepted, {rejected_http:,} refused and parked "
          f"({letters_http:,} dead letters from http)")
    print(f"Kafka records: {valid_kafka:,} valid events; by the contract {archived:,} to "
          f"archive, {parked:,} to park; parked by workers: {letters_workers:,}")
    print(f"archive: {in_archive:,} events (expected {len(accepted) + archived:,}); "
          f"members: {members:,}; accepted but too late for attribution: {late:,}")
    print("refusals by first field: " + ", ".join(f"{f or '(whole input)'} {n:,}"
                                                  for f, n in fields))
    print(f"rate: {n_http / http_s:,.0f} HTTP inputs/s answered; everything applied after "
          f"{total_s:.1f} s ({args.inputs / total_s:,.0f} inputs/s end to end)")

    if server_errors:
        failures.append(f"{server_errors} answers were 5xx")
    if letters_http != rejected_http:
        failures.append(f"{rejected_http} HTTP refusals but {letters_http} dead letters")
    if letters_workers != parked:
        failures.append(f"{parked} Kafka records to park but {letters_workers} parked")
    if in_archive != len(accepted) + archived:
        failures.append(f"{len(accepted) + archived} events to archive but {in_archive}")
    for failure in failures:
        print(f"FAILED: {failure}")
    if not failures:
        print("all checks held: no 5xx, no worker died, every refusal parked once")
    return 1 if failures else 0


def _valid(raw: bytes) -> bool:
    try:
        decode(raw)
    except EventRejected:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--kafka-share", type=float, default=0.2,
                        help="share of the inputs produced straight to Kafka")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP clients at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mf-fuzz-") as tmp:
        # No rate limit: this measures what becomes of hostile input, as fast as it comes.
        settings = Settings(data_dir=Path(tmp), http_port=0, ingest_events_per_second=0)
        with open_stack(settings) as stack:
            code = asyncio.run(run(stack, args))
    sys.exit(code)


if __name__ == "__main__":
    main()
