"""Regressions of the engine's integrity, against the real broker and PostgreSQL: no single input
stops a worker, every rejection is parked once and answered 4xx, conflicting ids are refused
live and in replay alike, dead letters survive a broker restart, and time moves as documented."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from memberflow.configure import apply_shop_config
from memberflow.runtime import Services, Stack
from services.ingest.ticker import record_tick
from shared import kafka
from shared.archive import SEAL_HEADER, seal
from shared.config import Settings
from shared.db import make_engine
from shared.embedded import EmbeddedBroker
from shared.metrics import Metrics
from shared.shopconfig import parse
from tests.support import key_header, member_figures, pipeline, produce, scalar, storefront_key

ALL = ("archiver", "tiering", "tagging", "campaigns")
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def ev(n: int | str, type_: str = "order.completed", *, shop: str = "s1", member: str = "m1",
       at: datetime = T0, **payload: Any) -> dict[str, Any]:
    body = payload or {"order_id": f"o{n}", "amount": "100.00"}
    return {"event_id": f"e{n}", "type": type_, "schema_version": 1, "shop_id": shop,
            "member_id": member, "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "payload": body}


@pytest.fixture
def engine(stack: Stack) -> Iterator[Engine]:
    eng = make_engine(stack.database_url)
    yield eng
    eng.dispose()


async def _post_all(stack: Stack, bodies: list[bytes], workers: tuple[str, ...] = ALL
                    ) -> list[tuple[int, Any]]:
    services = Services(stack, list(workers), Metrics(), http_port=0)
    await services.start()
    key = storefront_key(stack.database_url)
    out: list[tuple[int, Any]] = []
    try:
        async with aiohttp.ClientSession() as http:
            for body in bodies:
                async with http.post(services.http_url + "/v1/events", data=body,
                                     headers=key_header(key)) as r:
                    out.append((r.status, await r.json()))
        await services.wait_caught_up(deadline_s=90)
        services.check()  # no worker died
    finally:
        await services.close()
    return out


def post_all(stack: Stack, bodies: list[bytes], **kw: Any) -> list[tuple[int, Any]]:
    return asyncio.run(_post_all(stack, bodies, **kw))


async def _send_raw(stack: Stack, records: list[tuple[str, bytes, bytes | None]]) -> None:
    producer = kafka.producer(stack.bootstrap)
    await producer.start()
    try:
        for topic, value, key in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def send_raw(stack: Stack, records: list[tuple[str, bytes, bytes | None]]) -> None:
    asyncio.run(_send_raw(stack, records))


POISON = [
    # Each of these stopped a worker or was answered 500 before.
    json.dumps(ev(1, member="m\u0000x")),
    json.dumps(ev(2, shop="s\u0000")),
    json.dumps(ev("3\u0000")),
    json.dumps(ev(4, order_id="o\u00004", amount="1.00")),
    json.dumps(ev(5, "order.placed", order_id="o5", amount="1.00", region="r\u0000",
                  items=[{"sku": "k\u0000", "qty": 1, "unit_price": "1.00"}])),
    '{"event_id": "e6", "type": "campaign.message_sent", "schema_version": 1, "shop_id": "s1", '
    '"member_id": "m1", "occurred_at": "9999-12-31T23:59:59Z", "payload": {"campaign_id": "c", '
    '"message_id": "x", "channel": "sms"}}',
    json.dumps(ev(7, at=T0)).replace("2026-06-01T00:00:00Z", "9999-12-31T23:59:59-01:00"),
    json.dumps(ev(8, at=T0)).replace("2026-06-01T00:00:00Z", "0001-01-01T00:00:00+01:00"),
    json.dumps(ev(9, at=T0)).replace("2026-06-01T00:00:00Z", "2099-01-01T00:00:00Z"),
    json.dumps(ev(10)).replace('"2026-06-01T00:00:00Z"', "1780272000"),
    "[" * 10_000 + "]" * 10_000,
    '{"event_id": "e11", "type": "order.completed", "type": "order.refunded", '
    '"schema_version": 1, "shop_id": "s1", "member_id": "m1", '
    '"occurred_at": "2026-06-01T00:00:00Z", "payload": {"order_id": "o1", "amount": "1.00"}}',
    *(json.dumps(ev(f"a{i}", amount=amount, order_id=f"oa{i}")) for i, amount in enumerate(
        ["１２３", "١٢٣", "1_000", " 12.5 ", "12.50\n", "1e2"])),
    json.dumps(ev(12, amount=1e2, order_id="o12")).replace("100.0", "1e2"),
    json.dumps(ev(13) | {"schema_version": True}),
    json.dumps(ev(14) | {"schema_version": 1.0}).replace("1.0", "1.0"),
    json.dumps(ev("\u200b\u200b")),
    json.dumps(ev(15, member="m\u2028")),
    json.dumps(ev(16, member="\ufeffm")),
    json.dumps(ev(17, member="m\x7f")),
    json.dumps(ev(18, member="m\ud800")),
    json.dumps(ev(19) | {"type": "x" * (5 * 1024 * 1024)}),
]


def test_no_single_input_stops_a_worker_and_each_is_answered_4xx_and_parked(
        stack: Stack, engine: Engine) -> None:
    good = json.dumps(ev("ok")).encode()
    answers = post_all(stack, [b.encode() for b in POISON] + [good])
    for body, (status, answer) in zip(POISON, answers[:-1], strict=True):
        assert 400 <= status < 500, (body[:80], status, answer)
    assert answers[-1][0] == 202
    # Nothing but the good event changed state, and every refusal is a dead letter.
    assert member_figures(engine) == {("s1", "m1"): member_figures(engine)[("s1", "m1")]}
    assert member_figures(engine)[("s1", "m1")]["spend_cents"] == 10_000
    assert scalar(engine, "SELECT count(*) FROM events") == 1
    assert scalar(engine, "SELECT count(*) FROM dead_letters WHERE source = 'http'") == \
        len(POISON)
    biggest = scalar(engine, "SELECT max(length(raw) + length(reason)) FROM dead_letters")
    assert biggest < 70 * 1024  # a 5 MB input is parked cut short, with its size


def test_records_produced_straight_to_kafka_are_parked_by_every_worker_that_reads_them(
        stack: Stack, engine: Engine) -> None:
    orders, campaigns = stack.topics.orders, stack.topics.campaigns
    raw = [(orders, body.encode("utf-8", "surrogatepass"), b"s1/m1") for body in POISON[:10]]
    raw += [(campaigns, POISON[5].encode(), b"s1/m1"), (orders, b"\x00\xff garbage", None),
            (orders, json.dumps(ev("direct")).encode(), b"s1/m1")]
    send_raw(stack, raw)
    pipeline(stack, [], workers=ALL)   # would raise had any worker died
    assert member_figures(engine)[("s1", "m1")]["completed_trades"] == 1
    # One letter per bad record, whichever worker read it first; each names where it was read.
    assert scalar(engine, "SELECT count(*) FROM dead_letters") == len(raw) - 1
    assert scalar(engine, "SELECT count(DISTINCT source) FROM dead_letters") >= 1


def test_one_event_id_with_two_bodies_is_a_conflict_live_and_in_the_archive(
        stack: Stack, engine: Engine) -> None:
    first = ev("dup", order_id="o-a", amount="100.00")
    other = ev("dup", order_id="o-b", amount="900.00")
    answers = post_all(stack, [json.dumps(first).encode(), json.dumps(other).encode(),
                               json.dumps(first).encode()])
    assert [a[0] for a in answers] == [202, 409, 202]
    assert answers[1][1]["errors"][0]["field"] == "event_id"
    assert answers[2][1]["status"] == "duplicate"
    # The same conflict produced straight to Kafka, to the workers' own judgement.
    send_raw(stack, [(stack.topics.orders, json.dumps(other).encode(), b"s1/m1")])
    pipeline(stack, [], workers=ALL)
    assert member_figures(engine)[("s1", "m1")]["completed_trades"] == 1
    assert member_figures(engine)[("s1", "m1")]["spend_cents"] == 10_000
    reasons = [r[0] for r in _rows(engine, "SELECT reason FROM dead_letters ORDER BY id")]
    assert len(reasons) == 2 and all("different content" in r for r in reasons)


def _rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql(sql).all())


def test_dead_letters_are_kept_across_a_broker_restart(settings: Settings,
                                                       database_url: str) -> None:
    """A new embedded broker restarts its offsets at 0: a new bad record at an offset an old
    one had is a new letter, not a duplicate of the old one."""
    engine = make_engine(database_url)
    try:
        for n in range(2):
            with EmbeddedBroker() as broker:
                s = settings.model_copy(update={"kafka": broker.bootstrap})
                asyncio.run(kafka.ensure_topics(broker.bootstrap, s.topics.all, s.partitions))
                stack = Stack(s, broker.bootstrap, database_url, False, False)
                if n:
                    with engine.begin() as conn:
                        conn.exec_driver_sql("DELETE FROM consumer_positions")
                # The same bytes at the same offset: told apart by the record's timestamp.
                send_raw(stack, [(s.topics.orders, b"not json", b"k")])
                pipeline(stack, [], workers=("archiver",))
        rows = _rows(engine, "SELECT source_ref, reason FROM dead_letters ORDER BY id")
        assert len(rows) == 2 and rows[0][0] == rows[1][0]   # the same topic/partition@offset
    finally:
        engine.dispose()


def test_a_quiet_shop_turns_dormant_as_the_pipeline_clock_moves(stack: Stack,
                                                                engine: Engine) -> None:
    config = {"shop_id": "quiet", "name": "Quiet", "timezone": "UTC", "tagging": {
        "tags": [{"id": "dormant", "name": "Dormant"}],
        "rules": [{"id": "r", "tag": "dormant", "when": "days_since_last_purchase >= 90"}]}}
    with engine.begin() as conn:
        apply_shop_config(conn, stack.topics, parse(config), "test", datetime.now(UTC))
    history = [ev("q1", shop="quiet", member="sleepy", at=T0),
               ev("b1", shop="busy", member="x", at=T0 + timedelta(days=30))]
    # The quiet shop sells nothing after June; time passes through ticks recorded into the
    # stream (as `memberflow up` records them), in the archive like any event.
    pipeline(stack, history, workers=ALL, as_of=T0 + timedelta(days=100))
    rows = _rows(engine, "SELECT member_id, tag_id, effective_at FROM tag_changes")
    assert rows == [("sleepy", "dormant", T0 + timedelta(days=90))]
    assert scalar(engine, "SELECT count(*) FROM events WHERE type = 'clock.ticked'") == 1


def test_one_shops_odd_time_leaves_another_shops_credits_alone(stack: Stack,
                                                               engine: Engine) -> None:
    now = datetime.now(UTC)
    other = [ev("far", shop="other", at=now - timedelta(days=1))]   # a live shop, today
    sent = {"campaign_id": "c", "message_id": "c:m1", "channel": "sms"}
    promo = [ev("s", "campaign.message_sent", shop="promo", at=T0, **sent),
             ev("k", "campaign.message_clicked", shop="promo", at=T0 + timedelta(hours=1),
                campaign_id="c", message_id="c:m1"),
             ev("p", "order.paid", shop="promo", at=T0 + timedelta(hours=2),
                order_id="o-p", amount="10.00")]
    future = json.dumps(ev("future", shop="other", at=now + timedelta(days=3)))
    report = pipeline(stack, [*other, future, *promo], workers=ALL)
    assert [v.ref for v in report.rejected] == ["line 2"]   # the future event, refused
    assert report.late == 0
    credited = _rows(engine, "SELECT order_id, credit_kind FROM campaign_orders "
                             "WHERE shop_id = 'promo'")
    assert credited == [("o-p", "click")]
    assert scalar(engine, "SELECT count(*) FROM dead_letters WHERE source = 'worker:campaigns'"
                  ) == 0


def test_an_event_late_for_attribution_is_told_to_its_sender_and_parked(
        stack: Stack, engine: Engine) -> None:
    paid = {"order_id": "o-old", "amount": "5.00"}
    answers = post_all(stack, [json.dumps(ev("new", "order.paid", at=T0 + timedelta(days=3),
                                             order_id="o-new", amount="5.00")).encode(),
                               json.dumps(ev("old", "order.paid", at=T0, **paid)).encode()])
    assert [a[0] for a in answers] == [202, 202]
    note = answers[1][1]["notes"][0]
    assert note["field"] == "occurred_at" and "too late for campaign attribution" in \
        note["problem"]
    [(source, event_id, shop_id, reason)] = _rows(
        engine, "SELECT source, event_id, shop_id, reason FROM dead_letters")
    assert (source, event_id, shop_id) == ("worker:campaigns", "eold", "s1")
    assert "3 days, 0:00:00 behind" in reason


def test_a_replay_of_the_archive_refuses_and_credits_exactly_as_live(
        stack: Stack, engine: Engine, pg_admin_url: str, pg_template: str) -> None:
    from services.ingest.recovery import republish
    from tests.conftest import fresh_database

    sent = {"campaign_id": "c", "channel": "sms"}
    hour = timedelta(hours=1)
    history = [ev("s1", "campaign.message_sent", at=T0, message_id="c:1", **sent),
               ev("k1", "campaign.message_clicked", at=T0 + hour, campaign_id="c",
                  message_id="c:1"),
               ev("p1", "order.paid", at=T0 + 2 * hour, order_id="o1", amount="10.00"),
               ev("p2", "order.paid", at=T0 + 72 * hour, order_id="o2", amount="20.00"),
               ev("s2", "campaign.message_sent", at=T0 + 72 * hour, message_id="c:2", **sent),
               # Both more than a day behind their stream: refused for attribution.
               ev("k2", "campaign.message_clicked", at=T0 + 3 * hour, campaign_id="c",
                  message_id="c:1"),
               ev("p3", "order.paid", at=T0 + 4 * hour, order_id="o3", amount="30.00")]
    pipeline(stack, history, workers=ALL)

    def outcome(eng: Engine) -> tuple[list[Any], list[Any]]:
        return (_rows(eng, "SELECT order_id, credit_kind, message_id FROM campaign_orders "
                           "ORDER BY order_id"),
                _rows(eng, "SELECT event_id FROM dead_letters ORDER BY event_id"))

    live = outcome(engine)
    assert live[1] == [("ek2",), ("ep3",)]
    # A fresh state (its own database and topics) fed from the archive, in its order, with its
    # verdicts: the same credits and the same refusals.
    with fresh_database(pg_admin_url, pg_template) as url:
        settings = stack.settings.model_copy(update={
            "database_url": SecretStr(url),
            "topic_prefix": stack.settings.topic_prefix + "replay."})
        asyncio.run(kafka.ensure_topics(stack.bootstrap, settings.topics.all,
                                        settings.partitions))
        replayed = Stack(settings, stack.bootstrap, url, False, False)

        async def go() -> None:
            services = Services(replayed, list(ALL), Metrics())
            await services.start()
            try:
                await republish(engine, services.producer, settings.topics)
                await services.wait_caught_up(deadline_s=90)
            finally:
                await services.close()
        asyncio.run(go())
        other = make_engine(url)
        try:
            assert outcome(other) == live
        finally:
            other.dispose()


def test_a_tick_recorded_twice_is_one_event(stack: Stack, engine: Engine) -> None:
    async def go() -> None:
        services = Services(stack, ["tiering"], Metrics())
        await services.start()
        try:
            ingestor = services.ingestor_for("test", ticks=True)
            at = datetime(2026, 7, 1, tzinfo=UTC)
            assert await record_tick(ingestor, at, "test")
            assert await record_tick(ingestor, at, "test")
            await services.wait_caught_up(deadline_s=60)
        finally:
            await services.close()
    asyncio.run(go())
    assert scalar(engine, "SELECT count(*) FROM events WHERE type = 'clock.ticked'") == 1
    assert scalar(engine, "SELECT pipeline_clock()") == datetime(2026, 7, 1, tzinfo=UTC)


def test_the_archiver_passes_over_what_ingest_sealed_and_reads_the_rest(
        stack: Stack, engine: Engine) -> None:
    metrics = Metrics()
    forged = json.dumps(ev("forged", order_id="o-forged", amount="3.00")).encode()
    unsealed = json.dumps(ev("unsealed", order_id="o-unsealed", amount="4.00")).encode()

    async def run() -> None:
        services = Services(stack, ["archiver"], metrics)
        await services.start()
        try:
            report = await produce(stack, [ev("sealed-1", order_id="o1", amount="1.00"),
                                           ev("sealed-2", order_id="o2", amount="2.00")])
            assert report.accepted == 2
            producer = kafka.producer(stack.bootstrap)
            await producer.start()
            try:
                # A seal made with another key, and none at all: both read and archived.
                await producer.send_and_wait(stack.topics.orders, forged, key=b"s1/m1",
                                             headers=[(SEAL_HEADER, seal(b"k" * 32, forged))])
                await producer.send_and_wait(stack.topics.orders, unsealed, key=b"s1/m1")
            finally:
                await producer.stop()
            await services.wait_caught_up(deadline_s=90)
        finally:
            await services.close()

    asyncio.run(run())
    assert scalar(engine, "SELECT count(*) FROM events") == 4
    read = metrics.registry.get_sample_value(
        "memberflow_events_processed_total", {"worker": "archiver", "type": "order.completed"})
    assert read == 2  # the two records ingest sealed were passed over unread
