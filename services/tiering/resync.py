"""Snapshots of members' state, to bring readers of member-events back in step."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from shared.consumer import Output
from shared.money import cents_text
from shared.outbound import ClockPayload, MemberState, StatePayload, StreamClock, iso, output


def snapshots(conn: Connection, topic: str, since: datetime | None) -> list[Output]:
    """`member.state` of members changed since `since` (all when None), then every partition's
    clock, as tiering holds them now."""
    clocks = {p: c for _, p, c in conn.exec_driver_sql(
        "SELECT topic, partition, clock FROM stream_clocks WHERE consumer = 'tiering'")}
    clock = max(clocks.values(), default=None)
    if clock is None:
        return []  # tiering never read anything: there is nothing to bring back
    where, params = ("", ()) if since is None else (
        "WHERE m.updated_at >= %s OR m.level_since >= %s OR m.abc_since >= %s "
        "OR r.since >= %s", (since,) * 4)
    rows = conn.exec_driver_sql(
        "SELECT m.shop_id, m.member_id, m.completed_trades, m.spend_cents, m.gross_cents, "
        "m.refunded_cents, m.first_purchase_at, m.last_purchase_at, m.region, m.level, "
        "m.abc_class, r.segment FROM members m LEFT JOIN member_rfm r "
        f"ON r.shop_id = m.shop_id AND r.member_id = m.member_id {where} "
        "ORDER BY m.shop_id, m.member_id", params).all()
    stamp = iso(clock)
    out = [output(topic, MemberState(
        event_id=(f"state:{r[0]}:{r[1]}:{stamp}:{r[2]}:{r[3]}:{r[9]}:{r[10] or '-'}:"
                  f"{r[11] or '-'}"),
        shop_id=r[0], member_id=r[1], occurred_at=clock,
        payload=StatePayload(
            completed_trades=r[2], spend=cents_text(r[3]), gross=cents_text(r[4]),
            refunded=cents_text(r[5]), first_purchase_at=r[6], last_purchase_at=r[7], region=r[8],
            level=r[9], abc_class=r[10], rfm_segment=r[11], clock=clock)))
        for r in rows]
    out += [output(topic, StreamClock(event_id=f"clock:resync:{p}:{iso(c)}",
                                      payload=ClockPayload(partition=p, clock=c)), partition=p)
            for p, c in sorted(clocks.items())]
    return out
