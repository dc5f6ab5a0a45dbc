"""The durable archive rebuilds a fresh state equal to the live one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from memberflow.cli import main
from memberflow.runtime import Services, Stack
from memberflow.sample import generate
from shared.db import make_engine
from shared.metrics import Metrics
from tests.support import member_figures, pipeline, scalar


def test_fresh_state_rebuilt_from_the_archive_equals_the_live_state(
        stack: Stack, pg_admin_url: str, pg_template: str, tmp_path: Path) -> None:
    history = generate(members=200, days=90, seed=21)
    pipeline(stack, history)
    live_engine = make_engine(stack.database_url)
    live = member_figures(live_engine)
    archived = scalar(live_engine, "SELECT count(*) FROM events")
    live_engine.dispose()

    # A fresh database and fresh topics; the archive is copied in, as a restore would.
    fresh_name = make_url(stack.database_url).database + "_fresh"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{fresh_name}" TEMPLATE "{pg_template}"')
    fresh_url = make_url(stack.database_url).set(database=fresh_name).render_as_string(False)
    columns = "events (event_id, type, shop_id, member_id, occurred_at, body)"
    with psycopg.connect(stack.database_url) as src, psycopg.connect(fresh_url) as dst, \
            src.cursor().copy(f"COPY {columns} TO STDOUT") as out, \
            dst.cursor().copy(f"COPY {columns} FROM STDIN") as into:
        for chunk in out:
            into.write(chunk)
    settings = stack.settings.model_copy(update={"topic_prefix": stack.settings.topic_prefix
                                                 + "fresh.", "database_url": fresh_url})
    fresh = Stack(settings, stack.bootstrap, fresh_url, False, False)
    from shared import kafka
    asyncio.run(kafka.ensure_topics(stack.bootstrap, settings.topics.all, settings.partitions))

    result = CliRunner().invoke(main, ["replay", "--from-archive", "--kafka", stack.bootstrap,
                                       "--database-url", fresh_url],
                                env={"MEMBERFLOW_TOPIC_PREFIX": settings.topic_prefix})
    assert result.exit_code == 0, result.output
    assert f"{archived:,} accepted, 0 rejected" in result.output

    async def catch_up() -> None:
        services = Services(fresh, ["tiering"], Metrics())
        await services.start()
        try:
            await services.wait_caught_up(deadline_s=120)
        finally:
            await services.close()
    asyncio.run(catch_up())

    engine = make_engine(fresh_url)
    try:
        assert member_figures(engine) == live
    finally:
        engine.dispose()
