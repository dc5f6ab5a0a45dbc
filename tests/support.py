"""Helpers for integration tests: drive the real pipeline and read its state back."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from sqlalchemy import Engine

from memberflow.runtime import Services, Stack
from services.ingest.handlers import Ingestor
from services.ingest.replay import ReplayReport, replay
from services.ingest.ticker import record_tick
from shared import kafka
from shared.db import make_engine
from shared.metrics import Metrics

FIGURES = ("completed_trades", "gross_cents", "refunded_cents", "spend_cents",
           "first_purchase_at", "last_purchase_at")


def wait_until(condition: Callable[[], Any], deadline_s: float = 60.0, what: str = "condition",
               interval: float = 0.05) -> Any:
    """Poll until `condition()` is truthy; fail with `what` after the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(interval)


def as_items(events: Iterable[dict[str, Any] | str]) -> list[tuple[str, Any]]:
    return [(f"line {i}", e if isinstance(e, str) else json.dumps(e))
            for i, e in enumerate(events, start=1)]


async def produce(stack: Stack, events: Iterable[dict[str, Any] | str]) -> ReplayReport:
    """Validate, archive and produce events the way `memberflow replay` does."""
    producer = kafka.producer(stack.bootstrap)
    engine = make_engine(stack.database_url, pool_size=2)
    await producer.start()
    try:
        settings = stack.settings
        ingestor = Ingestor(engine, producer, stack.topics, Metrics(), "replay",
                            lateness=settings.lateness, bounds=settings.bounds)
        return await replay(iter(as_items(events)), ingestor)
    finally:
        await producer.stop()
        engine.dispose()


async def run_pipeline(stack: Stack, events: Sequence[dict[str, Any] | str],
                       workers: Sequence[str] = ("archiver", "tiering"),
                       as_of: datetime | None = None) -> ReplayReport:
    """Start the workers, replay the events (then a tick at `as_of`, if given), wait until
    every worker has caught up, stop."""
    services = Services(stack, list(workers), Metrics())
    await services.start()
    try:
        report = await produce(stack, events)
        if as_of is not None:
            assert await record_tick(services.ingestor_for("test", ticks=True), as_of, "test")
        await services.wait_caught_up(deadline_s=120)
        return report
    finally:
        await services.close()


def pipeline(stack: Stack, events: Sequence[dict[str, Any] | str], **kw: Any) -> ReplayReport:
    return asyncio.run(run_pipeline(stack, events, **kw))


def member_figures(engine: Engine) -> dict[tuple[str, str], dict[str, Any]]:
    """Every member's stored figures, keyed by (shop_id, member_id)."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT shop_id, member_id, {', '.join(FIGURES)} FROM members").all()
    return {(r[0], r[1]): dict(zip(FIGURES, r[2:], strict=True)) for r in rows}


def expected_member_figures(events: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The sample generator's independent oracle, in the shape `member_figures` returns."""
    from memberflow.sample import expected_figures

    def norm(v: Any) -> Any:
        return datetime.fromisoformat(v) if isinstance(v, str) else v
    return {k: {f: norm(v[f]) for f in FIGURES} for k, v in expected_figures(events).items()}


def scalar(engine: Engine, sql: str, *params: Any) -> Any:
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql, params).scalar()


async def _read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    ends = await kafka.end_offsets(bootstrap, [topic])
    consumer = AIOKafkaConsumer(**kafka.consumer_config(bootstrap, None))
    await consumer.start()
    try:
        parts = [tp for tp, end in ends.items() if end > 0]
        consumer.assign(parts)
        for tp in parts:
            await consumer.seek_to_beginning(tp)
        out: list[dict[str, Any]] = []
        remaining = {tp: ends[tp] for tp in parts}
        deadline = time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for r in records:
                    if r.offset < ends[tp]:
                        out.append(json.loads(r.value))
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.pop(tp, None)
        if remaining:
            raise AssertionError(f"could not read {topic} to its end: {remaining}")
        return out
    finally:
        await consumer.stop()


def read_topic(stack: Stack, topic: str) -> list[dict[str, Any]]:
    """Every message on a topic up to its current end, decoded from JSON."""
    return asyncio.run(_read_topic(stack.bootstrap, topic))


def unique_by_id(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeats of an event id, as a reader of member events does."""
    seen: dict[str, dict[str, Any]] = {}
    for m in messages:
        seen.setdefault(m["event_id"], m)
    return list(seen.values())


def shuffled_within_members(history: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Each member's events in a random order, members interleaved at random."""
    rng = random.Random(seed)
    per_member: dict[str, list[dict[str, Any]]] = {}
    for e in history:
        per_member.setdefault(e["member_id"], []).append(e)
    queues = []
    for events in per_member.values():
        events = events[:]
        rng.shuffle(events)
        queues.append(events)
    out: list[dict[str, Any]] = []
    while queues:
        q = rng.choice(queues)
        out.append(q.pop(0))
        if not q:
            queues.remove(q)
    return out


def storefront_key(database_url: str, shops: list[str] | None = None,
                   rights: str = "ingest,read") -> str:
    """A key for the storefront's routes (every shop unless `shops`), as an operator makes one."""
    from shared import tokens
    from shared.db import make_engine

    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            return tokens.create(conn, name="test-storefront", shops=shops,
                                 rights=rights.split(","), expires_in=None,
                                 operator="test").token
    finally:
        engine.dispose()


def key_header(key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}


class Running:
    """Workers (and the HTTP ingest) running in a thread of their own, for tests that talk to
    them synchronously, as a storefront would."""

    def __init__(self, stack: Stack, workers: Sequence[str], http: bool = True) -> None:
        import threading

        self.stack = stack
        self.workers = list(workers)
        self.http = http
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Running:
        self._thread.start()

        async def start() -> Services:
            # Built inside the loop: the producer and the stop event belong to it.
            services = Services(self.stack, self.workers, Metrics(),
                                http_port=0 if self.http else None)
            await services.start()
            return services
        self.services: Services = self.call(start())
        self.key = storefront_key(self.stack.database_url)
        return self

    def call(self, coro: Any, timeout: float = 300.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def post(self, body: bytes) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        assert self.services.http_url is not None
        request = urllib.request.Request(self.services.http_url + "/v1/events", data=body,
                                         headers=key_header(self.key))
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def caught_up(self, deadline_s: float = 120.0) -> None:
        self.call(self.services.wait_caught_up(deadline_s=deadline_s), deadline_s + 10)
        self.services.check()

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.services.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
