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
from tests.support import member_figures, scalar, storefront_key


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
    key = storefront_key(stack.database_url)
    out = []
    try:
        async with aiohttp.ClientSession() as http:
            for path, body, headers in requests:
                sent = {"Authorization": f"Bearer {key}", **headers}
                async with http.post(services.http_url + path, data=body, headers=sent) as r:
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


def test_storefront_keys_reach_only_their_shops_at_their_rate(stack: Stack,
                                                              engine: Engine) -> None:
    # A tight rate and no key cache, so the limit and a revocation show at once.
    limited = Stack(stack.settings.model_copy(update={"ingest_events_per_second": 5,
                                                      "token_cache_seconds": 0}),
                    stack.bootstrap, stack.database_url, False, False)
    key = storefront_key(stack.database_url, shops=["shop-1"], rights="ingest")
    reader = storefront_key(stack.database_url, shops=["shop-1"], rights="read")
    other = storefront_key(stack.database_url, shops=["shop-2"], rights="ingest,read")

    async def exchange() -> list[tuple[int, Any, dict[str, str]]]:
        services = Services(limited, ["archiver", "tiering"], Metrics(), http_port=0)
        await services.start()
        base = services.http_url
        out = []

        async def call(method: str, path: str, token: str | None, body: Any = None) -> None:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.request(method, base + path, json=body, headers=headers) as r:
                out.append((r.status, await r.json(), dict(r.headers)))
        try:
            async with aiohttp.ClientSession() as http:
                await call("POST", "/v1/events", None, event(1))
                await call("POST", "/v1/events", "mf_" + "x" * 43, event(1))
                mixed = [event(2), event(3, shop_id="shop-2"), event(4)]
                await call("POST", "/v1/events", key, mixed)
                await call("POST", "/v1/events", reader, event(5))      # read only: refused
                await call("POST", "/v1/events", key, [event(i) for i in range(6, 12)])
                await call("POST", "/v1/events", key, [event(i) for i in range(12, 17)])
                await services.wait_caught_up(deadline_s=60)
                await call("GET", "/v1/shops/shop-1/members/m2", reader)
                await call("GET", "/v1/shops/shop-1/members/m2", other)
                await call("GET", "/v1/shops/shop-1/members/m2", None)
                await call("GET", "/v1/events/h2", reader)
                await call("GET", "/v1/events/h2", other)
                await call("GET", "/v1/events/h3", other)      # refused, parked: shop-2's
                with engine.begin() as conn:
                    conn.exec_driver_sql("UPDATE api_tokens SET revoked_at = now()")
                await call("GET", "/v1/shops/shop-1/members/m2", reader)
        finally:
            await services.close()
        return out

    (no_key, unknown, mixed, read_only, within_rate, over_rate, member, foreign_member, anonymous,
     fate, foreign_fate, parked_fate, revoked) = asyncio.run(exchange())
    assert no_key[0] == unknown[0] == anonymous[0] == revoked[0] == 401
    assert no_key[2]["WWW-Authenticate"].startswith("Bearer")
    assert "tokens create" in no_key[1]["error"] and "revoked" in unknown[1]["error"]
    status, body, _ = mixed
    assert status == 207 and (body["accepted"], body["rejected"]) == (2, 1)
    assert body["results"][1]["errors"] == [
        {"field": "shop_id", "problem": "this key may not send events for shop 'shop-2'"}]
    assert read_only[0] == 422 and read_only[1]["errors"][0]["field"] == "shop_id"
    # 5 events a second, bursts of 10: 3 + 6 fit, the next 5 must wait about 4/5 s.
    assert within_rate[0] == 202
    assert over_rate[0] == 429 and over_rate[2]["Retry-After"] == "1"
    assert "rate of 5 events per second" in over_rate[1]["error"]
    assert member[0] == 200 and member[1]["member_id"] == "m2"
    assert foreign_member[0] == 404 and "m2" not in str(foreign_member[1].get("spend"))
    assert fate[0] == 200 and fate[1]["archived"] is True
    assert foreign_fate[0] == 404
    assert parked_fate[0] == 200 and parked_fate[1]["dead_letters"]
    # The refused shop-2 event was parked, never archived.
    assert scalar(engine, "SELECT count(*) FROM events WHERE shop_id = 'shop-2'") == 0
