"""A deterministic, realistic sample shop history (standard library only) and its oracle figures."""

from __future__ import annotations

import bisect
import copy
import itertools
import json
import math
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

PROVINCES = (
    ("Guangdong", 18), ("Zhejiang", 14), ("Jiangsu", 13), ("Shanghai", 10), ("Beijing", 9),
    ("Shandong", 7), ("Fujian", 6), ("Sichuan", 6), ("Henan", 5), ("Hubei", 5), ("Hunan", 4),
    ("Anhui", 3), ("Hebei", 3), ("Tianjin", 3), ("Chongqing", 3), ("Shaanxi", 2), ("Liaoning", 2),
    ("Yunnan", 1), ("Guangxi", 1), ("Jiangxi", 1), ("Heilongjiang", 1), ("Xinjiang", 1),
)
# Shoppers browse and buy in the evening; the small hours are quiet.
HOUR_WEIGHTS = (1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.7, 1.2, 1.8, 2.2, 2.5, 2.7,
                3.0, 2.7, 2.5, 2.5, 2.6, 2.8, 3.2, 3.8, 4.5, 5.0, 4.2, 2.5)
CHANNELS = ("sms", "email", "in_app", "im")
CATALOGUE_SIZE = 300
_Raw = tuple[datetime, int, str, str, dict[str, Any]]  # (at, seq, type, member_id, payload)


def _money(cents: int) -> str:
    """Integer cents as a two-decimal wire string, e.g. 12990 -> "129.90"."""
    return f"{cents // 100}.{cents % 100:02d}"


def _cents(amount: Any) -> int:
    """A wire amount (str, int or Decimal) as exact integer cents."""
    cents = Decimal(str(amount)) * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{amount} has more than two decimals")
    return int(cents)


def _iso(at: datetime) -> str:
    """UTC ISO-8601 with a Z suffix."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _day_weight(day: datetime) -> float:
    """Weekends, November and the two shopping festivals (6.18, Double 11) sell more."""
    weight = 1.35 if day.weekday() >= 5 else 1.0
    if day.month == 11:
        weight *= 4.0 if day.day == 11 else 1.6
    if (day.month, day.day) == (6, 18):
        weight *= 2.5
    return weight


class _Shop:
    """The random state of one generation run."""

    def __init__(self, rng: random.Random, end: datetime, days: int) -> None:
        self.rng = rng
        start = end - timedelta(days=days)
        self.days = [start + timedelta(days=d) for d in range(days)]
        self.day_cum = list(itertools.accumulate(_day_weight(d) for d in self.days))
        self.hour_cum = list(itertools.accumulate(HOUR_WEIGHTS))
        self.skus = [f"SKU-{i:04d}" for i in range(1, CATALOGUE_SIZE + 1)]
        self.prices = [
            min(99900, max(990, round(rng.lognormvariate(math.log(90), 0.9) * 10) * 10))
            for _ in self.skus
        ]
        self.sku_cum = list(itertools.accumulate(1 / r**1.1 for r in range(1, CATALOGUE_SIZE + 1)))
        self.province_cum = list(itertools.accumulate(w for _, w in PROVINCES))
        self.seq = itertools.count()
        self.raw: list[_Raw] = []

    def when(self, span: tuple[int, int] | None = None) -> datetime:
        """A moment in the window (or in its days `span`: first included, last excluded),
        shaped by the day and hour weights."""
        first, last = span or (0, len(self.days))
        below = self.day_cum[first - 1] if first else 0.0
        drawn = below + self.rng.random() * (self.day_cum[last - 1] - below)
        day = self.days[min(bisect.bisect_right(self.day_cum, drawn, first, last), last - 1)]
        hour = self.rng.choices(range(24), cum_weights=self.hour_cum)[0]
        return day + timedelta(hours=hour, seconds=self.rng.randrange(3600))

    def sku(self) -> int:
        """A catalogue index with Zipf-like popularity."""
        return self.rng.choices(range(len(self.skus)), cum_weights=self.sku_cum)[0]

    def emit(self, at: datetime, type_: str, member: str, payload: dict[str, Any]) -> None:
        """Record one event; the sequence number keeps causal order for equal timestamps."""
        self.raw.append((at, next(self.seq), type_, member, payload))

    def browse(self, member: str, at: datetime, views: int) -> None:
        """A browsing session: a few product views, sometimes something put in the cart."""
        for _ in range(views):
            at += timedelta(seconds=self.rng.randint(10, 300))
            sku = self.skus[self.sku()]
            self.emit(at, "member.viewed", member, {"sku": sku})
            if self.rng.random() < 0.25:
                self.emit(at + timedelta(seconds=5), "member.carted", member, {"sku": sku})

    def lifetime(self, orders: int) -> tuple[int, int]:
        """The days a buyer of `orders` orders buys on: from the day they join to the end, or,
        for two in five who buy more than once, until they drift away some weeks later."""
        days, rng = len(self.days), self.rng
        if orders == 1:
            return 0, days
        first = rng.randrange(days * 3 // 4)
        if rng.random() < 0.4:
            return first, min(days, first + 14 + int(rng.expovariate(1 / 45)))
        return first, days

    def order(self, member: str, order_id: str, region: str, span: tuple[int, int]) -> None:
        """One order's life: placed, usually paid, mostly completed, occasionally refunded."""
        rng = self.rng
        at = self.when(span)
        if rng.random() < 0.5:
            self.browse(member, at - timedelta(minutes=rng.randint(5, 40)), rng.randint(1, 3))
        picked: list[int] = []
        for _ in range(rng.choices((1, 2, 3, 4), weights=(55, 25, 13, 7))[0]):
            index = self.sku()
            if index not in picked:
                picked.append(index)
        lines = [(i, rng.choices((1, 2, 3), weights=(75, 18, 7))[0]) for i in picked]
        items = [{"sku": self.skus[i], "qty": qty, "unit_price": _money(self.prices[i])}
                 for i, qty in lines]
        cents = sum(qty * self.prices[i] for i, qty in lines)
        amount = _money(cents)
        self.emit(at, "order.placed", member, {"order_id": order_id, "items": items,
                                               "amount": amount, "region": region})
        if rng.random() >= 0.97:
            return
        at += timedelta(minutes=rng.randint(1, 30), seconds=rng.randrange(60))
        self.emit(at, "order.paid", member, {"order_id": order_id, "amount": amount})
        if rng.random() >= 0.90:
            return  # cancelled or returned before it completed
        at += timedelta(seconds=rng.randint(2 * 86400, 7 * 86400))
        self.emit(at, "order.completed", member, {"order_id": order_id, "amount": amount})
        if rng.random() >= 0.06:
            return
        at += timedelta(seconds=rng.randint(86400, 10 * 86400))
        refund = cents if rng.random() < 0.6 else max(1, round(cents * rng.uniform(0.1, 0.9)))
        self.emit(at, "order.refunded", member, {"order_id": order_id, "amount": _money(refund)})


