"""Effectively-once batch processing from Kafka into PostgreSQL, with one error policy.

Every worker runs this loop; only its `Handler` differs. A handler states in its `Contract` how
its records are read, which event types it applies, whether their ids are claimed, and its timed
work. For each poll batch:

1. BEGIN; lock this consumer's stored positions for the batch's partitions and drop records
   below them (already applied: redelivered after a crash between COMMIT and the Kafka commit,
   or fetched by a zombie that lost its partitions).
2. Decode each record with the contract's reader. One that cannot be read becomes a dead letter
   (every worker parks what it cannot read; the letter's id is derived from the record, so the
   workers that read the same bad record store one letter).
3. Claim the ids of the events to apply in `processed_events`, with their content digests. An id
   claimed before with the same digest is a duplicate and skipped; with a different digest it is
   a conflict (one id, two events) and parked.
4. The handler applies the new events and returns the messages to publish (it may park events
   it refuses, e.g. too late for attribution).
5. Store the new positions and the dead letters.
6. Publish outputs and dead letters and wait for the broker's acks. Their ids are derived from
   the input events, so if we die before COMMIT the retry republishes the same messages and
   readers drop the repeats.
7. COMMIT. The state, the claimed ids, the letters and the positions become visible together.
8. Commit the offsets to Kafka, at most once every `KAFKA_COMMIT_EVERY_S` while records keep
   coming, and at once when a poll comes back empty, before partitions are given up and on
   stop. The database position is authoritative; the Kafka commit only feeds lag monitoring
   (exact whenever the worker is idle) and is safe to lose. Committing it per batch would cost
   a broker round trip per batch for nothing a reader relies on.

Error policy (the same for every worker):

- **Transient** (the database or the broker does not answer, a deadlock, a retriable broker
  error): nothing was committed; the whole batch is retried with backoff, for as long as it
  takes.
- **A record that cannot be applied** (any other exception while applying a batch): the batch is
  split in halves, each applied and committed on its own, down to the single record that fails.
  That record is tried `Contract.attempts` times, then parked as a dead letter with the error as
  its reason (its id claimed and its position passed, so it is not applied again); the rest of
  the batch carries on. No single input can stop a worker.
- **A bug** (the same failure for record after record: `Contract.bug_limit` records in a row
  failing alone): the worker stops with the error instead of parking the stream away. It
  restarts from the stored positions once the bug is fixed; the records it parked before
  stopping can be re-driven.

Timed work (debounced recomputes, outbox relays) runs beside the batches, in a task and
transactions of its own, so a long recompute never holds up event processing; work that takes
several transactions (a recompute applied in chunks) says so with `TimedWork.again`. A transient
error retries at the next tick, any other error is logged, counted
(`memberflow_timed_work_failures_total`) and retried with a growing pause, never stopping the
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import random
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from shared import deadletter
from shared.deadletter import DeadLetter
from shared.events import Problem
from shared.kafka import FETCH_MAX_WAIT_MS, SESSION_TIMEOUT_MS, consumer_config
from shared.logs import context
from shared.metrics import Metrics, observe_all

log = logging.getLogger(__name__)

# While records keep coming, the Kafka offsets are committed at most this often (step 8).
KAFKA_COMMIT_EVERY_S = 1.0


@dataclass(slots=True)
class Delivery:
    """One Kafka record as the worker received it (not frozen: built once per record, and a
    frozen dataclass builds several times slower)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def ref(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"

    @property
    def identity(self) -> str:
        """Names this record across broker restarts (offsets alone restart at 0)."""
        return f"{self.topic}/{self.partition}@{self.offset}/{self.timestamp_ms}"


class Undecodable(ValueError):
    """A record a reader cannot turn into an event: its problems name the fields."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(slots=True)
class Record:
    """A decoded delivery: the event and where it was read."""

    delivery: Delivery
    event: Any
    digest: bytes | None = None


@dataclass(frozen=True)
class TimedWork:
    """Work driven by time rather than by records: run about every `seconds`, in a transaction
    of its own; what it returns is published before that transaction commits. While `again`
    says there is more to do, it is run again at once, each time in a new transaction."""

    seconds: float
    run: Callable[[Connection, datetime], list[Output]]
    again: Callable[[], bool] = lambda: False
    # Called when a run failed: drop whatever was planned across transactions.
    reset: Callable[[], None] = lambda: None


# A reader turns a record's value into (event, digest), None for records the worker ignores,
# or raises Undecodable.
Reader = Callable[[bytes], tuple[Any, bytes | None] | None]


@dataclass(frozen=True)
class Contract:
    """What a handler states about its input, its errors and its timed work."""

    read: Reader
    handles: frozenset[str]          # event types passed to `apply`; others only move positions
    # Of those, the types whose ids are claimed (with digests) before they are applied; the
    # others are applied idempotently whatever repeats (e.g. a tick: a clock only moves on).
    claims: frozenset[str] = frozenset()
    timed: TimedWork | None = None
    # The topic an event belongs on: one read from another topic is parked, by every worker
    # alike (it would reach some workers and not others, and a replay would route it back).
    route: Callable[[str], str | None] | None = None
    # Records the handler need not read at all (their positions still move): e.g. what the
    # archiver can tell, by ingest's seal, is archived already.
    passes_over: Callable[[Connection, Delivery], bool] | None = None
    attempts: int = 3                # tries of a record that fails alone before it is parked
    bug_limit: int = 5               # records failing alone in a row: a bug, not bad input


@dataclass(frozen=True, slots=True)
class Output:
    """A message the handler wants published once its batch commits."""

    topic: str
    key: bytes | None
    value: bytes
    type: str
    # Sent to every partition of the topic instead of by key: a watermark that each partition's
    # reader must see after the keyed messages published before it.
    broadcast: bool = False
    partition: int | None = None     # an explicit partition (e.g. a per-partition clock)
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Batch:
    """What a handler receives: new events (decoded, claimed, in read order) and all fresh
    records. A handler refuses an event with `park`."""

    records: list[Record]
    deliveries: list[Delivery]
    duplicates: int = 0
    parked: list[DeadLetter] = field(default_factory=list)
    source: str = "worker"

    @property
    def events(self) -> list[Any]:
        return [r.event for r in self.records]

    def park(self, record: Record, problems: Sequence[Problem]) -> None:
        """Refuse an event: it becomes a dead letter written with this batch, never applied."""
        d = record.delivery
        self.parked.append(deadletter.dead_letter(self.source, d.ref, d.value, list(problems),
                                                  key=d.identity))


class Handler(Protocol):
    """A worker's use case: apply a batch inside the transaction, return what to publish."""

    name: str                  # consumer group, and key of its bookkeeping rows
    topics: tuple[str, ...]    # subscribed topics
    contract: Contract

    def apply(self, conn: Connection, batch: Batch) -> list[Output]: ...


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    parked: list[DeadLetter] = field(default_factory=list)

    def add(self, other: BatchResult) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        for tp, o in other.next_offsets.items():
            self.next_offsets[tp] = max(self.next_offsets.get(tp, 0), o)
        for k, n in other.types.items():
            self.types[k] = self.types.get(k, 0) + n
        for k, n in other.published.items():
            self.published[k] = self.published.get(k, 0) + n
        self.parked += other.parked


class BugSuspected(RuntimeError):
    """Record after record fails alone with an error: the worker stops rather than park them."""


def is_transient(exc: BaseException) -> bool:
    """Errors that say the database or the broker did not answer, not that the input is bad."""
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        if isinstance(orig, psycopg.errors.QueryCanceled):
            return False  # a statement that times out on this input would time out again
        return isinstance(exc, OperationalError) or bool(exc.connection_invalidated)
    if isinstance(exc, psycopg.OperationalError):
        return not isinstance(exc, psycopg.errors.QueryCanceled)
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(exc, KafkaTimeoutError)
    return isinstance(exc, ConnectionError | TimeoutError)


def load_positions(conn: Connection, consumer: str) -> dict[TopicPartition, int]:
    rows = conn.exec_driver_sql(
        "SELECT topic, partition, next_offset FROM consumer_positions WHERE consumer = %s",
        (consumer,),
    ).all()
    return {TopicPartition(t, p): o for t, p, o in rows}


def claim_positions(conn: Connection, consumer: str,
                    deliveries: Sequence[Delivery]) -> list[Delivery]:
    """Lock this consumer's positions for the batch and keep only records not yet applied."""
    parts = sorted({(d.topic, d.partition) for d in deliveries})
    # One round trip: the rows are made where missing and locked either way (in key order,
    # as every batch locks them), and their positions come back.
    stored = {
        (t, p): o
        for t, p, o in conn.exec_driver_sql(
            "INSERT INTO consumer_positions AS c (consumer, topic, partition, next_offset) "
            "SELECT %s, t, p, 0 FROM unnest(%b::text[], %b::int[]) AS u(t, p) ORDER BY t, p "
            "ON CONFLICT (consumer, topic, partition) DO UPDATE SET next_offset = c.next_offset "
            "RETURNING topic, partition, next_offset",
            (consumer, [t for t, _ in parts], [p for _, p in parts]),
        ).all()
    }
    return [d for d in deliveries if d.offset >= stored.get((d.topic, d.partition), 0)]


def store_positions(conn: Connection, consumer: str, positions: dict[TopicPartition, int]) -> None:
    if not positions:
        return
    conn.exec_driver_sql(
        "INSERT INTO consumer_positions (consumer, topic, partition, next_offset) "
        "SELECT %s, t, p, o FROM unnest(%b::text[], %b::int[], %b::bigint[]) AS u(t, p, o) "
        "ON CONFLICT (consumer, topic, partition) DO UPDATE "
        "SET next_offset = GREATEST(consumer_positions.next_offset, excluded.next_offset), "
        "    updated_at = now()",
        (consumer, [tp.topic for tp in positions], [tp.partition for tp in positions],
         list(positions.values())),
    )


@dataclass
class Claims:
    fresh: list[Record]
    duplicates: int
    conflicts: list[tuple[Record, bytes | None]]   # (record, the digest stored for its id)


def claim_event_ids(conn: Connection, consumer: str, records: list[Record]) -> Claims:
    """Claim the records' event ids for this consumer (first occurrence wins).

    A repeat with the digest already claimed is a duplicate; with another digest, a conflict.
    """
    if not records:
        return Claims([], 0, [])
    ids = [r.event.event_id for r in records]
    inserted = {r[0] for r in conn.exec_driver_sql(
        "INSERT INTO processed_events (consumer, event_id, digest) "
        "SELECT %s, * FROM unnest(%b::text[], %b::bytea[]) ON CONFLICT DO NOTHING "
        "RETURNING event_id", (consumer, ids, [r.digest for r in records]))}
    # Only ids claimed before (not by this statement) are looked up: usually none.
    earlier = [i for i in dict.fromkeys(ids) if i not in inserted]
    stored: dict[str, bytes | None] = {}
    if earlier:
        stored = {r[0]: r[1] for r in conn.exec_driver_sql(
            "SELECT event_id, digest FROM processed_events "
            "WHERE consumer = %s AND event_id IN (SELECT unnest(%b::text[]))",
            (consumer, earlier))}
    first: dict[str, bytes | None] = {}
    out = Claims([], 0, [])
    for record in records:
        event_id = record.event.event_id
        if event_id in inserted and event_id not in first:
            first[event_id] = record.digest
            out.fresh.append(record)
            continue
        known = first.get(event_id, stored.get(event_id))
        if known is None or record.digest is None or known == record.digest:
            out.duplicates += 1
        else:
            out.conflicts.append((record, known))
    return out


def conflict_problem(event_id: str, stored: bytes | None) -> Problem:
    shown = stored.hex()[:16] if stored else "unknown"
    return Problem("event_id", f"{event_id[:64]!r} was already applied with different content "
                               f"(stored digest {shown}…); one event id names one event")


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, resume every partition from the position stored with the state."""

    def __init__(self, worker: BatchWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.worker.commit_kafka()
        self.worker.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        stored = await asyncio.to_thread(self.worker.stored_positions)
        for tp in assigned:
            # The database is authoritative: a partition this state has never applied starts
            # at the beginning, whatever offset the group may have committed for another state.
            if tp in stored:
                self.worker.consumer.seek(tp, stored[tp])
            else:
                await self.worker.consumer.seek_to_beginning(tp)
        log.info("%s assigned %s", self.worker.handler.name,
                 ", ".join(f"{tp.topic}/{tp.partition}" for tp in assigned) or "nothing")


def _settle_garbage_collector() -> None:
    """Move start-up objects out of the collector's way and collect young objects less often.

    A batch allocates hundreds of thousands of short-lived objects; with the default threshold
    the cyclic collector runs thousands of times per batch, rescanning long-lived modules each
    time. Reference counting still frees the batch objects at once.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 50_000), gen1, gen2)


