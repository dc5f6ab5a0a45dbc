"""Hostile inputs for the engine: valid events with one part replaced by something nasty.

Used by the fuzz tests (through hypothesis' `randoms()`) and by `benchmarks/fuzz.py` (10^5
inputs). Each input is the bytes of one request body or Kafka record, together with whether it
is still a valid event (a mutation may leave it valid, e.g. a harmless extra space in JSON).
Every input carries a unique event id where it has one, so what the engine did with it can be
found afterwards.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import EventRejected, decode, digest
from shared.topics import Topics

NASTY_TEXT = [
    "", " ", "\u0000", "a\u0000b", "\u0001", "\u007f", "\u200b", "\u200b\u200b", "\ufeffx",
    "x\u2028", "\u2029", "\ud800", "\udfff", "\U0010ffff", "é", "会员", "١٢٣", "１２３",
    "x" * 129, "x" * 5000, "\n", "\t", "a b", " a", "a ", "'; DROP TABLE members; --",
    "%s", "%(x)s", "{}", "[]", "null", "\\", '"', "\x1b[31m",
]
NASTY_NUMBERS = ["1e2", "1E400", "-0", "-1", "0.001", "1.005", "12.50", "999999999999.99",
                 "1000000000000", "1" * 400, "0x10", "NaN", "Infinity", "-Infinity", "1_000",
                 "00012", "12.", ".5", "+1", "true", "false", "null"]
NASTY_TIMES = ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
               "2099-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2026-01-31T12:00:00",
               "2026-01-31", "2026-02-30T00:00:00Z", "2026-01-31T25:00:00Z",
               "2026-01-31T12:00:00+25:00", "1780272000", "2026-01-31T12:00:00.1234567Z",
               "2026-01-31 12:00:00Z", "２０２６-01-31T12:00:00Z"]
TYPES = ["order.placed", "order.paid", "order.completed", "order.refunded",
         "campaign.message_sent", "campaign.message_clicked", "member.viewed", "member.carted"]


def valid_event(rng: random.Random, n: int, shop: str = "fuzz") -> dict[str, Any]:
    """A valid event of a random type, unique by `n`, dated in the last year."""
    type_ = rng.choice(TYPES)
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(300 * 86400))
    order = f"o{n}"
    amount = f"{rng.randrange(1, 100000)}.{rng.randrange(100):02d}"
    payloads: dict[str, dict[str, Any]] = {
        "order.placed": {"order_id": order, "amount": amount, "region": "east",
                         "items": [{"sku": f"sku-{rng.randrange(20)}", "qty": 1,
                                    "unit_price": amount}]},
        "order.paid": {"order_id": order, "amount": amount},
        "order.completed": {"order_id": order, "amount": amount},
        "order.refunded": {"order_id": order, "amount": amount},
        "campaign.message_sent": {"campaign_id": "c1", "message_id": f"msg{n}",
                                  "channel": "sms"},
        "campaign.message_clicked": {"campaign_id": "c1", "message_id": f"msg{n}"},
        "member.viewed": {"sku": "sku-1"},
        "member.carted": {"sku": "sku-1"},
    }
    payload = payloads[type_]
    return {"event_id": f"fz-{n}", "type": type_, "schema_version": 1, "shop_id": shop,
            "member_id": f"m{rng.randrange(50)}", "occurred_at": at.isoformat().replace(
                "+00:00", "Z"), "payload": payload}


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [path] + [p for k, v in obj.items() for p in _leaves(v, (*path, k))]
    if isinstance(obj, list):
        return [path] + [p for i, v in enumerate(obj) for p in _leaves(v, (*path, i))]
    return [path]


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    obj[path[0]] = _set(obj[path[0]], path[1:], value)
    return obj


def _raw_value(rng: random.Random) -> str:
    """A JSON fragment, valid or not."""
    kind = rng.randrange(8)
    if kind == 0:
        return json.dumps(rng.choice(NASTY_TEXT))
    if kind == 1:
        return rng.choice(NASTY_NUMBERS)
    if kind == 2:
        return json.dumps(rng.choice(NASTY_TIMES))
    if kind == 3:
        return json.dumps(rng.choice(NASTY_NUMBERS))
    if kind == 4:
        depth = rng.choice([2, 40, 5000])
        return "[" * depth + "]" * depth
    if kind == 5:
        return rng.choice(["{}", "[]", "null", "true", '{"a": 1, "a": 2}', "1.5", "-1"])
    if kind == 6:
        return json.dumps("".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(6))),
                          ensure_ascii=True)
    return json.dumps(rng.choice(TYPES))


def hostile(rng: random.Random, n: int, shop: str = "fuzz") -> bytes:
    """One input: a valid event with one part replaced, removed, repeated or cut."""
    event = valid_event(rng, n, shop)
    how = rng.randrange(10)
    if how == 0:
        return json.dumps(event).encode()                       # untouched: accepted
    if how in (1, 2, 3, 4):
        path = rng.choice(_leaves(event)[1:])
        marker = "\u0007MARK\u0007"
        text = json.dumps(_set(event, path, marker))
        return text.replace(json.dumps(marker), _raw_value(rng), 1).encode("utf-8",
                                                                              "surrogatepass")
    if how == 5:
        path = rng.choice([p for p in _leaves(event)[1:] if len(p) >= 1])
        parent = event
        for part in path[:-1]:
            parent = parent[part]
        if isinstance(parent, dict):
            del parent[path[-1]]                                  # a field missing
        return json.dumps(event).encode()
    if how == 6:
        key = rng.choice(["type", "event_id", "payload", "occurred_at", "shop_id"])
        text = json.dumps(event)
        return (text[:-1] + f', "{key}": {_raw_value(rng)}' + "}").encode(
            "utf-8", "surrogatepass")                             # a key repeated
    if how == 7:
        whole = json.dumps(event).encode()
        return whole[:rng.randrange(len(whole))]                  # cut short
    if how == 8:
        flipped = bytearray(json.dumps(event).encode())
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)   # bytes flipped
        return bytes(flipped)
    event[rng.choice(["extra", "Type", "payload2"])] = 1          # an unknown field
    return json.dumps(event).encode()


def expected_fates(records: list[tuple[str, bytes]], accepted: dict[str, bytes],
                   topics: Topics) -> tuple[int, int]:
    """(archived, parked) for records produced straight to Kafka, by the contract alone: a
    valid record on its own topic is archived unless its id was archived before (the same
    body: a duplicate, dropped; another body: a conflict, parked); anything else is parked.
    `accepted` maps the ids accepted over HTTP to their digests."""
    seen = dict(accepted)
    archived = parked = 0
    for topic, raw in records:
        try:
            event = decode(raw)
        except EventRejected:
            parked += 1
            continue
        if topics.home(event.type) not in (None, topic):
            parked += 1
        elif event.event_id not in seen:
            seen[event.event_id] = digest(event)
            archived += 1
        elif seen[event.event_id] != digest(event):
            parked += 1
    return archived, parked
