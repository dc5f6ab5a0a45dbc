"""SQL for the scores in each member's record that come from the whole shop: RFM scores and
segment (`member_rfm`), and predicted value (`member_predictions`).

Both are over the shop's RFM period (`rfm: period_days`, 365 by default) up to the pipeline
clock (docs/time.md), and both are kept beside the batches, never by them:

- **RFM** is stale when the shop's trades changed (the statement that marks its ABC classes
  stale marks it too) or its clock moved an hour past the last recompute, or the shop's map or
  period changed. Each buyer's values (last purchase, purchase days, spend per day, trades,
  net spend) are kept in `member_rfm`: a recompute reads them again from the orders only for
  the members whose trades changed (`rfm_pending`, handed on by the ABC recompute that took
  them off its queue, and those still on that queue), left the period or entered it. It then
  scores every buyer from the kept values in one statement (the quartile edges are the whole
  shop's), stores the score and segment changes in `rfm_changes`, and applies them a part at
  a time, each published as `member.rfm_changed`. Nothing else writes `member_rfm`, so a
  part locks no member a batch needs.
- Each buyer's trades and spend in the period, and the shop's quartile edges, are kept with
  the scores: the levels, amounts and RFM reports over that period read them (`kept`).
- **The predicted value** is refitted once a day of the shop's clock (or when the period or
  horizon changed), replacing the shop's rows in one transaction. It moves a little for every
  member each day (time passes for all of them), so it is not published: it is read from the
  record and used as a filter.

Recomputes of one shop never overlap: `claim_rfm` and `claim_predicted` take the shop's row
with SKIP LOCKED and mark it taken before the work starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection

from services.tiering import abc_store, rfm
from services.tiering.rfm import NET, RfmSettings
from shared.clocks import pipeline_clock

if TYPE_CHECKING:   # numpy and scipy are loaded by a fit only: commands importing this stay fast
    from services.tiering import clv

RFM_CLOCK_STEP = timedelta(hours=1)     # how far the clock moves on before RFM is recomputed
PREDICTED_CLOCK_STEP = timedelta(days=1)
# A refit claimed this long ago (wall time, `predicted_at`, cleared when it is done) without
# finishing died with its worker: due again.
PREDICTED_LEASE = timedelta(minutes=15)

_RFM_STALE = ("(rfm_dirty OR rfm_computed_as_of IS NULL "
              "OR rfm_computed_as_of <= %(clock)s::timestamptz - %(step)s "
              "OR rfm_applying_as_of IS NOT NULL)")


def settings_text(settings: RfmSettings, zone: str, *, predicted: bool = False) -> str:
    """What a stored recompute or fit was made with (the reports read it only when the shop's
    settings are still these)."""
    if predicted:
        return f"{settings.period_days}:{settings.horizon_days}:{zone}"
    body = ";".join(s.model_dump_json() for s in settings.segments)
    return f"{settings.period_days}:{zone}:{hashlib.sha256(body.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Kept:
    """What tiering last stored for a shop: RFM as of `rfm_as_of` (None: nothing finished with
    these settings) and its quartile edges; the fit as of `predicted_as_of`."""

    rfm_as_of: datetime | None
    edges: dict[str, list[int]] | None
    predicted_as_of: datetime | None
    fit: Fitted | None


def kept(conn: Connection, shop_id: str, zone: str, settings: RfmSettings) -> Kept:
    row = conn.exec_driver_sql(
        "SELECT rfm_computed_as_of, rfm_applying_as_of, rfm_settings, rfm_edges, "
        "predicted_as_of, predicted_settings, predicted_fit FROM abc_shops WHERE shop_id = %s",
        (shop_id,)).first()
    if row is None:
        return Kept(None, None, None, None)
    scored = (row[0] is not None and row[1] is None and row[3] is not None
              and row[2] == settings_text(settings, zone))
    fitted = row[6] is not None and row[5] == settings_text(settings, zone, predicted=True)
    return Kept(row[0] if scored else None, row[3] if scored else None,
                row[4] if fitted else None, Fitted.from_json(row[6]) if fitted else None)


def orders_of_period() -> str:
    """The completed trades of the period ending `%(p_end)s` (`%(p_start)s` excluded) as `o`."""
    return ("member_orders o WHERE o.shop_id = %(shop)s AND o.completed_at > %(p_start)s "
            "AND o.completed_at <= %(p_end)s")


def _period(shop_id: str, zone: str, as_of: datetime, settings: RfmSettings
            ) -> dict[str, Any]:
    return {"shop": shop_id, "tz": zone, "p_start": as_of - timedelta(days=settings.period_days),
            "p_end": as_of}


# --- RFM ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RfmChange:
    member_id: str
    old: str | None                       # segment before (None: not a buyer of the period)
    new: str | None
    scores: tuple[int, int, int] | None   # (r, f, m) after; None when no longer scored


@dataclass(frozen=True, slots=True)
class RfmRun:
    shop_id: str
    as_of: datetime
    period_days: int
    buyers: int
    planned: int
    run: int


def due_rfm(conn: Connection, now: datetime, debounce: timedelta, clock: datetime
            ) -> list[str]:
    """Shops whose RFM scores are stale and were last recomputed at least `debounce` ago."""
    return [r[0] for r in conn.exec_driver_sql(
        f"SELECT shop_id FROM abc_shops WHERE {_RFM_STALE} "
        "AND (rfm_computed_at IS NULL OR rfm_computed_at <= %(due)s) ORDER BY shop_id",
        {"clock": clock, "step": RFM_CLOCK_STEP, "due": now - debounce})]


def claim_rfm(conn: Connection, shops: list[str], now: datetime, clock: datetime) -> list[str]:
    """Take the shops for a recompute as of `clock` (a short transaction of its own); trades
    from now on mark them stale again, and until the last change is applied they stay due.

    A recompute that did not finish took members off `rfm_pending` that it never read: the
    next reads every buyer's values again (its kept values are forgotten)."""
    return [r[0] for r in conn.exec_driver_sql(
        "UPDATE abc_shops SET rfm_dirty = false, rfm_computed_at = %(now)s, "
        "  rfm_applying_as_of = %(clock)s, "
        "  rfm_values_as_of = CASE WHEN rfm_applying_as_of IS NULL THEN rfm_values_as_of END "
        "WHERE shop_id IN (SELECT shop_id FROM abc_shops WHERE shop_id = ANY(%(shops)s) "
        f"  AND {_RFM_STALE} ORDER BY shop_id FOR UPDATE SKIP LOCKED) RETURNING shop_id",
        {"now": now, "clock": clock, "shops": shops, "step": RFM_CLOCK_STEP})]


