"""Commands for campaigns (`memberflow campaigns ...`) and their effect report."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import yaml
from pydantic import ValidationError

from memberflow.campaign_report import (
    CSV_COLUMNS,
    NoCampaigns,
    campaign_report,
    conversions_png,
    write_xlsx,
)
from memberflow.cli_common import connection, operator_name, settings_from
from memberflow.cli_options import db_opt, dir_opt, emit
from services.campaigns import operations
from services.campaigns.config import CampaignDefinition
from services.campaigns.operations import FileSender
from shared.audit import OperationRefused
from shared.outbound import iso
from shared.shopconfig import ConfigError, parse


def _definition(path: Path, shop: str) -> CampaignDefinition:
    """One campaign from a YAML file, checked against the shop's rules (e.g. its tags)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise click.ClickException(f"{path}: cannot be read as YAML ({exc})") from None
    try:
        return CampaignDefinition.model_validate(data)
    except ValidationError:
        pass
    try:  # the same checks, with the messages and paths of a configuration file
        parse({"shop_id": shop, "name": shop, "campaigns": [data]}, str(path))
    except ConfigError as exc:
        raise click.ClickException("invalid campaign\n  " + "\n  ".join(
            f"{path}: {p.replace('campaigns[0].', '')}" for p in exc.problems)) from None
    raise click.ClickException(f"{path}: invalid campaign")  # pragma: no cover


@click.command("create")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--shop", required=True)
@click.option("--operator", help="who (recorded; default: the OS user)")
@db_opt
@dir_opt
def campaigns_create(file: Path, shop: str, operator: str | None, database_url: str | None,
                     data_dir: Path | None) -> None:
    """Create (or, before confirmation, change) a campaign from a YAML definition."""
    definition = _definition(file, shop)
    topic = settings_from().topics.credit_events
    try:
        with connection(database_url, data_dir, shop=shop) as conn:
            changed = operations.create(conn, topic, shop, definition, "cli",
                                        operator_name(operator))
    except OperationRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"campaign {definition.id}: {'saved as a draft' if changed else 'unchanged'}; "
               f"runs {iso(definition.starts_at)} to {iso(definition.ends_at)}")


@click.command("confirm")
@click.option("--shop", required=True)
@click.option("--campaign", "campaign_id", required=True)
@click.option("--operator", help="who (recorded; default: the OS user)")
@db_opt
@dir_opt
def campaigns_confirm(shop: str, campaign_id: str, operator: str | None,
                      database_url: str | None, data_dir: Path | None) -> None:
    """Resolve the target to members now, record them, and freeze the campaign."""
    topic = settings_from().topics.credit_events
    try:
        with connection(database_url, data_dir, shop=shop) as conn:
            done = operations.confirm(conn, topic, shop, campaign_id, operator_name(operator),
                                      datetime.now(UTC))
    except OperationRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"campaign {campaign_id} confirmed: audience of {done.audience:,} member(s) "
               "recorded; its window and target can no longer change")


@click.command("send")
@click.option("--shop", required=True)
@click.option("--campaign", "campaign_id", required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="where the file sender writes messages (default: DATA_DIR/outgoing)")
@click.option("--operator", help="who (recorded; default: the OS user)")
@db_opt
@dir_opt
def campaigns_send(shop: str, campaign_id: str, out_dir: Path | None, operator: str | None,
                   database_url: str | None, data_dir: Path | None) -> None:
    """Send a confirmed campaign to its audience (file sender) and record the messages sent."""
    settings = settings_from(None, database_url, data_dir)
    sender = FileSender(out_dir or settings.data_dir / "outgoing")
    try:
        with connection(database_url, data_dir, shop=shop) as conn:
            n = operations.send(conn, settings.topics, shop, campaign_id, sender,
                                operator_name(operator), datetime.now(UTC))
    except OperationRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"campaign {campaign_id}: {n:,} message(s) written to "
               f"{sender.path(shop, campaign_id)}; message_sent events queued for the broker")


@click.command("campaign")
@click.option("--shop", required=True)
@click.option("--campaign", "campaign_id", help="one campaign (default: all)")
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "xlsx"]), default="json")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="write to this file (required for xlsx)")
@click.option("--chart", type=click.Path(dir_okay=False, path_type=Path),
              help="also write conversions over time to this PNG file")
@db_opt
@dir_opt
def report_campaign(shop: str, campaign_id: str | None, fmt: str, out: Path | None,
                    chart: Path | None, database_url: str | None,
                    data_dir: Path | None) -> None:
    """Campaign effect per campaign, channel and day; provisional until the windows close."""
    if fmt == "xlsx" and out is None:
        raise click.UsageError("--format xlsx needs --out FILE.xlsx")
    lateness = timedelta(hours=settings_from().campaign_lateness_hours)
    try:
        with connection(database_url, data_dir, shop=shop) as conn:
            result = campaign_report(conn, shop, campaign_id, lateness)
    except NoCampaigns as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "xlsx":
        assert out is not None
        write_xlsx(result, out)
    elif out is not None:
        with out.open("w", encoding="utf-8", newline="") as handle:
            if fmt == "json":
                handle.write(json.dumps(result.to_dict(), indent=2) + "\n")
            else:
                writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS))
                writer.writeheader()
                writer.writerows(result.table())
    else:
        emit(result.table(), CSV_COLUMNS, fmt, result.to_dict())
    if out is not None:
        click.echo(f"report written to {out}", err=True)
    if chart:
        conversions_png(result, chart)
        click.echo(f"conversions chart written to {chart}", err=True)
