"""Operator use cases for campaigns: define, confirm (resolve and record the audience), send.

Each runs in the caller's transaction. A confirmed campaign is frozen: its time window, target,
offer, channels and attribution windows can no longer change (only its name), so the audience
recorded and the credits given stay explainable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection

from services.campaigns.config import CampaignDefinition
from services.campaigns.credits import credit_events, reattribute
from shared import archive
from shared.audit import OperationRefused, audit
from shared.events import EventModel, validate
from shared.outbound import iso
from shared.outbox import enqueue
from shared.shopconfig import ShopConfig
from shared.topics import Topics


@dataclass(frozen=True)
class Stored:
    definition: CampaignDefinition
    status: str
    source: str
    audience_size: int | None
    sent_at: datetime | None


def load(conn: Connection, shop_id: str, campaign_id: str, *, lock: bool = False
         ) -> Stored | None:
    row = conn.exec_driver_sql(
        "SELECT definition, status, source, audience_size, sent_at FROM campaigns "
        "WHERE shop_id = %s AND campaign_id = %s" + (" FOR UPDATE" if lock else ""),
        (shop_id, campaign_id)).first()
    if row is None:
        return None
    return Stored(CampaignDefinition.model_validate(row[0]), row[1], row[2], row[3], row[4])


def campaigns_of(conn: Connection, shop_id: str) -> list[Stored]:
    rows = conn.exec_driver_sql(
        "SELECT definition, status, source, audience_size, sent_at FROM campaigns "
        "WHERE shop_id = %s ORDER BY starts_at, campaign_id", (shop_id,)).all()
    return [Stored(CampaignDefinition.model_validate(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def _frozen_change(old: CampaignDefinition, new: CampaignDefinition) -> str | None:
    if (old.starts_at, old.ends_at) != (new.starts_at, new.ends_at):
        return (f"campaign {old.id!r} is confirmed: its time window cannot change (it runs "
                f"{iso(old.starts_at)} to {iso(old.ends_at)})")
    before, after = old.frozen_part(), new.frozen_part()
    changed = [k for k in before if before[k] != after[k]]
    if changed:
        return (f"campaign {old.id!r} is confirmed: its {', '.join(changed)} cannot change "
                "(only its name can)")
    return None


def define(conn: Connection, topic: str, shop_id: str, definition: CampaignDefinition,
           source: str, operator: str) -> bool:
    """Create or update a campaign definition; returns whether anything changed.

    A confirmed campaign refuses any change but its name. New or changed attribution windows
    re-decide the credits of the orders of members the campaign reached.
    """
    stored = load(conn, shop_id, definition.id, lock=True)
    if stored is not None and stored.definition == definition:
        return False
    if stored is not None and stored.status == "confirmed":
        problem = _frozen_change(stored.definition, definition)
        if problem:
            raise OperationRefused(problem)
    a = definition.attribution
    conn.exec_driver_sql(
        "INSERT INTO campaigns (shop_id, campaign_id, definition, starts_at, ends_at, "
        "click_window_s, send_window_s, source) VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s) "
        "ON CONFLICT (shop_id, campaign_id) DO UPDATE SET definition = excluded.definition, "
        "starts_at = excluded.starts_at, ends_at = excluded.ends_at, "
        "click_window_s = excluded.click_window_s, send_window_s = excluded.send_window_s",
        (shop_id, definition.id, definition.model_dump_json(), definition.starts_at,
         definition.ends_at, int(a.click_window.total_seconds()),
         int(a.send_window.total_seconds()), source))
    audit(conn, shop_id, None, "campaign.define", operator,
          {"campaign": definition.id, "source": source})
    if stored is None or stored.definition.attribution != definition.attribution:
        _recredit(conn, topic, shop_id, definition.id)
    return True


def create(conn: Connection, topic: str, shop_id: str, definition: CampaignDefinition,
           source: str, operator: str) -> bool:
    """Define a campaign outside the configuration (its target's tags must exist); returns
    whether anything changed (see `define`)."""
    tags = conn.exec_driver_sql(
        "SELECT config -> 'tagging' -> 'tags' FROM shops WHERE shop_id = %s",
        (shop_id,)).scalar()
    known = {t["id"] for t in tags or []}
    missing = [t for t in definition.target.tags if t not in known]
    if missing:
        raise OperationRefused(f"target.tags: shop {shop_id!r} has no tag(s) "
                               f"{', '.join(missing)}")
    return define(conn, topic, shop_id, definition, source, operator)


def config_changed(conn: Connection, topic: str, old: ShopConfig | None, new: ShopConfig,
                   operator: str) -> list[str]:
    """Campaigns declared in the configuration: define new and changed ones, delete the drafts
    it no longer lists (a confirmed campaign cannot be deleted). Returns the ids changed."""
    changed = [c.id for c in new.campaigns
               if define(conn, topic, new.shop_id, c, "config", operator)]
    kept = {c.id for c in new.campaigns}
    for campaign in (old.campaigns if old else []):
        if campaign.id in kept:
            continue
        stored = load(conn, new.shop_id, campaign.id, lock=True)
        if stored is None or stored.source != "config":
            continue
        if stored.status == "confirmed":
            raise OperationRefused(f"campaign {campaign.id!r} is confirmed and cannot be "
                                   "deleted; keep it in the configuration")
        conn.exec_driver_sql("DELETE FROM campaigns WHERE shop_id = %s AND campaign_id = %s",
                             (new.shop_id, campaign.id))
        _recredit(conn, topic, new.shop_id, campaign.id)  # back to the default windows
        changed.append(campaign.id)
    return changed


@dataclass(frozen=True)
class Confirmed:
    audience: int
    recredited: int


def confirm(conn: Connection, topic: str, shop_id: str, campaign_id: str, operator: str,
            now: datetime) -> Confirmed:
    """Resolve the target to members now and record them as the audience; freeze the campaign.

    The audience is the members the target selects at this moment, in member-id order, kept
    in `campaign_audience`: who was targeted never changes afterwards.
    """
    stored = load(conn, shop_id, campaign_id, lock=True)
    if stored is None:
        raise OperationRefused(f"shop {shop_id!r} has no campaign {campaign_id!r}")
    if stored.status == "confirmed":
        raise OperationRefused(f"campaign {campaign_id!r} is already confirmed")
    if now > stored.definition.ends_at:
        # Confirming freezes the window, and a campaign is only sent within it: confirmed now,
        # it could never be sent nor changed.
        raise OperationRefused(
            f"campaign {campaign_id!r} ran {iso(stored.definition.starts_at)} to "
            f"{iso(stored.definition.ends_at)}, which has passed (it is {iso(now)}): give it a "
            "new window first (a draft's window can change)")
    where, params = stored.definition.target.filter().where(shop_id)
    audience = conn.exec_driver_sql(
        "INSERT INTO campaign_audience (shop_id, campaign_id, member_id) "
        f"SELECT m.shop_id, %(campaign)s, m.member_id FROM members m WHERE {where} "
        "ORDER BY m.member_id ON CONFLICT DO NOTHING",
        {**params, "campaign": campaign_id}).rowcount
    conn.exec_driver_sql(
        "UPDATE campaigns SET status = 'confirmed', confirmed_at = %s, confirmed_by = %s, "
        "audience_size = %s WHERE shop_id = %s AND campaign_id = %s",
        (now, operator, audience, shop_id, campaign_id))
    audit(conn, shop_id, None, "campaign.confirm", operator,
          {"campaign": campaign_id, "audience": audience})
    # Orders of the audience may already wait for it (a history replayed before confirming).
    return Confirmed(audience, _recredit(conn, topic, shop_id, campaign_id))


def _recredit(conn: Connection, topic: str, shop_id: str, campaign_id: str) -> int:
    """Re-decide the credits of the orders of every member the campaign reached (audience,
    messages or clicks); their events go out through the outbox. Returns how many changed."""
    orders = {(r[0], r[1]) for r in conn.exec_driver_sql(
        "WITH reached AS ("
        "  SELECT member_id FROM campaign_audience WHERE shop_id = %(s)s AND campaign_id = %(c)s "
        "  UNION SELECT member_id FROM campaign_sends "
        "    WHERE shop_id = %(s)s AND campaign_id = %(c)s "
        "  UNION SELECT member_id FROM campaign_clicks "
        "    WHERE shop_id = %(s)s AND campaign_id = %(c)s) "
        "SELECT o.shop_id, o.order_id FROM campaign_orders o JOIN reached r "
        "ON o.member_id = r.member_id WHERE o.shop_id = %(s)s AND o.converted_at IS NOT NULL",
        {"s": shop_id, "c": campaign_id})}
    changed = reattribute(conn, orders)
    enqueue(conn, "campaigns", credit_events(topic, changed))
    return len(changed)


@dataclass(frozen=True)
class Message:
    """One campaign message to deliver to one member over one channel."""

    message_id: str
    member_id: str
    channel: str
    text: str


class Sender(Protocol):
    """Delivers messages (an SMS gateway, a mail service...); it raises if it cannot."""

    name: str

    def deliver(self, shop_id: str, campaign: CampaignDefinition,
                messages: Sequence[Message]) -> None: ...


class FileSender:
    """Writes the messages to a JSON-lines file per campaign, for another system to deliver."""

    name = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, shop_id: str, campaign_id: str) -> Path:
        return self.directory / f"{shop_id}--{campaign_id}.jsonl"

    def deliver(self, shop_id: str, campaign: CampaignDefinition,
                messages: Sequence[Message]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(shop_id, campaign.id)
        partial = target.with_suffix(".partial")
        with partial.open("w", encoding="utf-8") as out:
            for m in messages:
                out.write(json.dumps({"message_id": m.message_id, "member_id": m.member_id,
                                      "channel": m.channel, "text": m.text},
                                     ensure_ascii=False) + "\n")
        partial.replace(target)  # all or nothing: a reader never sees half a campaign


def send(conn: Connection, topics: Topics, shop_id: str, campaign_id: str, sender: Sender,
         operator: str, now: datetime) -> int:
    """Deliver the campaign to its audience on each of its channels; returns messages sent.

    Every delivered message becomes a `campaign.message_sent` event (sent now), archived like
    any inbound event and written to the outbox in this transaction, then relayed to the
    campaigns topic by the campaigns worker. A campaign is sent once.
    """
    stored = load(conn, shop_id, campaign_id, lock=True)
    if stored is None:
        raise OperationRefused(f"shop {shop_id!r} has no campaign {campaign_id!r}")
    campaign = stored.definition
    if stored.status != "confirmed":
        raise OperationRefused(f"campaign {campaign_id!r} is not confirmed: confirm it first "
                               "(memberflow campaigns confirm), which records its audience")
    if stored.sent_at is not None:
        raise OperationRefused(f"campaign {campaign_id!r} was sent at {iso(stored.sent_at)}")
    if not campaign.starts_at <= now <= campaign.ends_at:
        raise OperationRefused(f"campaign {campaign_id!r} runs {iso(campaign.starts_at)} to "
                               f"{iso(campaign.ends_at)}; it is {iso(now)}")
    members = [r[0] for r in conn.exec_driver_sql(
        "SELECT member_id FROM campaign_audience WHERE shop_id = %s AND campaign_id = %s "
        "ORDER BY member_id", (shop_id, campaign_id))]
    text = f"{campaign.name}: {campaign.offer.describe()}"
    messages = [Message(f"{campaign_id}:{m}:{channel}", m, channel, text)
                for m in members for channel in campaign.channels]
    sender.deliver(shop_id, campaign, messages)
    events = [_sent_event(shop_id, campaign_id, m, now) for m in messages]
    archived = archive.store(conn, events)
    enqueue(conn, "campaigns", [o for e in archived.new
                                for o in archive.relay_outputs(
                                    topics, e, archive.archive_key(conn), False)])
    conn.exec_driver_sql("UPDATE campaigns SET sent_at = %s WHERE shop_id = %s AND "
                         "campaign_id = %s", (now, shop_id, campaign_id))
    audit(conn, shop_id, None, "campaign.send", operator,
          {"campaign": campaign_id, "messages": len(messages), "sender": sender.name})
    return len(messages)


def _sent_event(shop_id: str, campaign_id: str, m: Message, now: datetime) -> EventModel:
    body: dict[str, Any] = {
        "event_id": f"sent:{shop_id}:{m.message_id}", "type": "campaign.message_sent",
        "schema_version": 1, "shop_id": shop_id, "member_id": m.member_id,
        "occurred_at": iso(now),
        "payload": {"campaign_id": campaign_id, "message_id": m.message_id,
                    "channel": m.channel}}
    return validate(body)  # the storefront's contract applies to our own events too


def listing(conn: Connection, shop_id: str) -> list[dict[str, Any]]:
    """The shop's campaigns as an operator sees them: each defined one with its stage (draft,
    confirmed, sent) and what went out and came back; and campaigns known only from the
    message history (sent by an earlier tool: `history`)."""
    counts = {r[0]: (int(r[1]), int(r[2])) for r in conn.exec_driver_sql(
        "SELECT s.campaign_id, count(*), (SELECT count(DISTINCT message_id) FROM campaign_clicks "
        "  k WHERE k.shop_id = s.shop_id AND k.campaign_id = s.campaign_id) "
        "FROM campaign_sends s WHERE s.shop_id = %s GROUP BY s.shop_id, s.campaign_id",
        (shop_id,))}
    rows: list[dict[str, Any]] = []
    for c in campaigns_of(conn, shop_id):
        d = c.definition
        sent, clicked = counts.pop(d.id, (0, 0))
        stage = "sent" if c.sent_at or sent else c.status
        rows.append({
            "campaign_id": d.id, "name": d.name, "status": stage, "source": c.source,
            "starts_at": _iso(d.starts_at), "ends_at": _iso(d.ends_at),
            "audience": c.audience_size, "messages_sent": sent, "messages_clicked": clicked,
            "sent_at": _iso(c.sent_at) if c.sent_at else None, "channels": d.channels,
            "offer": d.offer.describe(),
            "click_window_hours": d.attribution.click_window_hours,
            "send_window_hours": d.attribution.send_window_hours})
    for campaign_id, (sent, clicked) in sorted(counts.items()):
        rows.append({"campaign_id": campaign_id, "name": None, "status": "history",
                     "source": "events", "starts_at": None, "ends_at": None, "audience": None,
                     "messages_sent": sent, "messages_clicked": clicked, "sent_at": None,
                     "channels": [], "offer": None, "click_window_hours": None,
                     "send_window_hours": None})
    return rows


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")