def take_pending(conn: Connection, shops: list[str]) -> dict[str, list[str]]:
    """The members handed on to the shops just claimed (`rfm_pending`), taken in the claim's
    own short transaction, as the ABC recompute takes its queue: the long plan that follows
    holds no row a claim or a batch needs."""
    out: dict[str, list[str]] = {shop: [] for shop in shops}
    if shops:
        for shop_id, member_id in conn.exec_driver_sql(
                "DELETE FROM rfm_pending WHERE shop_id = ANY(%b) RETURNING shop_id, member_id",
                (shops,)):
            out[shop_id].append(member_id)
    return out


def mark_stale(conn: Connection, shop_id: str, *, predicted: bool) -> None:
    """The shop's map or period changed: recompute its scores (and refit when `predicted`)."""
    conn.exec_driver_sql(
        "UPDATE abc_shops SET rfm_dirty = true, rfm_computed_at = NULL"
        + (", predicted_as_of = NULL, predicted_at = NULL" if predicted else "")
        + " WHERE shop_id = %s", (shop_id,))


def plan_rfm(conn: Connection, shop_id: str, zone: str, as_of: datetime,
             settings: RfmSettings, taken: Collection[str]) -> RfmRun:
    """Bring the buyers' values to the period ending `as_of`, score every buyer, and keep the
    score and segment changes in `rfm_changes` (in PostgreSQL: a shop of a million buyers
    never reaches Python).

    The values are read again only for the members whose trades changed since (`taken` off
    `rfm_pending` by the claim, and those still on the ABC queue) or whose trades left or
    entered the period as it slid, when the last values were read with the same
    period and zone; otherwise (the first recompute, a new period or zone, a clock gone back)
    for every buyer. The scores are always the whole shop's: the quartile edges are."""
    conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    # What a run that died midway left goes; the stored scores are compared afresh below.
    conn.exec_driver_sql("DELETE FROM rfm_changes WHERE shop_id = %s", (shop_id,))
    run = int(conn.exec_driver_sql("SELECT nextval('abc_run')").scalar_one())
    period = _period(shop_id, zone, as_of, settings) | {"run": run}
    prev = conn.exec_driver_sql(
        "SELECT rfm_values_as_of, rfm_values_settings FROM abc_shops WHERE shop_id = %s",
        (shop_id,)).first()
    text = f"{settings.period_days}:{zone}"
    # The members whose trades changed: handed on by the ABC recompute (taken by the claim),
    # and those still waiting for it (read, not taken: it needs them too, and hands them on).
    pending = set(taken) | {r[0] for r in conn.exec_driver_sql(
        "SELECT member_id FROM abc_pending WHERE shop_id = %s", (shop_id,))}
    if prev is None or prev[0] is None or prev[1] != text or as_of < prev[0]:
        gone = _read_values(conn, period, None)
    else:
        # Trades that left the period as it slid, or entered it at its end (as the ABC
        # recompute finds them: a trade the queue did not bring is not missed).
        slid = [r[0] for r in conn.exec_driver_sql(
            "SELECT DISTINCT member_id FROM member_orders WHERE shop_id = %(shop)s "
            "AND completed_at IS NOT NULL AND ((completed_at > %(left_from)s "
            "AND completed_at <= %(p_start)s) OR (completed_at > %(old)s "
            "AND completed_at <= %(p_end)s))",
            period | {"left_from": prev[0] - timedelta(days=settings.period_days),
                      "old": prev[0]})]
        gone = _read_values(conn, period, sorted(pending | set(slid)))
    # Every buyer scored from the stored values: the edges (`e`), the scores (`n`), and the
    # differences from the stored scores (`c`); the edges are kept for the RFM report.
    values = ("SELECT member_id, "
              "  -floor(extract(epoch FROM (%(p_end)s - last_at)) / 86400)::bigint AS r, "
              "  days AS f, per_day AS m, r_score AS old_r, f_score AS old_f, m_score AS old_m, "
              "  segment AS old_segment FROM member_rfm WHERE shop_id = %(shop)s")
    counts = conn.exec_driver_sql(rfm.scored_sql(values, (
        ", n AS (SELECT s.*, " + rfm.segment_sql(settings.segments) + " AS segment FROM ("
        # OFFSET 0 keeps the scores computed once per buyer: pulled up into the segment's
        # CASE, each would be worked out again at every mention (4 s at 1M buyers).
        "  SELECT v.*, {scores} FROM v, e OFFSET 0) s), "
        "c AS (INSERT INTO rfm_changes (shop_id, run, member_id, old_segment, new_segment, "
        "  r_score, f_score, m_score) "
        "  SELECT %(shop)s, %(run)s, member_id, old_segment, segment, r_score, f_score, "
        "    m_score FROM n WHERE (old_segment, old_r, old_f, old_m) IS DISTINCT FROM "
        "    (segment, r_score, f_score, m_score) RETURNING 1) "
        "SELECT (SELECT count(*) FROM n), (SELECT count(*) FROM c), "
        "  (SELECT json_build_object('r', e.r, 'f', e.f, 'm', e.m) FROM e)")), period).one()
    conn.exec_driver_sql(
        "UPDATE abc_shops SET rfm_settings = %s, rfm_edges = %s, rfm_values_as_of = %s, "
        "rfm_values_settings = %s WHERE shop_id = %s",
        (settings_text(settings, zone), Jsonb(counts[2]), as_of, text, shop_id))
    return RfmRun(shop_id, as_of, settings.period_days, int(counts[0]),
                  int(counts[1]) + gone, run)