def _order_count(rng: random.Random) -> int:
    """Most buyers order once or twice; a heavy tail of regulars orders 10-40 times."""
    if rng.random() < 0.08:
        return rng.randint(10, 40)
    n = 1
    while n < 8 and rng.random() < 0.3:
        n += 1
    return n


def generate(*, shop_id: str = "demo-shop", members: int = 5000, days: int = 180,
             end: datetime = datetime(2026, 11, 1, tzinfo=UTC), seed: int = 7,
             duplicate_rate: float = 0.01) -> list[dict[str, Any]]:
    """A shop's event history, sorted by time, with a share of verbatim storefront retries."""
    rng = random.Random(seed)
    shop = _Shop(rng, end, days)
    orders = itertools.count(1)
    for m in range(1, members + 1):
        member = f"m{m:06d}"
        region = PROVINCES[rng.choices(range(len(PROVINCES)), cum_weights=shop.province_cum)[0]][0]
        if rng.random() < 0.15:  # window shoppers: they look, they never order
            for _ in range(rng.randint(1, 5)):
                shop.browse(member, shop.when(), rng.randint(1, 6))
            continue
        count = _order_count(rng)
        span = shop.lifetime(count)
        for _ in range(count):
            shop.order(member, f"{shop_id}-o{next(orders):07d}", region, span)
    for c in range(1, 4):
        campaign, channel, sent = f"cmp-{c:02d}", rng.choice(CHANNELS), shop.when()
        for k, m in enumerate(sorted(rng.sample(range(1, members + 1),
                                                min(members, rng.randint(200, 600))))):
            member, message = f"m{m:06d}", f"{campaign}-msg{k + 1:05d}"
            at = sent + timedelta(seconds=rng.randrange(1800))
            shop.emit(at, "campaign.message_sent", member,
                      {"campaign_id": campaign, "message_id": message, "channel": channel})
            if rng.random() < 0.10:
                clicked = at + timedelta(seconds=rng.randint(60, 36000))
                shop.emit(clicked, "campaign.message_clicked", member,
                          {"campaign_id": campaign, "message_id": message})
    # Events after `end` have not happened yet, so recent orders stay open.
    raw = sorted((r for r in shop.raw if r[0] <= end), key=lambda r: (r[0], r[1]))
    events = [
        {"event_id": f"{shop_id}-{n:08d}", "type": type_, "schema_version": 1,
         "shop_id": shop_id, "member_id": member, "occurred_at": _iso(at), "payload": payload}
        for n, (at, _, type_, member, payload) in enumerate(raw, start=1)
    ]
    placed: list[tuple[float, dict[str, Any]]] = [(float(i), e) for i, e in enumerate(events)]
    for i in sorted(rng.sample(range(len(events)), round(len(events) * duplicate_rate))):
        placed.append((i + rng.randint(1, 50) + 0.5, copy.deepcopy(events[i])))
    return [e for _, e in sorted(placed, key=lambda p: p[0])]


