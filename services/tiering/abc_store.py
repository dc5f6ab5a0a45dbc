"""SQL for ABC: which shops' classes are stale, and customer class recomputes.

The customer ranking is this SQL (a window function over the order ledger, in PostgreSQL
because it touches every member of a shop); the tests hold it to a slow Python oracle. The
period ends at the pipeline clock (docs/time.md), so classes keep moving as time passes even
for a shop that sells nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection

from services.tiering.abc import class_sizes
from services.tiering.policy import CustomerAbc
from shared.outbound import AbcClass

# Spend within the period: each order completed in it, less what was refunded on it (capped at
# its amount by the domain when the ledger entry was saved).
_PERIOD_SPEND_OF = (
    "SELECT member_id, sum(amount_cents - refunded_cents) AS spend, "
    "  max(completed_at) AS last FROM member_orders "
    "WHERE shop_id = %(shop)s AND completed_at > %(start)s AND completed_at <= %(end)s {}"
    "GROUP BY member_id"
)
_PERIOD_SPEND = _PERIOD_SPEND_OF.format("")


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
    planned: int          # class changes stored in `abc_changes`, applied a part at a time
    run: int              # the run number those changes are kept under (`abc_run`)


def touch(conn: Connection, watermarks: Mapping[str, datetime]) -> dict[str, datetime]:
    """Order events arrived: note each shop's newest event and mark its classes and RFM scores
    stale.

    Returns each shop's newest event time after the move.
    """
    if not watermarks:
        return {}
    shops = sorted(watermarks)
    return dict(conn.exec_driver_sql(
        "INSERT INTO abc_shops AS a (shop_id, watermark, dirty) "
        "SELECT s, w, true FROM unnest(%b::text[], %b::timestamptz[]) AS u(s, w) "
        "ON CONFLICT (shop_id) DO UPDATE SET dirty = true, rfm_dirty = true, "
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
        # A recompute that died applying its changes left classes its cuts do not describe:
        # forget where it got to, so this one ranks everyone again.
        "UPDATE abc_shops SET dirty = false, computed_at = %(now)s, applying_as_of = %(clock)s, "
        "  period_as_of = CASE WHEN applying_as_of IS NULL THEN period_as_of END "
        "WHERE shop_id IN (SELECT shop_id FROM abc_shops WHERE shop_id = ANY(%(shops)s) "
        f"  AND {_STALE} ORDER BY shop_id FOR UPDATE SKIP LOCKED) RETURNING shop_id",
        {"now": now, "clock": clock, "shops": shops})]


def take_noted(conn: Connection, shops: list[str]) -> dict[str, list[str]]:
    """The members noted (`note_changed`) in the shops just claimed, taken off the queue in the
    claim's own short transaction: a batch noting one of them again waits at most for that
    transaction, never for a recompute. If the recompute then fails, nothing is lost: the shop
    stays due with its recompute unfinished, and the next one ranks every member again.

    The members are handed on to the RFM recompute's own queue (`rfm_pending`), and their
    shops' RFM scores marked stale."""
    out: dict[str, list[str]] = {shop: [] for shop in shops}
    if shops:
        for shop_id, member_id in conn.exec_driver_sql(
                "WITH taken AS (DELETE FROM abc_pending WHERE shop_id = ANY(%b) "
                "  RETURNING shop_id, member_id), "
                "handed AS (INSERT INTO rfm_pending SELECT * FROM taken ON CONFLICT DO NOTHING), "
                "marked AS (UPDATE abc_shops SET rfm_dirty = true "
                "  WHERE shop_id IN (SELECT shop_id FROM taken)) "
                "SELECT shop_id, member_id FROM taken", (shops,)):
            out[shop_id].append(member_id)
    return out


def stale_shops(conn: Connection) -> int:
    """Shops whose classes do not reflect their trades and the clock yet."""
    return int(conn.exec_driver_sql(
        "SELECT count(*) FROM abc_shops WHERE dirty OR computed_as_of IS NULL "
        "OR computed_as_of < pipeline_clock() OR applying_as_of IS NOT NULL").scalar_one())


R = TypeVar("R")
C = TypeVar("C")

