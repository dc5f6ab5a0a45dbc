"""The outbox: messages decided outside a worker's batch, published later by their owner.

Operator commands (manual levels, tag changes, campaign sends, configuration changes) run where
no broker may be up. They write their messages to `outbox` in the transaction of the change,
naming the worker that owns them; that worker's timed work relays its own messages (and only
its own), so each worker runs, scales and is killed without the others. A message carries a
deterministic event id: a relay repeated after a crash republishes the same id, and readers drop
the repeat.
"""

from __future__ import annotations

from sqlalchemy import Connection

from shared.consumer import Output


def enqueue(conn: Connection, owner: str, outputs: list[Output]) -> None:
    """Store messages for `owner`'s relay, in the caller's transaction."""
    if not outputs:
        return
    # COPY: a policy change can enqueue hundreds of thousands of events, and text arrays of
    # JSON strings cost ~20x more to encode and parse.
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur, cur.copy(
            "COPY outbox (owner, topic, key, value, type, partition) FROM STDIN") as copy:
        for o in outputs:
            copy.write_row((owner, o.topic, o.key.decode() if o.key else None, o.value.decode(),
                            o.type, o.partition))


def take_pending(conn: Connection, owner: str, limit: int = 5000) -> list[Output]:
    """Lock and mark as published the oldest pending messages of `owner`; the caller publishes
    them before committing.

    SKIP LOCKED lets several instances of a worker relay at once; if publishing fails the
    transaction rolls back and the messages stay pending.
    """
    rows = conn.exec_driver_sql(
        "WITH next AS (SELECT id FROM outbox WHERE owner = %s AND published_at IS NULL "
        "  ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
        "UPDATE outbox o SET published_at = now() FROM next WHERE o.id = next.id "
        "RETURNING o.id, o.topic, o.key, o.value, o.type, o.partition",
        (owner, limit),
    ).all()
    rows = sorted(rows, key=lambda r: int(r[0]))
    return [Output(t, k.encode() if k is not None else None, v.encode(), ty, partition=p)
            for _, t, k, v, ty, p in rows]


def pending_count(conn: Connection, owner: str | None = None) -> int:
    """Messages not yet relayed (of one owner, or of all)."""
    if owner is None:
        return int(conn.exec_driver_sql(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL").scalar_one())
    return int(conn.exec_driver_sql(
        "SELECT count(*) FROM outbox WHERE owner = %s AND published_at IS NULL",
        (owner,)).scalar_one())