def bad_lines() -> list[str]:
    """Malformed JSONL lines for the demo: each must be refused by the contract."""
    base = {"schema_version": 1, "shop_id": "demo-shop", "member_id": "m000001",
            "occurred_at": "2026-10-01T12:00:00Z"}
    negative = {**base, "event_id": "bad-negative-qty", "type": "order.placed",
                "payload": {"order_id": "bad-o1", "amount": "10.00",
                            "items": [{"sku": "SKU-0001", "qty": -1, "unit_price": "10.00"}]}}
    anonymous = {k: v for k, v in base.items() if k != "member_id"}
    anonymous.update(event_id="bad-no-member", type="order.paid",
                     payload={"order_id": "bad-o2", "amount": "10.00"})
    unknown = {**base, "event_id": "bad-unknown-type", "type": "order.shipped",
               "payload": {"order_id": "bad-o3"}}
    return ['{"event_id": "bad-truncated", "type": "order.placed", "payload": {',
            json.dumps(negative), json.dumps(anonymous), json.dumps(unknown)]


def write_jsonl(events: Iterable[dict[str, Any]], path: Path,
                extra_lines: Iterable[str] = ()) -> int:
    """Write events as JSON lines with the extra lines spread evenly through; returns lines."""
    lines = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in events]
    extras = list(extra_lines)
    for j, line in reversed(list(enumerate(extras))):
        lines.insert((j + 1) * len(lines) // (len(extras) + 1), line)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)
    return len(lines)


def expected_figures(events: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each member's figures computed directly from the history: the pipeline's oracle."""
    seen: set[str] = set()
    figures: dict[tuple[str, str], dict[str, Any]] = {}
    ledger: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        if e["event_id"] in seen or not e["type"].startswith("order."):
            continue
        seen.add(e["event_id"])
        member = (e["shop_id"], e["member_id"])
        figures.setdefault(member, {"completed_trades": 0, "gross_cents": 0, "refunded_cents": 0,
                                    "spend_cents": 0, "first_purchase_at": None,
                                    "last_purchase_at": None})
        if e["type"] not in ("order.completed", "order.refunded"):
            continue
        # The order belongs to whoever its first completion or refund names.
        order = ledger.setdefault((e["shop_id"], e["payload"]["order_id"]),
                                  {"owner": member, "amount": 0, "at": None, "refunds": 0})
        if e["type"] == "order.refunded":
            order["refunds"] += _cents(e["payload"]["amount"])
        elif order["at"] is None:  # a second completion of the same order changes nothing
            order["amount"] = _cents(e["payload"]["amount"])
            order["at"] = datetime.fromisoformat(e["occurred_at"]).astimezone(UTC)
    for order in ledger.values():
        if order["at"] is None:
            continue  # refunds of an order that never completed do not count
        fig = figures[order["owner"]]
        fig["completed_trades"] += 1
        fig["gross_cents"] += order["amount"]
        fig["refunded_cents"] += min(order["refunds"], order["amount"])
        fig["spend_cents"] = fig["gross_cents"] - fig["refunded_cents"]
        first, last = fig["first_purchase_at"], fig["last_purchase_at"]
        fig["first_purchase_at"] = order["at"] if first is None else min(first, order["at"])
        fig["last_purchase_at"] = order["at"] if last is None else max(last, order["at"])
    for fig in figures.values():
        for field in ("first_purchase_at", "last_purchase_at"):
            fig[field] = fig[field] and _iso(fig[field])
    return figures