def _read_values(conn: Connection, period: dict[str, Any], members: list[str] | None) -> int:
    """Read the values of `members` (None: every buyer) from their trades in the period into
    `member_rfm`, keeping their scores; those with no trade in it leave, their segment's end
    planned as a change of the run. Returns how many left."""
    only = "" if members is None else "AND o.member_id = ANY(%(ids)s) "
    params = period | {"ids": members or []}
    conn.exec_driver_sql(
        "INSERT INTO member_rfm AS r (shop_id, member_id, last_at, days, per_day, trades, "
        "  spend_cents) "
        "SELECT %(shop)s, member_id, last, f, m, trades, spend FROM ("
        + rfm.values_sql(orders_of_period() + " " + only, NET) + ") v "
        "ON CONFLICT (shop_id, member_id) DO UPDATE SET last_at = excluded.last_at, "
        "  days = excluded.days, per_day = excluded.per_day, trades = excluded.trades, "
        "  spend_cents = excluded.spend_cents", params)
    within = "" if members is None else "AND r.member_id = ANY(%(ids)s) "
    return int(conn.exec_driver_sql(
        "WITH d AS (DELETE FROM member_rfm r WHERE r.shop_id = %(shop)s " + within +
        "  AND NOT EXISTS (SELECT 1 FROM member_orders o WHERE o.shop_id = r.shop_id "
        "    AND o.member_id = r.member_id AND o.completed_at > %(p_start)s "
        "    AND o.completed_at <= %(p_end)s) RETURNING r.shop_id, r.member_id, r.segment) "
        "INSERT INTO rfm_changes (shop_id, run, member_id, old_segment, new_segment) "
        "SELECT shop_id, %(run)s, member_id, segment, NULL FROM d", params).rowcount)


