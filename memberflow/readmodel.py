"""Member records as operators and the storefront read them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine

from services.tiering.levels import discount
from shared.audit import OperationRefused
from shared.filters import MemberFilter
from shared.money import CENT, from_cents
from shared.shops import shop_configs

MEMBER_COLUMNS = ("member_id", "level", "level_name", "discount", "blacklisted", "important",
                  "abc_class", "tags", "completed_trades", "spend", "aov", "gross", "refunded",
                  "first_purchase_at", "last_purchase_at", "region", "rfm_segment", "rfm_r",
                  "rfm_f", "rfm_m", "p_alive", "expected_purchases", "expected_value")


# What a member list can be sorted by (a leading "-": descending); ties go by member id.
SORTS = {"member_id": "m.member_id", "level": "m.level", "spend": "m.spend_cents",
         "completed_trades": "m.completed_trades", "first_purchase_at": "m.first_purchase_at",
         "last_purchase_at": "m.last_purchase_at", "abc_class": "m.abc_class",
         # Kept beside the member's row: looked up per member (only when sorted by them; a
         # page's own are joined in once it is chosen).
         "rfm_segment": "(SELECT r.segment FROM member_rfm r WHERE r.shop_id = m.shop_id "
                        "AND r.member_id = m.member_id)",
         "p_alive": "(SELECT p.p_alive FROM member_predictions p WHERE p.shop_id = m.shop_id "
                    "AND p.member_id = m.member_id)",
         "expected_value": "(SELECT p.expected_value_cents FROM member_predictions p "
                           "WHERE p.shop_id = m.shop_id AND p.member_id = m.member_id)"}


def order_clause(sort: str) -> str:
    """`-spend` -> `m.spend_cents DESC NULLS LAST, m.member_id`; an unknown key is refused."""
    column = SORTS.get(sort.removeprefix("-"))
    if column is None:
        raise OperationRefused(f"sort: {sort!r} is not one of {', '.join(SORTS)} "
                         "(a leading - sorts descending)")
    if column == "m.member_id":
        return f"m.member_id{' DESC' if sort.startswith('-') else ''}"
    direction = "DESC NULLS LAST" if sort.startswith("-") else "ASC NULLS LAST"
    return f"{column} {direction}, m.member_id"


def count_members(conn: Connection, shop_id: str, selection: MemberFilter | None = None) -> int:
    where, params = (selection or MemberFilter()).where(shop_id)
    return int(conn.exec_driver_sql(f"SELECT count(*) FROM members m WHERE {where}",
                                    params).scalar_one())


def member_records(conn: Connection, shop_id: str, selection: MemberFilter | None = None, *,
                   sort: str = "member_id", limit: int | None = None, offset: int = 0
                   ) -> list[dict[str, Any]]:
    """The selected members of one shop (all by default), by member id or `sort`, a page of
    `limit` from `offset` if given.

    Money is a two-decimal string, times are UTC. `discount` is the price factor the member's
    next order gets under the shop's current level policy. The RFM scores and segment and the
    predicted value (probability of being active, expected purchases and their value over the
    shop's horizon) are tiering's last recompute and fit (`services.tiering.scores_store`);
    none for a member who bought nothing in the shop's RFM period.
    """
    entry = shop_configs(conn, [shop_id]).get(shop_id)
    policy = entry[1].levels if entry else None
    where, params = (selection or MemberFilter()).where(shop_id)
    page = ""
    if limit is not None:
        page = " LIMIT %(p_limit)s OFFSET %(p_offset)s"
        params = {**params, "p_limit": limit, "p_offset": offset}
    order = order_clause(sort)
    # The page is chosen first, then only its members' tags, scores and predictions are read
    # (a deep page would otherwise read those of every member it skips).
    rows = conn.exec_driver_sql(
        "SELECT m.member_id, m.level, m.blacklisted, m.important, m.abc_class, "
        "m.completed_trades, m.spend_cents, m.gross_cents, m.refunded_cents, "
        "m.first_purchase_at, m.last_purchase_at, m.region, r.segment AS rfm_segment, "
        "r.r_score, r.f_score, r.m_score, p.p_alive, p.expected_purchases, "
        "p.expected_value_cents, "
        "ARRAY(SELECT t.tag_id FROM member_tags t WHERE t.shop_id = m.shop_id "
        "  AND t.member_id = m.member_id ORDER BY t.tag_id) AS tags "
        f"FROM (SELECT * FROM members m WHERE {where} ORDER BY {order}{page}) m "
        "LEFT JOIN member_rfm r ON r.shop_id = m.shop_id AND r.member_id = m.member_id "
        "LEFT JOIN member_predictions p ON p.shop_id = m.shop_id AND p.member_id = m.member_id "
        f"ORDER BY {order}", params).all()
    return [
        {
            "member_id": r.member_id,
            "level": r.level,
            "level_name": policy.name_of(r.level) if policy and r.level else None,
            "discount": str(discount(policy, r.level, r.blacklisted)),
            "blacklisted": r.blacklisted,
            "important": r.important,
            "abc_class": r.abc_class,
            "tags": list(r.tags),
            "completed_trades": r.completed_trades,
            "spend": str(from_cents(r.spend_cents)),
            # Average order value: net spend per completed trade.
            "aov": str((from_cents(r.spend_cents) / r.completed_trades).quantize(CENT))
            if r.completed_trades else "0.00",
            "gross": str(from_cents(r.gross_cents)),
            "refunded": str(from_cents(r.refunded_cents)),
            "first_purchase_at": iso(r.first_purchase_at),
            "last_purchase_at": iso(r.last_purchase_at),
            "region": r.region,
            "rfm_segment": r.rfm_segment,
            "rfm_r": r.r_score,
            "rfm_f": r.f_score,
            "rfm_m": r.m_score,
            "p_alive": _fixed(r.p_alive, "0.001"),
            "expected_purchases": _fixed(r.expected_purchases, "0.001"),
            "expected_value": (str(from_cents(r.expected_value_cents))
                               if r.expected_value_cents is not None else None),
        }
        for r in rows
    ]


def _fixed(value: float | None, places: str) -> str | None:
    """A model's figure as text with a fixed number of decimals (never a float's noise)."""
    return None if value is None else str(Decimal(value).quantize(Decimal(places)))


def read_member(engine: Engine, shop_id: str, member_id: str) -> dict[str, Any] | None:
    """One member's record, or None (for the storefront's GET)."""
    with engine.connect() as conn:
        rows = member_records(conn, shop_id, MemberFilter(member_ids=(member_id,)))
    return rows[0] if rows else None


def level_history(conn: Connection, shop_id: str, member_id: str) -> list[dict[str, Any]]:
    """Every level change of a member, oldest first: what put them where they are."""
    rows = conn.exec_driver_sql(
        "SELECT old_level, new_level, cause, event_id, policy_version, operator, reason, "
        "effective_from, recorded_at FROM level_changes WHERE shop_id = %s AND member_id = %s "
        "ORDER BY id", (shop_id, member_id)).all()
    return [
        {"old_level": r.old_level, "new_level": r.new_level, "cause": r.cause,
         "triggering_event_id": r.event_id, "policy_version": r.policy_version,
         "operator": r.operator, "reason": r.reason,
         "effective_from": iso(r.effective_from), "recorded_at": iso(r.recorded_at)}
        for r in rows
    ]


def tag_history(conn: Connection, shop_id: str, member_id: str) -> list[dict[str, Any]]:
    """Every tag change of a member, oldest first, with its cause (rule, goods, operator)."""
    rows = conn.exec_driver_sql(
        "SELECT tag_id, action, cause, rule_id, operator, reason, event_id, config_version, "
        "effective_at, recorded_at FROM tag_changes WHERE shop_id = %s AND member_id = %s "
        "ORDER BY id", (shop_id, member_id)).all()
    return [
        {"tag_id": r.tag_id, "action": r.action, "cause": r.cause, "rule_id": r.rule_id,
         "operator": r.operator, "reason": r.reason, "triggering_event_id": r.event_id,
         "config_version": r.config_version, "effective_at": iso(r.effective_at),
         "recorded_at": iso(r.recorded_at)}
        for r in rows
    ]


def iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


def event_fate(engine: Engine, event_id: str) -> dict[str, Any] | None:
    """What became of an event: archived (and whether too late for attribution), parked."""
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT type, shop_id, occurred_at, archived_at, late FROM events WHERE event_id = %s",
            (event_id,)).first()
        letters = conn.exec_driver_sql(
            "SELECT source, source_ref, shop_id, reason, rejected_at FROM dead_letters "
            "WHERE event_id = %s ORDER BY id", (event_id,)).all()
    if row is None and not letters:
        return None
    return {
        "event_id": event_id,
        "archived": row is not None,
        **({"type": row.type, "shop_id": row.shop_id, "occurred_at": iso(row.occurred_at),
            "archived_at": iso(row.archived_at), "late_for_attribution": row.late}
           if row is not None else {}),
        "dead_letters": [{"source": d.source, "ref": d.source_ref, "shop_id": d.shop_id,
                          "reason": d.reason, "rejected_at": iso(d.rejected_at)}
                         for d in letters],
    }


def campaign_history(conn: Connection, shop_id: str, member_id: str) -> list[dict[str, Any]]:
    """Every campaign message sent to a member, oldest first: its clicks and the orders credited
    to it (by click or by send), with their completed value."""
    rows = conn.exec_driver_sql(
        "SELECT s.campaign_id, c.definition->>'name' AS name, s.message_id, s.channel, "
        "  s.sent_at, "
        "  (SELECT count(*) FROM campaign_clicks k WHERE k.shop_id = s.shop_id "
        "     AND k.campaign_id = s.campaign_id AND k.message_id = s.message_id) AS clicks, "
        "  o.orders, o.completed_cents "
        "FROM campaign_sends s "
        "LEFT JOIN campaigns c ON c.shop_id = s.shop_id AND c.campaign_id = s.campaign_id "
        "LEFT JOIN LATERAL (SELECT count(*) AS orders, "
        "  coalesce(sum(completed_cents - refunded_cents), 0) AS completed_cents "
        "  FROM campaign_orders WHERE shop_id = s.shop_id AND campaign_id = s.campaign_id "
        "  AND message_id = s.message_id AND converted_at IS NOT NULL) o ON true "
        "WHERE s.shop_id = %s AND s.member_id = %s ORDER BY s.sent_at, s.message_id",
        (shop_id, member_id)).all()
    return [{"campaign_id": r.campaign_id, "name": r.name, "message_id": r.message_id,
             "channel": r.channel, "sent_at": iso(r.sent_at), "clicks": int(r.clicks),
             "orders_credited": int(r.orders),
             "credited_value": str(from_cents(int(r.completed_cents)))} for r in rows]
