"""Kafka client settings and admin helpers shared by every service (aiokafka underneath)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from shared.trouble import BrokerUnreachable as BrokerUnreachable  # raised here

# Tansu holds a group's first JoinGroup for half the session timeout, so short sessions keep
# start-up quick; requests must outlive that hold.
SESSION_TIMEOUT_MS = 10_000
REQUEST_TIMEOUT_MS = 40_000
FETCH_MAX_WAIT_MS = 50


def consumer_config(bootstrap: str, group: str | None, **extra: Any) -> dict[str, Any]:
    """Consumer settings for batch processing with offsets committed by hand."""
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": 3_000,
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
        "max_poll_interval_ms": 300_000,
        "fetch_max_bytes": 32 * 1024 * 1024,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "rebalance_timeout_ms": 30_000,
        # How long the broker may hold a fetch that found nothing. On Tansu a record produced
        # to an idle consumer arrived ~115 ms later with aiokafka's default (500 ms) and ~12 ms
        # later with 50 ms; Apache Kafka answers a held fetch as soon as data arrives, so the
        # short wait only has an idle consumer ask 20 times a second.
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        **extra,
    }


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """Producer settings: acks from all replicas, batched, idempotent where the broker allows."""
    return {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 1024 * 1024,
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
        **extra,
    }


async def _admin(bootstrap: str, deadline_s: float = 30.0) -> AIOKafkaAdminClient:
    """An admin client, retrying a broker that is still starting for up to `deadline_s`; then
    one clear error instead of a log line per attempt."""
    end = time.monotonic() + deadline_s
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)    # each failed attempt would log an ERROR
    try:
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap,
                                        request_timeout_ms=REQUEST_TIMEOUT_MS)
            try:
                await admin.start()
                return admin
            except KafkaConnectionError:
                await admin.close()
                if time.monotonic() > end:
                    raise BrokerUnreachable(
                        f"no Kafka broker answers at {bootstrap} (tried for {deadline_s:.0f} s);"
                        " check MEMBERFLOW_KAFKA or --kafka, or leave both unset for the "
                        "embedded broker") from None
                await asyncio.sleep(0.2)
    finally:
        quiet.setLevel(level)


async def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int) -> None:
    """Create the topics that do not exist yet (existing ones are left as they are)."""
    admin = await _admin(bootstrap)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            # Created concurrently by another process is what we wanted anyway.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The next offset to be written in every partition of the topics.

    Asks twice: ListOffsets, then a fetch from just before that answer, whose high watermark is
    authoritative. The embedded Tansu broker answers ListOffsets(latest) with the base offset
    of the partition's last record batch plus one, which falls short of the log end whenever
    that batch held more than one record; the fetch response carries the true end.
    """
    consumer = AIOKafkaConsumer(**consumer_config(bootstrap, None))
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or await _partitions(consumer, t))
        ]
        if not tps:
            return {}
        ends: dict[TopicPartition, int] = dict(await consumer.end_offsets(tps))
        written = [tp for tp in tps if ends[tp] > 0]
        if written:
            consumer.assign(written)
            for tp in written:
                consumer.seek(tp, ends[tp] - 1)
            deadline = time.monotonic() + 10
            while (any(consumer.highwater(tp) is None for tp in written)
                   and time.monotonic() < deadline):
                await consumer.getmany(timeout_ms=200, max_records=1)
            for tp in written:
                ends[tp] = max(ends[tp], consumer.highwater(tp) or 0)
        return ends
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return set(consumer.partitions_for_topic(topic) or ())


async def group_lag(bootstrap: str, group: str, topics: Iterable[str]) -> int:
    """Messages written to the topics but not yet committed by the consumer group."""
    ends = await end_offsets(bootstrap, topics)
    admin = await _admin(bootstrap)
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=list(ends))
    finally:
        await admin.close()
    lag = 0
    for tp, end in ends.items():
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag += max(0, end - done)
    return lag


def producer(bootstrap: str, **extra: Any) -> AIOKafkaProducer:
    """An unstarted aiokafka producer with the project's settings."""
    return AIOKafkaProducer(**producer_config(bootstrap, **extra))
