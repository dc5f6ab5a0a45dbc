"""The durable archive: every accepted inbound event, and every dead letter, in PostgreSQL.

The embedded broker keeps nothing across a restart, so the archive is what a fresh state is
rebuilt from (`memberflow replay --from-archive`). The archiver is also the one consumer that
parks undecodable events on the dead-letter topic, so each bad event is parked once.
"""

from __future__ import annotations

from sqlalchemy import Connection

from shared.consumer import Batch, Output
from shared.deadletter import DeadLetter, dead_letter
from shared.events import EVENT_TYPES, Problem
from shared.topics import Topics


class EventArchiver:
    """Appends accepted inbound events to `events`; a repeated event id is stored once."""

    name = "archiver"
    handles = EVENT_TYPES
    claims_ids: frozenset[str] = frozenset()  # the archive's unique event_id deduplicates
    parks_rejects = True

    def __init__(self, topics: Topics) -> None:
        self.topics: tuple[str, ...] = topics.inbound
        self.event_topics = frozenset(self.topics)

    def apply(self, conn: Connection, batch: Batch) -> list[Output]:
        if not batch.events:
            return []
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS events_in (event_id text, type text, "
                "shop_id text, member_id text, occurred_at timestamptz, body jsonb) "
                "ON COMMIT DELETE ROWS")
            # COPY is the fastest way in; the INSERT ... ON CONFLICT then drops repeats.
            with cur.copy("COPY events_in FROM STDIN") as copy:
                for e in batch.events:
                    copy.write_row((e.event_id, e.type, e.shop_id, e.member_id, e.occurred_at,
                                    e.model_dump_json(exclude_none=True)))
            cur.execute(
                "INSERT INTO events (event_id, type, shop_id, member_id, occurred_at, body) "
                "SELECT DISTINCT ON (event_id) * FROM events_in ORDER BY event_id "
                "ON CONFLICT (event_id) DO NOTHING")
        return []


class DeadLetterRecorder:
    """Copies the dead-letter topic into `dead_letters`, where operators list and re-drive them."""

    name = "dead-letters"
    handles: frozenset[str] = frozenset()
    event_topics: frozenset[str] = frozenset()
    claims_ids: frozenset[str] = frozenset()
    parks_rejects = False

    def __init__(self, topics: Topics) -> None:
        self.topics: tuple[str, ...] = (topics.dead_letters,)

    def apply(self, conn: Connection, batch: Batch) -> list[Output]:
        rows = []
        for d in batch.deliveries:
            try:
                letter = DeadLetter.from_json(d.value)
            except (ValueError, KeyError, TypeError) as exc:
                # Something other than memberflow wrote to the topic: keep it visible anyway.
                letter = dead_letter("unknown", d.ref, d.value,
                                     [Problem("", f"unreadable dead letter ({exc})")])
            rows.append((d.partition, d.offset, letter.source, letter.source_ref, letter.reason,
                         letter.raw, letter.rejected_at))
        if rows:
            conn.exec_driver_sql(
                "INSERT INTO dead_letters (dlq_partition, dlq_offset, source, source_ref, reason, "
                "raw, rejected_at) SELECT * FROM unnest(%s::int[], %s::bigint[], %s::text[], "
                "%s::text[], %s::text[], %s::text[], %s::timestamptz[]) "
                "ON CONFLICT (dlq_partition, dlq_offset) DO NOTHING",
                tuple(list(col) for col in zip(*rows, strict=True)),
            )
        return []
