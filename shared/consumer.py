"""Effectively-once batch processing from Kafka into PostgreSQL.

Every worker runs the same loop; only its `Handler` differs. For each poll batch:

1. BEGIN; lock this consumer's stored positions for the batch's partitions and drop records
   below them (already applied: redelivered after a crash between COMMIT and the Kafka commit,
   or fetched by a zombie that lost its partitions).
2. Decode each record with the event contract; a bad one becomes a dead letter.
3. Claim the event ids in `processed_events`; ids claimed before are duplicates and skipped.
4. The handler applies the new events and returns the member events to publish.
5. Store the new positions.
6. Publish outputs and dead letters and wait for the broker's acks. They carry deterministic
   ids, so if we die before COMMIT the retry republishes the same messages and readers dedupe.
7. COMMIT. The state, the claimed ids and the positions become visible together.
8. Commit the offsets to Kafka. The database position is authoritative; the Kafka commit only
   feeds lag monitoring and is safe to lose.

Error policy: a bad event is dead-lettered (never stops the worker); a transient database or
broker error retries the whole batch with backoff (nothing was committed); anything else is a bug
and crashes the worker, which restarts from the stored positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from shared.deadletter import DeadLetter, dead_letter
from shared.events import EventModel, EventRejected, decode
from shared.kafka import consumer_config
from shared.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One Kafka record as the worker received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int

    @property
    def ref(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


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


@dataclass
class Batch:
    """What a handler receives: new events (decoded, not seen before) and all fresh records."""

    events: list[EventModel]
    deliveries: list[Delivery]
    duplicates: int = 0


class Handler(Protocol):
    """A worker's use case: apply a batch inside the transaction, return what to publish."""

    name: str                  # consumer group, and key of its bookkeeping rows
    topics: tuple[str, ...]    # subscribed topics
    event_topics: frozenset[str]  # of those, the ones carrying inbound events to decode
    handles: frozenset[str]    # event types passed to `apply`; others are skipped
    # Event types whose ids are claimed in processed_events, so a repeat is skipped. Types the
    # handler applies idempotently by their own key (an order completes once) need no claim.
    claims_ids: frozenset[str]
    parks_rejects: bool        # dead-letter undecodable events (one worker per topic does)

    def apply(self, conn: Connection, batch: Batch) -> list[Output]: ...


class Ticking(Protocol):
    """A handler with work driven by time rather than by records (debounced recomputes, relays).

    `tick` runs between batches, about every `tick_seconds`, in a transaction of its own; what it
    returns is published before that transaction commits, like a batch's outputs.
    """

    tick_seconds: float

    def tick(self, conn: Connection, now: datetime) -> list[Output]: ...


@dataclass
class BatchResult:
    applied: int
    duplicates: int
    rejected: int
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)


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
    topics = [t for t, _ in parts]
    partitions = [p for _, p in parts]
    conn.exec_driver_sql(
        "INSERT INTO consumer_positions (consumer, topic, partition, next_offset) "
        "SELECT %s, t, p, 0 FROM unnest(%s::text[], %s::int[]) AS u(t, p) "
        "ON CONFLICT DO NOTHING",
        (consumer, topics, partitions),
    )
    stored = {
        (t, p): o
        for t, p, o in conn.exec_driver_sql(
            "SELECT topic, partition, next_offset FROM consumer_positions "
            "WHERE consumer = %s AND (topic, partition) IN "
            "(SELECT * FROM unnest(%s::text[], %s::int[])) ORDER BY topic, partition FOR UPDATE",
            (consumer, topics, partitions),
        ).all()
    }
    return [d for d in deliveries if d.offset >= stored.get((d.topic, d.partition), 0)]


def store_positions(conn: Connection, consumer: str, positions: dict[TopicPartition, int]) -> None:
    conn.exec_driver_sql(
        "INSERT INTO consumer_positions (consumer, topic, partition, next_offset) "
        "SELECT %s, t, p, o FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS u(t, p, o) "
        "ON CONFLICT (consumer, topic, partition) DO UPDATE "
        "SET next_offset = GREATEST(consumer_positions.next_offset, excluded.next_offset), "
        "    updated_at = now()",
        (consumer, [tp.topic for tp in positions], [tp.partition for tp in positions],
         list(positions.values())),
    )