def apply_rfm_part(conn: Connection, run: RfmRun, after: str, size: int
                   ) -> tuple[list[RfmChange], str | None]:
    """Store the next `size` planned changes after member id `after`; returns them (to
    publish) and where the next part starts (None: this was the last)."""
    rows = conn.exec_driver_sql(
        "SELECT member_id, old_segment, new_segment, r_score, f_score, m_score "
        "FROM rfm_changes WHERE shop_id = %s AND run = %s AND member_id > %s "
        "ORDER BY member_id LIMIT %s", (run.shop_id, run.run, after, size + 1)).all()
    part = [RfmChange(m, old, new, None if new is None else (int(r), int(f), int(mm)))
            for m, old, new, r, f, mm in rows[:size]]
    kept = [c for c in part if c.new is not None and c.scores is not None]
    if kept:
        # `since` moves only when the segment does (a score moving within it keeps the date).
        conn.exec_driver_sql(
            "UPDATE member_rfm AS r SET r_score = c.r, f_score = c.f, m_score = c.m, "
            "  since = CASE WHEN r.segment IS NOT DISTINCT FROM c.segment THEN r.since "
            "    ELSE %s::timestamptz END, segment = c.segment "
            "FROM unnest(%b::text[], %b::smallint[], %b::smallint[], %b::smallint[], "
            "  %b::text[]) AS c(member_id, r, f, m, segment) "
            "WHERE r.shop_id = %s AND r.member_id = c.member_id",
            (run.as_of, [c.member_id for c in kept], [c.scores[0] for c in kept if c.scores],
             [c.scores[1] for c in kept if c.scores], [c.scores[2] for c in kept if c.scores],
             [c.new for c in kept], run.shop_id))
    return part, part[-1].member_id if len(rows) > size else None


