"""Ingest use case: validate inbound events, archive the good ones, relay them, park the bad ones.

What an acknowledgement means: `submit` returns (and the HTTP endpoint answers 202) only after
one PostgreSQL transaction has committed that holds

1. every accepted event in the archive (`events`), with its digest and lateness verdict,
2. every rejected input as a dead letter,

and, before that COMMIT, the broker has acknowledged every new event (and dead letter) on its
topic. So an acknowledged event is in the archive, which survives a SIGKILL of any process (the
embedded broker keeps nothing across a restart; a fresh one is refilled from the archive, see
`services.ingest.recovery`). If the broker or the database does not answer, nothing is
acknowledged and the caller retries; events that reached the broker without their COMMIT are
archived by the archiver worker when it reads them, and a retry is recognised by its id.

With Apache Kafka in production the producer uses `acks=all`: a broker ack means the event is
on every in-sync replica (durable when the topic has `min.insync.replicas` >= 2), and the archive
COMMIT after it adds the PostgreSQL copy that replays read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import Engine

from shared import archive, deadletter
from shared.consumer import Output, conflict_problem, is_transient, letter_outputs, publish
from shared.deadletter import DeadLetter
from shared.events import (
    CLOCK_TYPES,
    DEFAULT_BOUNDS,
    EventModel,
    EventRejected,
    Problem,
    TimeBounds,
    decode,
    validate,
)
from shared.metrics import Metrics
from shared.topics import Topics

log = logging.getLogger(__name__)

# Events archived in one transaction at most when submitted batches share it.
GROUP_MAX = 5000
Checked = tuple[str, Any, "EventModel | None", tuple["Problem", ...]]
"""(ref, item as given, the event if the contract accepts it, the problems if not)."""


@dataclass(frozen=True)
class Verdict:
    """What became of one submitted event."""

    ref: str
    event_id: str | None
    problems: tuple[Problem, ...] = ()
    status: str = "accepted"          # accepted | duplicate | rejected | conflict
    notes: tuple[Problem, ...] = ()   # accepted, but: e.g. too late for campaign attribution
    occurred_at: datetime | None = None

    @property
    def accepted(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ref": self.ref, "event_id": self.event_id, "status": self.status}
        if self.problems:
            out["errors"] = [{"field": p.field, "problem": p.problem} for p in self.problems]
        if self.notes:
            out["notes"] = [{"field": p.field, "problem": p.problem} for p in self.notes]
        return out


@dataclass(frozen=True)
class Refused:
    """An input its reader already knows breaks the contract (a CSV row whose payload cell is
    not JSON): `item` is kept whole for the dead letter, `problems` say why."""

    item: Any
    problems: tuple[Problem, ...]


@dataclass
class Tally:
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class Unavailable(RuntimeError):
    """The database or the broker did not answer: nothing was acknowledged; retry."""


def late_note(behind: timedelta, lateness: timedelta) -> Problem:
    return Problem("occurred_at", (
        f"accepted, but too late for campaign attribution: {behind} behind the newest event "
        f"of its shop on its stream (the bound is {lateness}); it counts everywhere else"))


class Ingestor:
    """Validates events with the contract, archives and relays them, parks what it refuses."""

    def __init__(self, engine: Engine, producer: AIOKafkaProducer, topics: Topics,
                 metrics: Metrics, source: str, *, lateness: timedelta = timedelta(hours=24),
                 bounds: TimeBounds = DEFAULT_BOUNDS, republish: bool = False,
                 ticks: bool = False, answer_within_s: float = 10.0) -> None:
        self.engine = engine
        self.producer = producer
        self.topics = topics
        self.metrics = metrics
        self.source = source
        self.lateness = lateness
        self.bounds = bounds
        # Replaying the archive itself: its events are archived already, publish them all.
        self.republish = republish
        # Pipeline ticks move every shop's clock: only memberflow's own sources may record them.
        self.ticks = ticks
        # How long a sender waits at most for the archive's commit before a 503.
        self.answer_within_s = answer_within_s
        self.tally = Tally()
        self._waiting: deque[tuple[list[Checked], asyncio.Future[list[Verdict]]]] = deque()
        self._writer: asyncio.Future[None] | None = None

    def check(self, item: bytes | str | Any) -> EventModel:
        """Validate one event given as JSON text or as a parsed object."""
        event = (decode(item, bounds=self.bounds) if isinstance(item, bytes | str)
                 else validate(item, bounds=self.bounds))
        if event.type in CLOCK_TYPES and not self.ticks:
            raise EventRejected([Problem("type", "clock.ticked is recorded by memberflow "
                                                 "itself; it is not accepted from outside")])
        return event

    async def submit(self, items: Sequence[tuple[str, Any]]) -> list[Verdict]:
        """Validate, archive and relay a batch; returns once it is durable (or raises
        `Unavailable`, having acknowledged nothing).

        Batches submitted while a transaction is under way wait for the next one and share it
        (a group commit): a hundred requests a second cost a few transactions, not a hundred,
        and each is still answered only after the COMMIT that holds its events."""
        checked: list[Checked] = []
        for ref, item in items:
            if isinstance(item, Refused):
                checked.append((ref, item.item, None, item.problems))
                continue
            try:
                checked.append((ref, item, self.check(item), ()))
            except EventRejected as exc:
                checked.append((ref, item, None, tuple(exc.problems)))
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[Verdict]] = loop.create_future()
        self._waiting.append((checked, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_groups())
        try:
            return await asyncio.wait_for(asyncio.shield(answer), self.answer_within_s)
        except TimeoutError:
            # A database that does not answer must not hold the sender for ever. The work
            # goes on in its thread and may still commit; either way resending is safe: an
            # id archived with the same body is a duplicate.
            answer.add_done_callback(_retrieve)
            raise Unavailable(f"the archive did not answer within {self.answer_within_s:g}s; "
                              "not acknowledged") from None

    async def _write_groups(self) -> None:
        """Archive and relay what is waiting, a group per transaction, until nothing waits."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            group: list[tuple[list[Checked], asyncio.Future[list[Verdict]]]] = []
            size = 0
            while self._waiting and (not group or size + len(self._waiting[0][0]) <= GROUP_MAX):
                group.append(self._waiting.popleft())
                size += len(group[-1][0])
            merged = [c for checked, _ in group for c in checked]
            try:
                verdicts, letters = await asyncio.to_thread(self._store_and_relay, merged, loop)
            except Exception as exc:
                failure: BaseException = exc
                if is_transient(exc):
                    failure = Unavailable(f"not acknowledged: {exc}")
                    failure.__cause__ = exc
                for _, answer in group:
                    if not answer.done():
                        answer.set_exception(failure)
                continue
            self._count(merged, verdicts, letters)
            start = 0
            for checked, answer in group:
                if not answer.done():
                    answer.set_result(verdicts[start:start + len(checked)])
                start += len(checked)

    def _count(self, checked: list[Checked], verdicts: list[Verdict],
               letters: list[DeadLetter]) -> None:
        for letter in letters:
            self.metrics.events_rejected.labels(self.source, letter.field).inc()
        for v, (_, _, event, _) in zip(verdicts, checked, strict=True):
            if v.status == "accepted" and event is not None:
                self.tally.by_type[event.type] = self.tally.by_type.get(event.type, 0) + 1
                self.metrics.ingest_accepted.labels(self.source, event.type).inc()
        self.tally.accepted += sum(v.accepted for v in verdicts)
        self.tally.rejected += sum(not v.accepted for v in verdicts)
        self.tally.duplicates += sum(v.status == "duplicate" for v in verdicts)

    def _store_and_relay(self, checked: list[Checked], loop: asyncio.AbstractEventLoop
                         ) -> tuple[list[Verdict], list[DeadLetter]]:
        events = [e for _, _, e, _ in checked if e is not None]
        with self.engine.begin() as conn:
            if self.republish:
                stored = archive.Stored(new=list(events))
            else:
                stored = archive.store(conn, events, lateness=self.lateness)
            new = {id(e) for e in stored.new}
            duplicate = {id(e) for e in stored.duplicates}
            conflicts = {id(e): known for e, known in stored.conflicts}
            verdicts: list[Verdict] = []
            letters: list[DeadLetter] = []
            for ref, item, event, problems in checked:
                if event is None:
                    verdicts.append(Verdict(ref, _event_id_of(item), problems, "rejected"))
                    letters.append(self._letter(ref, item, problems))
                elif id(event) in conflicts:
                    problem = conflict_problem(event.event_id, conflicts[id(event)])
                    verdicts.append(Verdict(ref, event.event_id, (problem,), "conflict"))
                    letters.append(self._letter(ref, item, (problem,)))
                else:
                    behind = stored.late.get(event.event_id)
                    notes = (late_note(behind, self.lateness),) if behind is not None else ()
                    verdicts.append(Verdict(ref, event.event_id, (),
                                            "duplicate" if id(event) in duplicate else "accepted",
                                            notes, event.occurred_at))
            deadletter.store(conn, letters)
            key = archive.archive_key(conn)
            outputs: list[Output] = [
                out for e in stored.new if id(e) in new
                for out in archive.relay_outputs(self.topics, e, key, self._late(e, stored),
                                                 stored.late.get(e.event_id))]
            outputs += letter_outputs(self.topics.dead_letters, letters)
            if outputs:
                # Before COMMIT: an acknowledged event is both archived and on the broker.
                asyncio.run_coroutine_threadsafe(
                    publish(self.producer, outputs), loop).result()
        return verdicts, letters

    @staticmethod
    def _late(event: EventModel, stored: archive.Stored) -> bool | None:
        if getattr(event, "shop_id", None) is None:
            return None
        return event.event_id in stored.late

    def _letter(self, ref: str, item: Any, problems: Sequence[Problem]) -> DeadLetter:
        return deadletter.dead_letter(self.source, ref, item, list(problems),
                                      key=f"{self.source} {ref}")

    async def park(self, ref: str, raw: Any, problems: Sequence[Problem]) -> None:
        """Park an input refused as a whole (a body that is not JSON, too large, ...)."""
        letter = self._letter(ref, raw, problems)

        def write(loop: asyncio.AbstractEventLoop) -> None:
            with self.engine.begin() as conn:
                deadletter.store(conn, [letter])
                asyncio.run_coroutine_threadsafe(publish(
                    self.producer,
                    letter_outputs(self.topics.dead_letters, [letter])), loop).result()

        await asyncio.to_thread(write, asyncio.get_running_loop())
        self.metrics.events_rejected.labels(self.source, letter.field).inc()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Collect the outcome of work nobody waits for any more (its sender got a 503)."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("archive work finished after its answer: %s", future.exception())


def _event_id_of(item: Any) -> str | None:
    if isinstance(item, bytes | str):
        try:
            item = json.loads(item) if len(item) < 1024 * 1024 else None
        except (ValueError, RecursionError):
            return None
    event_id = item.get("event_id") if isinstance(item, dict) else None
    return event_id[:128] if isinstance(event_id, str) and event_id.isprintable() else None
