"""Commands for a shop's configuration, the event schemas and dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from memberflow.cli_common import (
    connection,
    load_config,
    operator_name,
    settings_from,
    with_broker,
)
from memberflow.cli_options import db_opt, dir_opt, kafka_opt
from memberflow.configure import ConfigResult, apply_shop_config
from shared.audit import OperationRefused
from shared.db import make_engine
from shared.events import json_schema
from shared.outbound import json_schema as outbound_schema
from shared.shopconfig import ShopConfig


@click.group()
def config() -> None:
    """Shop configuration files."""


def apply(url: str, cfg: ShopConfig, operator: str | None = None) -> ConfigResult:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            return apply_shop_config(conn, settings_from().topics, cfg,
                                     operator_name(operator), datetime.now(UTC))
    except OperationRefused as exc:
        raise click.ClickException(f"configuration not applied: {exc}") from None
    finally:
        engine.dispose()


def print_applied(cfg: ShopConfig, result: ConfigResult) -> None:
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
def configapply(file: Path, operator: str | None, database_url: str | None,
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
    print_applied(cfg, result)


@click.command()
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


@click.command("redrive")
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