Key = tuple[int, int, str]
"""A member's place in the ranking, as `abc_period` stores it: (-spend, -last purchase in epoch
microseconds, member id); ascending keys are the ranking's order (ids compared byte-wise, as
Python compares them code point by code point)."""

# Above this share of a shop's ranked members moving, ranking them all again costs less.
_INCREMENTAL_SHARE = 0.25
_EPOCH_US = "(extract(epoch FROM {}) * 1000000)::bigint"


def _settings_text(settings: CustomerAbc) -> str:
    return f"{settings.period_days}:{settings.a_share}:{settings.b_share}"


def classify(key: Key | None, a: Key | None, b: Key | None) -> AbcClass | None:
    """The class of a member with `key` (None: not ranked) when the last A member has key `a`
    and the last B member key `b` (None: nobody ranked)."""
    if key is None or a is None or b is None:
        return None
    return "A" if key <= a else "B" if key <= b else "C"


def plan(conn: Connection, shop_id: str, as_of: datetime, settings: CustomerAbc,
         noted: Collection[str]) -> AbcRun:
    """The class changes of a recompute as of `as_of`, and the population counts; the period's
    spends (`abc_period`) and the cut keys are brought to `as_of` on the way (batches carry on
    meanwhile: they never touch those rows).

    Incremental when the last recompute was applied to its end with the same settings: only
    the members whose trades changed since (`noted`, from `take_noted`) or whose orders
    entered or left the period as it slid, and the members whose key lies between an old and a
    new cut, can change class. Otherwise (the first recompute, new settings, one that died
    midway, or a quarter of the members moving) every member is ranked again."""
    conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    prev = conn.exec_driver_sql(
        "SELECT period_as_of, computed_as_of, period_settings, ranked, zero_spenders, "
        "a_rank_spend, a_rank_last, a_member, b_rank_spend, b_rank_last, b_member "
        "FROM abc_shops WHERE shop_id = %s", (shop_id,)).first()
    text = _settings_text(settings)
    if (prev is None or prev[0] is None or prev[0] != prev[1] or prev[2] != text
            or as_of < prev[0] or not prev[3]):
        return _plan_all(conn, shop_id, as_of, settings)
    period = timedelta(days=settings.period_days)
    old_as_of, ranked, zero = prev[0], int(prev[3]), int(prev[4])
    old_a = _key(prev[5:8])
    old_b = _key(prev[8:11])
    moved = set(noted)
    moved |= {r[0] for r in conn.exec_driver_sql(
        "SELECT DISTINCT member_id FROM member_orders WHERE shop_id = %(shop)s "
        "AND completed_at IS NOT NULL AND ((completed_at > %(left_from)s "
        "AND completed_at <= %(left_to)s) OR (completed_at > %(old)s AND completed_at <= %(new)s))",
        {"shop": shop_id, "left_from": old_as_of - period, "left_to": as_of - period,
         "old": old_as_of, "new": as_of})}
    if len(moved) > _INCREMENTAL_SHARE * ranked:
        return _plan_all(conn, shop_id, as_of, settings)
    ids = sorted(moved)
    old_ranked = ranked
    before = {m: (int(sp), int(rs), int(rl)) for m, sp, rs, rl in conn.exec_driver_sql(
        "DELETE FROM abc_period WHERE shop_id = %s AND member_id IN (SELECT unnest(%b::text[])) "
        "RETURNING member_id, spend, rank_spend, rank_last", (shop_id, ids))}
    after = {m: (int(sp), int(rs), int(rl)) for m, sp, rs, rl in conn.exec_driver_sql(
        "INSERT INTO abc_period (shop_id, member_id, spend, last, rank_spend, rank_last) "
        f"SELECT %(shop)s, member_id, spend, last, -spend, -{_EPOCH_US.format('last')} "
        "FROM ({}) p ".format(_PERIOD_SPEND_OF.format(
            "AND member_id IN (SELECT unnest(%(ids)s::text[])) "))
        + "RETURNING member_id, spend, rank_spend, rank_last",
        _params(shop_id, as_of, settings) | {"ids": ids})}
    ranked += (sum(1 for sp, _, _ in after.values() if sp > 0)
               - sum(1 for sp, _, _ in before.values() if sp > 0))
    zero += (sum(1 for sp, _, _ in after.values() if sp <= 0)
             - sum(1 for sp, _, _ in before.values() if sp <= 0))
    if ranked == 0 or old_a is None or old_b is None:
        return _plan_all(conn, shop_id, as_of, settings)
    was_keys = [(rs, rl, m) for m, (sp, rs, rl) in before.items() if sp > 0]
    now_keys = [(rs, rl, m) for m, (sp, rs, rl) in after.items() if sp > 0]
    old_a_size, old_ab_size = class_sizes(old_ranked, settings.a_share, settings.b_share)
    new_a_size, new_ab_size = class_sizes(ranked, settings.a_share, settings.b_share)
    new_a = _moved_cut(conn, shop_id, old_a, old_a_size, new_a_size, was_keys, now_keys)
    new_b = _moved_cut(conn, shop_id, old_b, old_ab_size, new_ab_size, was_keys, now_keys)
    keys: dict[str, Key | None] = {
        m: (rs, rl, m) if sp > 0 else None for m, (sp, rs, rl) in after.items()}
    keys.update({m: None for m in moved if m not in after})
    for was, now in ((old_a, new_a), (old_b, new_b)):
        keys.update(_between(conn, shop_id, was, now, exclude=moved))
    stored: dict[str, AbcClass | None] = dict(conn.exec_driver_sql(
        "SELECT member_id, abc_class FROM members WHERE shop_id = %s "
        "AND member_id IN (SELECT unnest(%b::text[]))", (shop_id, sorted(keys))).tuples().all())
    changes = []
    for member_id in sorted(keys):
        new = classify(keys[member_id], new_a, new_b)
        if member_id in stored and stored[member_id] != new:
            changes.append(ClassChange(member_id, stored[member_id], new))
    # No run of this shop left changes behind: the last one finished (else it ranks anew).
    run = _next_run(conn)
    conn.exec_driver_sql(
        "INSERT INTO abc_changes (shop_id, run, member_id, old, new) SELECT %s, %s, * FROM "
        "unnest(%b::text[], %b::text[], %b::text[])",
        (shop_id, run, [c.member_id for c in changes], [c.old for c in changes],
         [c.new for c in changes]))
    _remember(conn, shop_id, as_of, text, ranked, zero, new_a, new_b)
    return AbcRun(shop_id, as_of, ranked, zero, len(changes), run)


