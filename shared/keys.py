"""Storefront keys at ingest speed: verified tokens remembered briefly, and a rate per key.

Ingest serves hundreds of requests a second; asking the database about the key of each would
cost a round trip per request. A verified token is remembered for `ttl_s` (so a revocation or
expiry reaches ingest within that time); unknown tokens are not remembered (nothing for a
flood of made-up keys to fill).

The rate limit is a token bucket per key, in events: `rate` per second, bursts of up to two
seconds' worth. A request is let through when the bucket holds its events (or, for a batch
larger than the bucket, when the bucket is full: it then owes the difference, and the key waits
it off). Otherwise it is refused whole, with the seconds until it would fit.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from sqlalchemy import Engine

from shared import tokens
from shared.tokens import Credential

MAX_REMEMBERED = 10_000


def bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = header.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def verified(engine: Engine, token: str) -> Credential | None:
    """The live credential of a token, asked of the database in a thread (the driver blocks)."""
    def check() -> Credential | None:
        with engine.begin() as conn:
            return tokens.verify(conn, token)

    return await asyncio.to_thread(check)


class CachedTokens:
    """`await keys(token)` -> the live credential, or None."""

    def __init__(self, engine: Engine, ttl_s: float = 10.0) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self._seen: OrderedDict[bytes, tuple[Credential, float]] = OrderedDict()

    async def __call__(self, token: str) -> Credential | None:
        key = tokens.digest(token)
        now = time.monotonic()
        hit = self._seen.get(key)
        if hit is not None and now - hit[1] < self.ttl_s:
            return hit[0]
        found = await verified(self.engine, token)
        if found is None:
            self._seen.pop(key, None)
            return None
        self._seen[key] = (found, now)
        self._seen.move_to_end(key)
        while len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
        return found


class RateLimits:
    """Per-key token buckets in events."""

    def __init__(self, per_second: float) -> None:
        self.rate = per_second
        self.capacity = 2 * per_second
        self._buckets: dict[int, tuple[float, float]] = {}   # key id -> (level, at)

    def take(self, key_id: int, events: int) -> float | None:
        """Spend `events` from the key's bucket; None if allowed, else seconds to wait."""
        if self.rate <= 0:
            return None
        now = time.monotonic()
        level, at = self._buckets.get(key_id, (self.capacity, now))
        level = min(self.capacity, level + (now - at) * self.rate)
        needed = min(events, self.capacity)
        if needed > level:
            self._buckets[key_id] = (level, now)
            return max(0.001, (needed - level) / self.rate)
        self._buckets[key_id] = (level - events, now)
        return None
