"""The read commands: each asks the running API when `memberflow up` runs on the data dir (see
`memberflow.local`), and reads the database itself otherwise. Both give the same answer (the
API's routes call the same use cases); only the second loads the database drivers, which is most
of a command's time, so the modules doing it are imported only then."""

from __future__ import annotations

import importlib
import json
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from memberflow import local
from memberflow.cli_options import db_opt, dir_opt, emit, filter_options


def asked(shop: str, data_dir: Path | None, database_url: str | None, path: str,
          params: list[tuple[str, str]] | None = None) -> Any | None:
    """The running API's answer for the shop's `path`, or None: no stack runs on the data dir,
    a database is named (it is read directly), or the API cannot answer (the database then
    says why, in the command's own words)."""
    stack = _stack(data_dir, database_url)
    return None if stack is None else _ask(stack, shop, path, params or [])


def _stack(data_dir: Path | None, database_url: str | None) -> local.Running | None:
    """The stack to ask: none when a database is named (it is read directly)."""
    if database_url or os.environ.get("MEMBERFLOW_DATABASE_URL"):
        return None
    return local.running(local.data_dir_from(data_dir))


def _ask(stack: local.Running, shop: str, path: str, params: list[tuple[str, str]]
         ) -> Any | None:
    return local.get(stack, f"/api/v1/shops/{urllib.parse.quote(shop, safe='')}{path}", params)


def read(shop: str, data_dir: Path | None, database_url: str | None, path: str,
         use_case: str, *args: Any) -> Any:
    """`asked`, else `use_case` ("module:function", called with the connection, the shop and
    `args`) on the database."""
    answer = asked(shop, data_dir, database_url, path)
    if answer is not None:
        return answer
    from memberflow.cli_common import connection

    module, name = use_case.split(":")
    work: Callable[..., Any] = getattr(importlib.import_module(module), name)
    with connection(database_url, data_dir, shop=shop) as conn:
        return work(conn, shop, *args)


# The columns of a member list (`memberflow.readmodel.MEMBER_COLUMNS`, checked by a test:
# importing it would load what this module exists to avoid).
COLUMNS = ("member_id", "level", "level_name", "discount", "blacklisted", "important",
           "abc_class", "tags", "completed_trades", "spend", "aov", "gross", "refunded",
           "first_purchase_at", "last_purchase_at", "region", "rfm_segment", "rfm_r", "rfm_f",
           "rfm_m", "p_alive", "expected_purchases", "expected_value")
PAGE = 500   # the API's largest page


def query(kw: dict[str, Any]) -> list[tuple[str, str]]:
    """The `filter_options` values as the API's query parameters."""
    params: list[tuple[str, str]] = []
    params += [("member", m) for m in kw["f_member"]]
    params += [("level", str(n)) for n in kw["f_level"]]
    params += [("abc", c) for c in kw["f_abc"]]
    params += [("tag", t) for t in kw["f_tag"]]
    params += [("rfm_segment", s) for s in kw["f_rfm"]]
    for key, name in (("f_min", "min_spend"), ("f_max", "max_spend"),
                      ("f_dormant", "dormant_days"), ("f_alive", "max_p_alive"),
                      ("f_value", "min_expected_value")):
        if kw[key] is not None:
            params.append((name, str(kw[key])))
    if kw["f_important"]:
        params.append(("important", "true"))
    return params


