"""SQL for campaigns: messages sent and clicked, orders and their credits, audiences, windows,
and the worker's event-time watermarks per shop and partition."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from services.campaigns.domain import Campaign, Click, Credit, Send

OrderKey = tuple[str, str]     # (shop_id, order_id)
MemberKey = tuple[str, str]    # (shop_id, member_id)
DEFAULT_CLICK_WINDOW = timedelta(hours=48)
DEFAULT_SEND_WINDOW = timedelta(hours=24)


def _pairs(keys: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
    ordered = sorted(set(keys))
    return [k[0] for k in ordered], [k[1] for k in ordered]


WatermarkKey = tuple[str, str, int]   # (shop_id, topic, partition)


def lock_watermarks(conn: Connection, keys: Collection[WatermarkKey]
                    ) -> dict[WatermarkKey, datetime]:
    """The newest event time read per shop and partition (for records ingest did not judge)."""
    ordered = sorted(set(keys))
    if not ordered:
        return {}
    return {(r[0], r[1], r[2]): r[3] for r in conn.exec_driver_sql(
        "SELECT shop_id, topic, partition, watermark FROM campaign_watermarks "
        "WHERE (shop_id, topic, partition) IN "
        "(SELECT * FROM unnest(%b::text[], %b::text[], %b::int[])) "
        "ORDER BY shop_id, topic, partition FOR UPDATE",
        ([k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered]))}


def save_watermarks(conn: Connection, marks: Mapping[WatermarkKey, datetime]) -> None:
    keys = sorted(marks)
    if keys:
        conn.exec_driver_sql(
            "INSERT INTO campaign_watermarks AS w (shop_id, topic, partition, watermark) "
            "SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::timestamptz[]) "
            "ON CONFLICT (shop_id, topic, partition) DO UPDATE "
            "SET watermark = GREATEST(w.watermark, excluded.watermark)",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
             [marks[k] for k in keys]))


def settled_clock(conn: Connection) -> datetime | None:
    """How far attribution has settled: the oldest clock among the partitions this worker has
    read (each moved by events and pipeline ticks), so every partition has passed it."""
    value: datetime | None = conn.exec_driver_sql(
        "SELECT min(clock) FROM stream_clocks WHERE consumer = 'campaigns'").scalar()
    return value


def save_sends(conn: Connection, sends: Sequence[tuple[str, Send]]) -> None:
    if sends:
        conn.exec_driver_sql(
            "INSERT INTO campaign_sends (shop_id, campaign_id, message_id, member_id, channel, "
            "sent_at) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], "
            "%b::text[], %b::timestamptz[]) ON CONFLICT DO NOTHING",
            ([s for s, _ in sends], [x.campaign_id for _, x in sends],
             [x.message_id for _, x in sends], [x.member_id for _, x in sends],
             [x.channel for _, x in sends], [x.sent_at for _, x in sends]))


def save_clicks(conn: Connection, clicks: Sequence[tuple[str, Click]]) -> None:
    if clicks:
        conn.exec_driver_sql(
            "INSERT INTO campaign_clicks (event_id, shop_id, campaign_id, message_id, member_id, "
            "clicked_at) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], "
            "%b::text[], %b::timestamptz[]) ON CONFLICT DO NOTHING",
            ([x.event_id for _, x in clicks], [s for s, _ in clicks],
             [x.campaign_id for _, x in clicks], [x.message_id for _, x in clicks],
             [x.member_id for _, x in clicks], [x.clicked_at for _, x in clicks]))


@dataclass
class OrderChange:
    """What one batch says about one order (folded over its events)."""

    member_id: str
    converted_at: datetime | None = None
    paid_cents: int | None = None
    completed_cents: int | None = None
    refunded_cents: int = 0


def save_orders(conn: Connection, changes: Mapping[OrderKey, OrderChange]) -> None:
    """Fold the batch into the stored orders: earliest conversion, amounts, refunds added."""
    keys = sorted(changes)
    if not keys:
        return
    c = [changes[k] for k in keys]
    conn.exec_driver_sql(
        "INSERT INTO campaign_orders AS o (shop_id, order_id, member_id, converted_at, "
        "  paid_cents, completed_cents, refunded_cents) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::timestamptz[], "
        "  %b::bigint[], %b::bigint[], %b::bigint[]) "
        "ON CONFLICT (shop_id, order_id) DO UPDATE SET "
        "  converted_at = LEAST(o.converted_at, excluded.converted_at), "
        "  paid_cents = COALESCE(o.paid_cents, excluded.paid_cents), "
        "  completed_cents = COALESCE(o.completed_cents, excluded.completed_cents), "
        "  refunded_cents = o.refunded_cents + excluded.refunded_cents",
        ([k[0] for k in keys], [k[1] for k in keys], [x.member_id for x in c],
         [x.converted_at for x in c], [x.paid_cents for x in c], [x.completed_cents for x in c],
         [x.refunded_cents for x in c]))


def orders_near(conn: Connection, touches: Sequence[tuple[str, str, datetime, datetime]]
                ) -> set[OrderKey]:
    """Orders of the given members converted within the given spans (a late click or send can
    change their credit)."""
    if not touches:
        return set()
    return {(r[0], r[1]) for r in conn.exec_driver_sql(
        "SELECT DISTINCT o.shop_id, o.order_id FROM campaign_orders o JOIN unnest("
        "  %b::text[], %b::text[], %b::timestamptz[], %b::timestamptz[]) AS t(s, m, f, u) "
        "ON o.shop_id = t.s AND o.member_id = t.m AND o.converted_at BETWEEN t.f AND t.u",
        ([t[0] for t in touches], [t[1] for t in touches], [t[2] for t in touches],
         [t[3] for t in touches]))}


@dataclass(frozen=True, slots=True)
class StoredOrder:
    member_id: str
    converted_at: datetime
    credit: Credit | None


def lock_orders(conn: Connection, keys: Iterable[OrderKey]) -> dict[OrderKey, StoredOrder]:
    """The converted orders among `keys`, with their current credit, locked."""
    shops, orders = _pairs(keys)
    if not shops:
        return {}
    out: dict[OrderKey, StoredOrder] = {}
    for r in conn.exec_driver_sql(
            "SELECT shop_id, order_id, member_id, converted_at, credit_kind, campaign_id, "
            "message_id, NULL, credited_at FROM campaign_orders "
            "WHERE (shop_id, order_id) IN (SELECT * FROM unnest(%b::text[], %b::text[])) "
            "AND converted_at IS NOT NULL ORDER BY shop_id, order_id FOR UPDATE",
            (shops, orders)):
        credit = Credit(r[4], r[5], r[6], r[7], r[8]) if r[4] else None
        out[(r[0], r[1])] = StoredOrder(r[2], r[3], credit)
    return out


def touches(conn: Connection, members: Collection[MemberKey], since: datetime
            ) -> tuple[dict[MemberKey, list[Click]], dict[MemberKey, list[Send]]]:
    """The members' clicks from `since` on, and all their sends (a send of any time shows that
    its campaign targeted the member)."""
    shops, ids = _pairs(members)
    clicks: dict[MemberKey, list[Click]] = {}
    sends: dict[MemberKey, list[Send]] = {}
    if not shops:
        return clicks, sends
    for shop_id, campaign_id, message_id, member_id, at, event_id in conn.exec_driver_sql(
            "SELECT shop_id, campaign_id, message_id, member_id, clicked_at, event_id "
            "FROM campaign_clicks WHERE (shop_id, member_id) IN "
            "(SELECT * FROM unnest(%b::text[], %b::text[])) AND clicked_at >= %b",
            (shops, ids, since)):
        clicks.setdefault((shop_id, member_id), []).append(
            Click(campaign_id, message_id, member_id, at, event_id))
    for shop_id, campaign_id, message_id, member_id, channel, at in conn.exec_driver_sql(
            "SELECT shop_id, campaign_id, message_id, member_id, channel, sent_at "
            "FROM campaign_sends WHERE (shop_id, member_id) IN "
            "(SELECT * FROM unnest(%b::text[], %b::text[]))",
            (shops, ids)):
        sends.setdefault((shop_id, member_id), []).append(
            Send(campaign_id, message_id, member_id, channel, at))
    return clicks, sends


def campaigns_for(conn: Connection, members: Collection[MemberKey],
                  sends: Mapping[MemberKey, list[Send]]) -> dict[str, dict[str, Campaign]]:
    """Per shop, the campaigns that targeted any of these members, with their windows.

    A member was targeted by a campaign whose recorded audience holds them, or that sent them
    a message (`sends`: all the members' messages; history imported from an earlier tool has
    sends but no audience). Campaigns known only from their messages attribute with the
    default windows.
    """
    shops, ids = _pairs(members)
    out: dict[str, dict[str, Campaign]] = {}
    if not shops:
        return out
    targeted: dict[tuple[str, str], set[str]] = {}
    for (shop_id, member_id), received in sends.items():
        for message in received:
            targeted.setdefault((shop_id, message.campaign_id), set()).add(member_id)
    for shop_id, campaign_id, member_id in conn.exec_driver_sql(
            "SELECT shop_id, campaign_id, member_id FROM campaign_audience "
            "WHERE (shop_id, member_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
            (shops, ids)):
        targeted.setdefault((shop_id, campaign_id), set()).add(member_id)
    windows = campaign_windows(conn, targeted)
    for (shop_id, campaign_id), audience in targeted.items():
        click, send = windows.get((shop_id, campaign_id),
                                  (DEFAULT_CLICK_WINDOW, DEFAULT_SEND_WINDOW))
        out.setdefault(shop_id, {})[campaign_id] = Campaign(campaign_id, click, send,
                                                            frozenset(audience))
    return out


def campaign_windows(conn: Connection, keys: Iterable[tuple[str, str]]
                     ) -> dict[tuple[str, str], tuple[timedelta, timedelta]]:
    shops, ids = _pairs(keys)
    if not shops:
        return {}
    return {(r[0], r[1]): (timedelta(seconds=r[2]), timedelta(seconds=r[3]))
            for r in conn.exec_driver_sql(
                "SELECT shop_id, campaign_id, click_window_s, send_window_s FROM campaigns "
                "WHERE (shop_id, campaign_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))",
                (shops, ids))}


def reach(conn: Connection, shop_ids: Collection[str]) -> dict[str, timedelta]:
    """Per shop, the longest window of any of its campaigns (at least the defaults)."""
    longest = max(DEFAULT_CLICK_WINDOW, DEFAULT_SEND_WINDOW)
    out = dict.fromkeys(shop_ids, longest)
    for shop_id, seconds in conn.exec_driver_sql(
            "SELECT shop_id, max(GREATEST(click_window_s, send_window_s)) FROM campaigns "
            "WHERE shop_id = ANY(%b) GROUP BY shop_id", (sorted(shop_ids),)):
        out[shop_id] = max(longest, timedelta(seconds=seconds))
    return out


def save_credits(conn: Connection, credits: Mapping[OrderKey, Credit | None]) -> None:
    keys = sorted(credits)
    if not keys:
        return
    c = [credits[k] for k in keys]
    conn.exec_driver_sql(
        "UPDATE campaign_orders o SET credit_kind = u.kind, campaign_id = u.campaign, "
        "  message_id = u.message, credited_at = u.at "
        "FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], "
        "  %b::timestamptz[]) AS u(shop_id, order_id, kind, campaign, message, at) "
        "WHERE o.shop_id = u.shop_id AND o.order_id = u.order_id",
        ([k[0] for k in keys], [k[1] for k in keys],
         [x.kind if x else None for x in c], [x.campaign_id if x else None for x in c],
         [x.message_id if x else None for x in c], [x.credited_at if x else None for x in c]))
