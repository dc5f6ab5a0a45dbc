"""A synchronous producer for storefronts written in Python (kafka-python underneath).

    from services.ingest.producer import EventProducer
    with EventProducer("kafka:9092") as events:
        events.send({"event_id": "...", "type": "order.completed", ...})

`send` validates with the same contract as the HTTP endpoint and raises `EventRejected` (naming
the field and the problem) before anything reaches the broker. `flush` returns once every event
sent is acknowledged, and what acknowledged means depends on the broker:

- Apache Kafka (production): `acks=all`, so an acknowledged event is on every in-sync replica;
  the archiver worker then copies it into the archive.
- The embedded broker keeps nothing across a restart, so pass `database_url`: events are then
  archived first, exactly like HTTP ingest does (one transaction: archive, broker acks, COMMIT),
  and `flush` returns only when they are in the archive. Events repeated or conflicting with
  the archive raise `EventRejected` from `flush`, naming the event id.
"""

from __future__ import annotations

from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from kafka import KafkaProducer
from sqlalchemy import Engine

from shared import archive
from shared.consumer import conflict_problem
from shared.db import make_engine
from shared.events import EventModel, EventRejected, Problem, decode, validate
from shared.kafka import REQUEST_TIMEOUT_MS
from shared.topics import Topics

BUFFER = 1000


class EventProducer:
    """Validates and sends events keyed by shop and member, so one member's events stay ordered."""

    def __init__(self, bootstrap: str, topics: Topics | None = None, *,
                 database_url: str | None = None, lateness: timedelta = timedelta(hours=24),
                 **config: Any) -> None:
        self.topics = topics or Topics()
        self.lateness = lateness
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5,
            request_timeout_ms=REQUEST_TIMEOUT_MS, **config)
        self._engine: Engine | None = (make_engine(database_url, pool_size=1)
                                       if database_url else None)
        self._pending: list[EventModel] = []
        self._futures: list[Any] = []

    def send(self, event: EventModel | dict[str, Any] | bytes | str) -> str:
        """Validate and send one event (`flush` waits for it). Returns its event id."""
        if isinstance(event, bytes | str):
            event = decode(event)
        elif isinstance(event, dict):
            event = validate(event)
        if event.type == "clock.ticked":
            raise EventRejected([Problem("type", "clock.ticked is recorded by memberflow "
                                                 "itself; it is not accepted from outside")])
        if self._engine is None:
            self._futures.append(self._producer.send(
                self.topics.for_type(event.type), event.to_json(), key=event.key))
        else:
            self._pending.append(event)
            if len(self._pending) >= BUFFER:
                self.flush()
        return event.event_id

    def flush(self, timeout: float | None = None) -> None:
        """Block until every sent event is acknowledged (archived, with `database_url`)."""
        if self._engine is None or not self._pending:
            self._producer.flush(timeout)
            self._raise_failed()
            return
        events, self._pending = self._pending, []
        with self._engine.begin() as conn:
            stored = archive.store(conn, events, lateness=self.lateness)
            key = archive.archive_key(conn)
            for event in stored.new:
                # Every event a storefront sends names its shop: a verdict always exists.
                for out in archive.relay_outputs(self.topics, event, key,
                                                 event.event_id in stored.late,
                                                 stored.late.get(event.event_id)):
                    self._futures.append(self._producer.send(
                        out.topic, out.value, key=out.key, headers=list(out.headers)))
            # Before COMMIT: an acknowledged event is both archived and on the broker.
            self._producer.flush(timeout)
            self._raise_failed()
        if stored.conflicts:
            raise EventRejected([conflict_problem(e.event_id, known)
                                 for e, known in stored.conflicts])

    def _raise_failed(self) -> None:
        """Raise the error of any send the broker refused (flush itself does not)."""
        futures, self._futures = self._futures, []
        for future in futures:
            future.get(timeout=0)

    def close(self) -> None:
        self._producer.close()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if t is None:
            self.flush()
        self.close()
