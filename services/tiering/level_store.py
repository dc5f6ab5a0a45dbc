"""SQL for levels: members' level facts, windowed qualification, and recording level changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from services.tiering.levels import LevelFacts, discount
from services.tiering.policy import LevelPolicy
from shared.consumer import Output
from shared.money import to_cents
from shared.outbound import LevelCause, LevelChanged, LevelPayload, output


@dataclass(frozen=True, slots=True)
class LevelChange:
    """One member moving from one level to another, and why."""

    shop_id: str
    member_id: str
    old_level: int
    new_level: int
    cause: LevelCause              # auto | manual | policy
    effective_from: datetime
    event_id: str | None = None    # the triggering trade (auto)
    policy_version: int | None = None
    operator: str | None = None
    reason: str | None = None


def load_facts(conn: Connection, shop_id: str, policy: LevelPolicy,
               member_ids: Sequence[str] | None = None) -> dict[str, LevelFacts]:
    """Level facts of the listed members (all of the shop's members when None)."""
    sql = ("SELECT member_id, level, blacklisted, completed_trades, gross_cents FROM members "
           "WHERE shop_id = %s")
    params: tuple[Any, ...] = (shop_id,)
    if member_ids is not None:
        # A join with the ids (not `= ANY`): a prepared statement's generic plan would scan
        # the whole shop for `shop_id = $1 AND member_id = ANY($2)`.
        sql += " AND member_id IN (SELECT unnest(%b::text[]))"
        params += (list(member_ids),)
    rows = conn.exec_driver_sql(sql, params).all()
    windowed = windowed_levels(conn, shop_id, policy, member_ids) if policy.windows() else {}
    empty: frozenset[int] = frozenset()
    return {
        m: LevelFacts(int(level), bool(black), int(trades), int(gross), windowed.get(m, empty))
        for m, level, black, trades, gross in rows
    }


def windowed_levels(conn: Connection, shop_id: str, policy: LevelPolicy,
                    member_ids: Sequence[str] | None) -> dict[str, frozenset[int]]:
    """For custom levels with `within_days`: which of them each member ever met.

    A level is met if, at some completed trade, the trades completed in the `within_days` up to
    and including it reach the level's amount and count. That is decided over every trade in
    event time, so late or reordered events give the same answer.
    """
    levels = [(n, lv) for n, lv in enumerate(policy.ladder, start=1) if lv.within_days]
    if not levels:
        return {}
    days = sorted({lv.within_days for _, lv in levels if lv.within_days})
    windows = ", ".join(
        f"w{d} AS (PARTITION BY member_id ORDER BY completed_at "
        f"RANGE BETWEEN interval '{int(d)} days' PRECEDING AND CURRENT ROW)" for d in days)
    sums = ", ".join(f"sum(amount_cents) OVER w{d} AS a{d}, count(*) OVER w{d} AS c{d}"
                     for d in days)
    tests = ", ".join(
        f"bool_or(a{lv.within_days} >= {to_cents(lv.min_amount) if lv.min_amount else 0} "
        f"AND c{lv.within_days} >= {int(lv.min_trades or 0)})" for _, lv in levels)
    sql = (f"SELECT member_id, {tests} FROM (SELECT member_id, {sums} FROM member_orders "
           "WHERE shop_id = %s AND completed_at IS NOT NULL")
    params: tuple[Any, ...] = (shop_id,)
    if member_ids is not None:
        sql += " AND member_id IN (SELECT unnest(%b::text[]))"
        params += (list(member_ids),)
    sql += f" WINDOW {windows}) x GROUP BY member_id"
    out: dict[str, frozenset[int]] = {}
    for row in conn.exec_driver_sql(sql, params):
        met = frozenset(n for (n, _), ok in zip(levels, row[1:], strict=True) if ok)
        if met:
            out[row[0]] = met
    return out


def record_changes(conn: Connection, changes: Sequence[LevelChange]) -> None:
    """Set the members' levels and keep each change, with its cause, in `level_changes`."""
    if not changes:
        return
    # A member may climb twice in one batch; their row ends at the last change.
    latest = {(c.shop_id, c.member_id): c for c in changes}
    final = [latest[k] for k in sorted(latest)]
    conn.exec_driver_sql(
        "UPDATE members m SET level = u.new, level_since = u.since, updated_at = now() "
        "FROM unnest(%b::text[], %b::text[], %b::smallint[], %b::timestamptz[]) "
        "  AS u(shop_id, member_id, new, since) "
        "WHERE m.shop_id = u.shop_id AND m.member_id = u.member_id",
        ([c.shop_id for c in final], [c.member_id for c in final],
         [c.new_level for c in final], [c.effective_from for c in final]),
    )
    # COPY: a policy change may record hundreds of thousands of changes in one go.
    raw = conn.connection.driver_connection
    assert raw is not None
    columns = ("shop_id, member_id, old_level, new_level, cause, event_id, policy_version, "
               "operator, reason, effective_from")
    with raw.cursor() as cur, cur.copy(f"COPY level_changes ({columns}) FROM STDIN") as copy:
        for c in changes:
            copy.write_row((c.shop_id, c.member_id, c.old_level, c.new_level, c.cause,
                            c.event_id, c.policy_version, c.operator, c.reason,
                            c.effective_from))


def level_changed_event(topic: str, change: LevelChange, policy: LevelPolicy | None,
                        blacklisted: bool, event_id: str) -> Output:
    """`member.level_changed`: the storefront applies the new discount from the next order."""
    def name(level: int) -> str | None:
        return policy.name_of(level) if policy and level else None

    return output(topic, LevelChanged(
        event_id=event_id, shop_id=change.shop_id, member_id=change.member_id,
        occurred_at=change.effective_from, payload=LevelPayload(
            old_level=change.old_level, new_level=change.new_level,
            old_level_name=name(change.old_level), new_level_name=name(change.new_level),
            cause=change.cause,
            triggering_event_id=change.event_id, effective_from=change.effective_from,
            discount=str(discount(policy, change.new_level, blacklisted)),
            policy_version=change.policy_version, operator=change.operator,
            reason=change.reason)))
