"""The `memberflow` command: run the pipeline, replay history, inspect and configure shops."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from memberflow.cli_campaigns import campaigns, report_campaign
from memberflow.cli_common import (
    connection,
    db_opt,
    dir_opt,
    kafka_opt,
    load_config,
    operator_name,
    settings_from,
    with_broker,
)
from memberflow.cli_members import members_erase, members_export, members_import
from memberflow.cli_orders import orders
from memberflow.cli_tags import important, tags
from memberflow.cli_tiers import (
    blacklist,
    blacklisted_list,
    emit,
    filter_options,
    levels,
    member_filter,
    report,
)
from memberflow.cli_tokens import tokens_group
from memberflow.configure import ConfigResult, apply_shop_config
from memberflow.database import open_database
from memberflow.readmodel import MEMBER_COLUMNS, member_records
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
from shared import deadletter, kafka, logs
from shared.audit import OperationRefused
from shared.config import Settings
from shared.db import make_engine, migrate
from shared.events import json_schema
from shared.http import PortBusy
from shared.metrics import Metrics
from shared.outbound import json_schema as outbound_schema
from shared.shopconfig import ShopConfig

log = logging.getLogger("memberflow")


class _Commands(click.Group):
    """Ordinary trouble outside memberflow (a port taken, no broker at the address given)
    ends any command with one clear line and a non-zero exit, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (PortBusy, kafka.BrokerUnreachable) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Commands)
@click.option("-v", "--verbose", is_flag=True, help="log progress and worker activity")
def main(verbose: bool) -> None:
    """memberflow: member levels, tags, ABC classes and campaign effect from order streams."""
    logs.configure(verbose)


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


@main.command()
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
                                    http_port=settings.http_port, ticks=True, processes=True),
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


@main.command()
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
            _serve(lambda: Services(stack, [], Metrics(), http_port=settings.http_port),
                   lambda url: f"memberflow api: ingest {url}/v1/events, console {url}/console/"
                               f", API {url}/api/v1/docs; Ctrl-C to stop")
        except StackGone as exc:
            raise click.ClickException(f"{exc}: stopped") from None


@main.command()
@click.argument("names", nargs=-1, required=True, type=click.Choice(list(WORKERS)))
@kafka_opt
@db_opt
@click.option("--metrics-port", type=int, default=None, help="serve /metrics on this port")
def worker(names: tuple[str, ...], kafka_: str | None, database_url: str | None,
           metrics_port: int | None) -> None:
    """Run the named workers against a running broker and database (scale out by partitions)."""
    settings = settings_from(kafka_, database_url)
    if not settings.kafka or not settings.database_url:
        raise click.UsageError("a worker needs --kafka and --database-url "
                               "(or MEMBERFLOW_KAFKA and MEMBERFLOW_DATABASE_URL)")
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


@main.command("replay")
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


@main.command()
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
            _print_applied(config, _apply(stack.database_url, config))
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


@main.group()
def members() -> None:
    """Member records."""


@members.command("list")
@click.option("--shop", required=True)
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json")
@filter_options
@db_opt
@dir_opt
def members_list(shop: str, fmt: str, database_url: str | None, data_dir: Path | None,
                 **kw: Any) -> None:
    """Print the records of a shop's members (all, or those matching the filters)."""
    with connection(database_url, data_dir, shop=shop) as conn:
        rows = member_records(conn, shop, member_filter(kw))
    emit(rows, MEMBER_COLUMNS, fmt)


members.add_command(blacklist)
members.add_command(blacklisted_list)
members.add_command(members_import)
members.add_command(members_erase)
members.add_command(members_export)
members.add_command(important)
main.add_command(levels)
main.add_command(tags)
main.add_command(campaigns)
main.add_command(tokens_group)
main.add_command(orders)
report.add_command(report_campaign)
main.add_command(report)


@main.group()
def config() -> None:
    """Shop configuration files."""


def _apply(url: str, cfg: ShopConfig, operator: str | None = None) -> ConfigResult:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            return apply_shop_config(conn, settings_from().topics, cfg,
                                     operator_name(operator), datetime.now(UTC))
    except OperationRefused as exc:
        raise click.ClickException(f"configuration not applied: {exc}") from None
    finally:
        engine.dispose()


def _print_applied(cfg: ShopConfig, result: ConfigResult) -> None:
    state = (f"applied as version {result.version}" if result.changed
             else f"unchanged (version {result.version})")
    moved = f"; level policy re-evaluated: {result.moved_up} member(s) moved up" if (
        result.changed and cfg.levels is not None) else ""
    click.echo(f"shop {cfg.shop_id}: {state}{moved}")
    click.echo(f"  {cfg.timezone_line()}")
    for o in result.tags:
        rules = ", ".join(o.rules) or "no rule"
        click.echo(f"  tag {o.tag_id} ({rules}) re-evaluated: {o.gained:,} gained, "
                   f"{o.lost:,} lost, {o.after:,} hold it")


