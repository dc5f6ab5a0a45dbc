"""Commands for tags and the important mark (`memberflow tags ...`, `members important`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from memberflow.cli_common import (
    carry_out,
    connection,
    load_config,
    operator_name,
    refuse_unknown,
    settings_from,
    shop_names,
)
from memberflow.cli_options import (
    db_opt,
    dir_opt,
    dry_run_opt,
    filter_options,
    print_table,
    yes_opt,
)
from memberflow.cli_tiers import member_filter
from memberflow.readmodel import tag_history
from services.tagging import operations
from services.tagging.operations import ManualResult, TagOutcome
from shared.audit import OperationRefused
from shared.filters import MemberFilter


def _selection(kw: dict[str, Any], everyone: bool) -> MemberFilter:
    selection = member_filter(kw)
    if selection.empty and not everyone:
        raise click.UsageError("name the members: --member, a filter such as --level/--tag/"
                               "--abc, or --all")
    return selection


def _manual(run: Callable[..., ManualResult], shop: str, selection: MemberFilter,
            operator: str | None, reason: str, database_url: str | None, data_dir: Path | None,
            verb: tuple[str, str], dry_run: bool, yes: bool, **args: Any) -> None:
    """A manual tag change, shown first when asked or when it reaches a filtered set;
    `verb` is (done, would do)."""
    if not reason.strip():
        raise click.UsageError("--reason must say why (it is recorded with every change)")
    topic = settings_from().topics.tag_events

    def describe(result: ManualResult, would: bool) -> str:
        return (f"shop {shop}: {result.selected} selected, {result.changed} "
                f"{verb[1] if would else verb[0]}" + (" (dry run: nothing changed)"
                                                     if would and dry_run else ""))
    def change(conn: Any) -> ManualResult:
        result: ManualResult = run(conn, topic, shop, selection,
                                   operator=operator_name(operator), reason=reason,
                                   now=datetime.now(UTC), **args)
        refuse_unknown(shop, result.missing)
        return result

    try:
        carry_out(change, describe, database_url=database_url, data_dir=data_dir, shop=shop,
                  dry_run=dry_run, yes=yes,
                  bulk=selection != MemberFilter(member_ids=selection.member_ids))
    except OperationRefused as exc:
        raise click.ClickException(str(exc)) from None


_reason = click.option("--reason", required=True, help="why (recorded with every change)")
_operator = click.option("--operator", help="who (recorded; default: the OS user)")
_all = click.option("--all", "everyone", is_flag=True, help="every member of the shop")


@click.command("add")
@click.argument("tag_id", metavar="TAG")
@click.option("--shop", required=True)
@_reason
@_operator
@_all
@dry_run_opt
@yes_opt
@filter_options
@db_opt
@dir_opt
def tags_add(shop: str, tag_id: str, reason: str, operator: str | None, everyone: bool,
             dry_run: bool, yes: bool, database_url: str | None, data_dir: Path | None,
             **kw: Any) -> None:
    """Add to (copy): the selected members gain TAG and keep every tag they hold."""
    _manual(operations.add_to, shop, _selection(kw, everyone), operator, reason, database_url,
            data_dir, (f"gained {tag_id!r}", f"would gain {tag_id!r}"), dry_run, yes,
            tag_id=tag_id)


@click.command("move")
@click.option("--shop", required=True)
@click.option("--from", "source", required=True, help="the tag the members leave")
@click.option("--to", "target", required=True, help="the tag they join")
@_reason
@_operator
@_all
@dry_run_opt
@yes_opt
@filter_options
@db_opt
@dir_opt
def tags_move(shop: str, source: str, target: str, reason: str, operator: str | None,
              everyone: bool, dry_run: bool, yes: bool, database_url: str | None,
              data_dir: Path | None, **kw: Any) -> None:
    """Move to (cut): selected members holding --from lose it and gain --to."""
    _manual(operations.move_to, shop, _selection(kw, everyone), operator, reason, database_url,
            data_dir, (f"moved from {source!r} to {target!r}",
                       f"would move from {source!r} to {target!r}"), dry_run, yes,
            source=source, target=target)


@click.command("remove")
@click.argument("tag_id", metavar="TAG")
@click.option("--shop", required=True)
@_reason
@_operator
@_all
@dry_run_opt
@yes_opt
@filter_options
@db_opt
@dir_opt
def tags_remove(shop: str, tag_id: str, reason: str, operator: str | None, everyone: bool,
                dry_run: bool, yes: bool, database_url: str | None, data_dir: Path | None,
                **kw: Any) -> None:
    """Take TAG from the selected members (from everyone holding it: TAG --tag TAG)."""
    _manual(operations.remove, shop, _selection(kw, everyone), operator, reason, database_url,
            data_dir, (f"lost {tag_id!r}", f"would lose {tag_id!r}"), dry_run, yes,
            tag_id=tag_id)


def _print_outcomes(shop: str, outcomes: list[TagOutcome], would: bool, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([o.__dict__ for o in outcomes], indent=2))
        return
    verb = "would" if would else ""
    if not outcomes:
        click.echo(f"shop {shop}: no tag's rules change")
    for o in outcomes:
        rules = ", ".join(o.rules) or "no rule"
        click.echo(f"  tag {o.tag_id} ({rules}): {o.before:,} -> {o.after:,} members; "
                   f"{verb + ' ' if verb else ''}gain {o.gained:,}, "
                   f"{verb + ' ' if verb else ''}lose {o.lost:,}")


@click.command("preview")
@click.option("--shop", required=True)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
              help="a shop configuration: what its tag rules would change")
@click.option("--rule", "when", help='a condition, e.g. "spend >= 500 and trades >= 3"')
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@db_opt
@dir_opt
def tags_preview(shop: str, config_file: Path | None, when: str | None, fmt: str,
                 database_url: str | None, data_dir: Path | None) -> None:
    """How many members a rule would tag, from the stored history (changes nothing)."""
    if (config_file is None) == (when is None):
        raise click.UsageError("give either --config FILE or --rule EXPRESSION")
    config = load_config(config_file) if config_file else None
    if config is not None and config.shop_id != shop:
        raise click.UsageError(f"{config_file} is the configuration of shop {config.shop_id!r}")
    try:
        with connection(database_url, data_dir, shop=shop) as conn:
            if config is not None:
                outcomes = operations.preview(conn, config)
                count = None
            else:
                assert when is not None
                count = operations.preview_rule(conn, shop, when)
            conn.rollback()  # read only, whatever happens
    except OperationRefused as exc:
        raise click.ClickException(str(exc)) from None
    if count is not None:
        if fmt == "json":
            click.echo(json.dumps({"shop_id": shop, "rule": when, "members": count}))
        else:
            click.echo(f"shop {shop}: the rule holds for {count:,} member(s) now")
        return
    _print_outcomes(shop, outcomes, would=True, fmt=fmt)


@click.command("history")
@click.option("--shop", required=True)
@click.option("--member", required=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@db_opt
@dir_opt
def tags_history(shop: str, member: str, fmt: str, database_url: str | None,
                 data_dir: Path | None) -> None:
    """Every tag change of one member with its cause (rule, goods rule or operator)."""
    with connection(database_url, data_dir, shop=shop) as conn:
        rows = tag_history(conn, shop, member)
        _, names = shop_names(conn, shop)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo(f"member {member} of shop {shop}: no tag change")
        return
    print_table([r | {"when": (r["effective_at"] or "")[:19].replace("T", " "),
                      "tag": f"{names.get(r['tag_id'], r['tag_id'])} ({r['tag_id']})",
                      "by": r["rule_id"] or r["operator"] or "",
                      "why": r["reason"] or r["triggering_event_id"] or ""} for r in rows],
                [("when", "when (UTC)"), ("tag", "tag"), ("action", "change"),
                 ("cause", "cause"), ("by", "rule / by"), ("why", "reason / event")])


@click.command("important")
@click.option("--shop", required=True)
@click.option("--member", "members", multiple=True, required=True)
@click.option("--remove", is_flag=True, help="take the mark off")
@_reason
@_operator
@db_opt
@dir_opt
def important(shop: str, members: tuple[str, ...], remove: bool, reason: str,
              operator: str | None, database_url: str | None, data_dir: Path | None) -> None:
    """Mark members important (shown and filterable wherever members are listed)."""
    try:
        with connection(database_url, data_dir, shop=shop) as conn:
            n = operations.set_important(conn, shop, list(members), not remove,
                                         operator_name(operator), reason)
    except OperationRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"shop {shop}: {n} member(s) {'unmarked' if remove else 'marked important'}")