def finish_rfm(conn: Connection, run: RfmRun) -> None:
    """Every change is applied: the shop's scores are as of `run.as_of`."""
    conn.exec_driver_sql(
        "UPDATE abc_shops SET rfm_computed_as_of = %s, rfm_applying_as_of = NULL "
        "WHERE shop_id = %s", (run.as_of, run.shop_id))
    conn.exec_driver_sql("DELETE FROM rfm_changes WHERE shop_id = %s AND run = %s",
                         (run.shop_id, run.run))


def recompute_rfm(conn: Connection, shop_id: str, zone: str, as_of: datetime,
                  settings: RfmSettings, now: datetime) -> tuple[RfmRun, list[RfmChange]]:
    """Claim, plan, apply and finish in the caller's one transaction (for operations, tests and
    benchmarks; the tiering worker spreads them over several)."""
    conn.exec_driver_sql(
        "INSERT INTO abc_shops (shop_id, watermark) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (shop_id, as_of))
    conn.exec_driver_sql("UPDATE abc_shops SET rfm_dirty = true WHERE shop_id = %s", (shop_id,))
    claim_rfm(conn, [shop_id], now, as_of)
    run = plan_rfm(conn, shop_id, zone, as_of, settings, take_pending(conn, [shop_id])[shop_id])
    applied = abc_store.every_part(conn, run, apply_rfm_part)
    finish_rfm(conn, run)
    return run, applied


# --- predicted value ------------------------------------------------------------------------


@dataclass(frozen=True)
class Fitted:
    """A fit over the buyers of a period, their predictions in the temporary table
    `predicted_values` (member_id, x, t_x, t_big, spend, alive, expected, value) until the
    transaction ends."""

    purchases: clv.BgNbd
    values: clv.GammaGamma
    expected_total: float     # expected purchases of all buyers together

    @property
    def at_limit(self) -> bool:
        return self.purchases.at_limit or self.values.at_limit

    def as_json(self) -> dict[str, Any]:
        return {"bg_nbd": asdict(self.purchases), "gamma_gamma": asdict(self.values),
                "expected_total": self.expected_total}

    @classmethod
    def from_json(cls, kept: dict[str, Any]) -> Fitted:
        from services.tiering import clv

        return cls(clv.BgNbd(**kept["bg_nbd"]), clv.GammaGamma(**kept["gamma_gamma"]),
                   float(kept["expected_total"]))

    @property
    def note(self) -> str:
        return (f"BG/NBD r {self.purchases.r:.4f}, alpha {self.purchases.alpha:.4f}, "
                f"a {self.purchases.a:.4f}, b {self.purchases.b:.4f}; Gamma-Gamma "
                f"p {self.values.p:.4f}, q {self.values.q:.4f}, gamma {self.values.gamma:.4f}"
                + ("; a parameter lies at the edge of the search" if self.at_limit else ""))


class NoBuyers(ValueError):
    """No completed trade in the period."""


def _array(values: Any) -> str:
    """A numpy array of numbers as a PostgreSQL array literal. Hundreds of thousands of
    predictions go back to PostgreSQL: written out at once, where the driver would look at each
    number on its own (a second for a million buyers' summaries)."""
    return "{" + ",".join(map(repr, values.tolist())) + "}"


def fit(conn: Connection, orders: str, params: dict[str, Any], horizon_days: int) -> Fitted:
    """Fit BG/NBD and Gamma-Gamma (`services.tiering.clv`) on the buyers of `orders` (a FROM
    body naming the period's trades `o`, ending at `%(p_end)s`, days in the zone `%(tz)s`), and
    predict each buyer's next `horizon_days` into `predicted_values`.

    A buyer's summary: x = purchase days after the first, t_x and T = days from the first
    purchase to the last and to the period's end (in weeks for the models), m = their mean
    net spend per repeat purchase day. Raises `clv.TooLittleData` (saying how much is needed)
    or `NoBuyers`."""
    import numpy as np

    from services.tiering import clv

    summary = (
        "SELECT member_id, count(*) - 1 AS x, "
        "  floor(extract(epoch FROM (max(last) - min(first))) / 86400)::int AS t_x, "
        "  floor(extract(epoch FROM (%(p_end)s - min(first))) / 86400)::int AS t_big, "
        "  sum(net) AS spend, "
        "  CASE WHEN count(*) > 1 THEN (sum(net) - (array_agg(net ORDER BY day))[1]) "
        "    / (count(*) - 1) END AS m "
        "FROM (SELECT o.member_id, (o.completed_at AT TIME ZONE %(tz)s)::date AS day, "
        f"  min(o.completed_at) AS first, max(o.completed_at) AS last, sum({NET}) AS net "
        f"  FROM {orders} GROUP BY 1, 2) d GROUP BY member_id")
    # The buyers' summaries once, for this transaction: the fit and the predictions read them.
    conn.exec_driver_sql("DROP TABLE IF EXISTS predicted_buyers, predicted_values")
    conn.exec_driver_sql("CREATE TEMPORARY TABLE predicted_buyers ON COMMIT DROP AS "
                         f"{summary}", params)
    conn.exec_driver_sql("ANALYZE predicted_buyers")
    groups = conn.exec_driver_sql(
        "SELECT x, t_x, t_big, count(*) FROM predicted_buyers GROUP BY 1, 2, 3").all()
    if not groups:
        raise NoBuyers("no completed trade in the period")
    x, t_x, t_big, weight = (np.array([float(g[i]) for g in groups]) for i in range(4))
    # The fit reads summaries in whole weeks, as the papers do: a few thousand distinct ones
    # instead of one per day pair, which makes the fit a matter of seconds at a million buyers.
    weekly = conn.exec_driver_sql(
        "SELECT x, round(t_x / 7.0), round(t_big / 7.0), count(*) FROM predicted_buyers "
        "GROUP BY 1, 2, 3").all()
    wx, wtx, wt, ww = (np.array([float(g[i]) for g in weekly]) for i in range(4))
    repeat = conn.exec_driver_sql(
        "SELECT x, greatest(round(m / 100.0), 1), count(*) FROM predicted_buyers "
        "WHERE x > 0 AND m > 0 GROUP BY 1, 2").all()     # mean values in whole units: the same
    purchases = clv.fit_bgnbd(wx, wtx, wt, ww)
    values = clv.fit_gamma_gamma([float(r[0]) for r in repeat], [float(r[1]) for r in repeat],
                                 [float(r[2]) for r in repeat])
    alive = purchases.p_alive(x, t_x / 7, t_big / 7)
    expected = purchases.expected_purchases(horizon_days / 7, x, t_x / 7, t_big / 7)
    # Back to PostgreSQL: each summary's predictions, joined to its buyers there.
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE predicted_values ON COMMIT DROP AS "
        "WITH g AS (SELECT * FROM unnest(%(gx)s::int[], %(gtx)s::int[], "
        "  %(gt)s::int[], %(alive)s::float8[], %(expected)s::float8[]) "
        "  AS g(x, t_x, t_big, alive, expected)) "
        "SELECT s.member_id, s.x, s.t_x, s.t_big, s.spend, g.alive, g.expected, "
        "  g.expected * CASE WHEN s.x > 0 AND s.m > 0 "
        "    THEN %(p)s * (%(g)s + s.x * s.m) / (%(p)s * s.x + %(q)s - 1) "
        "    ELSE %(pop_m)s END AS value "
        "FROM predicted_buyers s JOIN g USING (x, t_x, t_big)",
        {"gx": _array(x.astype(np.int64)), "gtx": _array(t_x.astype(np.int64)),
         "gt": _array(t_big.astype(np.int64)), "alive": _array(alive),
         "expected": _array(expected), "p": values.p, "q": values.q,
         "g": values.gamma * 100, "pop_m": values.p * values.gamma * 100 / (values.q - 1)})
    return Fitted(purchases, values, float(np.sum(expected * weight)))


