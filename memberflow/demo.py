"""`make demo`: a sample shop through the whole embedded pipeline, a summary, live metrics."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import click
import yaml

from memberflow.configure import apply_shop_config
from memberflow.report import PipelineFigures, summary
from memberflow.runtime import DEMO_MARK, WORKERS, Services, Stack, open_stack
from memberflow.sample import bad_lines, generate, write_jsonl
from services.ingest.replay import Progress, count_lines, read_file, replay
from services.ingest.ticker import record_tick
from shared import kafka, tokens
from shared.config import Settings
from shared.db import make_engine
from shared.metrics import Metrics
from shared.shopconfig import parse
from shared.supervise import reap_stale

SHOP = "demo-shop"
# The demo shop's configuration, written next to its data so an operator can edit and re-apply
# it (memberflow config apply FILE --data-dir DIR). examples/shop.yaml documents every key.
DEMO_CONFIG = """\
shop_id: demo-shop
name: Demo Shop
levels:
  basis: amount
  ladder:
    - {name: regular, threshold: "100.00", discount: "0.98"}
    - {name: senior, threshold: "500.00", discount: "0.95"}
    - {name: vip, threshold: "2000.00", discount: "0.90"}
    - {name: supreme, threshold: "5000.00", discount: "0.85"}
abc:
  customers: {period_days: 365, a_share: "0.05", b_share: "0.20"}
  products: {period_days: 365, a_cutoff: "0.70", b_cutoff: "0.90"}
tagging:
  groups:
    - id: value
      name: Value
      groups: [{id: value-top, name: Top spenders}]
    - {id: lifecycle, name: Lifecycle}
    - {id: interests, name: Interests}
  tags:
    - {id: big-spender, name: Big spender, group: value-top}
    - {id: loyal, name: Loyal, group: value}
    - {id: dormant-60, name: No purchase for 60 days, group: lifecycle}
    - {id: one-timer, name: Bought once, group: lifecycle}
    - {id: bestseller-buyer, name: Bought a bestseller, group: interests}
    - {id: vip-care, name: VIP care (by hand)}
  rules:
    - {id: r-big-spender, tag: big-spender, when: "spend >= 2000 and trades >= 3"}
    - {id: r-loyal, tag: loyal, when: "trades >= 5 or level >= 3"}
    - {id: r-dormant-60, tag: dormant-60, when: "days_since_last_purchase >= 60"}
    - {id: r-one-timer, tag: one-timer, when: "trades == 1"}
    - {id: g-bestsellers, tag: bestseller-buyer, goods: [SKU-0001, SKU-0002, SKU-0003]}
