"""Dead letters re-driven from the command line: as they were, or corrected."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from memberflow.cli import main
from memberflow.runtime import Stack
from services.ingest.handlers import Ingestor
from shared import kafka
from shared.db import make_engine
from shared.metrics import Metrics
from tests.support import scalar

pytestmark = pytest.mark.integration


def bad_event() -> dict[str, Any]:
    return {"event_id": "r-1", "type": "order.completed", "schema_version": 1,
            "shop_id": "s1", "member_id": "m1", "occurred_at": "2026-05-01T08:00:00Z",
            "payload": {"order_id": "o1", "amount": "12.345"}}


def test_a_parked_event_is_redriven_once_corrected(stack: Stack, tmp_path: Path) -> None:
    engine = make_engine(stack.database_url)

    async def park() -> None:
        producer = kafka.producer(stack.bootstrap)
        await producer.start()
        try:
            ingestor = Ingestor(engine, producer, stack.topics, Metrics(), "http")
            [verdict] = await ingestor.submit([("request x", bad_event())])
            assert not verdict.accepted
        finally:
            await producer.stop()

    asyncio.run(park())
    letter = scalar(engine, "SELECT id FROM dead_letters WHERE event_id = 'r-1'")
    where = ["--kafka", stack.bootstrap, "--database-url", stack.database_url]
    runner = CliRunner()
    again = runner.invoke(main, ["dead-letters", "redrive", str(letter), *where])
    assert again.exit_code == 1
    assert f"#{letter}: still refused: payload.amount" in again.output
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({**bad_event(), "payload": {"order_id": "o1",
                                                            "amount": "12.35"}}))
    two = runner.invoke(main, ["dead-letters", "redrive", str(letter), "999", "--corrected",
                               str(fixed), *where])
    assert two.exit_code == 2 and "exactly one letter" in two.output
    done = runner.invoke(main, ["dead-letters", "redrive", str(letter), "--corrected",
                                str(fixed), "--operator", "ana", *where])
    assert done.exit_code == 0, done.output
    assert f"#{letter}: redriven" in done.output
    assert scalar(engine, "SELECT body::jsonb->'payload'->>'amount' FROM events "
                          "WHERE event_id = 'r-1'") == "12.35"
    assert scalar(engine, "SELECT status FROM dead_letters WHERE id = %s", letter) == "redriven"
    assert scalar(engine, "SELECT operator FROM audit_log WHERE action = "
                          "'dead_letter.redrive'") == "ana"
    twice = runner.invoke(main, ["dead-letters", "redrive", str(letter), *where])
    assert twice.exit_code == 1 and "it is redriven already" in twice.output
    listed = runner.invoke(main, ["dead-letters", "list", "--shop", "s1", "--status",
                                  "redriven", *where[2:]])
    assert f"#{letter} [redriven]" in listed.output and "event=r-1" in listed.output
    engine.dispose()
