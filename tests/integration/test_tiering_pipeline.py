"""The tiering worker through the real broker and PostgreSQL: exact figures, exactly once."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from sqlalchemy import Engine

from memberflow.runtime import Stack
from memberflow.sample import bad_lines, generate
from shared.db import make_engine
from tests.support import expected_member_figures, member_figures, pipeline, scalar


@pytest.fixture
def engine(stack: Stack) -> Engine:
    eng = make_engine(stack.database_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def history() -> list[dict[str, Any]]:
    return generate(members=300, days=120, seed=11)


def test_replayed_history_gives_exact_figures_per_member(stack: Stack, engine: Engine,
                                                          history: list[dict[str, Any]]) -> None:
    report = pipeline(stack, history)

    assert report.accepted == len(history) and not report.rejected
    assert member_figures(engine) == expected_member_figures(history)
    unique_ids = len({e["event_id"] for e in history})
    assert scalar(engine, "SELECT count(*) FROM events") == unique_ids


def test_duplicated_and_shuffled_delivery_changes_nothing(stack: Stack, engine: Engine,
                                                          history: list[dict[str, Any]]) -> None:
    # Every event twice, and each member's events shuffled (completion before placement,
    # refunds before completion): figures must not move.
    rng = random.Random(3)
    doubled = history + history
    rng.shuffle(doubled)

    pipeline(stack, doubled)

    assert member_figures(engine) == expected_member_figures(history)


def test_replaying_the_same_history_twice_is_idempotent(stack: Stack, engine: Engine,
                                                        history: list[dict[str, Any]]) -> None:
    pipeline(stack, history)
    first = member_figures(engine)
    pipeline(stack, history)

    assert member_figures(engine) == first == expected_member_figures(history)


def test_bad_events_are_parked_with_reasons_and_change_nothing(
        stack: Stack, engine: Engine, history: list[dict[str, Any]]) -> None:
    lines: list[Any] = [*history[:200], *bad_lines()]
    report = pipeline(stack, lines)

    assert len(report.rejected) == len(bad_lines())
    assert all(v.problems for v in report.rejected)
    assert scalar(engine, "SELECT count(*) FROM dead_letters") == len(bad_lines())
    reasons = scalar(engine, "SELECT string_agg(reason, ' | ') FROM dead_letters")
    assert "not valid JSON" in reasons
    assert member_figures(engine) == expected_member_figures(history[:200])


def test_events_produced_straight_to_kafka_are_validated_by_the_workers(
        stack: Stack, engine: Engine) -> None:
    """A storefront producing to Kafka directly bypasses ingest: the workers park bad events,
    one dead letter per bad record whichever worker read it first."""
    import asyncio

    from shared import kafka

    good = {"event_id": "k1", "type": "order.completed", "schema_version": 1, "shop_id": "s",
            "member_id": "m", "occurred_at": "2026-03-01T00:00:00Z",
            "payload": {"order_id": "o1", "amount": "12.30"}}
    bad = dict(good, event_id="k2", payload={"order_id": "o2", "amount": 1.5e300})

    async def send_raw() -> None:
        producer = kafka.producer(stack.bootstrap)
        await producer.start()
        for event in (good, bad, "{nope"):
            body = event if isinstance(event, str) else json.dumps(event)
            await producer.send_and_wait(stack.topics.orders, body.encode(), key=b"s/m")
        await producer.stop()

    asyncio.run(send_raw())
    pipeline(stack, [])

    assert member_figures(engine)[("s", "m")]["spend_cents"] == 1230
    assert scalar(engine, "SELECT count(*) FROM dead_letters") == 2
    assert scalar(engine, "SELECT count(*) FROM dead_letters WHERE source IN "
                          "('worker:archiver', 'worker:tiering')") == 2
