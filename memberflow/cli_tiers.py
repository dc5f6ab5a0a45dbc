"""Commands for levels, the blacklist and ABC reports (`memberflow levels|report ...`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from memberflow.abc_report import (
    PRODUCT_COLUMNS,
    BadPeriod,
    NoData,
    pareto_png,
    product_abc,
    product_record,
)
from memberflow.cli_common import (
    carry_out,
    connection,
    operator_name,
    refuse_unknown,
    settings_from,
    shop_names,
)
from memberflow.cli_options import (
    db_opt,
    dir_opt,
    dry_run_opt,
    emit,
    filter_options,
    print_table,
    yes_opt,
)
from memberflow.readmodel import level_history, member_records
from services.tiering import operations
from services.tiering.policy import LevelPolicy
from shared.audit import OperationRefused
from shared.config_types import RuleBroken
from shared.filters import MemberFilter
from shared.shopconfig import ConfigError, parse

F = TypeVar("F", bound=Callable[..., Any])


def member_filter(kw: dict[str, Any]) -> MemberFilter:
    """Build the filter from `filter_options` values, removing them from `kw`."""
    return MemberFilter(
        member_ids=tuple(kw.pop("f_member")), levels=tuple(kw.pop("f_level")),
        abc_classes=tuple(kw.pop("f_abc")), min_spend=kw.pop("f_min"),
        max_spend=kw.pop("f_max"), dormant_days=kw.pop("f_dormant"), tags=tuple(kw.pop("f_tag")),
        important=kw.pop("f_important") or None, rfm_segments=tuple(kw.pop("f_rfm")),
        max_p_alive=_decimal(kw.pop("f_alive")), min_expected_value=kw.pop("f_value"))


def _decimal(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@click.group()
def levels() -> None:
    """Membership levels: manual changes, what-if previews, history."""


@levels.command("set")
@click.option("--shop", required=True)
@click.option("--to", "level", type=click.IntRange(min=0), required=True, help="the new level")
@click.option("--reason", required=True, help="why (recorded with the change)")
@click.option("--operator", help="who (recorded; default: the OS user)")
@click.option("--all", "everyone", is_flag=True, help="every member of the shop")
@dry_run_opt
@yes_opt
@filter_options
@db_opt
@dir_opt
def levels_set(shop: str, level: int, reason: str, operator: str | None, everyone: bool,
               dry_run: bool, yes: bool, database_url: str | None, data_dir: Path | None,
               **kw: Any) -> None:
    """Set the level of one member or a filtered set by hand (up or down). A filtered set or
    --all is shown first and asked about (--yes to skip the question; --dry-run to only look)."""
    selection = member_filter(kw)
    if selection.empty and not everyone:
        raise click.UsageError("name the members: --member, a filter such as --level/--abc, "
                               "or --all")
    topic = settings_from().topics.member_events

    def change(conn: Any) -> operations.ManualResult:
        result = operations.set_level(conn, topic, shop, selection, level,
                                      operator_name(operator), reason, datetime.now(UTC))
        refuse_unknown(shop, result.missing)
        return result

    def describe(result: operations.ManualResult, would: bool) -> str:
        return (f"shop {shop}: {result.selected} selected, {result.changed} "
                f"{'would be ' if would else ''}set to level {level}"
                + (f", {result.skipped_blacklisted} blacklisted not raised"
                   if result.skipped_blacklisted else "")
                + (" (dry run: nothing changed)" if would and dry_run else ""))

    try:
        carry_out(change, describe, database_url=database_url, data_dir=data_dir, shop=shop,
                  dry_run=dry_run, yes=yes,
                  bulk=selection != MemberFilter(member_ids=selection.member_ids))
    except OperationRefused as exc:
        raise click.ClickException(str(exc)) from None


def _load_policy(path: Path) -> LevelPolicy:
    """A level policy file: a shop configuration, or just its `levels` section."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise click.ClickException(f"{path}: cannot be read as YAML ({exc})") from None
    try:
        if isinstance(data, dict) and "shop_id" in data:
            config = parse(data, str(path))
            if config.levels is None:
                raise click.ClickException(f"{path}: has no levels section")
            return config.levels
        wrapped = parse({"shop_id": "preview", "name": "preview", "levels": data}, str(path))
        assert wrapped.levels is not None
        return wrapped.levels
    except ConfigError as exc:
        raise click.ClickException("invalid level policy\n  " + "\n  ".join(
            f"{path}: {p}" for p in exc.problems)) from None
    except RuleBroken as exc:  # pragma: no cover - parse turns these into ConfigError
        raise click.ClickException(str(exc)) from None


