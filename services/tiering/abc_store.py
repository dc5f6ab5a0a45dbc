"""SQL for ABC: which shops' classes are stale, and customer class recomputes.

The customer ranking is this SQL (a window function over the order ledger, in PostgreSQL
because it touches every member of a shop); the tests hold it to a slow Python oracle. The
period ends at the pipeline clock (docs/time.md), so classes keep moving as time passes even
for a shop that sells nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from services.tiering.policy import CustomerAbc
from shared.outbound import AbcClass

# Spend within the period: each order completed in it, less what was refunded on it (capped at
# its amount by the domain when the ledger entry was saved).
_PERIOD_SPEND = (
    "SELECT member_id, sum(amount_cents - refunded_cents) AS spend, "
    "  max(completed_at) AS last FROM member_orders "
    "WHERE shop_id = %(shop)s AND completed_at > %(start)s AND completed_at <= %(end)s "
    "GROUP BY member_id"
)


# Rank by spend, then last purchase, then member id compared byte-wise (COLLATE "C", so the
# tie-break does not depend on the database's locale and matches the Python rule).
_CLASSES = (
    f"period AS ({_PERIOD_SPEND}), "
    "ranked AS (SELECT member_id, spend, last, row_number() OVER (ORDER BY spend DESC, "
    "  last DESC, member_id COLLATE \"C\") AS r, count(*) OVER () AS n FROM period "
    "  WHERE spend > 0), "
    "classes AS (SELECT member_id, spend, last, r, CASE WHEN r <= ceil(%(a)s::numeric * n) "
    "  THEN 'A' WHEN r <= ceil(%(b)s::numeric * n) THEN 'B' ELSE 'C' END AS cls FROM ranked)"
)


def _params(shop_id: str, as_of: datetime, settings: CustomerAbc) -> dict[str, object]:
    return {"shop": shop_id, "start": as_of - timedelta(days=settings.period_days),
            "end": as_of, "a": settings.a_share, "b": settings.b_share, "as_of": as_of}


@dataclass(frozen=True, slots=True)
class ClassChange:
    member_id: str
    old: AbcClass | None
    new: AbcClass | None


@dataclass(frozen=True, slots=True)
class AbcRun:
    shop_id: str
    as_of: datetime
    ranked: int
    zero_spenders: int
    changes: list[ClassChange]


def touch(conn: Connection, watermarks: Mapping[str, datetime]) -> dict[str, datetime]:
    """Order events arrived: note each shop's newest event and mark its classes stale.

    Returns each shop's newest event time after the move.
    """
    if not watermarks:
        return {}
    shops = sorted(watermarks)
    return dict(conn.exec_driver_sql(
        "INSERT INTO abc_shops AS a (shop_id, watermark, dirty) "
        "SELECT s, w, true FROM unnest(%b::text[], %b::timestamptz[]) AS u(s, w) "
        "ON CONFLICT (shop_id) DO UPDATE SET dirty = true, "
        "  watermark = GREATEST(a.watermark, excluded.watermark) "
        "RETURNING a.shop_id, a.watermark",
        (shops, [watermarks[s] for s in shops]),
    ).tuples().all())


_STALE = ("(dirty OR computed_as_of IS NULL OR computed_as_of < %(clock)s "
          "OR applying_as_of IS NOT NULL)")


def due_shops(conn: Connection, now: datetime, debounce: timedelta, clock: datetime
              ) -> list[str]:
    """The shops whose classes are stale and whose last recompute is at least `debounce` old.
    Stale: new trades, the clock moved on since (the period slides, and members whose trades
    leave it change class, whether or not the shop sells), or a recompute that did not finish
    applying its changes."""
    return [r[0] for r in conn.exec_driver_sql(
        f"SELECT shop_id FROM abc_shops WHERE {_STALE} "
        "AND (computed_at IS NULL OR computed_at <= %(due)s) ORDER BY shop_id",
        {"clock": clock, "due": now - debounce})]


def claim(conn: Connection, shops: list[str], now: datetime, clock: datetime) -> list[str]:
    """Take the shops for a recompute as of `clock` (a short transaction of their own): trades
    arriving from now on mark them stale again, and until the recompute has applied its last
    change they stay due (a worker that dies midway leaves them to the next)."""
    return [r[0] for r in conn.exec_driver_sql(
        "UPDATE abc_shops SET dirty = false, computed_at = %(now)s, applying_as_of = %(clock)s "
        "WHERE shop_id IN (SELECT shop_id FROM abc_shops WHERE shop_id = ANY(%(shops)s) "
        f"  AND {_STALE} ORDER BY shop_id FOR UPDATE SKIP LOCKED) RETURNING shop_id",
        {"now": now, "clock": clock, "shops": shops})]


def stale_shops(conn: Connection) -> int:
    """Shops whose classes do not reflect their trades and the clock yet."""
    return int(conn.exec_driver_sql(
        "SELECT count(*) FROM abc_shops WHERE dirty OR computed_as_of IS NULL "
        "OR computed_as_of < pipeline_clock() OR applying_as_of IS NOT NULL").scalar_one())


def plan(conn: Connection, shop_id: str, as_of: datetime, settings: CustomerAbc) -> AbcRun:
    """Rank the shop's members over the period ending `as_of`: the class changes and the
    population counts (reads only: batches carry on meanwhile)."""
    params = _params(shop_id, as_of, settings)
    # Sorting and hashing a large shop's members wants more than the default work_mem.
    conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    # One pass over the period: the class changes and the population counts together (the
    # counts row comes back even when nothing changed, with a NULL member).
    rows = conn.exec_driver_sql(
        f"WITH {_CLASSES}, "
        "counts AS (SELECT count(*) FILTER (WHERE spend > 0) AS ranked, "
        "  count(*) FILTER (WHERE spend <= 0) AS zero FROM period), "
        "changed AS (SELECT m.member_id, m.abc_class AS old, c.cls AS new FROM members m "
        "  LEFT JOIN classes c ON c.member_id = m.member_id "
        "  WHERE m.shop_id = %(shop)s AND m.abc_class IS DISTINCT FROM c.cls) "
        "SELECT counts.ranked, counts.zero, ch.member_id, ch.old, ch.new "
        "FROM counts LEFT JOIN changed ch ON true",
        params,
    ).all()
    changes = sorted((ClassChange(m, o, n) for _, _, m, o, n in rows if m is not None),
                     key=lambda c: c.member_id)
    return AbcRun(shop_id, as_of, int(rows[0][0]), int(rows[0][1]), changes)


def apply_changes(conn: Connection, shop_id: str, as_of: datetime,
                  changes: list[ClassChange]) -> list[ClassChange]:
    """Store class changes (locking members in key order, as batches do); a member whose class
    moved since the plan was made is left to the next recompute. Returns those applied."""
    if not changes:
        return []
    rows = conn.exec_driver_sql(
        "WITH wanted AS (SELECT * FROM unnest(%(ids)s::text[], %(old)s::text[], "
        "  %(new)s::text[]) AS w(member_id, old, new)), "
        "locked AS (SELECT m.member_id, w.new FROM members m JOIN wanted w "
        "  ON m.member_id = w.member_id AND m.abc_class IS NOT DISTINCT FROM w.old "
        "  WHERE m.shop_id = %(shop)s ORDER BY m.member_id FOR UPDATE OF m) "
        "UPDATE members m SET abc_class = l.new, abc_since = %(as_of)s FROM locked l "
        "WHERE m.shop_id = %(shop)s AND m.member_id = l.member_id RETURNING m.member_id",
        {"ids": [c.member_id for c in changes], "old": [c.old for c in changes],
         "new": [c.new for c in changes], "shop": shop_id, "as_of": as_of}).all()
    done = {r[0] for r in rows}
    return [c for c in changes if c.member_id in done]


def finish(conn: Connection, run: AbcRun) -> None:
    """Every change of the recompute is applied: the shop's classes are as of `run.as_of`."""
    conn.exec_driver_sql(
        "UPDATE abc_shops SET computed_as_of = %s, ranked = %s, zero_spenders = %s, "
        "applying_as_of = NULL WHERE shop_id = %s",
        (run.as_of, run.ranked, run.zero_spenders, run.shop_id))