"""


def run_demo(*, data_dir: Path, members: int, serve: bool, http_port: int) -> None:
    """Generate, replay, wait for lag 0, summarise; then serve /metrics until Ctrl-C."""
    settings = Settings(data_dir=data_dir, http_port=http_port)
    if not settings.database_url and (data_dir / "pg").exists():
        if not (data_dir / DEMO_MARK).exists():
            raise click.ClickException(
                f"{data_dir} holds memberflow state the demo did not make, and the demo starts "
                "its database afresh: give it another --data-dir (or MEMBERFLOW_DATA_DIR)")
        reap_stale(data_dir / "run")    # a demo killed before: stop its server first
        shutil.rmtree(data_dir / "pg")  # the demo's own embedded database starts fresh
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / DEMO_MARK).write_text("The demo made this state; the next demo replaces it.\n")
    click.echo(f"generating a sample shop: {members:,} members, 180 days of history ...")
    history = generate(shop_id=SHOP, members=members)
    sample = data_dir / "sample-history.jsonl"
    write_jsonl(history, sample, extra_lines=bad_lines())
    click.echo(f"  {len(history):,} events (+{len(bad_lines())} malformed lines) in {sample}")
    config_file = data_dir / "demo-shop.yaml"
    config_file.write_text(DEMO_CONFIG, encoding="utf-8")
    config = parse(yaml.safe_load(DEMO_CONFIG), str(config_file))
    with open_stack(settings, demo=True) as stack:
        broker = "embedded" if stack.embedded_broker else "external"
        database = f"embedded under {data_dir}" if stack.embedded_database else "external"
        click.echo(f"broker {stack.bootstrap} ({broker}), database {database}")
        engine = make_engine(stack.database_url, pool_size=1)
        try:
            with engine.begin() as conn:
                applied = apply_shop_config(conn, stack.topics, config, "demo",
                                            datetime.now(UTC))
                keys = DemoKeys(
                    storefront=tokens.create(conn, name="demo-storefront", shops=[SHOP],
                                             rights=["ingest", "read"], expires_in=None,
                                             operator="demo").token,
                    operator=tokens.create(conn, name="demo-operator", shops=[SHOP],
                                           rights=["read", "write", "export", "admin"],
                                           expires_in=timedelta(days=30),
                                           operator="demo").token)
        finally:
            engine.dispose()
        click.echo(f"shop configuration {config_file} applied (version {applied.version}): "
                   "4 membership levels, customer and product ABC settings, 6 tags and their "
                   "rules")
        asyncio.run(_demo(stack, sample, serve, keys))


@dataclass(frozen=True)
class DemoKeys:
    storefront: str     # ingest and the storefront's member reads
    operator: str       # the admin API: read, write, export, admin for the demo shop


async def _demo(stack: Stack, sample: Path, serve: bool, keys: DemoKeys) -> None:
    metrics = Metrics()
    services = Services(stack, list(WORKERS), metrics, http_port=stack.settings.http_port,
                        announce=serve)
    await services.start()
    try:
        started = time.monotonic()
        ingestor = services.ingestor_for("replay")
        report = await replay(read_file(sample), ingestor, Progress(count_lines(sample)))
        http_ok, http_bad = await _live_requests(services, keys.storefront)
        if report.newest is not None:
            # The history ends at its newest event: every partition's clock ends there too.
            await record_tick(services.ingestor_for("demo", ticks=True), report.newest, "demo")
        click.echo("waiting until every worker has caught up ...")
        await services.wait_caught_up()
        seconds = time.monotonic() - started
        lags = {w.handler.name: await kafka.group_lag(stack.bootstrap, w.handler.name,
                                                      w.handler.topics)
                for w in services.workers}
        engine = make_engine(stack.database_url, pool_size=1)
        try:
            with engine.connect() as conn:
                text = summary(conn, SHOP, PipelineFigures(
                    report.accepted + len(report.rejected), len(report.rejected), seconds,
                    http_ok, http_bad, report.duplicates, report.late, lags))
        finally:
            engine.dispose()
        click.echo("\n" + text + "\n")
        if serve:
            click.echo(f"Console: {services.http_url}/console/   API: {services.http_url}"
                       f"/api/v1/docs\nSign in with this token for {SHOP} (read, write, "
                       f"export, admin; valid 30 days):\n  {keys.operator}")
            click.echo(f"Storefront key (ingest, member reads): {keys.storefront}")
            click.echo(f"Metrics: {services.http_url}/metrics   Ingest: POST "
                       f"{services.http_url}/v1/events   (Ctrl-C to stop)")
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, services.stop.set)
            await services.run_until_stopped()
    finally:
        await services.close()


async def _live_requests(services: Services, key: str) -> tuple[int, int]:
    """Two orders and one malformed event through the HTTP endpoint, as a storefront sends."""
    live = [
        {"event_id": "live-1", "type": "order.placed", "schema_version": 1, "shop_id": SHOP,
         "member_id": "m-live", "occurred_at": "2026-11-01T09:30:00Z",
         "payload": {"order_id": "live-o1", "items": [{"sku": "SKU-0001", "qty": 2,
                                                         "unit_price": "49.90"}],
                     "amount": "99.80", "region": "Shanghai"}},
        {"event_id": "live-2", "type": "order.completed", "schema_version": 1, "shop_id": SHOP,
         "member_id": "m-live", "occurred_at": "2026-11-01T09:45:00Z",
         "payload": {"order_id": "live-o1", "amount": "99.80"}},
        {"event_id": "live-3", "type": "order.paid", "schema_version": 1, "shop_id": SHOP,
         "occurred_at": "2026-11-01T09:31:00Z", "payload": {"order_id": "live-o2"}},
    ]
    async with aiohttp.ClientSession() as http, http.post(
            f"{services.http_url}/v1/events", data=json.dumps(live),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {key}"}) as resp:
        body = await resp.json()
    return int(body["accepted"]), int(body["rejected"])