def _next_run(conn: Connection) -> int:
    return int(conn.exec_driver_sql("SELECT nextval('abc_run')").scalar_one())


def _plan_all(conn: Connection, shop_id: str, as_of: datetime,
              settings: CustomerAbc) -> AbcRun:
    """Rank every member of the shop again over the period ending `as_of`."""
    params = _params(shop_id, as_of, settings)
    # abc_pending is left alone: batches add to it meanwhile (see `take_noted`). What a run
    # that died midway left in abc_changes goes.
    for table in ("abc_period", "abc_changes"):
        conn.exec_driver_sql(f"DELETE FROM {table} WHERE shop_id = %s", (shop_id,))
    counts = conn.exec_driver_sql(
        "WITH p AS (INSERT INTO abc_period (shop_id, member_id, spend, last, rank_spend, "
        f"  rank_last) SELECT %(shop)s, member_id, spend, last, -spend, "
        f"  -{_EPOCH_US.format('last')} FROM ({_PERIOD_SPEND}) period RETURNING spend) "
        "SELECT count(*) FILTER (WHERE spend > 0), count(*) FILTER (WHERE spend <= 0) FROM p",
        params).one()
    ranked, zero = int(counts[0]), int(counts[1])
    a, b = _cuts(conn, shop_id, ranked, settings)
    run = _next_run(conn)
    # Every member whose stored class is not the one their key gives, kept in PostgreSQL.
    planned = int(conn.exec_driver_sql(
        "WITH c AS (INSERT INTO abc_changes (shop_id, run, member_id, old, new) "
        "SELECT %(shop)s, %(run)s, member_id, abc_class, cls FROM ("
        "  SELECT m.member_id, m.abc_class, "
        "  CASE WHEN p.spend IS NULL OR p.spend <= 0 OR %(a_s)s::bigint IS NULL THEN NULL "
        "  WHEN (p.rank_spend, p.rank_last, p.member_id) <= (%(a_s)s, %(a_l)s, %(a_m)s) "
        "  THEN 'A' WHEN (p.rank_spend, p.rank_last, p.member_id) <= (%(b_s)s, %(b_l)s, %(b_m)s) "
        "  THEN 'B' ELSE 'C' END AS cls "
        "FROM members m LEFT JOIN abc_period p ON p.shop_id = m.shop_id "
        "  AND p.member_id = m.member_id COLLATE \"C\" "
        "WHERE m.shop_id = %(shop)s) k WHERE abc_class IS DISTINCT FROM cls RETURNING 1) "
        "SELECT count(*) FROM c",
        {"shop": shop_id, "run": run, **_bind("a", a), **_bind("b", b)}).scalar_one())
    _remember(conn, shop_id, as_of, _settings_text(settings), ranked, zero, a, b)
    return AbcRun(shop_id, as_of, ranked, zero, planned, run)


