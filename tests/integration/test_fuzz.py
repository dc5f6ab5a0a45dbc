"""Fuzzing the engine's edges with hostile inputs, over HTTP and straight to Kafka: no answer is
a 5xx, no worker dies, every rejection is parked, and rejected inputs change nothing (the state
equals a fresh state built from the accepted events alone). Bounded to fit the suite; the long
run is `benchmarks/fuzz.py` (10^5 inputs)."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from pydantic import SecretStr
from sqlalchemy import Engine

from memberflow.fuzzing import expected_fates, hostile
from memberflow.runtime import Services, Stack
from services.ingest.recovery import republish
from shared import kafka
from shared.db import make_engine
from shared.events import decode, digest
from shared.metrics import Metrics
from tests.conftest import fresh_database
from tests.support import Running, scalar

_runs = itertools.count()
WORKERS = ["archiver", "tiering", "tagging", "campaigns"]
HTTP_INPUTS = 250
KAFKA_INPUTS = 150
STATE = ("SELECT shop_id, member_id, completed_trades, gross_cents, refunded_cents, spend_cents, "
         "first_purchase_at, last_purchase_at, region, level FROM members ORDER BY 1, 2")


def _rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql).all()]


@settings(max_examples=1, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.integers(min_value=0, max_value=2**32))
def test_hostile_inputs_never_stop_the_engine_and_change_nothing(
        stack: Stack, pg_admin_url: str, pg_template: str, seed: int) -> None:
    rng = random.Random(seed)
    # A state of its own for every run: hypothesis runs the body again to shrink a failure.
    with fresh_database(pg_admin_url, pg_template) as url:
        run_once(rng, _stack(stack, url, f"f{seed}-{next(_runs)}."), pg_admin_url, pg_template)


def _stack(base: Stack, url: str, prefix: str) -> Stack:
    settings_ = base.settings.model_copy(update={
        "database_url": SecretStr(url), "topic_prefix": base.settings.topic_prefix + prefix})
    asyncio.run(kafka.ensure_topics(base.bootstrap, settings_.topics.all, settings_.partitions))
    return Stack(settings_, base.bootstrap, url, False, False)


def run_once(rng: random.Random, stack: Stack, pg_admin_url: str, pg_template: str) -> None:
    engine = make_engine(stack.database_url)
    try:
        with Running(stack, WORKERS) as running:
            bodies = [hostile(rng, n) for n in range(HTTP_INPUTS)]
            answers = [running.post(body) for body in bodies]
            producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
            records = [(rng.choice([stack.topics.orders, stack.topics.campaigns]),
                        hostile(rng, n)) for n in range(HTTP_INPUTS, HTTP_INPUTS + KAFKA_INPUTS)]
            for topic, raw in records:
                producer.send(topic, raw, key=rng.choice([None, b"fuzz/m1"]))
            producer.flush()
            producer.close()
            running.caught_up()   # raises if a worker died
        statuses = [status for status, _ in answers]
        assert all(s < 500 for s in statuses), sorted(set(statuses))
        accepted = {decode(b).event_id: digest(decode(b))
                    for b, (status, _) in zip(bodies, answers, strict=True) if status == 202}
        assert 0 < len(accepted) < HTTP_INPUTS
        # Every refusal over HTTP is one dead letter; every record on Kafka is archived or
        # parked exactly as the contract says, once, whichever worker read it first.
        assert scalar(engine, "SELECT count(*) FROM dead_letters WHERE source = 'http'") == \
            HTTP_INPUTS - len(accepted)
        archived, parked = expected_fates(records, accepted, stack.topics)
        assert scalar(engine, "SELECT count(*) FROM events") == len(accepted) + archived
        assert scalar(engine, "SELECT count(*) FROM dead_letters WHERE source LIKE 'worker:%%' "
                              "AND reason NOT LIKE '%%too late for campaign attribution%%'"
                      ) == parked
        live = _rows(engine, STATE)

        # The accepted events alone, from the archive into a fresh state, give the same state.
        with fresh_database(pg_admin_url, pg_template) as url:
            again = _stack(stack, url, "again.")

            async def rebuild() -> None:
                services = Services(again, WORKERS, Metrics())
                await services.start()
                try:
                    await republish(engine, services.producer, again.topics)
                    await services.wait_caught_up(deadline_s=120)
                finally:
                    await services.close()
            asyncio.run(rebuild())
            other = make_engine(url)
            try:
                assert _rows(other, STATE) == live
            finally:
                other.dispose()
    finally:
        engine.dispose()