def stale_shops(conn: Connection) -> int:
    """Shops whose RFM scores or predictions are due (by the rules above) at the pipeline
    clock: timed work outstanding."""
    return int(conn.exec_driver_sql(
        f"SELECT count(*) FROM abc_shops WHERE {_RFM_STALE} "
        "OR (rfm_computed_as_of IS NOT NULL AND (predicted_as_of IS NULL "
        "  OR predicted_as_of <= %(clock)s::timestamptz - %(predicted_step)s))",
        {"clock": pipeline_clock(conn), "step": RFM_CLOCK_STEP,
         "predicted_step": PREDICTED_CLOCK_STEP}).scalar_one())


_PREDICTED_DUE = ("rfm_computed_as_of IS NOT NULL "
                  "AND (predicted_as_of IS NULL OR predicted_as_of <= %(due)s) "
                  "AND (predicted_at IS NULL OR predicted_at <= %(lease)s)")


def due_predicted(conn: Connection, now: datetime, clock: datetime) -> list[str]:
    """Shops whose predictions are a day of clock old (or never made), with scores computed,
    and no refit under way."""
    return [r[0] for r in conn.exec_driver_sql(
        f"SELECT shop_id FROM abc_shops WHERE {_PREDICTED_DUE} ORDER BY shop_id",
        {"due": clock - PREDICTED_CLOCK_STEP, "lease": now - PREDICTED_LEASE})]