def _key(parts: Any) -> Key | None:
    spend, last, member = parts
    return None if spend is None else (int(spend), int(last), str(member))


def _bind(cut: str, key: Key | None) -> dict[str, object]:
    spend, last, member = key if key is not None else (None, None, None)
    return {f"{cut}_s": spend, f"{cut}_l": last, f"{cut}_m": member}


def _cuts(conn: Connection, shop_id: str, ranked: int,
          settings: CustomerAbc) -> tuple[Key | None, Key | None]:
    """The keys of the last A and the last B member (walking the ranking's index)."""
    if ranked == 0:
        return None, None
    size_a, size_ab = class_sizes(ranked, settings.a_share, settings.b_share)

    def at(rank: int) -> Key:
        row = conn.exec_driver_sql(
            "SELECT rank_spend, rank_last, member_id FROM abc_period WHERE shop_id = %s "
            "AND spend > 0 ORDER BY rank_spend, rank_last, member_id OFFSET %s LIMIT 1",
            (shop_id, rank - 1)).one()
        return int(row[0]), int(row[1]), str(row[2])

    return at(size_a), at(size_ab)


def _moved_cut(conn: Connection, shop_id: str, old: Key, old_rank: int, new_rank: int,
               was: list[Key], now: list[Key]) -> Key:
    """The key at `new_rank` of the ranking, found from the old cut `old` (at `old_rank`) and
    the keys of the members that moved (`was`: their keys before, `now`: after): only as many
    index entries are read as the cut moved."""
    # How many ranked members have a key up to `old` now: those that had, less the movers that
    # were there, plus the movers that are there now.
    rank = old_rank - sum(1 for k in was if k <= old) + sum(1 for k in now if k <= old)
    if rank >= new_rank:
        sql = ("SELECT rank_spend, rank_last, member_id FROM abc_period WHERE shop_id = %s "
               "AND spend > 0 AND (rank_spend, rank_last, member_id) <= (%s, %s, %s) "
               "ORDER BY rank_spend DESC, rank_last DESC, member_id DESC OFFSET %s LIMIT 1")
        offset = rank - new_rank
    else:
        sql = ("SELECT rank_spend, rank_last, member_id FROM abc_period WHERE shop_id = %s "
               "AND spend > 0 AND (rank_spend, rank_last, member_id) > (%s, %s, %s) "
               "ORDER BY rank_spend, rank_last, member_id OFFSET %s LIMIT 1")
        offset = new_rank - rank - 1
    row = conn.exec_driver_sql(sql, (shop_id, *old, offset)).one()
    return int(row[0]), int(row[1]), str(row[2])


