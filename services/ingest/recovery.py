"""Re-publishing the archive: `replay --from-archive`, and refilling a fresh embedded broker.

The archive holds every accepted event in the order it was accepted (`seq`), with ingest's
lateness verdict; re-publishing follows that order and carries the verdict, so workers fed
from the archive decide exactly as they did live (a tick sits between the same events, an event
late then is late again).

The embedded broker keeps nothing across a restart. When `memberflow up` starts a new one
over an existing state, `unapplied` finds the archived events that some worker has not applied
yet (its claims in `processed_events` are the record of what it applied, written in the same
transaction as the effect) and they are published again; workers recognise everything else by
its id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import Engine

from shared.archive import archive_key, relay_outputs
from shared.consumer import publish
from shared.events import ARCHIVED_BOUNDS, EventRejected, decode
from shared.topics import Topics

CHUNK = 5000


def unapplied(consumers: Mapping[str, frozenset[str]]) -> tuple[str, dict[str, Any]]:
    """A WHERE clause over `events e`: archived events some consumer handles but never applied.

    `consumers` maps each claiming consumer to the event types it applies."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    for n, (consumer, types) in enumerate(sorted(consumers.items())):
        parts.append(f"(e.type = ANY(%(t{n})s) AND NOT EXISTS (SELECT 1 FROM processed_events p "
                     f"WHERE p.consumer = %(c{n})s AND p.event_id = e.event_id))")
        params[f"t{n}"], params[f"c{n}"] = sorted(types), consumer
    return ("(" + " OR ".join(parts) + ")") if parts else "false", params


def refill_where(engine: Engine, consumers: Mapping[str, frozenset[str]]
                 ) -> tuple[str, dict[str, Any]]:
    """What a fresh broker must carry again: the events some consumer has not applied, and the
    ticks archived after the first of them (ticks are applied without claims; time must pass
    among those events as it did), or else the last tick alone (clocks start where they were).
    """
    where, params = unapplied(consumers)
    with engine.connect() as conn:
        first = conn.exec_driver_sql(f"SELECT min(e.seq) FROM events e WHERE {where}",
                                     params).scalar()
    if first is None:
        return ("e.seq = (SELECT max(seq) FROM events WHERE type = 'clock.ticked')", {})
    return (f"({where}) OR (e.type = 'clock.ticked' AND e.seq > %(first)s)",
            {**params, "first": first})


async def republish(engine: Engine, producer: AIOKafkaProducer, topics: Topics, *,
                    where: str = "true", params: Mapping[str, Any] | None = None,
                    progress: Any = None) -> tuple[int, int]:
    """Publish archived events matching `where`, in archive order; returns (published, refused).

    An archived body the contract now refuses (written by an older version) is counted and
    skipped, never published: workers would park it anyway."""
    published = refused = 0
    sql = (f"SELECT e.seq, e.body, e.late FROM events e "
           f"WHERE e.seq > %(after)s AND {where} ORDER BY e.seq LIMIT {CHUNK}")

    def page(after: int) -> list[tuple[int, str, bool | None]]:
        with engine.connect() as conn:
            return [(int(r[0]), str(r[1]), r[2]) for r in conn.exec_driver_sql(
                sql, {**(params or {}), "after": after})]

    def key() -> bytes:
        with engine.connect() as conn:
            return archive_key(conn)

    sealing = await asyncio.to_thread(key)
    after = 0
    while chunk := await asyncio.to_thread(page, after):
        after = chunk[-1][0]
        outputs = []
        for _, body, late in chunk:
            try:
                event = decode(body, bounds=ARCHIVED_BOUNDS)
            except EventRejected:
                refused += 1
                continue
            outputs += relay_outputs(topics, event, sealing, late)
        await publish(producer, outputs)
        published += len(outputs)
        if progress is not None:
            progress.update(published + refused, refused)
    if progress is not None:
        progress.update(published + refused, refused, final=True)
    return published, refused
