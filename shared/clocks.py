"""Stream clocks: the newest event time each worker has read on each inbound partition.

Event time is the one clock (docs/time.md). A worker that keeps time moves the clock of every
partition it reads with every record (events and pipeline ticks alike) in the transaction of
the batch, so it is exact across restarts and replays. The pipeline clock is tiering's view:
the newest of its partitions' clocks (SQL `pipeline_clock()`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import Connection


def lock_stream_clocks(conn: Connection, consumer: str, parts: Iterable[tuple[str, int]]
                       ) -> dict[tuple[str, int], datetime]:
    """The clocks of these inbound partitions as `consumer` has read them, locked."""
    keys = sorted(set(parts))
    if not keys:
        return {}
    return {(r[0], r[1]): r[2] for r in conn.exec_driver_sql(
        "SELECT topic, partition, clock FROM stream_clocks WHERE consumer = %s AND "
        "(topic, partition) IN (SELECT * FROM unnest(%b::text[], %b::int[])) "
        "ORDER BY topic, partition FOR UPDATE",
        (consumer, [k[0] for k in keys], [k[1] for k in keys]))}


def save_stream_clocks(conn: Connection, consumer: str,
                       clocks: Mapping[tuple[str, int], datetime]) -> None:
    keys = sorted(clocks)
    if keys:
        conn.exec_driver_sql(
            "INSERT INTO stream_clocks AS c (consumer, topic, partition, clock) "
            "SELECT %s, * FROM unnest(%b::text[], %b::int[], %b::timestamptz[]) "
            "ON CONFLICT (consumer, topic, partition) DO UPDATE "
            "SET clock = GREATEST(c.clock, excluded.clock)",
            (consumer, [k[0] for k in keys], [k[1] for k in keys], [clocks[k] for k in keys]))


def pipeline_clock(conn: Connection) -> datetime | None:
    """The one clock: the newest event time tiering has read (see docs/time.md)."""
    value: datetime | None = conn.exec_driver_sql("SELECT pipeline_clock()").scalar()
    return value
