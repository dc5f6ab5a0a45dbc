"""The worker loop's error policy (shared/consumer.py), with a real broker and PostgreSQL and a
handler that fails on purpose: a record that cannot be applied is parked after a bounded number
of tries while the rest of its batch is applied; record after record failing is a bug and stops
the worker; a transient failure is retried until it passes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from memberflow.runtime import Stack
from shared import kafka
from shared.archive import read_inbound
from shared.consumer import Batch, BatchWorker, BugSuspected, Contract, Output, TimedWork
from shared.db import make_engine
from shared.metrics import Metrics
from tests.support import scalar


class Flaky:
    """Counts completions per member; fails on the members it is told to."""

    name = "flaky"

    def __init__(self, stack: Stack, poison: set[str], *, transient: int = 0,
                 attempts: int = 3, bug_limit: int = 5) -> None:
        self.topics = (stack.topics.orders,)
        self.contract = Contract(read=read_inbound, handles=frozenset({"order.completed"}),
                                 claims=frozenset({"order.completed"}), attempts=attempts,
                                 bug_limit=bug_limit)
        self.poison = poison
        self.transient = transient      # fail this many batches with a database outage first
        self.tries: dict[str, int] = {}

    def apply(self, conn: Connection, batch: Batch) -> list[Output]:
        if self.transient:
            self.transient -= 1
            raise OperationalError("SELECT 1", {}, ConnectionError("database went away"))
        for r in batch.records:
            member = r.event.member_id
            if member in self.poison:
                self.tries[member] = self.tries.get(member, 0) + 1
                raise ValueError(f"cannot apply {member}")
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS flaky_seen (event_id text PRIMARY KEY)")
        conn.exec_driver_sql(
            "INSERT INTO flaky_seen SELECT unnest(%s::text[])",
            ([r.event.event_id for r in batch.records],))
        return []


def completed(n: int, member: str) -> bytes:
    return json.dumps({
        "event_id": f"e{n}", "type": "order.completed", "schema_version": 1, "shop_id": "s",
        "member_id": member, "occurred_at": "2026-05-01T00:00:00Z",
        "payload": {"order_id": f"o{n}", "amount": "1.00"}}).encode()


@pytest.fixture
def engine(stack: Stack) -> Iterator[Engine]:
    eng = make_engine(stack.database_url)
    yield eng
    eng.dispose()


async def _run(stack: Stack, engine: Engine, handler: Flaky, records: list[bytes],
               until: Any) -> BatchWorker:
    producer = kafka.producer(stack.bootstrap)
    await producer.start()
    try:
        for value in records:
            await producer.send_and_wait(stack.topics.orders, value, key=b"k", partition=0)
        worker = BatchWorker(handler, bootstrap=stack.bootstrap, engine=engine,
                             producer=producer, dead_letter_topic=stack.topics.dead_letters,
                             metrics=Metrics(), max_records=100)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            end = asyncio.get_running_loop().time() + 60
            while not until(worker) and not task.done():
                if asyncio.get_running_loop().time() > end:
                    raise AssertionError("the worker did not get there within 60s")
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        return worker
    finally:
        await producer.stop()


def test_a_record_that_cannot_be_applied_is_parked_and_its_batch_carries_on(
        stack: Stack, engine: Engine) -> None:
    handler = Flaky(stack, {"bad"})
    records = [completed(n, "bad" if n in (3, 7) else f"m{n}") for n in range(10)]
    worker = asyncio.run(_run(stack, engine, handler, records,
                              lambda w: w.applied_total + w.parked_total >= 10))
    assert worker.parked_total == 2
    assert scalar(engine, "SELECT count(*) FROM flaky_seen") == 8
    letters = [r[0] for r in _rows(engine, "SELECT reason FROM dead_letters ORDER BY id")]
    assert len(letters) == 2
    assert all("could not be applied after 3 attempts: ValueError: cannot apply bad" in r
               for r in letters)
    # Tried a bounded number of times alone (and once in each larger part holding it).
    assert 6 <= handler.tries["bad"] <= 6 + 2 * 5
    # Parked records count as done: their ids are claimed, their positions passed.
    assert scalar(engine, "SELECT next_offset FROM consumer_positions WHERE consumer = "
                          "'flaky'") == 10
    assert scalar(engine, "SELECT count(*) FROM processed_events WHERE consumer = 'flaky'") == 10


def test_record_after_record_failing_is_a_bug_that_stops_the_worker(
        stack: Stack, engine: Engine) -> None:
    handler = Flaky(stack, {f"m{n}" for n in range(10)}, attempts=2, bug_limit=3)
    records = [completed(n, f"m{n}") for n in range(10)]
    with pytest.raises(BugSuspected, match="3 records in a row failed alone"):
        asyncio.run(_run(stack, engine, handler, records, lambda w: False))
    # It parked what it had isolated before the limit, and no more.
    assert scalar(engine, "SELECT count(*) FROM dead_letters") == 2


def test_a_transient_failure_retries_the_batch_until_it_applies(
        stack: Stack, engine: Engine) -> None:
    handler = Flaky(stack, set(), transient=3)
    records = [completed(n, f"m{n}") for n in range(5)]
    worker = asyncio.run(_run(stack, engine, handler, records, lambda w: w.applied_total >= 5))
    assert worker.parked_total == 0
    assert scalar(engine, "SELECT count(*) FROM flaky_seen") == 5
    assert scalar(engine, "SELECT count(*) FROM dead_letters") == 0


def _rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql(sql).all())


def test_timed_work_runs_beside_the_batches_and_never_holds_them_up(
        stack: Stack, engine: Engine) -> None:
    started, gate = threading.Event(), threading.Event()

    def slow_recompute(conn: Connection, now: Any) -> list[Output]:
        started.set()
        gate.wait(60)   # as long as the test needs: released once the batches are through
        return []

    handler = Flaky(stack, set())
    handler.contract = dataclasses.replace(handler.contract,
                                           timed=TimedWork(0.01, slow_recompute))

    def through(worker: BatchWorker) -> bool:
        done = started.is_set() and worker.applied_total >= 10
        if done:
            gate.set()
        return done

    worker = asyncio.run(_run(stack, engine, handler,
                              [completed(n, f"m{n}") for n in range(10)], through))
    assert worker.applied_total == 10
    assert scalar(engine, "SELECT count(*) FROM flaky_seen") == 10
