"""A synchronous producer for storefronts written in Python (kafka-python underneath).

    from services.ingest.producer import EventProducer
    with EventProducer("kafka:9092") as events:
        events.send({"event_id": "...", "type": "order.completed", ...})

`send` validates with the same contract as the HTTP endpoint and raises `EventRejected` (naming
the field and the problem) before anything reaches the broker.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from kafka import KafkaProducer

from shared.events import EventModel, decode, validate
from shared.kafka import REQUEST_TIMEOUT_MS
from shared.topics import Topics


class EventProducer:
    """Validates and sends events keyed by shop and member, so one member's events stay ordered."""

    def __init__(self, bootstrap: str, topics: Topics | None = None, **config: Any) -> None:
        self.topics = topics or Topics()
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5,
            request_timeout_ms=REQUEST_TIMEOUT_MS, **config)

    def send(self, event: EventModel | dict[str, Any] | bytes | str) -> str:
        """Validate and send one event (asynchronously; `flush` waits). Returns its event id."""
        if isinstance(event, bytes | str):
            event = decode(event)
        elif isinstance(event, dict):
            event = validate(event)
        self._producer.send(self.topics.for_type(event.type), event.to_json(), key=event.key)
        return event.event_id

    def flush(self, timeout: float | None = None) -> None:
        """Block until every sent event is acknowledged by the broker."""
        self._producer.flush(timeout)

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if t is None:
            self.flush()
        self.close()
