"""Outbound member events (`member.level_changed`, `member.abc_changed`, ...) and the outbox.

Workers publish member events with their batch, before it commits. Changes an operator makes
from the command line (manual levels, policy changes) happen where no broker may be running, so
they are written to the `outbox` table in the transaction of the change and relayed to Kafka by
the tiering worker. Either way an event carries a deterministic `event_id`: a retry or a relay
after a crash republishes the same id, and readers drop the repeat.

Workers downstream of tiering (tagging) read the member-events topic with `read`: the tiering
worker is the one source of members' figures, levels and classes, and of shop clocks.

- `member.figures_changed`: a member's trade figures after a batch changed them, with the items
  of trades completed in it (`skus_bought`, filled for shops whose configuration has goods
  rules: the lookup costs the tiering worker a query per batch, and only goods rules read it).
  A snapshot, not a delta: applying it twice, or an older one after a newer one of the same
  batch retried, settles on the last one.
- `shop.clock`: each shop's event-time watermark (its newest order event), sent to every
  partition after the batch's member events, so a reader of one partition knows that no figures
  older than the watermark are still to come from that batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeAlias

from sqlalchemy import Connection

from shared.consumer import Output
from shared.money import cents_text, to_cents

SCHEMA_VERSION = 1


def iso(at: datetime) -> str:
    """UTC time as ISO-8601 with a Z."""
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
        "occurred_at": iso(occurred_at),
        "payload": payload,
    }
    return Output(topic, f"{shop_id}/{member_id}".encode(),
                  json.dumps(body, ensure_ascii=False, default=str).encode(), event_type)


@dataclass(frozen=True, slots=True)
class Figures:
    """A member's trade figures as tiering keeps them (money in cents)."""

    completed_trades: int
    spend_cents: int
    gross_cents: int
    refunded_cents: int
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    region: str | None


def figures_changed(topic: str, shop_id: str, member_id: str, figures: Figures,
                    skus_bought: Iterable[str], occurred_at: datetime, event_id: str) -> Output:
    """`member.figures_changed`: the member's figures now, and items of newly completed trades."""
    return member_event(topic, "member.figures_changed", event_id, shop_id, member_id,
                        occurred_at, {
                            "completed_trades": figures.completed_trades,
                            "spend": cents_text(figures.spend_cents),
                            "gross": cents_text(figures.gross_cents),
                            "refunded": cents_text(figures.refunded_cents),
                            "first_purchase_at": _iso_or_none(figures.first_purchase_at),
                            "last_purchase_at": _iso_or_none(figures.last_purchase_at),
                            "region": figures.region,
                            "skus_bought": sorted(set(skus_bought)),
                        })


def shop_clock(topic: str, watermarks: Mapping[str, datetime], event_id: str) -> Output:
    """`shop.clock`: shops' event-time watermarks, broadcast to every partition of `topic`."""
    body = {"event_id": event_id, "type": "shop.clock", "schema_version": SCHEMA_VERSION,
            "payload": {"watermarks": {s: iso(w) for s, w in sorted(watermarks.items())}}}
    return Output(topic, None, json.dumps(body).encode(), "shop.clock", broadcast=True)


def _iso_or_none(at: datetime | None) -> str | None:
    return iso(at) if at is not None else None


# --- reading member events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FiguresChanged:
    shop_id: str
    member_id: str
    event_id: str
    occurred_at: datetime
    figures: Figures
    skus_bought: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LevelChanged:
    shop_id: str
    member_id: str
    event_id: str
    occurred_at: datetime
    new_level: int


@dataclass(frozen=True, slots=True)
class AbcChanged:
    shop_id: str
    member_id: str
    event_id: str
    occurred_at: datetime
    new_class: str | None


@dataclass(frozen=True, slots=True)
class ShopClock:
    event_id: str
    watermarks: dict[str, datetime]


MemberEventIn: TypeAlias = FiguresChanged | LevelChanged | AbcChanged | ShopClock


class UnreadableMemberEvent(ValueError):
    """A message on the member-events topic that memberflow did not write as documented."""


def _time(value: Any, field: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise UnreadableMemberEvent(f"{field}: not an ISO-8601 time ({value!r})") from None
    if at.tzinfo is None:
        raise UnreadableMemberEvent(f"{field}: must carry a timezone ({value!r})")
    return at


def _cents(value: Any, field: str) -> int:
    try:
        return to_cents(Decimal(value))
    except (TypeError, ValueError, InvalidOperation):
        raise UnreadableMemberEvent(
            f"{field}: not an amount with two decimals ({value!r})") from None


def read(raw: bytes) -> MemberEventIn | None:
    """Decode a member event a downstream worker acts on; None for types it does not read."""
    try:
        body = json.loads(raw)
        kind = body["type"]
        payload = body["payload"]
        if kind == "shop.clock":
            return ShopClock(str(body["event_id"]), {
                str(s): _time(w, f"payload.watermarks.{s}")
                for s, w in payload["watermarks"].items()})
        if kind not in ("member.figures_changed", "member.level_changed",
                        "member.abc_changed"):
            return None
        head = (str(body["shop_id"]), str(body["member_id"]), str(body["event_id"]),
                _time(body["occurred_at"], "occurred_at"))
        if kind == "member.level_changed":
            return LevelChanged(*head, int(payload["new_level"]))
        if kind == "member.abc_changed":
            cls = payload["new_class"]
            if cls not in ("A", "B", "C", None):
                raise UnreadableMemberEvent(f"payload.new_class: not A, B, C or null ({cls!r})")
            return AbcChanged(*head, cls)
        first, last = payload["first_purchase_at"], payload["last_purchase_at"]
        figures = Figures(
            int(payload["completed_trades"]), _cents(payload["spend"], "payload.spend"),
            _cents(payload["gross"], "payload.gross"),
            _cents(payload["refunded"], "payload.refunded"),
            _time(first, "payload.first_purchase_at") if first is not None else None,
            _time(last, "payload.last_purchase_at") if last is not None else None,
            None if payload["region"] is None else str(payload["region"]))
        return FiguresChanged(*head, figures, tuple(str(s) for s in payload["skus_bought"]))
    except UnreadableMemberEvent:
        raise
    except KeyError as exc:
        raise UnreadableMemberEvent(f"{exc.args[0]}: required") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise UnreadableMemberEvent(f"not a member event ({exc})") from None


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
