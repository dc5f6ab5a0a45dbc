"""SIGKILL a worker mid-stream; after a restart the state is exactly right."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine

from memberflow.configure import apply_shop_config
from memberflow.demo import DEMO_CONFIG
from memberflow.runtime import Stack
from memberflow.sample import generate
from services.tagging.operations import plan_tag
from shared import kafka
from shared.db import make_engine
from shared.shopconfig import parse
from tests.support import (
    expected_member_figures,
    member_figures,
    pipeline,
    produce,
    scalar,
    wait_until,
)


def records_on(stack: Stack, topics: list[str]) -> int:
    """Records written to the topics (what a worker that read them all has applied)."""
    return sum(asyncio.run(kafka.end_offsets(stack.bootstrap, topics)).values())


def start_worker(stack: Stack, log: Path, name: str = "tiering") -> subprocess.Popen[bytes]:
    env = {**os.environ,
           "MEMBERFLOW_TOPIC_PREFIX": stack.settings.topic_prefix,
           "MEMBERFLOW_PARTITIONS": str(stack.settings.partitions),
           # Small batches, so the kill lands between many committed batches.
           "MEMBERFLOW_BATCH_MAX_RECORDS": "100"}
    return subprocess.Popen(
        [sys.executable, "-m", "memberflow", "worker", name,
         "--kafka", stack.bootstrap, "--database-url", stack.database_url],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def kill_twice_then_finish(stack: Stack, engine: Engine, name: str, total: int,
                           log: Path, fractions: tuple[float, float] = (0.2, 0.6)) -> None:
    """Start worker `name`, SIGKILL it once each fraction of `total` records is applied (by the
    positions stored with its state), then run it again until it has applied them all (and
    whatever it published to its own topics meanwhile)."""
    applied = ("SELECT coalesce(sum(next_offset), 0) FROM consumer_positions "
               f"WHERE consumer = '{name}'")
    for fraction in fractions:
        proc = start_worker(stack, log, name)
        wait_until(lambda f=fraction: scalar(engine, applied) >= f * total,  # type: ignore[misc]
                   deadline_s=120, what=f"{fraction:.0%} of the records applied")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert scalar(engine, applied) < total, "the kill came too late to test anything"
    proc = start_worker(stack, log, name)
    try:
        wait_until(lambda: scalar(engine, applied) >= total, deadline_s=120,
                   what="the restarted worker to catch up", interval=0.5)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()


def test_sigkill_mid_replay_ends_in_the_same_state(stack: Stack, tmp_path: Path) -> None:
    events = generate(members=400, days=150, seed=5)
    report = asyncio.run(produce(stack, events))
    assert report.duplicates > 0   # repeats are archived once and relayed once
    engine = make_engine(stack.database_url)
    on_topic = records_on(stack, [stack.topics.orders])
    applies = {"order.placed", "order.completed", "order.refunded"}
    distinct = len({e["event_id"] for e in events if e["type"] in applies})
    try:
        kill_twice_then_finish(stack, engine, "tiering", on_topic, tmp_path / "worker.log")
        applied = "SELECT sum(next_offset) FROM consumer_positions WHERE consumer = 'tiering'"
        assert scalar(engine, applied) == on_topic
        assert member_figures(engine) == expected_member_figures(events)
        # Every applied id is claimed once, with its digest, in the transaction of its effect.
        claimed = ("SELECT count(*) FROM processed_events WHERE consumer = 'tiering' "
                   "AND digest IS NOT NULL")
        assert scalar(engine, claimed) == distinct
    finally:
        engine.dispose()


def test_sigkill_of_the_tagging_worker_changes_no_tag(stack: Stack, tmp_path: Path) -> None:
    """Tiering publishes the member events first; the tagging worker is killed twice while
    reading them. The tags it ends with are exactly what the rules say of the final facts, and
    no tag change was applied twice."""
    events = generate(members=300, days=240, seed=9)
    engine = make_engine(stack.database_url)
    config = parse(yaml.safe_load(DEMO_CONFIG))
    with engine.begin() as conn:
        apply_shop_config(conn, stack.topics, config, "test", datetime.now(UTC))
    pipeline(stack, events, workers=("tiering",))
    on_topic = records_on(stack, [stack.topics.member_events])
    try:
        kill_twice_then_finish(stack, engine, "tagging", on_topic, tmp_path / "tagging.log")
        with engine.connect() as conn:
            for tag in config.tagging.tags:
                gained, lost, _ = plan_tag(conn, config.shop_id, tag.id, config)
                assert (tag.id, gained, lost) == (tag.id, {}, {})
            total = conn.exec_driver_sql("SELECT count(*) FROM member_tags").scalar()
            # Per member and tag, changes alternate added/removed: none was applied twice.
            repeated = conn.exec_driver_sql(
                "SELECT count(*) FROM (SELECT action, lag(action) OVER (PARTITION BY member_id, "
                "tag_id ORDER BY id) AS before FROM tag_changes) x WHERE action = before"
            ).scalar()
            first_removed = conn.exec_driver_sql(
                "SELECT count(*) FROM (SELECT DISTINCT ON (member_id, tag_id) action "
                "FROM tag_changes ORDER BY member_id, tag_id, id) x WHERE action = 'removed'"
            ).scalar()
        assert total > 100 and repeated == 0 and first_removed == 0
    finally:
        engine.dispose()


def expected_credits(events: list[dict[str, Any]]) -> dict[str, tuple[str, str, str] | None]:
    """Every converted order's credit, straight from the events by the pure rule: campaigns
    known only from their messages (default windows), targeted by the messages they sent."""
    from services.campaigns.domain import Campaign, Click, Order, Send, credit

    unique = list({e["event_id"]: e for e in events}.values())
    sends = [Send(e["payload"]["campaign_id"], e["payload"]["message_id"], e["member_id"],
                  e["payload"]["channel"], datetime.fromisoformat(e["occurred_at"]))
             for e in unique if e["type"] == "campaign.message_sent"]
    clicks = [Click(e["payload"]["campaign_id"], e["payload"]["message_id"], e["member_id"],
                    datetime.fromisoformat(e["occurred_at"]), e["event_id"])
              for e in unique if e["type"] == "campaign.message_clicked"]
    audience: dict[str, set[str]] = {}
    for s in sends:
        audience.setdefault(s.campaign_id, set()).add(s.member_id)
    campaigns = {c: Campaign(c, audience=frozenset(m)) for c, m in audience.items()}
    converted: dict[str, tuple[str, datetime]] = {}
    for e in unique:
        if e["type"] in ("order.paid", "order.completed"):
            at = datetime.fromisoformat(e["occurred_at"])
            order = e["payload"]["order_id"]
            if order not in converted or at < converted[order][1]:
                converted[order] = (e["member_id"], at)
    out: dict[str, tuple[str, str, str] | None] = {}
    for order, (member, at) in converted.items():
        c = credit(Order(order, member, at), [x for x in clicks if x.member_id == member],
                   [x for x in sends if x.member_id == member], campaigns)
        out[order] = (c.kind, c.campaign_id, c.message_id) if c else None
    return out


def test_sigkill_of_the_campaigns_worker_changes_no_credit(stack: Stack, tmp_path: Path) -> None:
    events = generate(members=400, days=150, seed=23)
    asyncio.run(produce(stack, events))
    engine = make_engine(stack.database_url)
    on_topics = records_on(stack, [stack.topics.orders, stack.topics.campaigns])
    try:
        kill_twice_then_finish(stack, engine, "campaigns", on_topics,
                               tmp_path / "campaigns.log", (0.3, 0.7))
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT order_id, credit_kind, campaign_id, message_id FROM campaign_orders "
                "WHERE converted_at IS NOT NULL").all()
            marks = conn.exec_driver_sql("SELECT count(*) FROM campaign_watermarks").scalar()
        got = {r[0]: (r[1], r[2], r[3]) if r[1] else None for r in rows}
        expected = expected_credits(events)
        assert got == expected
        assert sum(1 for c in expected.values() if c) > 10 and marks
    finally:
        engine.dispose()
