"""Dead letters re-driven from the command line: as they were, or corrected."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from memberflow.cli import main
from memberflow.runtime import Stack
from services.ingest.handlers import Ingestor
from shared import kafka, tokens
from shared.db import make_engine
from shared.metrics import Metrics
from tests.support import Running, scalar

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


def test_the_api_redrives_only_its_own_shops_letters(stack: Stack) -> None:
    engine = make_engine(stack.database_url)
    with Running(stack, []) as running:
        status, _ = running.post(json.dumps(bad_event()).encode())
        assert status == 422
        letter = scalar(engine, "SELECT id FROM dead_letters WHERE event_id = 'r-1'")
        with engine.begin() as conn:
            mine = tokens.create(conn, name="ops", shops=["s1"], rights=["write"],
                                 expires_in=None, operator="test").token
            other = tokens.create(conn, name="ops2", shops=["s2"], rights=["write"],
                                  expires_in=None, operator="test").token
            conn.exec_driver_sql("INSERT INTO members (shop_id, member_id) VALUES ('s1', 'y'), "
                                 "('s2', 'x')")

        def call(token: str, body: bytes | None) -> tuple[int, Any]:
            assert running.services.http_url is not None
            request = urllib.request.Request(
                f"{running.services.http_url}/api/v1/shops/{'s1' if token == mine else 's2'}"
                f"/dead-letters/{letter}/redrive", data=body or b"", method="POST",
                headers={"Authorization": f"Bearer {token}",
                         "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        assert call(other, None)[0] == 404          # shop s2 has no such letter
        status, answer = call(mine, None)
        assert status == 200 and answer["redriven"] is False
        assert answer["errors"][0]["field"] == "payload.amount"
        fixed = {**bad_event(), "payload": {"order_id": "o1", "amount": "12.35"}}
        status, answer = call(mine, json.dumps(fixed).encode())
        assert (status, answer["redriven"], answer["status"]) == (200, True, "accepted")
        status, answer = call(mine, None)
        assert status == 409 and "redriven already" in answer["error"]
    assert scalar(engine, "SELECT operator FROM audit_log WHERE action = "
                          "'dead_letter.redrive'") == "token:ops"
    engine.dispose()