def claim_event_ids(conn: Connection, consumer: str, events: list[EventModel]) -> list[EventModel]:
    """Keep the events whose id this consumer has never applied (first occurrence wins)."""
    if not events:
        return []
    fresh = {
        row[0]
        for row in conn.exec_driver_sql(
            "INSERT INTO processed_events (consumer, event_id) SELECT %s, unnest(%s::text[]) "
            "ON CONFLICT DO NOTHING RETURNING event_id",
            (consumer, [e.event_id for e in events]),
        )
    }
    out = []
    for event in events:
        if event.event_id in fresh:
            fresh.discard(event.event_id)
            out.append(event)
    return out


def _claim(conn: Connection, handler: Handler, events: list[EventModel]) -> list[EventModel]:
    """The events to apply: claimed types only the first time their id is seen."""
    if not handler.claims_ids:
        return events
    claimed = [e for e in events if e.type in handler.claims_ids]
    if not claimed:
        return events
    fresh = {id(e) for e in claim_event_ids(conn, handler.name, claimed)}
    return [e for e in events if e.type not in handler.claims_ids or id(e) in fresh]


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, resume every partition from the position stored with the state."""

    def __init__(self, worker: BatchWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
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


class BatchWorker:
    """Runs one handler against the broker and the database until told to stop."""

    def __init__(self, handler: Handler, *, bootstrap: str, engine: Engine,
                 producer: AIOKafkaProducer, dead_letter_topic: str, metrics: Metrics,
                 max_records: int = 5000) -> None:
        self.handler = handler
        self.engine = engine
        self.producer = producer
        self.dead_letter_topic = dead_letter_topic
        self.metrics = metrics
        self.max_records = max_records
        self.consumer = AIOKafkaConsumer(**consumer_config(bootstrap, handler.name))
        self._partitioner = DefaultPartitioner()  # what the producer does with a key
        self.applied_total = 0
        self._next: dict[TopicPartition, int] = {}
        self._next_tick = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def stored_positions(self) -> dict[TopicPartition, int]:
        with self.engine.connect() as conn:
            return load_positions(conn, self.handler.name)

    def forget(self, revoked: list[TopicPartition]) -> None:
        """Drop what we report about partitions another member now owns."""
        for tp in revoked:
            self._next.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(self.handler.name, tp.topic, str(tp.partition))

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, apply and commit until `stop` is set."""
        self._loop = asyncio.get_running_loop()
        _settle_garbage_collector()
        await self.consumer.start()
        self.consumer.subscribe(list(self.handler.topics), listener=_SeekToStored(self))
        try:
            while not stop.is_set():
                records = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
                deliveries = [
                    Delivery(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
                    for tp in sorted(records, key=lambda tp: (tp.topic, tp.partition))
                    for r in records[tp]
                ]
                await self._maybe_tick()
                if deliveries:
                    result = await self._process_with_retry(deliveries)
                    # After COMMIT only; see the module docstring, step 8.
                    try:
                        await self.consumer.commit(result.next_offsets)
                    except KafkaError as exc:
                        log.warning("%s: Kafka commit failed (%s); database position holds",
                                    self.handler.name, exc)
                self._report_lag()
        finally:
            await self.consumer.stop()

    async def _maybe_tick(self) -> None:
        ticking = self.handler if hasattr(self.handler, "tick") else None
        if ticking is None or time.monotonic() < self._next_tick:
            return
        self._next_tick = time.monotonic() + cast(Ticking, ticking).tick_seconds
        try:
            await asyncio.to_thread(self.tick_now)
        except (OperationalError, KafkaError) as exc:
            self.metrics.db_retries.labels(self.handler.name).inc()
            log.warning("%s: transient error in timed work, retrying next tick: %s",
                        self.handler.name, exc)

    def tick_now(self) -> int:
        """Run the handler's timed work once (blocking); returns how many messages it published."""
        ticking = cast(Ticking, self.handler)
        started = time.perf_counter()
        with self.engine.begin() as conn:
            outputs = ticking.tick(conn, datetime.now(UTC))
            self._publish_blocking(outputs, [])
        self.metrics.tick_seconds.labels(self.handler.name).observe(time.perf_counter() - started)
        for out in outputs:
            self.metrics.outputs_published.labels(self.handler.name, out.type).inc()
        return len(outputs)

    def _report_lag(self) -> None:
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            self.metrics.consumer_lag.labels(self.handler.name, tp.topic, str(tp.partition)).set(
                max(0, high - self._next.get(tp, high)))

    async def _process_with_retry(self, deliveries: list[Delivery]) -> BatchResult:
        delay = 0.2
        while True:
            try:
                started = time.perf_counter()
                result = await asyncio.to_thread(self.process, deliveries)
                break
            except (OperationalError, KafkaError) as exc:
                # Transient: the database or broker is unreachable. Nothing was committed, so
                # the same batch is applied again from scratch.
                self.metrics.db_retries.labels(self.handler.name).inc()
                log.warning("%s: transient error, retrying batch in %.1fs: %s",
                            self.handler.name, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        name = self.handler.name
        self.metrics.batch_seconds.labels(name).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(name).observe(len(deliveries))
        now_ms = time.time() * 1000
        self.metrics.event_lag_seconds.labels(name).observe(
            max(0.0, (now_ms - deliveries[-1].timestamp_ms) / 1000))
        for event_type, n in result.types.items():
            self.metrics.events_processed.labels(name, event_type).inc(n)
        for event_type, n in result.published.items():
            self.metrics.outputs_published.labels(name, event_type).inc(n)
        if result.duplicates:
            self.metrics.events_duplicate.labels(name).inc(result.duplicates)
        self.applied_total += result.applied
        self._next = {**self._next, **result.next_offsets}
        return result

    def process(self, deliveries: list[Delivery]) -> BatchResult:
        """Apply one batch in one transaction (runs in a worker thread; blocking I/O)."""
        handler = self.handler
        next_offsets: dict[TopicPartition, int] = {}
        for d in deliveries:
            tp = TopicPartition(d.topic, d.partition)
            next_offsets[tp] = max(next_offsets.get(tp, 0), d.offset + 1)
        with self.engine.begin() as conn:
            fresh = claim_positions(conn, handler.name, deliveries)
            events: list[EventModel] = []
            dead: list[DeadLetter] = []
            invalid = 0
            for d in fresh:
                if d.topic not in handler.event_topics:
                    continue
                try:
                    event = decode(d.value)
                except EventRejected as exc:
                    invalid += 1
                    if handler.parks_rejects:
                        dead.append(dead_letter(f"worker:{handler.name}", d.ref, d.value,
                                                exc.problems))
                    continue
                if event.type in handler.handles:
                    events.append(event)
            new = _claim(conn, handler, events)
            batch = Batch(new, fresh, duplicates=len(events) - len(new))
            outputs = handler.apply(conn, batch) if fresh else []
            store_positions(conn, handler.name, next_offsets)
            self._publish_blocking(outputs, dead)
        types: dict[str, int] = {}
        for event in new:
            types[event.type] = types.get(event.type, 0) + 1
        published: dict[str, int] = {}
        for out in outputs:
            published[out.type] = published.get(out.type, 0) + 1
        # Parked here for being undecodable, or by the handler itself (e.g. too late).
        parked = dead + [DeadLetter.from_json(o.value) for o in outputs
                         if o.topic == self.dead_letter_topic]
        for letter in parked:
            self.metrics.events_rejected.labels(
                f"worker:{handler.name}", letter.problems[0].field or "-").inc()
        return BatchResult(len(new), batch.duplicates, invalid, next_offsets, types, published)

    def _publish_blocking(self, outputs: list[Output], dead: list[DeadLetter]) -> None:
        if not outputs and not dead:
            return
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._publish(outputs, dead), self._loop)
        future.result()

    async def _publish(self, outputs: list[Output], dead: list[DeadLetter]) -> None:
        # Messages are packed into one record batch per partition (aiokafka's batch API): a
        # batch can publish thousands of member events, and sending them one by one costs
        # about three times as much. The default partitioner keeps a key's partition, and
        # appending in order keeps each partition's order.
        messages = [*outputs, *(Output(self.dead_letter_topic, None, d.to_json(), "dead_letter")
                                for d in dead)]
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        sent = []
        for o in messages:
            partitions = sorted(await self.producer.partitions_for(o.topic))
            targets = partitions if o.broadcast else [
                self._partitioner(o.key, partitions, partitions)]
            for partition in targets:
                where = (o.topic, partition)
                batch = open_batches.get(where)
                if batch is None:
                    batch = open_batches[where] = self.producer.create_batch()
                if batch.append(key=o.key, value=o.value, timestamp=None) is None:
                    sent.append(await self.producer.send_batch(batch, o.topic,
                                                               partition=partition))
                    batch = open_batches[where] = self.producer.create_batch()
                    if batch.append(key=o.key, value=o.value, timestamp=None) is None:
                        raise ValueError(f"a {o.type} message of {len(o.value)} bytes does "
                                         "not fit a record batch")
        for (topic, partition), batch in open_batches.items():
            sent.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)
