"""SIGKILL the tiering worker mid-stream; after a restart the state is exactly right."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from memberflow.runtime import Stack
from memberflow.sample import generate
from shared import kafka
from shared.db import make_engine
from tests.support import expected_member_figures, member_figures, produce, scalar, wait_until


def start_worker(stack: Stack, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ,
           "MEMBERFLOW_TOPIC_PREFIX": stack.settings.topic_prefix,
           "MEMBERFLOW_PARTITIONS": str(stack.settings.partitions),
           # Small batches, so the kill lands between many committed batches.
           "MEMBERFLOW_BATCH_MAX_RECORDS": "100"}
    return subprocess.Popen(
        [sys.executable, "-m", "memberflow", "worker", "tiering",
         "--kafka", stack.bootstrap, "--database-url", stack.database_url],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def test_sigkill_mid_replay_ends_in_the_same_state(stack: Stack, tmp_path: Path) -> None:
    events = generate(members=400, days=150, seed=5)
    asyncio.run(produce(stack, events))
    engine = make_engine(stack.database_url)
    # Progress is the read position stored with the state: records of the orders topic applied.
    applied = ("SELECT coalesce(sum(next_offset), 0) FROM consumer_positions "
               "WHERE consumer = 'tiering'")
    on_topic = sum(1 for e in events if e["type"].startswith("order."))
    refunds = len({e["event_id"] for e in events if e["type"] == "order.refunded"})
    log = tmp_path / "worker.log"
    try:
        for fraction in (0.2, 0.6):
            proc = start_worker(stack, log)
            wait_until(lambda f=fraction: scalar(engine, applied) >= f * on_topic,  # type: ignore[misc]
                       deadline_s=120, what=f"{fraction:.0%} of events applied")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert scalar(engine, applied) < on_topic, "the kill came too late to test anything"

        proc = start_worker(stack, log)
        try:
            wait_until(lambda: asyncio.run(kafka.group_lag(
                stack.bootstrap, "tiering", (stack.topics.orders,))) == 0,
                deadline_s=120, what="the restarted worker to catch up", interval=0.5)
        finally:
            proc.terminate()
            assert proc.wait(30) == 0, log.read_text()

        assert member_figures(engine) == expected_member_figures(events)
        assert scalar(engine, applied) == on_topic
        claimed = "SELECT count(*) FROM processed_events WHERE consumer = 'tiering'"
        assert scalar(engine, claimed) == refunds  # only refunds need their ids remembered
    finally:
        engine.dispose()
