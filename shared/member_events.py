"""Outbound member events (`member.level_changed`, `member.abc_changed`, ...) and the outbox.

Workers publish member events with their batch, before it commits. Changes an operator makes
from the command line (manual levels, policy changes) happen where no broker may be running, so
they are written to the `outbox` table in the transaction of the change and relayed to Kafka by
the tiering worker. Either way an event carries a deterministic `event_id`: a retry or a relay
after a crash republishes the same id, and readers drop the repeat.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from shared.consumer import Output

SCHEMA_VERSION = 1


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def member_event(topic: str, event_type: str, event_id: str, shop_id: str, member_id: str,
                 occurred_at: datetime, payload: dict[str, Any]) -> Output:
    """A member event keyed like inbound events (shop/member), so one member's stay in order."""
    body = {
        "event_id": event_id,
        "type": event_type,
        "schema_version": SCHEMA_VERSION,
        "shop_id": shop_id,
        "member_id": member_id,
        "occurred_at": _iso(occurred_at),
        "payload": payload,
    }
    return Output(topic, f"{shop_id}/{member_id}".encode(),
                  json.dumps(body, ensure_ascii=False, default=str).encode(), event_type)


def enqueue(conn: Connection, outputs: list[Output]) -> None:
    """Store events for the relay, in the caller's transaction."""
    if not outputs:
        return
    # COPY: a policy change can enqueue hundreds of thousands of events, and text arrays of
    # JSON strings cost ~20x more to encode and parse.
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur, cur.copy("COPY outbox (topic, key, value, type) FROM STDIN") as copy:
        for o in outputs:
            copy.write_row((o.topic, o.key.decode() if o.key else None, o.value.decode(), o.type))


def take_pending(conn: Connection, limit: int = 5000) -> list[Output]:
    """Lock and mark as published the oldest pending events; publish them before committing.

    SKIP LOCKED lets several relays run; if publishing fails the transaction rolls back and the
    events stay pending.
    """
    rows = conn.exec_driver_sql(
        "WITH next AS (SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id "
        "  LIMIT %s FOR UPDATE SKIP LOCKED) "
        "UPDATE outbox o SET published_at = now() FROM next WHERE o.id = next.id "
        "RETURNING o.id, o.topic, o.key, o.value, o.type",
        (limit,),
    ).all()
    rows = sorted(rows, key=lambda r: int(r[0]))
    return [Output(t, k.encode() if k is not None else None, v.encode(), ty)
            for _, t, k, v, ty in rows]


def pending_count(conn: Connection) -> int:
    return int(conn.exec_driver_sql(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL").scalar_one())
