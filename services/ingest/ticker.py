"""Pipeline ticks: the wall-clock time, recorded into the stream by the running ingest.

Time-based rules ("no purchase for 180 days"), ABC periods and report finality read event time
(docs/time.md). A shop whose customers stop buying, or a pipeline nobody writes to, would then
stand still; so while `memberflow up` runs, ingest records a `clock.ticked` event every
`tick_seconds`. A tick is archived and relayed like any event (to every partition of the orders
topic), so a replay of the archive moves time at exactly the same points of the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from services.ingest.handlers import Ingestor, Unavailable
from shared.outbound import iso

log = logging.getLogger(__name__)


def tick_event(at: datetime, source: str) -> dict[str, object]:
    """A `clock.ticked` event at `at` (its id names the instant: two ticks at one instant are
    one event)."""
    stamp = iso(at.astimezone(UTC))
    return {"event_id": f"tick:{stamp}", "type": "clock.ticked", "schema_version": 1,
            "occurred_at": stamp, "payload": {"source": source}}


async def record_tick(ingestor: Ingestor, at: datetime, source: str) -> bool:
    """Record one tick; True once it is archived."""
    [verdict] = await ingestor.submit([(f"tick {iso(at)}", tick_event(at, source))])
    if not verdict.accepted:
        log.error("tick refused: %s", "; ".join(str(p) for p in verdict.problems))
    return verdict.accepted


async def tick_forever(ingestor: Ingestor, seconds: float, stop: asyncio.Event) -> None:
    """Record a tick every `seconds` of wall time until `stop` is set."""
    while not stop.is_set():
        try:
            await record_tick(ingestor, datetime.now(UTC), "ingest")
        except Unavailable as exc:
            log.warning("tick not recorded (%s); the next one will be", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
