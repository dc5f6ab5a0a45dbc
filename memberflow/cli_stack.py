"""Commands that run the pipeline: the stack (`up`), the HTTP front (`api`), workers, replays,
one-shot runs and the demo."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from memberflow import local
from memberflow.cli_common import load_config, settings_from
from memberflow.cli_ops import apply, print_applied
from memberflow.cli_options import db_opt, dir_opt, kafka_opt
from memberflow.database import open_database
from memberflow.runtime import (
    WORKERS,
    Services,
    Stack,
    StackGone,
    WorkerStopped,
    open_stack,
)
from services.ingest.handlers import Ingestor
from services.ingest.recovery import republish
from services.ingest.replay import (
    Progress,
    ReplayReport,
    count_lines,
    format_rejections,
    read_file,
    replay,
)
from services.ingest.ticker import record_tick
from shared import kafka
from shared.config import Settings
from shared.db import make_engine, migrate
from shared.metrics import Metrics
from shared.trouble import PortBusy


def _serve(make: Callable[[], Services], banner: Callable[[str | None], str]) -> None:
    """Start the services (made inside the event loop they run on), say where they answer,
    serve until stopped."""
    async def serve() -> None:
        services = make()
        await services.start()
        _install_stop(services)
        click.echo(banner(services.http_url))
        try:
            await services.run_until_stopped()
        finally:
            await services.close()
    asyncio.run(serve())


def _install_stop(services: Services) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, services.stop.set)


@click.command()
@kafka_opt
@db_opt
@dir_opt
@click.option("--http-port", type=int, default=None, help="ingest and /metrics port (8787)")
def up(kafka_: str | None, database_url: str | None, data_dir: Path | None,
       http_port: int | None) -> None:
    """Run the embedded stack (unless configured otherwise) and every service until Ctrl-C."""
    settings = settings_from(kafka_, database_url, data_dir, http_port=http_port)
    with open_stack(settings) as stack:
        try:
            # Every worker in a process of its own: they use every core of the machine.
            _serve(lambda: Services(stack, list(WORKERS), Metrics(),
                                    http_port=settings.http_port, ticks=True, processes=True,
                                    announce=True),
                   lambda url: f"memberflow up: broker {stack.bootstrap}, ingest {url}"
                               f"/v1/events, console {url}/console/, API {url}/api/v1/docs, "
                               f"metrics {url}/metrics; Ctrl-C to stop")
        except StackGone as exc:
            raise click.ClickException(f"{exc}: stopped. Run `memberflow up` again; nothing "
                                       "acknowledged is lost") from None
        except WorkerStopped as exc:
            raise click.ClickException(f"{exc} (its log is above): stopped. Nothing "
                                       "acknowledged is lost; `memberflow up` again resumes "
                                       "where it stopped") from None


@click.command()
@kafka_opt
@db_opt
@dir_opt
@click.option("--http-port", type=int, default=None, help="the port to serve on (8787)")
def api(kafka_: str | None, database_url: str | None, data_dir: Path | None,
        http_port: int | None) -> None:
    """The HTTP front alone: ingest, the admin API, the console, /metrics; no workers (run
    them with `memberflow worker`, and as many of these as the storefronts need)."""
    settings = settings_from(kafka_, database_url, data_dir, http_port=http_port)
    with open_stack(settings) as stack:
        try:
            _serve(lambda: Services(stack, [], Metrics(), http_port=settings.http_port,
                                    announce=True),
                   lambda url: f"memberflow api: ingest {url}/v1/events, console {url}/console/"
                               f", API {url}/api/v1/docs; Ctrl-C to stop")
        except StackGone as exc:
            raise click.ClickException(f"{exc}: stopped") from None


@click.command()
@click.argument("names", nargs=-1, required=True, type=click.Choice(list(WORKERS)))
@kafka_opt
@db_opt
@dir_opt
@click.option("--metrics-port", type=int, default=None, help="serve /metrics on this port")
def worker(names: tuple[str, ...], kafka_: str | None, database_url: str | None,
           data_dir: Path | None, metrics_port: int | None) -> None:
    """Run the named workers against a running broker and database (scale out by partitions):
    those given (--kafka, --database-url or their MEMBERFLOW_ settings), else those of the
    `memberflow up` running on the data dir."""
    settings = settings_from(kafka_, database_url, data_dir)
    if not settings.kafka or not settings.database_url:
        up_there = local.running(settings.data_dir)
        if up_there is None:
            raise click.UsageError(
                "a worker needs a running broker and database: --kafka and --database-url "
                "(or MEMBERFLOW_KAFKA and MEMBERFLOW_DATABASE_URL), or a `memberflow up` "
                f"running on the data dir ({settings.data_dir}; --data-dir or "
                "MEMBERFLOW_DATA_DIR)")
        settings = settings_from(settings.kafka or up_there.bootstrap,
                                 settings.database_url_plain() or up_there.database_url,
                                 data_dir)
    url = settings.database_url_plain()
    assert url is not None and settings.kafka is not None
    engine = make_engine(url, pool_size=1)
    migrate(engine)
    engine.dispose()
    stack = Stack(settings, settings.kafka, url, embedded_broker=False, embedded_database=False)

    async def serve() -> None:
        await kafka.ensure_topics(stack.bootstrap, settings.topics.all, settings.partitions)
        services = Services(stack, list(names), Metrics())
        await services.start()
        _install_stop(services)
        http = None
        if metrics_port is not None:
            from services.ingest.http import make_app
            from shared.http import HttpServer
            http = await HttpServer.start(make_app(None, services.metrics), settings.http_host,
                                          metrics_port)
        try:
            await services.run_until_stopped()
        finally:
            if http is not None:
                await http.stop()
            await services.close()
    asyncio.run(serve())


def _print_replay(report: ReplayReport) -> None:
    extra = "".join(f", {n:,} {what}" for n, what in (
        (report.duplicates, "already archived (skipped)"),
        (report.late, "too late for campaign attribution"),
        (report.refused, "no longer valid (skipped)")) if n)
    click.echo(f"replayed {report.total:,} events in {report.seconds:.1f}s: "
               f"{report.accepted:,} accepted, {len(report.rejected):,} rejected{extra}")
    if report.rejected:
        click.echo(format_rejections(report), err=True, nl=False)


async def _replay(settings: Settings, bootstrap: str, engine: Any, file: Path | None,
                  shop: str | None) -> ReplayReport:
    await kafka.ensure_topics(bootstrap, settings.topics.all, settings.partitions)
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        if file is None:
            # The archive itself, in the order it was accepted, with its lateness verdicts.
            started = time.monotonic()
            where, params = ("e.shop_id = %(shop)s", {"shop": shop}) if shop else ("true", {})
            published, refused = await republish(engine, producer, settings.topics,
                                                 where=where, params=params,
                                                 progress=Progress(None))
            return ReplayReport(accepted=published, refused=refused,
                                seconds=time.monotonic() - started)
        ingestor = Ingestor(engine, producer, settings.topics, Metrics(), "replay",
                            lateness=settings.lateness, bounds=settings.bounds)
        return await replay(read_file(file), ingestor, Progress(count_lines(file)))
    finally:
        await producer.stop()


@click.command("replay")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path))
@click.option("--from-archive", is_flag=True, help="re-publish the durable event archive")
@click.option("--shop", help="with --from-archive: only this shop's events")
@kafka_opt
@db_opt
@dir_opt
def replay_cmd(file: Path | None, from_archive: bool, shop: str | None, kafka_: str | None,
               database_url: str | None, data_dir: Path | None) -> None:
    """Produce historic events (JSONL/CSV FILE, or the archive) to Kafka, preserving event time."""
    if bool(file) == from_archive:
        raise click.UsageError("give either FILE or --from-archive")
    settings = settings_from(kafka_, database_url, data_dir)
    if not settings.kafka:
        raise click.UsageError("replay needs a broker: --kafka or MEMBERFLOW_KAFKA "
                               "(`memberflow run --events FILE` replays into an embedded stack)")
    bootstrap = settings.kafka

    with open_database(settings) as (url, _):
        engine = make_engine(url, pool_size=2)
        try:
            migrate(engine)
            report = asyncio.run(_replay(settings, bootstrap, engine, file, shop))
        finally:
            engine.dispose()
    _print_replay(report)


@click.command()
@click.option("--events", "events_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@dir_opt
@click.option("--config", "config_files", multiple=True,
              type=click.Path(exists=True, path_type=Path),
              help="a shop configuration file, or a folder of them (*.yaml); repeatable")
@click.option("--as-of", "as_of", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
              help="end the run with the clock at this time (ISO-8601; default: the newest "
                   "event of the history)")
def run(events_file: Path, data_dir: Path | None, config_files: tuple[Path, ...],
        as_of: datetime | None) -> None:
    """Replay a history into the state under DATA_DIR (embedded broker and database), then stop.

    The run ends with the clock at --as-of (a tick recorded into the archive, so a replay of it
    ends at the same time): dormancy, ABC periods and report finality are judged then."""
    configs = [load_config(f) for f in config_paths(config_files)]
    shops = [c.shop_id for c in configs]
    if len(set(shops)) < len(shops):
        twice = sorted({s for s in shops if shops.count(s) > 1})
        raise click.UsageError(f"--config: shop {', '.join(twice)} is configured twice")
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    settings = settings_from(data_dir=data_dir)
    with open_stack(settings) as stack:
        for config in configs:
            print_applied(config, apply(stack.database_url, config))
        report = asyncio.run(_run_once(stack, events_file, as_of))
    _print_replay(report)


def config_paths(given: tuple[Path, ...]) -> list[Path]:
    """The files named, and the *.yaml / *.yml files of each folder named, in name order."""
    out: list[Path] = []
    for path in given:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            if not found:
                raise click.UsageError(f"--config: {path} holds no *.yaml files")
            out += found
        else:
            out.append(path)
    return out


async def _run_once(stack: Stack, events_file: Path, as_of: datetime | None) -> ReplayReport:
    services = Services(stack, list(WORKERS), Metrics())
    await services.start()
    try:
        ingestor = services.ingestor_for("replay")
        report = await replay(read_file(events_file), ingestor, Progress(count_lines(events_file)))
        end = as_of or report.newest
        if end is not None:
            # One tick at the end reaches every partition: all of them end at the same time.
            await record_tick(services.ingestor_for("run --as-of", ticks=True), end,
                              "run --as-of" if as_of else "run")
        await services.wait_caught_up()
        return report
    finally:
        await services.close()


@click.command()
@click.option("--no-serve", is_flag=True,
              help="exit after the summary instead of serving the console, API and /metrics")
@click.option("--members", "n_members", type=int, default=5000, show_default=True)
@dir_opt
@click.option("--http-port", type=int, default=None,
              help="the port to serve on (default: $MEMBERFLOW_HTTP_PORT, else 8787)")
def demo(no_serve: bool, n_members: int, data_dir: Path | None, http_port: int | None) -> None:
    """Generate a sample shop, replay it through the pipeline, print a summary, then serve the
    console, the API and /metrics. Its state is the default data dir's, so every command
    answers from it afterwards."""
    from memberflow.demo import run_demo

    settings = settings_from(data_dir=data_dir, http_port=http_port)
    # Without serving, the demo's own live requests still need a port: any free one.
    try:
        run_demo(data_dir=settings.data_dir, members=n_members, serve=not no_serve,
                 http_port=0 if no_serve else settings.http_port)
    except PortBusy as exc:
        raise click.ClickException(str(exc)) from None
