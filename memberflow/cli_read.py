"""`members list`: asks the running API when `memberflow up` runs on the data dir (see
`memberflow.local`), and reads the database itself otherwise. Both give the same rows; only the
second loads the database drivers, which is most of a command's time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from memberflow import local
from memberflow.cli_options import db_opt, dir_opt, emit, filter_options

# The columns of a member list (`memberflow.readmodel.MEMBER_COLUMNS`, checked by a test:
# importing it would load what this module exists to avoid).
COLUMNS = ("member_id", "level", "level_name", "discount", "blacklisted", "important",
           "abc_class", "tags", "completed_trades", "spend", "aov", "gross", "refunded",
           "first_purchase_at", "last_purchase_at", "region")
PAGE = 500   # the API's largest page


def query(kw: dict[str, Any]) -> list[tuple[str, str]]:
    """The `filter_options` values as the API's query parameters."""
    params: list[tuple[str, str]] = []
    params += [("member", m) for m in kw["f_member"]]
    params += [("level", str(n)) for n in kw["f_level"]]
    params += [("abc", c) for c in kw["f_abc"]]
    params += [("tag", t) for t in kw["f_tag"]]
    for key, name in (("f_min", "min_spend"), ("f_max", "max_spend"),
                      ("f_dormant", "dormant_days")):
        if kw[key] is not None:
            params.append((name, str(kw[key])))
    if kw["f_important"]:
        params.append(("important", "true"))
    return params


def from_running(shop: str, data_dir: Path | None, kw: dict[str, Any]
                 ) -> list[dict[str, Any]] | None:
    """Every matching member, page by page from the running API; None if there is no running
    stack to ask (or it cannot answer: then the database says why)."""
    stack = local.running(local.data_dir_from(data_dir))
    if stack is None:
        return None
    rows: list[dict[str, Any]] = []
    params = query(kw)
    while True:
        page = local.get(stack, f"/api/v1/shops/{shop}/members",
                         [*params, ("sort", "member_id"), ("limit", str(PAGE)),
                          ("offset", str(len(rows)))])
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
    rows = None
    if not (database_url or os.environ.get("MEMBERFLOW_DATABASE_URL")):
        rows = from_running(shop, data_dir, kw)
    if rows is None:
        from memberflow.cli_common import connection
        from memberflow.cli_tiers import member_filter
        from memberflow.readmodel import member_records

        with connection(database_url, data_dir, shop=shop) as conn:
            rows = member_records(conn, shop, member_filter(kw))
    emit(rows, COLUMNS, fmt)