def claim_predicted(conn: Connection, shops: list[str], now: datetime, clock: datetime
                    ) -> list[str]:
    """Take the shops for a refit (a short transaction of its own). The predictions stay as
    they are, as of their own time, until `predict` replaces them in one transaction; a worker
    that dies midway leaves the shop due again after `PREDICTED_LEASE`."""
    return [r[0] for r in conn.exec_driver_sql(
        "UPDATE abc_shops SET predicted_at = %(now)s "
        "WHERE shop_id IN (SELECT shop_id FROM abc_shops WHERE shop_id = ANY(%(shops)s) "
        f"  AND {_PREDICTED_DUE} ORDER BY shop_id FOR UPDATE SKIP LOCKED) RETURNING shop_id",
        {"now": now, "shops": shops, "due": clock - PREDICTED_CLOCK_STEP,
         "lease": now - PREDICTED_LEASE})]


def predict(conn: Connection, shop_id: str, zone: str, as_of: datetime,
            settings: RfmSettings) -> str:
    """Refit the shop's models over its period ending `as_of` and replace its members'
    predictions; a shop with too little data keeps none, and the reason is its note. Returns
    the note (the fitted parameters, or why there is no fit)."""
    from services.tiering import clv

    conn.exec_driver_sql("DELETE FROM member_predictions WHERE shop_id = %s", (shop_id,))
    fitted: Fitted | None = None
    try:
        fitted = fit(conn, orders_of_period(), _period(shop_id, zone, as_of, settings),
                     settings.horizon_days)
    except (clv.TooLittleData, NoBuyers) as exc:
        note = f"no predictions: {exc}"
    else:
        note = fitted.note
        conn.exec_driver_sql(
            "INSERT INTO member_predictions (shop_id, member_id, p_alive, expected_purchases, "
            "  expected_value_cents, repeat_days, days_first_to_last, days_since_first, "
            "  spend_cents) SELECT %s, member_id, alive, expected, round(value), x, t_x, t_big, "
            "  spend FROM predicted_values", (shop_id,))
    conn.exec_driver_sql(
        "UPDATE abc_shops SET predicted_as_of = %s, predicted_settings = %s, "
        "predicted_note = %s, predicted_fit = %s, predicted_at = NULL WHERE shop_id = %s",
        (as_of, settings_text(settings, zone, predicted=True), note,
         None if fitted is None else Jsonb(fitted.as_json()), shop_id))
    return note