def _next_offsets(deliveries: Sequence[Delivery]) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for d in deliveries:
        tp = TopicPartition(d.topic, d.partition)
        out[tp] = max(out.get(tp, 0), d.offset + 1)
    return out


class BatchWorker:
    """Runs one handler against the broker and the database until told to stop."""

    def __init__(self, handler: Handler, *, bootstrap: str, engine: Engine,
                 producer: AIOKafkaProducer, dead_letter_topic: str, metrics: Metrics,
                 max_records: int = 5000, session_timeout_ms: int = SESSION_TIMEOUT_MS,
                 fetch_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
        self.handler = handler
        self.contract = handler.contract
        self.engine = engine
        self.producer = producer
        self.dead_letter_topic = dead_letter_topic
        self.metrics = metrics
        self.max_records = max_records
        self.consumer = AIOKafkaConsumer(**consumer_config(
            bootstrap, handler.name, session_timeout_ms=session_timeout_ms,
            fetch_max_wait_ms=fetch_wait_ms))
        self.applied_total = 0
        self.parked_total = 0
        self._next: dict[TopicPartition, int] = {}
        self._uncommitted: dict[TopicPartition, int] = {}   # applied, not yet told to Kafka
        self._kafka_committed_at = 0.0
        self._tick_failures = 0
        self._attempts: dict[str, int] = {}       # record identity -> failed tries alone
        self._loop: asyncio.AbstractEventLoop | None = None
        self.source = f"worker:{handler.name}"

    def stored_positions(self) -> dict[TopicPartition, int]:
        with self.engine.connect() as conn:
            return load_positions(conn, self.handler.name)

    def forget(self, revoked: list[TopicPartition]) -> None:
        """Drop what we report about partitions another member now owns."""
        for tp in revoked:
            self._next.pop(tp, None)
            self._uncommitted.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(self.handler.name, tp.topic, str(tp.partition))

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, apply and commit until `stop` is set."""
        self._loop = asyncio.get_running_loop()
        _settle_garbage_collector()
        await self.consumer.start()
        self.consumer.subscribe(list(self.handler.topics), listener=_SeekToStored(self))
        timed = asyncio.create_task(self._timed_loop(stop), name=f"{self.handler.name}-timed")
        try:
            with context(worker=self.handler.name):
                while not stop.is_set():
                    records = await self.consumer.getmany(timeout_ms=200,
                                                          max_records=self.max_records)
                    deliveries = [
                        Delivery(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp,
                                 tuple(r.headers or ()))
                        for tp in sorted(records, key=lambda tp: (tp.topic, tp.partition))
                        for r in records[tp]
                    ]
                    if deliveries:
                        result = await self._process_with_retry(deliveries)
                        # After COMMIT only; see the module docstring, step 8.
                        self._uncommitted.update(result.next_offsets)
                    if not deliveries or (time.monotonic() - self._kafka_committed_at
                                          >= KAFKA_COMMIT_EVERY_S):
                        await self.commit_kafka()
                    self._report_lag()
        finally:
            timed.cancel()
            await asyncio.gather(timed, return_exceptions=True)
            await self.commit_kafka()
            await self.consumer.stop()

    async def commit_kafka(self) -> None:
        """Tell the group what has been applied since the last commit (see step 8)."""
        if not self._uncommitted:
            return
        offsets, self._uncommitted = self._uncommitted, {}
        self._kafka_committed_at = time.monotonic()
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("Kafka commit failed (%s); database position holds", exc)

    # --- timed work ----------------------------------------------------------------------------

    async def _timed_loop(self, stop: asyncio.Event) -> None:
        """The handler's timed work, beside the batches (never between them)."""
        timed = self.contract.timed
        if timed is None:
            return
        with context(worker=self.handler.name, work="timed"):
            while not stop.is_set():
                pause = timed.seconds
                try:
                    await asyncio.to_thread(self.tick_now)
                    self._tick_failures = 0
                except Exception as exc:
                    timed.reset()
                    if is_transient(exc):
                        self.metrics.db_retries.labels(self.handler.name).inc()
                        log.warning("transient error in timed work, retrying next tick: %s", exc)
                    else:
                        # Not a reason to stop consuming: count it, say it loudly, pause longer
                        # each time.
                        self._tick_failures += 1
                        self.metrics.timed_work_failures.labels(self.handler.name).inc()
                        pause = min(300.0, timed.seconds * 2 ** self._tick_failures)
                        log.error("timed work failed (%d in a row), next try in %.0fs: %s\n%s",
                                  self._tick_failures, pause, exc, traceback.format_exc())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    def tick_now(self) -> int:
        """Run the handler's timed work once, to its end (blocking; each part in a transaction
        of its own); returns how many messages it published."""
        timed = self.contract.timed
        if timed is None:
            return 0
        published = 0
        while True:
            started = time.perf_counter()
            with self.engine.begin() as conn:
                outputs = timed.run(conn, datetime.now(UTC))
                self._publish_blocking(outputs, [])
            self.metrics.tick_seconds.labels(self.handler.name).observe(
                time.perf_counter() - started)
            for out in outputs:
                self.metrics.outputs_published.labels(self.handler.name, out.type).inc()
            published += len(outputs)
            if not timed.again():
                return published

    def _report_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            self.metrics.consumer_lag.labels(self.handler.name, tp.topic, str(tp.partition)).set(
                max(0, high - self._next.get(tp, high)))

    # --- batches -------------------------------------------------------------------------------

    async def _process_with_retry(self, deliveries: list[Delivery]) -> BatchResult:
        delay = 0.2
        while True:
            try:
                started = time.perf_counter()
                result = await asyncio.to_thread(self.process_isolating, deliveries)
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # Transient: the database or broker is unreachable. Nothing was committed, so
                # the same batch is applied again from scratch.
                self.metrics.db_retries.labels(self.handler.name).inc()
                log.warning("transient error, retrying batch in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        name = self.handler.name
        self.metrics.batch_seconds.labels(name).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(name).observe(len(deliveries))
        now_ms = time.time() * 1000
        observe_all(self.metrics.event_lag_seconds.labels(name),
                    [max(0.0, (now_ms - d.timestamp_ms) / 1000) for d in deliveries])
        for event_type, n in result.types.items():
            self.metrics.events_processed.labels(name, event_type).inc(n)
        for event_type, n in result.published.items():
            self.metrics.outputs_published.labels(name, event_type).inc(n)
        if result.duplicates:
            self.metrics.events_duplicate.labels(name).inc(result.duplicates)
        for letter in result.parked:
            self.metrics.events_rejected.labels(self.source, letter.field).inc()
        self.applied_total += result.applied
        self.parked_total += len(result.parked)
        self._next = {**self._next, **result.next_offsets}
        return result

    def process_isolating(self, deliveries: list[Delivery]) -> BatchResult:
        """Apply a batch; if it fails on its input, find and park the records that fail alone."""
        try:
            return self.process(deliveries)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("batch of %d failed (%s: %s); applying it in parts to find the record",
                        len(deliveries), type(exc).__name__, exc)
        result = BatchResult()
        failing_in_a_row = [0]
        self._isolate(deliveries, result, failing_in_a_row)
        return result

    def _isolate(self, deliveries: list[Delivery], result: BatchResult,
                 failing_in_a_row: list[int]) -> None:
        if len(deliveries) > 1:
            half = len(deliveries) // 2
            for part in (deliveries[:half], deliveries[half:]):
                try:
                    result.add(self.process(part))
                    failing_in_a_row[0] = 0
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    self._isolate(part, result, failing_in_a_row)
            return
        [d] = deliveries
        with context(at=d.ref):
            for attempt in range(1, self.contract.attempts + 1):
                self._attempts[d.identity] = attempt
                try:
                    result.add(self.process(deliveries))
                    failing_in_a_row[0] = 0
                    self._attempts.pop(d.identity, None)
                    return
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    error = exc
                    log.warning("record failed alone (attempt %d of %d): %s: %s", attempt,
                                self.contract.attempts, type(exc).__name__, exc)
            failing_in_a_row[0] += 1
            if failing_in_a_row[0] >= self.contract.bug_limit:
                raise BugSuspected(
                    f"{self.handler.name}: {failing_in_a_row[0]} records in a row failed alone "
                    f"(last at {d.ref}: {type(error).__name__}: {error}); this looks like a bug, "
                    "not bad input: stopping") from error
            result.add(self.park(d, error))
            self._attempts.pop(d.identity, None)

    def park(self, d: Delivery, error: BaseException) -> BatchResult:
        """Park one record that cannot be applied: dead letter, id claimed, position passed."""
        problem = Problem("", f"could not be applied after {self.contract.attempts} attempts: "
                              f"{type(error).__name__}: {error}")
        letter = deadletter.dead_letter(self.source, d.ref, d.value, [problem], key=d.identity)
        log.error("parked as a dead letter: %s", problem.problem)
        with self.engine.begin() as conn:
            if claim_positions(conn, self.handler.name, [d]):
                decoded = self._read(d)
                if isinstance(decoded, Record) and decoded.event.type in self.contract.claims:
                    claim_event_ids(conn, self.handler.name, [decoded])
                deadletter.store(conn, [letter])
                store_positions(conn, self.handler.name, _next_offsets([d]))
                self._publish_blocking([], [letter])
        return BatchResult(rejected=1, next_offsets=_next_offsets([d]), parked=[letter])

    def _read(self, d: Delivery) -> Record | DeadLetter | None:
        """The record decoded, a dead letter if it cannot be read, None if it is not for us."""
        try:
            decoded = self.contract.read(d.value)
        except Undecodable as exc:
            return deadletter.dead_letter(self.source, d.ref, d.value, list(exc.problems),
                                          key=d.identity)
        if decoded is None:
            return None
        event, digest = decoded
        return Record(d, event, digest)

    def _home(self, event_type: str) -> str | None:
        route = self.contract.route
        return route(event_type) if route is not None else None

    def process(self, deliveries: list[Delivery]) -> BatchResult:
        """Apply one batch in one transaction (runs in a worker thread; blocking I/O)."""
        handler = self.handler
        next_offsets = _next_offsets(deliveries)
        with self.engine.begin() as conn:
            fresh = claim_positions(conn, handler.name, deliveries)
            records: list[Record] = []
            letters: list[DeadLetter] = []
            unreadable = 0
            passes_over = self.contract.passes_over
            for d in fresh:
                if passes_over is not None and passes_over(conn, d):
                    continue
                read = self._read(d)
                if isinstance(read, DeadLetter):
                    letters.append(read)
                    unreadable += 1
                elif read is None:
                    continue
                elif (home := self._home(read.event.type)) not in (None, d.topic):
                    letters.append(deadletter.dead_letter(
                        self.source, d.ref, d.value, [Problem("type", (
                            f"{read.event.type} events belong on {home}, not {d.topic}"))],
                        key=d.identity))
                elif read.event.type in self.contract.handles:
                    records.append(read)
            duplicates = 0
            if self.contract.claims:
                claimed = [r for r in records if r.event.type in self.contract.claims]
                claims = claim_event_ids(conn, handler.name, claimed)
                fresh_ids = {id(r) for r in claims.fresh}
                records = [r for r in records if r.event.type not in self.contract.claims
                           or id(r) in fresh_ids]
                duplicates = claims.duplicates
                for record, stored in claims.conflicts:
                    d = record.delivery
                    letters.append(deadletter.dead_letter(
                        self.source, d.ref, d.value,
                        [conflict_problem(record.event.event_id, stored)], key=d.identity))
            batch = Batch(records, fresh, duplicates, source=self.source)
            outputs = handler.apply(conn, batch) if fresh else []
            letters += batch.parked
            store_positions(conn, handler.name, next_offsets)
            deadletter.store(conn, letters)
            self._publish_blocking(outputs, letters)
        types: dict[str, int] = {}
        for record in records:
            types[record.event.type] = types.get(record.event.type, 0) + 1
        published: dict[str, int] = {}
        for out in outputs:
            published[out.type] = published.get(out.type, 0) + 1
        return BatchResult(len(records), duplicates, len(letters), next_offsets, types,
                           published, letters)

    # --- publishing ----------------------------------------------------------------------------

    def _publish_blocking(self, outputs: list[Output], letters: list[DeadLetter]) -> None:
        if not outputs and not letters:
            return
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(
            publish(self.producer, [*outputs, *letter_outputs(
                self.dead_letter_topic, letters)]), self._loop)
        future.result()


def letter_outputs(topic: str, letters: Sequence[DeadLetter]) -> list[Output]:
    """Dead letters as messages on the dead-letter topic, keyed by their stable id."""
    return [Output(topic, d.letter_id.encode(), d.to_json(), "dead_letter") for d in letters]


@functools.lru_cache(maxsize=1 << 16)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition the default partitioner gives a key (its murmur2 hash, remembered for the
    keys seen last: one member's events come in runs)."""
    return partitions[_key_hash(key) % len(partitions)]


async def publish(producer: AIOKafkaProducer, messages: Sequence[Output]) -> None:
    """Publish messages and wait for the broker's acks.

    Messages are packed into one record batch per partition (aiokafka's batch API): a batch can
    publish thousands of member events, and sending them one by one costs about three times as
    much. The default partitioner keeps a key's partition, and appending in order keeps each
    partition's order.
    """
    open_batches: dict[tuple[str, int], BatchBuilder] = {}
    sent = []
    topics: dict[str, list[int]] = {}
    for o in messages:
        partitions = topics.get(o.topic)
        if partitions is None:
            partitions = topics[o.topic] = sorted(await producer.partitions_for(o.topic))
        if o.partition is not None:
            targets = [o.partition]
        elif o.broadcast or o.key is None:
            targets = partitions if o.broadcast else [random.choice(partitions)]
        else:
            targets = [partition_of(o.key, partitions)]
        for partition in targets:
            where = (o.topic, partition)
            batch = open_batches.get(where)
            if batch is None:
                batch = open_batches[where] = producer.create_batch()
            headers = list(o.headers)
            if batch.append(key=o.key, value=o.value, timestamp=None, headers=headers) is None:
                sent.append(await producer.send_batch(batch, o.topic, partition=partition))
                batch = open_batches[where] = producer.create_batch()
                if batch.append(key=o.key, value=o.value, timestamp=None,
                                headers=headers) is None:
                    raise ValueError(f"a {o.type} message of {len(o.value)} bytes does "
                                     "not fit a record batch")
    for (topic, partition), batch in open_batches.items():
        sent.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*sent)
