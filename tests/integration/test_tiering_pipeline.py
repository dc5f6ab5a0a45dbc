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


def test_customer_classes_equal_the_python_oracle_on_a_sample_history(
        stack: Stack, engine: Engine) -> None:
    """The customer ABC ranking runs in SQL; a slow Python version of the rule agrees."""
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from memberflow.sample import generate
    from tests.oracles import Spender, classify_customers

    events = generate(members=300, days=400, seed=13,
                      end=datetime.now(UTC) - timedelta(days=30))
    end = max(datetime.fromisoformat(e["occurred_at"]) for e in events) + timedelta(days=20)
    pipeline(stack, events, as_of=end)   # the period slides on with the clock
    start = end - timedelta(days=365)
    amounts: dict[str, tuple[str, int, datetime]] = {}
    refunds: dict[str, int] = {}
    for e in {e["event_id"]: e for e in events}.values():
        if e["type"] == "order.completed":
            order = e["payload"]["order_id"]
            at = datetime.fromisoformat(e["occurred_at"])
            if order not in amounts or at < amounts[order][2]:
                amounts[order] = (e["member_id"], int(Decimal(e["payload"]["amount"]) * 100), at)
        elif e["type"] == "order.refunded":
            order = e["payload"]["order_id"]
            refunds[order] = refunds.get(order, 0) + int(Decimal(e["payload"]["amount"]) * 100)
    spend: dict[str, tuple[int, datetime]] = {}
    for order, (member, cents, at) in amounts.items():
        if start < at <= end:
            net = cents - min(refunds.get(order, 0), cents)
            total, last = spend.get(member, (0, at))
            spend[member] = (total + net, max(last, at))
    expected = classify_customers([Spender(m, s, last) for m, (s, last) in spend.items()],
                                  Decimal("0.05"), Decimal("0.20"))
    with engine.connect() as conn:
        got = dict(conn.exec_driver_sql(
            "SELECT member_id, abc_class FROM members WHERE abc_class IS NOT NULL").all())
    assert got == expected and len(got) > 50
