"""The durable archive: every accepted inbound event, in PostgreSQL, in the order it was accepted.

The embedded broker keeps nothing across a restart, so the archive is what makes an acknowledged
event durable and what a fresh state is rebuilt from (`memberflow replay --from-archive`).
`store` is the one way into it, used by ingest (HTTP, the Python producer, replay), by
operator commands that emit inbound events (campaign sends, ticks) and by the archiver worker,
which archives records that storefronts produced straight to Kafka.

Per call, in the caller's transaction:

1. events repeated within the call are folded (same digest: a duplicate; another digest: a
   conflict, refused);
2. ingest only: each new event is judged for lateness, per shop and stream (orders, campaign
   messages, browsing) in archive order: an event more than the lateness bound older than the
   newest event archived for its shop on its stream is flagged `late` (the campaigns worker
   will not attribute it; everything else still counts it). Judging each stream on its own
   keeps the verdicts independent of how the streams interleave;
3. new event ids are inserted; an id already archived is a duplicate when its digest matches
   and a conflict (one id, two events) when it does not.
"""

from __future__ import annotations

import hashlib
import hmac
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from shared.consumer import Output, Undecodable
from shared.events import (
    ARCHIVED_BOUNDS,
    CAMPAIGN_TYPES,
    ORDER_TYPES,
    EventModel,
    EventRejected,
    decode,
    digest,
    read,
)
from shared.topics import Topics

LATE_HEADER = "memberflow-late"          # ingest's verdict: "1" late, "0" not
BEHIND_HEADER = "memberflow-behind-s"     # how far behind its shop's newest event, seconds
SEAL_HEADER = "memberflow-archived"      # ingest's seal: this very record is in the archive
_KEYS: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()


def archive_key(conn: Connection) -> bytes:
    """The deployment's key for sealing archived records (made by the migrations; read once
    per engine)."""
    key = _KEYS.get(conn.engine)
    if key is None:
        key = _KEYS[conn.engine] = bytes(conn.exec_driver_sql(
            "SELECT key FROM pipeline_keys WHERE name = 'archive'").scalar_one())
    return key


def seal(key: bytes, value: bytes) -> bytes:
    """What proves that the record `value` went through ingest into the archive."""
    return hmac.new(key, value, hashlib.sha256).digest()[:16]


def sealed(key: bytes, value: bytes, header: bytes | None) -> bool:
    """Whether a record carries ingest's seal of its very bytes."""
    return header is not None and hmac.compare_digest(header, seal(key, value))


@dataclass
class Stored:
    """What `store` made of the events it was given (each listed once, in input order)."""

    new: list[EventModel] = field(default_factory=list)
    duplicates: list[EventModel] = field(default_factory=list)
    conflicts: list[tuple[EventModel, bytes | None]] = field(default_factory=list)
    late: dict[str, timedelta] = field(default_factory=dict)   # event id -> behind its shop
    newest: dict[tuple[str, str], datetime] = field(default_factory=dict)  # (shop, stream)


def store(conn: Connection, events: list[EventModel], *,
          lateness: timedelta | None = None) -> Stored:
    """Archive events; with `lateness`, judge each new one against its shop's newest event."""
    out = Stored()
    seen: dict[str, bytes] = {}
    unique: list[tuple[EventModel, bytes]] = []
    for event in events:
        d = digest(event)
        known = seen.get(event.event_id)
        if known is None:
            seen[event.event_id] = d
            unique.append((event, d))
        elif known == d:
            out.duplicates.append(event)
        else:
            out.conflicts.append((event, known))
    if not unique:
        return out
    stored = _stored_digests(conn, [e.event_id for e, _ in unique])
    fresh: list[tuple[EventModel, bytes]] = []
    for event, d in unique:
        if event.event_id not in stored:
            fresh.append((event, d))
        elif stored[event.event_id] in (d, None):
            out.duplicates.append(event)
        else:
            out.conflicts.append((event, stored[event.event_id]))
    if not fresh:
        return out
    late: dict[str, bool] = {}
    if lateness is not None:
        out.late, out.newest = _judge(conn, [e for e, _ in fresh], lateness)
        late = {e.event_id: e.event_id in out.late for e, _ in fresh
                if getattr(e, "shop_id", None) is not None}
    inserted = _insert(conn, fresh, late)
    for event, d in fresh:
        if event.event_id in inserted:
            out.new.append(event)
        else:
            # Archived by a concurrent transaction since we looked: compare with that one.
            again = _stored_digests(conn, [event.event_id]).get(event.event_id)
            if again in (d, None):
                out.duplicates.append(event)
            else:
                out.conflicts.append((event, again))
            out.late.pop(event.event_id, None)
    return out


