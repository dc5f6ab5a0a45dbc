"""The dead letter: a rejected input with its reason, enough to inspect and re-drive.

Whoever rejects an input (ingest, replay, or a worker that cannot decode or apply a record)
writes its dead letter into `dead_letters` in the same transaction as its other effects, and
publishes it on the dead-letter topic with the batch. A letter's id is derived from what was
rejected, never from a broker offset alone (the embedded broker restarts its offsets at 0), so
a retried batch writes the same letter once and a new rejection never collides with an old one.

Letters are kept small and storable whatever was sent: the raw input is cut at `RAW_LIMIT`
characters (its full size and digest are kept), the reason at `REASON_LIMIT`, and characters
PostgreSQL text cannot hold (NUL, unpaired surrogates) are written as escapes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from shared.events import Problem

RAW_LIMIT = 64 * 1024
REASON_LIMIT = 1000
PROBLEM_LIMIT = 300


def storable(text: str) -> str:
    """Text PostgreSQL accepts: NUL and unpaired surrogates become backslash escapes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text):,} characters]"


def raw_text(raw: bytes | str | Any) -> str:
    """The rejected input as text: bytes decoded (bad UTF-8 escaped), objects as JSON."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="backslashreplace")
    if isinstance(raw, str):
        return raw
    try:
        return json.dumps(raw, default=str, ensure_ascii=False)
    except (ValueError, RecursionError):
        return repr(raw)[:RAW_LIMIT]


@dataclass(frozen=True)
class DeadLetter:
    """One rejected input. `letter_id` is stable: the same rejection always has the same id."""

    letter_id: str
    source: str        # "http", "replay", "worker:<name>"
    source_ref: str    # where it came from: "line 12", "orders/3@1200", "request 9f2c #4"
    problems: tuple[Problem, ...]
    raw: str           # cut at RAW_LIMIT, storable
    raw_size: int      # characters of the whole input
    rejected_at: datetime
    shop_id: str | None = None
    event_id: str | None = None

    @property
    def reason(self) -> str:
        return _cut("; ".join(str(p) for p in self.problems), REASON_LIMIT)

    @property
    def field(self) -> str:
        """The first problem's field, for metrics ("-" when the whole input is at fault)."""
        return (self.problems[0].field if self.problems else "") or "-"

    def to_json(self) -> bytes:
        return json.dumps({
            "letter_id": self.letter_id,
            "source": self.source,
            "source_ref": self.source_ref,
            "shop_id": self.shop_id,
            "event_id": self.event_id,
            "reason": self.reason,
            "problems": [{"field": p.field, "problem": p.problem} for p in self.problems],
            "raw": self.raw,
            "raw_size": self.raw_size,
            "rejected_at": self.rejected_at.isoformat(),
        }, ensure_ascii=False).encode()


def _identity(value: Any) -> str | None:
    """An id read from a rejected input, if it is a short printable string."""
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
        return value
    return None


def identify(raw: Any) -> tuple[str | None, str | None]:
    """(shop_id, event_id) of a rejected input where they can be read from it."""
    obj = raw
    if isinstance(raw, bytes | str):
        if len(raw) > 1024 * 1024:
            return None, None
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            return None, None
    if not isinstance(obj, dict):
        return None, None
    return _identity(obj.get("shop_id")), _identity(obj.get("event_id"))


def dead_letter(source: str, source_ref: str, raw: bytes | str | Any,
                problems: list[Problem] | tuple[Problem, ...], *, key: str | None = None,
                rejected_at: datetime | None = None) -> DeadLetter:
    """Build a dead letter. `key` names what was rejected, stably (a record's topic, partition,
    offset and timestamp; a request id and index); without it the source and ref do."""
    text = raw_text(raw)
    digest = hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()
    letter_id = hashlib.sha256(
        f"{key if key is not None else source + ' ' + source_ref}\n{digest}".encode()
    ).hexdigest()[:32]
    shop_id, event_id = identify(raw)
    cut = tuple(Problem(storable(_cut(p.field, 200)), storable(_cut(p.problem, PROBLEM_LIMIT)))
                for p in problems) or (Problem("", "rejected"),)
    return DeadLetter(letter_id, source, storable(_cut(source_ref, 200)), cut,
                      storable(_cut(text, RAW_LIMIT)), len(text),
                      rejected_at or datetime.now(UTC), shop_id, event_id)


def store(conn: Connection, letters: list[DeadLetter]) -> int:
    """Write dead letters in the caller's transaction; a letter already stored is kept as it is.

    Returns how many were new."""
    if not letters:
        return 0
    cols = list(zip(*[
        (d.letter_id, d.source, d.source_ref, d.shop_id, d.event_id, d.reason,
         json.dumps([{"field": p.field, "problem": p.problem} for p in d.problems],
                    ensure_ascii=False),
         d.raw, d.raw_size, d.rejected_at)
        for d in letters], strict=True))
    return conn.exec_driver_sql(
        "INSERT INTO dead_letters (letter_id, source, source_ref, shop_id, event_id, reason, "
        "  problems, raw, raw_size, rejected_at) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], "
        "  %b::text[], %s::jsonb[], %b::text[], %b::int[], %b::timestamptz[]) "
        "ON CONFLICT (letter_id) DO NOTHING",
        tuple(list(c) for c in cols)).rowcount


def listing(conn: Connection, *, shop_id: str | None, status: str | None, limit: int,
            before_id: int | None = None) -> dict[str, Any]:
    """Dead letters, newest first (a page of `limit` below `before_id`), and how many match."""
    where = ("(CAST(%(shop)s AS text) IS NULL OR shop_id = %(shop)s) "
             "AND (CAST(%(status)s AS text) IS NULL OR status = %(status)s)")
    params = {"shop": shop_id, "status": status, "before": before_id, "n": limit}
    total = conn.exec_driver_sql(f"SELECT count(*) FROM dead_letters WHERE {where}",
                                 params).scalar_one()
    rows = conn.exec_driver_sql(
        "SELECT id, source, source_ref, shop_id, event_id, reason, rejected_at, status "
        f"FROM dead_letters WHERE {where} AND (CAST(%(before)s AS bigint) IS NULL "
        "OR id < %(before)s) ORDER BY id DESC LIMIT %(n)s", params).all()
    return {"total": int(total), "items": [{
        "id": r.id, "status": r.status, "rejected_at": r.rejected_at.isoformat(),
        "source": r.source, "ref": r.source_ref, "shop_id": r.shop_id, "event_id": r.event_id,
        "reason": r.reason} for r in rows]}
