"""Ingest over HTTP and the synchronous producer, against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import Engine

from memberflow.runtime import Services, Stack
from services.ingest.producer import EventProducer
from shared.db import make_engine
from shared.events import EventRejected
from shared.metrics import Metrics
from tests.support import member_figures, scalar


def event(n: int, **over: Any) -> dict[str, Any]:
    base = {"event_id": f"h{n}", "type": "order.completed", "schema_version": 1,
            "shop_id": "shop-1", "member_id": f"m{n % 3}", "occurred_at": "2026-05-01T08:00:00Z",
            "payload": {"order_id": f"o{n}", "amount": "10.00"}}
    return {**base, **over}


@pytest.fixture
def engine(stack: Stack) -> Iterator[Engine]:
    eng = make_engine(stack.database_url)
    yield eng
    eng.dispose()


async def _exchange(stack: Stack, requests: list[tuple[str, bytes, dict[str, str]]]
                    ) -> list[tuple[int, Any]]:
    services = Services(stack, ["archiver", "tiering"], Metrics(), http_port=0)
    await services.start()
    out = []
    try:
        async with aiohttp.ClientSession() as http:
            for path, body, headers in requests:
                async with http.post(services.http_url + path, data=body, headers=headers) as r:
                    out.append((r.status, await r.json()))
            async with http.get(services.http_url + "/metrics") as r:
                out.append((r.status, await r.text()))
        await services.wait_caught_up(deadline_s=60)
    finally:
        await services.close()
    return out


def test_http_answers_per_event_and_parks_every_bad_input(stack: Stack, engine: Engine) -> None:
    ct = {"Content-Type": "application/json"}
    batch = [event(1), event(2, payload={"order_id": "o2", "amount": "-1"}),
             event(3, type="order.exploded"), event(1)]
    huge = json.dumps([event(i) for i in range(1001)]).encode()
    results = asyncio.run(_exchange(stack, [
        ("/v1/events", json.dumps(event(10)).encode(), ct),
        ("/v1/events", json.dumps(batch).encode(), ct),
        ("/v1/events", b"this is not json", ct),
        ("/v1/events", json.dumps(event(11, schema_version=9)).encode(), ct),
        ("/v1/events", huge, ct),
    ]))
    (single, batch_r, not_json, bad_version, oversize, metrics) = results

    assert single == (202, single[1]) and single[1]["status"] == "accepted"
    status, body = batch_r
    assert status == 207 and (body["accepted"], body["rejected"]) == (2, 2)
    errors = {r["index"]: r.get("errors") for r in body["results"]}
    assert errors[1] == [{"field": "payload.amount", "problem": "must be >= 0"}]
    assert errors[2][0]["field"] == "type" and "order.exploded" in errors[2][0]["problem"]
    assert not_json[0] == 400 and "not valid JSON" in not_json[1]["error"]
    assert bad_version[0] == 422
    assert bad_version[1]["errors"][0]["field"] == "schema_version"
    assert oversize[0] == 413 and "1001" in oversize[1]["error"]
    assert 'memberflow_events_rejected_total{field="payload.amount",stage="http"} 1.0' in metrics[1]

    # Event h1 was sent twice: counted once. h10 and h1 are the only completed orders.
    figures = member_figures(engine)
    assert sum(f["completed_trades"] for f in figures.values()) == 2
    assert sum(f["spend_cents"] for f in figures.values()) == 2000
    assert scalar(engine, "SELECT count(*) FROM dead_letters WHERE source = 'http'") == 5


def test_sync_producer_validates_before_sending(stack: Stack, engine: Engine) -> None:
    with EventProducer(stack.bootstrap, stack.topics) as producer:
        producer.send(event(1))
        producer.send(json.dumps(event(2)))
        with pytest.raises(EventRejected, match=r"payload\.amount: must be >= 0"):
            producer.send(event(3, payload={"order_id": "o3", "amount": -5}))

    async def catch_up() -> None:
        services = Services(stack, ["tiering"], Metrics())
        await services.start()
        try:
            await services.wait_caught_up(deadline_s=60)
        finally:
            await services.close()
    asyncio.run(catch_up())

    assert sum(f["spend_cents"] for f in member_figures(engine).values()) == 2000