def _between(conn: Connection, shop_id: str, old: Key | None, new: Key | None,
             exclude: set[str]) -> dict[str, Key | None]:
    """Ranked members whose key lies between an old and a new cut (both included): the ones a
    moving cut may have passed over."""
    if old is None or new is None:
        return {}
    low, high = min(old, new), max(old, new)
    rows = conn.exec_driver_sql(
        "SELECT rank_spend, rank_last, member_id FROM abc_period WHERE shop_id = %s "
        "AND spend > 0 AND (rank_spend, rank_last, member_id) >= (%s, %s, %s) "
        "AND (rank_spend, rank_last, member_id) <= (%s, %s, %s)",
        (shop_id, *low, *high)).all()
    return {m: (int(rs), int(rl), m) for rs, rl, m in rows if m not in exclude}


def _remember(conn: Connection, shop_id: str, as_of: datetime, settings: str, ranked: int,
              zero: int, a: Key | None, b: Key | None) -> None:
    """What the next recompute starts from: the period as of `as_of` and its cuts."""
    conn.exec_driver_sql(
        "UPDATE abc_shops SET period_as_of = %(as_of)s, period_settings = %(settings)s, "
        "ranked = %(ranked)s, zero_spenders = %(zero)s, "
        "a_rank_spend = %(a_s)s, a_rank_last = %(a_l)s, a_member = %(a_m)s, "
        "b_rank_spend = %(b_s)s, b_rank_last = %(b_l)s, b_member = %(b_m)s "
        "WHERE shop_id = %(shop)s",
        {"as_of": as_of, "settings": settings, "ranked": ranked, "zero": zero,
         "shop": shop_id, **_bind("a", a), **_bind("b", b)})


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


def apply_part(conn: Connection, run: AbcRun, after: str, size: int
               ) -> tuple[list[ClassChange], str | None]:
    """Apply the next `size` planned changes after member id `after` (in member id order);
    returns those applied and where the next part starts (None: this was the last)."""
    rows = conn.exec_driver_sql(
        "SELECT member_id, old, new FROM abc_changes WHERE shop_id = %s AND run = %s "
        "AND member_id > %s ORDER BY member_id LIMIT %s",
        (run.shop_id, run.run, after, size + 1)).all()
    part = [ClassChange(m, old, new) for m, old, new in rows[:size]]
    applied = apply_changes(conn, run.shop_id, run.as_of, part)
    return applied, part[-1].member_id if len(rows) > size else None


def finish(conn: Connection, run: AbcRun) -> None:
    """Every change of the recompute is applied: the shop's classes are as of `run.as_of`."""
    conn.exec_driver_sql(
        "UPDATE abc_shops SET computed_as_of = %s, ranked = %s, zero_spenders = %s, "
        "applying_as_of = NULL WHERE shop_id = %s",
        (run.as_of, run.ranked, run.zero_spenders, run.shop_id))
    conn.exec_driver_sql("DELETE FROM abc_changes WHERE shop_id = %s AND run = %s",
                         (run.shop_id, run.run))


def note_changed(conn: Connection, members: list[tuple[str, str]]) -> None:
    """Members whose completed trades or refunds changed: the next recompute looks at them."""
    if members:
        conn.exec_driver_sql(
            "INSERT INTO abc_pending (shop_id, member_id) SELECT * FROM unnest(%b::text[], "
            "%b::text[]) ON CONFLICT DO NOTHING",
            ([m[0] for m in members], [m[1] for m in members]))


def recompute(conn: Connection, shop_id: str, as_of: datetime, settings: CustomerAbc,
              now: datetime) -> tuple[AbcRun, list[ClassChange]]:
    """`claim`, `take_noted`, `plan`, `apply_part` and `finish` in the caller's one transaction
    (for operations, tests and benchmarks; the tiering worker spreads them over several).
    Returns the run and the changes applied."""
    claim(conn, [shop_id], now, as_of)
    run = plan(conn, shop_id, as_of, settings, take_noted(conn, [shop_id])[shop_id])
    applied = every_part(conn, run, apply_part)
    finish(conn, run)
    return run, applied


def every_part(conn: Connection, run: R, apply: Callable[[Connection, R, str, int],
                                                         tuple[list[C], str | None]]
               ) -> list[C]:
    """Apply a planned run's changes a part after another, all in the caller's transaction."""
    applied: list[C] = []
    after: str | None = ""
    while after is not None:
        part, after = apply(conn, run, after, 10_000)
        applied += part
    return applied


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
