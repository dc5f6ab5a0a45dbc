"""Re-driving dead letters: a parked input submitted again, as it was or corrected.

Each is validated, archived and relayed like a new input; a letter whose input is accepted is
marked `redriven` and the re-drive is audited (who, and whether the input was corrected). A
letter still refused stays parked, and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import Engine

from services.ingest.handlers import Ingestor, Verdict
from shared.audit import audit
from shared.config import Settings
from shared.metrics import Metrics


@dataclass(frozen=True)
class Redriven:
    letter_id: int
    verdict: Verdict | None      # None: no such parked letter, or its input was kept cut short
    why_not: str = ""


async def redrive(engine: Engine, producer: AIOKafkaProducer, settings: Settings,
                  ids: list[int], operator: str, corrected: bytes | None = None
                  ) -> list[Redriven]:
    """Submit the letters' inputs again; `corrected` replaces the input of the one letter."""
    if corrected is not None and len(ids) != 1:
        raise ValueError("a corrected input replaces the input of exactly one letter")
    with engine.connect() as conn:
        rows = {r[0]: r for r in conn.exec_driver_sql(
            "SELECT id, raw, raw_size, shop_id, status FROM dead_letters WHERE id = ANY(%b) "
            "ORDER BY id", (ids,)).all()}
    ingestor = Ingestor(engine, producer, settings.topics, Metrics(), "redrive",
                        lateness=settings.lateness, bounds=settings.bounds)
    out: list[Redriven] = []
    for letter_id in ids:
        row = rows.get(letter_id)
        if row is None:
            out.append(Redriven(letter_id, None, "no such dead letter"))
            continue
        if row.status != "parked":
            out.append(Redriven(letter_id, None, f"it is {row.status} already"))
            continue
        raw: Any = corrected if corrected is not None else row.raw
        if corrected is None and len(row.raw) < row.raw_size:
            out.append(Redriven(letter_id, None, "only the start of its input was kept: "
                                                 "re-drive it with a corrected input"))
            continue
        [verdict] = await ingestor.submit([(f"dead letter #{letter_id}", raw)])
        if verdict.accepted:
            with engine.begin() as conn:
                conn.exec_driver_sql("UPDATE dead_letters SET status = 'redriven', "
                                     "redriven_at = now() WHERE id = %s", (letter_id,))
                audit(conn, row.shop_id, None, "dead_letter.redrive", operator,
                      {"letter": letter_id, "corrected": corrected is not None,
                       "event_id": verdict.event_id})
        out.append(Redriven(letter_id, verdict))
    return out