@levels.command("preview")
@click.option("--shop", required=True)
@click.option("--policy", "policy_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@db_opt
@dir_opt
def levels_preview(shop: str, policy_file: Path, fmt: str, database_url: str | None,
                   data_dir: Path | None) -> None:
    """What a proposed level policy would do to the shop's members (changes nothing)."""
    policy = _load_policy(policy_file)
    with connection(database_url, data_dir, shop=shop) as conn:
        result = operations.preview(conn, shop, policy)
        conn.rollback()  # read only, whatever happens
    if fmt == "json":
        click.echo(json.dumps({"shop_id": shop, "members": result.members,
                               "moved_up": result.moved_up,
                               "holding": {str(k): v for k, v in result.holding.items()},
                               "qualifying": {str(k): v for k, v in result.qualifying.items()}},
                              indent=2))
        return
    click.echo(f"shop {shop}: {result.members:,} members; {result.moved_up:,} would move up")
    click.echo(f"{'level':<24}{'would hold':>12}{'figures alone':>15}")
    for number, held in result.holding.items():
        name = "0 (not a member)" if number == 0 else f"{number} {policy.name_of(number)}"
        click.echo(f"{name:<24}{held:>12,}{result.qualifying.get(number, 0):>15,}")


@levels.command("history")
@click.option("--shop", required=True)
@click.option("--member", required=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@db_opt
@dir_opt
def levels_history(shop: str, member: str, fmt: str, database_url: str | None,
                   data_dir: Path | None) -> None:
    """Every level change of one member with its cause (trade, policy or operator)."""
    with connection(database_url, data_dir, shop=shop) as conn:
        rows = level_history(conn, shop, member)
        names, _ = shop_names(conn, shop)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo(f"member {member} of shop {shop}: no level change")
        return
    print_table([r | {"when": (r["effective_from"] or "")[:19].replace("T", " "),
                      "from": names.get(r["old_level"], r["old_level"]),
                      "to": names.get(r["new_level"], r["new_level"]),
                      "why": r["reason"] or r["triggering_event_id"] or
                      (f"policy v{r['policy_version']}" if r["policy_version"] else "")}
                 for r in rows],
                [("when", "when (UTC)"), ("from", "from"), ("to", "to"), ("cause", "cause"),
                 ("operator", "by"), ("why", "reason / event")])


@click.command("blacklist")
@click.option("--shop", required=True)
@click.option("--member", "members", multiple=True, required=True)
@click.option("--remove", is_flag=True, help="take them off the blacklist")
@click.option("--reason", required=True)
@click.option("--operator")
@db_opt
@dir_opt
def blacklist(shop: str, members: tuple[str, ...], remove: bool, reason: str,
              operator: str | None, database_url: str | None, data_dir: Path | None) -> None:
    """Blacklist members: they never upgrade and get no member discount."""
    try:
        with connection(database_url, data_dir, shop=shop) as conn:
            found = {r["member_id"] for r in member_records(
                conn, shop, MemberFilter(member_ids=tuple(members)))}
            refuse_unknown(shop, [m for m in dict.fromkeys(members) if m not in found])
            n = operations.set_blacklist(conn, shop, list(members), not remove,
                                         operator_name(operator), reason)
    except OperationRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"shop {shop}: {n} member(s) {'removed from' if remove else 'added to'} "
               "the blacklist")


@click.command("abc-products")
@click.option("--shop", required=True)
@click.option("--days", type=click.IntRange(min=1),
              help="period length in days (default: configured): with neither --from nor --to, "
                   "the N x 24 hours up to the shop's clock; with one of them, N shop days")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]),
              help="first day, from 00:00:00 in the shop's time zone (its configured timezone)")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]),
              help="last day, to its end in the shop's time zone (default with --from: the day "
                   "of the shop's clock)")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json")
@click.option("--chart", type=click.Path(dir_okay=False, path_type=Path),
              help="also write the Pareto chart to this PNG file")
@db_opt
@dir_opt
def report_abc_products(shop: str, days: int | None, start: datetime | None,
                        end: datetime | None, fmt: str, chart: Path | None,
                        database_url: str | None, data_dir: Path | None) -> None:
    """Revenue ABC of items sold in completed trades: the ABC table and the Pareto chart.

    Days are the shop's (its configured time zone): --from D1 --to D2 counts every order
    completed from 00:00:00 of D1 up to, not including, 00:00:00 of the day after D2. The
    period, its bounds and its zone are in the JSON document and on stderr."""
    try:
        with connection(database_url, data_dir, shop=shop) as conn:
            result = product_abc(conn, shop, start.date() if start else None,
                                 end.date() if end else None, days)
    except NoData as exc:
        raise click.ClickException(str(exc)) from None
    except BadPeriod as exc:
        raise click.UsageError(str(exc)) from None
    emit((product_record(r) for r in result.rows), PRODUCT_COLUMNS, fmt, result.to_dict())
    click.echo(f"period: {result.period.describe()}", err=True)
    if chart:
        pareto_png(result, chart)
        click.echo(f"Pareto chart written to {chart}", err=True)


