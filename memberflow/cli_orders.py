"""`memberflow orders import`: a shop's historic orders, through the live event path."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from memberflow.cli_common import connection, settings_from, with_broker
from memberflow.cli_options import db_opt, dir_opt, kafka_opt
from memberflow.importing import ImportRefused
from memberflow.orders_import import group_lines, order_events
from services.ingest.handlers import Ingestor
from services.ingest.replay import ReplayReport, format_rejections, replay
from shared.metrics import Metrics
from shared.shops import shop_configs


@click.group("orders")
def orders() -> None:
    """Historic orders from a shop's own exports."""


@orders.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--shop", required=True)
@kafka_opt
@db_opt
@dir_opt
def orders_import(file: Path, shop: str, kafka_: str | None, database_url: str | None,
                  data_dir: Path | None) -> None:
    """Import orders from a CSV or XLSX export (Taobao's column names understood): every row
    checked first, then each order's events archived and sent like live ones; the same file
    again is answered as duplicates."""
    settings = settings_from(kafka_, database_url, data_dir)
    if not settings.kafka:
        raise click.UsageError("orders enter the live event path: give the broker with --kafka "
                               "or MEMBERFLOW_KAFKA (`memberflow up` prints it)")
    with connection(database_url, data_dir, shop=shop) as conn:
        entry = shop_configs(conn, [shop]).get(shop)
    zone = ZoneInfo(entry[1].timezone) if entry else ZoneInfo("UTC")
    try:
        events = order_events(shop, file.name, file.read_bytes(), zone, settings.bounds)
    except ImportRefused as exc:
        raise click.ClickException(f"{file.name}: {exc}") from None

    async def submit(engine: Any, producer: Any) -> ReplayReport:
        ingestor = Ingestor(engine, producer, settings.topics, Metrics(), "import",
                            lateness=settings.lateness, bounds=settings.bounds)
        return await replay(iter(events), ingestor)

    report = with_broker(settings, submit)
    kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(group_lines(events).items()))
    click.echo(f"shop {shop}: {file.name}: {len(events):,} events ({kinds}): "
               f"{report.accepted - report.duplicates:,} new, {report.duplicates:,} imported "
               f"before, {len(report.rejected):,} refused")
    if report.rejected:
        click.echo(format_rejections(report), err=True, nl=False)
        raise click.ClickException(f"{len(report.rejected)} event(s) refused (parked as dead "
                                   "letters)")