def recompute(conn: Connection, shop_id: str, as_of: datetime, settings: CustomerAbc,
              now: datetime) -> AbcRun:
    """`claim`, `plan`, `apply_changes` and `finish` in the caller's one transaction (for
    operations and benchmarks; the tiering worker spreads them over several)."""
    claim(conn, [shop_id], now, as_of)
    run = plan(conn, shop_id, as_of, settings)
    applied = apply_changes(conn, shop_id, as_of, run.changes)
    finish(conn, run)
    return AbcRun(run.shop_id, run.as_of, run.ranked, run.zero_spenders, applied)


def ranking(conn: Connection, shop_id: str, as_of: datetime, settings: CustomerAbc
            ) -> list[tuple[int, str, int, datetime, str]]:
    """(rank, member id, spend in cents, last purchase, class) over the period ending `as_of`."""
    rows = conn.exec_driver_sql(
        f"WITH {_CLASSES} SELECT r, member_id, spend, last, cls FROM classes ORDER BY r",
        _params(shop_id, as_of, settings)).all()
    return [(int(r), m, int(s), last, c) for r, m, s, last, c in rows]


def zero_spenders(conn: Connection, shop_id: str, as_of: datetime,
                  settings: CustomerAbc) -> list[str]:
    """Members who completed trades in the period but whose refunds leave no positive spend."""
    rows = conn.exec_driver_sql(
        f"SELECT member_id FROM ({_PERIOD_SPEND}) p WHERE spend <= 0 ORDER BY member_id",
        _params(shop_id, as_of, settings)).all()
    return [r[0] for r in rows]


def watermark(conn: Connection, shop_id: str) -> datetime | None:
    """The shop's clock: the pipeline clock, once the shop has any order event (else None)."""
    row = conn.exec_driver_sql(
        "SELECT pipeline_clock() FROM abc_shops WHERE shop_id = %s", (shop_id,)).first()
    return row[0] if row else None
