"""Ingest use case: validate inbound events, produce the good ones, park the bad ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.deadletter import dead_letter
from shared.events import EventModel, EventRejected, Problem, decode, validate
from shared.metrics import Metrics
from shared.topics import Topics


@dataclass(frozen=True)
class Verdict:
    """What became of one submitted event."""

    ref: str
    event_id: str | None
    problems: tuple[Problem, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ref": self.ref, "event_id": self.event_id,
                               "status": "accepted" if self.accepted else "rejected"}
        if self.problems:
            out["errors"] = [{"field": p.field, "problem": p.problem} for p in self.problems]
        return out


@dataclass
class Tally:
    accepted: int = 0
    rejected: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class Ingestor:
    """Validates events with the contract and produces them keyed by shop and member."""

    def __init__(self, producer: AIOKafkaProducer, topics: Topics, metrics: Metrics,
                 source: str) -> None:
        self.producer = producer
        self.topics = topics
        self.metrics = metrics
        self.source = source
        self.tally = Tally()

    def check(self, item: bytes | str | Any) -> EventModel:
        """Validate one event given as JSON text or as a parsed object."""
        return decode(item) if isinstance(item, bytes | str) else validate(item)

    async def submit(self, items: Sequence[tuple[str, Any]]) -> list[Verdict]:
        """Validate and produce a batch; returns once the broker has acknowledged every send."""
        verdicts: list[Verdict] = []
        sends: list[asyncio.Future[Any]] = []
        for ref, item in items:
            try:
                event = self.check(item)
            except EventRejected as exc:
                verdicts.append(Verdict(ref, _event_id_of(item), tuple(exc.problems)))
                sends.append(await self.park(ref, item, exc.problems))
                continue
            sends.append(await self.producer.send(
                self.topics.for_type(event.type), event.to_json(), key=event.key))
            verdicts.append(Verdict(ref, event.event_id))
            self.tally.by_type[event.type] = self.tally.by_type.get(event.type, 0) + 1
            self.metrics.ingest_accepted.labels(self.source, event.type).inc()
        await asyncio.gather(*sends)
        accepted = sum(v.accepted for v in verdicts)
        self.tally.accepted += accepted
        self.tally.rejected += len(verdicts) - accepted
        return verdicts

    async def park(self, ref: str, raw: Any, problems: Sequence[Problem]) -> asyncio.Future[Any]:
        """Send a rejected input to the dead-letter topic; returns the send's future."""
        text = raw if isinstance(raw, bytes | str) else _json_text(raw)
        letter = dead_letter(self.source, ref, text, list(problems))
        field_name = problems[0].field if problems else ""
        self.metrics.events_rejected.labels(self.source, field_name or "-").inc()
        fut: asyncio.Future[Any] = await self.producer.send(self.topics.dead_letters,
                                                            letter.to_json())
        return fut


def _event_id_of(item: Any) -> str | None:
    event_id = item.get("event_id") if isinstance(item, dict) else None
    return event_id if isinstance(event_id, str) else None


def _json_text(obj: Any) -> str:
    return json.dumps(obj, default=str)