@config.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Validate a shop configuration file without applying it."""
    cfg = load_config(file)
    click.echo(f"{file}: valid configuration for shop {cfg.shop_id}")
    click.echo(f"  {cfg.timezone_line()}")


@config.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--operator", help="who applies it (recorded; default: the OS user)")
@db_opt
@dir_opt
def config_apply(file: Path, operator: str | None, database_url: str | None,
                 data_dir: Path | None) -> None:
    """Validate and apply a shop configuration file (versioned; every version kept)."""
    cfg = load_config(file)
    try:
        # Configuring a shop is how a new state begins: the data dir may be empty.
        with connection(database_url, data_dir, create=True) as conn:
            result = apply_shop_config(conn, settings_from().topics, cfg,
                                       operator_name(operator), datetime.now(UTC))
    except OperationRefused as exc:
        raise click.ClickException(f"{file}: not applied: {exc}") from None
    _print_applied(cfg, result)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--outbound", is_flag=True, help="the events memberflow publishes instead")
def schema(out: Path | None, outbound: bool) -> None:
    """Print the JSON Schema of inbound events (or, with --outbound, of published events)."""
    doc = json.dumps(outbound_schema() if outbound else json_schema(), indent=2,
                     ensure_ascii=False)
    if out:
        out.write_text(doc + "\n", encoding="utf-8")
    else:
        click.echo(doc)


@main.group("dead-letters")
def dead_letters() -> None:
    """Rejected events parked for an operator."""


@dead_letters.command("list")
@click.option("--limit", type=int, default=50)
@click.option("--shop", help="only letters naming this shop")
@click.option("--status", type=click.Choice(["parked", "redriven"]), help="only these")
@db_opt
@dir_opt
def dead_letters_list(limit: int, shop: str | None, status: str | None,
                      database_url: str | None, data_dir: Path | None) -> None:
    """Show dead letters, newest first, with their reasons."""
    with connection(database_url, data_dir) as conn:
        found = deadletter.listing(conn, shop_id=shop, status=status, limit=limit)
    for r in found["items"]:
        about = " ".join(x for x in (f"shop={r['shop_id']}" if r["shop_id"] else "",
                                     f"event={r['event_id']}" if r["event_id"] else "") if x)
        click.echo(f"#{r['id']} [{r['status']}] {r['rejected_at'][:19].replace('T', ' ')} "
                   f"{r['source']} {r['ref']}{' ' + about if about else ''}: {r['reason']}")
    if not found["items"]:
        click.echo("no dead letters")
    elif found["total"] > len(found["items"]):
        click.echo(f"({len(found['items'])} of {found['total']}; --limit shows more)")


@dead_letters.command("redrive")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.option("--corrected", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a file with the corrected input (one event as JSON) for the one letter given")
@click.option("--operator", help="who (recorded; default: the OS user)")
@kafka_opt
@db_opt
@dir_opt
def dead_letters_redrive(ids: tuple[int, ...], corrected: Path | None, operator: str | None,
                         kafka_: str | None, database_url: str | None,
                         data_dir: Path | None) -> None:
    """Submit parked inputs again, as they were (after fixing what refused them) or, for one
    letter, corrected: each is validated, archived and relayed like a new one; a letter whose
    input is accepted now is marked redriven (audited)."""
    from services.ingest.redrive import redrive

    if corrected is not None and len(ids) != 1:
        raise click.UsageError("--corrected replaces the input of exactly one letter: give one ID")
    settings = settings_from(kafka_, database_url, data_dir)
    if not settings.kafka:
        raise click.UsageError("redrive needs the broker the pipeline reads: --kafka or "
                               "MEMBERFLOW_KAFKA (`memberflow up` prints it)")
    results = with_broker(settings, lambda engine, producer: redrive(
        engine, producer, settings, list(ids), operator_name(operator),
        corrected.read_bytes() if corrected else None))
    still = 0
    for r in results:
        if r.verdict is None:
            click.echo(f"#{r.letter_id}: not re-driven: {r.why_not}")
            still += 1
            continue
        why = "; ".join(str(p) for p in r.verdict.problems)
        click.echo(f"#{r.letter_id}: " + ("redriven" if r.verdict.accepted
                                          else f"still refused: {why}"))
        still += not r.verdict.accepted
    if still:
        raise click.ClickException(f"{still} of {len(results)} letter(s) not re-driven")


@main.command()
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


if __name__ == "__main__":
    main()
