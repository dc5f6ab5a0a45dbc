"""Pure attribution rules: which campaign message, if any, an order is credited to. No I/O.

All times are event times (aware datetimes), so replaying history gives the same credits as live
processing. An order converts at the earliest of its paid / completed times and is credited to
at most one message of a campaign whose audience (fixed when the campaign was confirmed) holds
the ordering member:

1. **Last click.** A click by the member qualifies when it happened at or before the conversion
   and no more than its campaign's click window (default 2 days) before it — a click exactly
   48 hours before the order counts, one microsecond more does not. The latest qualifying click
   wins; equal times go to the smallest campaign id, then message id, then event id.
2. **Send, only if no click qualifies.** A message sent to the member qualifies the same way
   within its campaign's send window (default 1 day). The latest qualifying send wins; equal
   times go to the smallest campaign id, then message id, then channel.
3. Otherwise the order is not credited: it came after every window, before any click or send,
   from a member outside every audience, or on a campaign that is not known.

The credit is a function of the *sets* of clicks, sends and campaigns, never of their order,
their duplicates or when they arrived: a click that reaches us after the order it precedes
credits that order as soon as it is known. Which stored orders a late click or send can change
is found in SQL (`store.orders_near`, `store.reach`); tests hold it to an oracle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from shared.outbound import CreditKind

CLICK: Final = "click"
SEND: Final = "send"
DEFAULT_CLICK_WINDOW = timedelta(days=2)
DEFAULT_SEND_WINDOW = timedelta(days=1)
_ZERO = timedelta(0)


def _require_aware(name: str, value: datetime) -> None:
    # Naive datetimes would compare against aware ones only by raising deep inside `credit`;
    # refusing them where they are made names the culprit.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (UTC), got {value!r}")


@dataclass(frozen=True, slots=True)
class Campaign:
    """A confirmed campaign: its attribution windows and the members it targeted."""

    campaign_id: str
    click_window: timedelta = DEFAULT_CLICK_WINDOW
    send_window: timedelta = DEFAULT_SEND_WINDOW
    audience: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.click_window < _ZERO or self.send_window < _ZERO:
            raise ValueError(f"campaign {self.campaign_id}: attribution windows must be >= 0")


@dataclass(frozen=True, slots=True)
class Send:
    """A campaign message sent to a member through a channel."""

    campaign_id: str
    message_id: str
    member_id: str
    channel: str
    sent_at: datetime

    def __post_init__(self) -> None:
        _require_aware("sent_at", self.sent_at)


@dataclass(frozen=True, slots=True)
class Click:
    """A member's click on a campaign message; `event_id` tells two clicks at one time apart."""

    campaign_id: str
    message_id: str
    member_id: str
    clicked_at: datetime
    event_id: str

    def __post_init__(self) -> None:
        _require_aware("clicked_at", self.clicked_at)


@dataclass(frozen=True, slots=True)
class Order:
    """A member's order, converted at the earliest of its paid / completed times."""

    order_id: str
    member_id: str
    converted_at: datetime
    amount_cents: int = 0          # carried for revenue reports; attribution never reads it

    def __post_init__(self) -> None:
        _require_aware("converted_at", self.converted_at)


@dataclass(frozen=True, slots=True)
class Credit:
    """The one message an order is credited to, by a click or by a mere send."""

    kind: CreditKind               # CLICK | SEND
    campaign_id: str
    message_id: str
    channel: str | None            # None: a click whose send is not (yet) known
    credited_at: datetime          # the click's or the send's time

    def __post_init__(self) -> None:
        if self.kind not in (CLICK, SEND):
            raise ValueError(f"credit kind must be {CLICK!r} or {SEND!r}, got {self.kind!r}")


def credit(order: Order, clicks: Iterable[Click], sends: Iterable[Send],
           campaigns: Mapping[str, Campaign]) -> Credit | None:
    """The credit for `order` under the last-click-then-send rule, or None; input order is moot."""
    member = order.member_id
    at = order.converted_at

    # One pass over each iterable (they may be generators), keeping only the best so far; the
    # tie-breaks cover every field that can differ, so the winner never depends on input order.
    best: Click | None = None
    for c in clicks:
        if c.member_id != member or c.clicked_at > at:
            continue
        if best is not None and (
            c.clicked_at < best.clicked_at
            or (c.clicked_at == best.clicked_at
                and (c.campaign_id, c.message_id, c.event_id)
                >= (best.campaign_id, best.message_id, best.event_id))
        ):
            continue
        campaign = campaigns.get(c.campaign_id)
        if campaign is None or member not in campaign.audience:
            continue
        if at - c.clicked_at > campaign.click_window:
            continue
        best = c

    if best is not None:
        # The click's channel is that of its send to this member. One message sent twice on
        # different channels is an upstream anomaly; the smallest channel keeps it deterministic.
        channel: str | None = None
        for s in sends:
            if (s.member_id == member and s.message_id == best.message_id
                    and s.campaign_id == best.campaign_id
                    and (channel is None or s.channel < channel)):
                channel = s.channel
        return Credit(CLICK, best.campaign_id, best.message_id, channel, best.clicked_at)

    best_send: Send | None = None
    for s in sends:
        if s.member_id != member or s.sent_at > at:
            continue
        if best_send is not None and (
            s.sent_at < best_send.sent_at
            or (s.sent_at == best_send.sent_at
                and (s.campaign_id, s.message_id, s.channel)
                >= (best_send.campaign_id, best_send.message_id, best_send.channel))
        ):
            continue
        campaign = campaigns.get(s.campaign_id)
        if campaign is None or member not in campaign.audience:
            continue
        if at - s.sent_at > campaign.send_window:
            continue
        best_send = s

    if best_send is not None:
        return Credit(SEND, best_send.campaign_id, best_send.message_id, best_send.channel,
                      best_send.sent_at)
    return None