def from_running(shop: str, data_dir: Path | None, database_url: str | None,
                 kw: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Every matching member, page by page from the running API (see `asked`)."""
    stack = _stack(data_dir, database_url)
    if stack is None:
        return None
    rows: list[dict[str, Any]] = []
    params = query(kw)
    while True:
        page = _ask(stack, shop, "/members", [*params, ("sort", "member_id"),
                                              ("limit", str(PAGE)), ("offset", str(len(rows)))])
        if page is None:
            return None
        rows += [{c: item[c] for c in COLUMNS} for item in page["items"]]
        if len(page["items"]) < PAGE:
            return rows


@click.command("list")
@click.option("--shop", required=True)
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json")
@filter_options
@db_opt
@dir_opt
def members_list(shop: str, fmt: str, database_url: str | None, data_dir: Path | None,
                 **kw: Any) -> None:
    """Print the records of a shop's members (all, or those matching the filters)."""
    rows = from_running(shop, data_dir, database_url, kw)
    if rows is None:
        from memberflow.cli_common import connection
        from memberflow.cli_tiers import member_filter
        from memberflow.readmodel import member_records

        with connection(database_url, data_dir, shop=shop) as conn:
            rows = member_records(conn, shop, member_filter(kw))
    emit(rows, COLUMNS, fmt)


def _text_or_json(func: Callable[..., None]) -> Callable[..., None]:
    for option in reversed([click.option("--shop", required=True),
                            click.option("--format", "fmt", type=click.Choice(["text", "json"]),
                                         default="text"), db_opt, dir_opt]):
        func = option(func)
    return func


def _json(rows: Any) -> None:
    click.echo(json.dumps(rows, indent=2, ensure_ascii=False))


@click.command("blacklisted")
@_text_or_json
def blacklisted_list(shop: str, fmt: str, database_url: str | None,
                     data_dir: Path | None) -> None:
    """The shop's blacklisted members, with who put them there, when and why."""
    rows = read(shop, data_dir, database_url, "/blacklist",
                "services.tiering.operations:blacklisted")
    if fmt == "json":
        _json(rows)
        return
    for r in rows:
        click.echo(f"{r['member_id']}  since {(r['since'] or '?')[:19]}  by {r['operator'] or '?'}"
                   f": {r['reason'] or '(no reason recorded)'}")
    click.echo(f"{len(rows)} blacklisted member(s) in shop {shop}")


@click.command("list")
@_text_or_json
def tags_list(shop: str, fmt: str, database_url: str | None, data_dir: Path | None) -> None:
    """The shop's tag groups and tags: how each is applied and how many members hold it."""
    rows = read(shop, data_dir, database_url, "/tags", "services.tagging.operations:overview")
    if rows is None:
        raise click.ClickException(f"shop {shop!r} has no configuration")
    if fmt == "json":
        _json(rows)
        return
    click.echo(f"shop {shop}: {len(rows)} of 100 tags")
    for r in rows:
        how = "; ".join(r["rules"]) or "by hand"
        click.echo(f"  {r['tag_id']:<20} {r['name']:<16} {r['group'] or '-':<24} "
                   f"{r['members']:>8,} members   {how}")


@click.command("list")
@_text_or_json
def campaigns_list(shop: str, fmt: str, database_url: str | None,
                   data_dir: Path | None) -> None:
    """The shop's campaigns: window, status, audience, channels, offer."""
    rows = read(shop, data_dir, database_url, "/campaigns",
                "services.campaigns.operations:listing")
    if fmt == "json":
        _json(rows)
        return
    if not rows:
        click.echo(f"shop {shop}: no campaigns")
    for r in rows:
        window = f"{r['starts_at']} .. {r['ends_at']}" if r["starts_at"] else "(not defined here)"
        audience = (f"{r['audience']:,} members" if r["audience"] is not None
                    else "audience not recorded" if r["status"] == "history" else "no audience")
        click.echo(f"  {r['campaign_id']:<16} {r['status']:<9} {window}  {audience:<22} "
                   f"{r['messages_sent']:,} sent, {r['messages_clicked']:,} clicked  "
                   f"{'/'.join(r['channels'])}  {r['offer'] or ''}")


# `memberflow.abc_report.CUSTOMER_COLUMNS` (checked by a test)
ABC_CUSTOMER_COLUMNS = ("rank", "member_id", "spend", "last_purchase_at", "abc_class")


@click.command("abc-customers")
@click.option("--shop", required=True)
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json")
@db_opt
@dir_opt
def report_abc_customers(shop: str, fmt: str, database_url: str | None,
                         data_dir: Path | None) -> None:
    """Head-count ABC of members by spend over the rolling period (A, B, C; zero spenders apart)."""
    doc = asked(shop, data_dir, database_url, "/reports/abc-customers")
    if doc is None:
        from memberflow.abc_report import NoData, customer_abc
        from memberflow.cli_common import connection

        try:
            with connection(database_url, data_dir, shop=shop) as conn:
                doc = customer_abc(conn, shop)
        except NoData as exc:
            raise click.ClickException(str(exc)) from None
    emit(doc["members"], ABC_CUSTOMER_COLUMNS, fmt, doc)


@click.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50)
@click.option("--shop", help="only letters naming this shop")
@click.option("--status", type=click.Choice(["parked", "redriven"]), help="only these")
@db_opt
@dir_opt
def dead_letters_list(limit: int, shop: str | None, status: str | None,
                      database_url: str | None, data_dir: Path | None) -> None:
    """Show dead letters, newest first, with their reasons."""
    # The API answers for one shop at a time, a page of at most PAGE.
    found = asked(shop, data_dir, database_url, "/dead-letters",
                  [("limit", str(limit)), *([("status", status)] if status else [])]
                  ) if shop is not None and limit <= PAGE else None
    if found is None:
        from memberflow.cli_common import connection
        from shared import deadletter

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