def _stored_digests(conn: Connection, ids: list[str]) -> dict[str, bytes | None]:
    rows = conn.exec_driver_sql(
        "SELECT event_id, digest, body FROM events WHERE event_id = ANY(%b)",
        (ids,)).all()
    out: dict[str, bytes | None] = {}
    for event_id, d, body in rows:
        if d is None:
            # Archived before digests were kept: the digest of the stored body's canonical form.
            try:
                d = digest(decode(body, bounds=ARCHIVED_BOUNDS))
            except EventRejected:
                d = None
        out[event_id] = bytes(d) if d is not None else None
    return out


def stream_of(event_type: str) -> str:
    """The stream an event type belongs to, for lateness."""
    if event_type in ORDER_TYPES:
        return "orders"
    return "campaigns" if event_type in CAMPAIGN_TYPES else "browsing"


def _judge(conn: Connection, events: list[EventModel], lateness: timedelta
           ) -> tuple[dict[str, timedelta], dict[tuple[str, str], datetime]]:
    """Lateness per shop and stream, in archive order (rows locked: concurrent ingests take
    turns)."""
    keys = sorted({(s, stream_of(e.type)) for e in events
                   if (s := getattr(e, "shop_id", None)) is not None})  # ticks: no shop
    newest: dict[tuple[str, str], datetime] = {(r[0], r[1]): r[2] for r in conn.exec_driver_sql(
        "SELECT shop_id, stream, newest FROM archive_clocks WHERE (shop_id, stream) IN "
        "(SELECT * FROM unnest(%b::text[], %b::text[])) ORDER BY shop_id, stream FOR UPDATE",
        ([k[0] for k in keys], [k[1] for k in keys]))}
    late: dict[str, timedelta] = {}
    moved: dict[tuple[str, str], datetime] = {}
    for e in events:
        shop_id = getattr(e, "shop_id", None)
        if shop_id is None:
            continue
        key = (shop_id, stream_of(e.type))
        mark = newest.get(key)
        if mark is not None and e.occurred_at < mark - lateness:
            late[e.event_id] = mark - e.occurred_at
        elif mark is None or e.occurred_at > mark:
            newest[key] = moved[key] = e.occurred_at
    if moved:
        order = sorted(moved)
        conn.exec_driver_sql(
            "INSERT INTO archive_clocks AS a (shop_id, stream, newest) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[]) "
            "ON CONFLICT (shop_id, stream) DO UPDATE "
            "SET newest = GREATEST(a.newest, excluded.newest)",
            ([k[0] for k in order], [k[1] for k in order], [moved[k] for k in order]))
    return late, newest


def _insert(conn: Connection, rows: list[tuple[EventModel, bytes]],
            late: dict[str, bool]) -> set[str]:
    """Append to the archive in the order given; an id another transaction archived meanwhile
    is left out (ON CONFLICT) and so is not returned."""
    events = [e for e, _ in rows]
    return {r[0] for r in conn.exec_driver_sql(
        "INSERT INTO events (event_id, type, shop_id, member_id, occurred_at, body, digest, "
        "late) SELECT event_id, type, shop_id, member_id, occurred_at, body, digest, "
        "late FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::timestamptz[], "
        "  %b::text[], %b::bytea[], %b::bool[]) WITH ORDINALITY "
        "  AS e(event_id, type, shop_id, member_id, occurred_at, body, digest, late, n) "
        "ORDER BY n ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        ([e.event_id for e in events], [e.type for e in events],
         [getattr(e, "shop_id", None) for e in events],
         [getattr(e, "member_id", None) for e in events], [e.occurred_at for e in events],
         [e.to_json().decode() for e in events], [d for _, d in rows],
         [late.get(e.event_id) for e in events]))}


def relay_outputs(topics: Topics, event: EventModel, key: bytes, late: bool | None = None,
                  behind: timedelta | None = None) -> list[Output]:
    """The messages that carry an archived event to its topic; a tick goes to every partition
    of the orders and campaigns topics, so every worker's every partition sees time pass.

    They carry ingest's seal (`key` is `archive_key`), and its lateness verdict in a header:
    "1" late, "0" not late; no header for events that never passed through ingest (the
    campaigns worker then judges them itself)."""
    value = event.to_json()
    headers: tuple[tuple[str, bytes], ...] = ((SEAL_HEADER, seal(key, value)),)
    if late is not None:
        headers += ((LATE_HEADER, b"1" if late else b"0"),)
    if late and behind is not None:
        headers += ((BEHIND_HEADER, str(int(behind.total_seconds())).encode()),)
    partition_key = getattr(event, "key", None)
    if partition_key is None:
        return [Output(t, None, value, event.type, broadcast=True, headers=headers)
                for t in (topics.orders, topics.campaigns)]
    return [Output(topics.for_type(event.type), partition_key, value, event.type,
                   headers=headers)]


def read_inbound(value: bytes) -> tuple[EventModel, bytes]:
    """The reader of every worker that consumes inbound topics: the event contract."""
    try:
        return read(value)
    except EventRejected as exc:
        raise Undecodable(exc.problems) from None
