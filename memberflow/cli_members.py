"""`memberflow members import|erase|export`: customers in and out, personal data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from memberflow.cli_common import connection, operator_name, settings_from
from memberflow.cli_options import db_opt, dir_opt, filter_options
from memberflow.cli_tiers import member_filter
from memberflow.exporting import csv_bytes, export_rows, flatten, xlsx_bytes
from memberflow.importing import import_members
from shared import profiles
from shared.audit import OperationRefused, audit


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--shop", required=True)
@click.option("--operator", help="who (recorded; default: the OS user)")
@db_opt
@dir_opt
def members_import(file: Path, shop: str, operator: str | None, database_url: str | None,
                   data_dir: Path | None) -> None:
    """Import existing customers from a CSV or XLSX file: all of it, or nothing (every problem
    is listed by line and column). Importing the same file again changes nothing."""
    data = file.read_bytes()
    topics = settings_from().topics

    def progress(rows: int) -> None:
        click.echo(f"  checked {rows:,} rows ...", err=True)

    try:
        with connection(database_url, data_dir, shop=shop) as conn:
            done = import_members(conn, topics, shop, file.name, data,
                                  operator_name(operator), progress)
    except OperationRefused as exc:
        raise click.ClickException(f"{file.name}: {exc}") from None
    click.echo(f"shop {shop}: {done.rows:,} rows from {file.name}"
               + (" (imported before)" if done.already else "") + ": "
               f"{done.members_created:,} members created, {done.profiles_changed:,} with "
               f"personal data changed, {done.regions_set:,} regions set, "
               f"{done.levels_changed:,} levels set, {done.tags_added:,} tags added"
               + (f", {done.erased_skipped:,} erased members' personal data not restored"
                  if done.erased_skipped else ""))


@click.command("erase")
@click.option("--shop", required=True)
@click.option("--member", required=True)
@click.option("--reason", required=True, help="why (recorded)")
@click.option("--operator", help="who (recorded; default: the OS user)")
@db_opt
@dir_opt
def members_erase(shop: str, member: str, reason: str, operator: str | None,
                  database_url: str | None, data_dir: Path | None) -> None:
    """Erase a member's personal data for good (their figures stay, under the member id)."""
    if not reason.strip():
        raise click.UsageError("--reason must say why (it is recorded)")
    with connection(database_url, data_dir, shop=shop) as conn:
        done = profiles.erase(conn, shop, member, operator_name(operator), reason)
    if not done:
        raise click.ClickException(f"no member {member!r} in shop {shop!r}")
    click.echo(f"shop {shop}: member {member}'s personal data erased")


@click.command("export")
@click.option("--shop", required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="file to write (default: standard output; xlsx needs a file)")
@click.option("--unmasked", is_flag=True, help="personal data in full (recorded as such)")
@click.option("--sort", default="member_id", show_default=True)
@click.option("--operator", help="who (recorded; default: the OS user)")
@filter_options
@db_opt
@dir_opt
def members_export(shop: str, fmt: str, out: Path | None, unmasked: bool, sort: str,
                   operator: str | None, database_url: str | None, data_dir: Path | None,
                   **kw: Any) -> None:
    """A filtered member list with personal data (masked unless --unmasked), audited."""
    if fmt == "xlsx" and out is None:
        raise click.UsageError("--format xlsx writes a file: give --out FILE.xlsx")
    selection = member_filter(kw)
    try:
        with connection(database_url, data_dir, shop=shop) as conn:
            rows = export_rows(conn, shop, selection, sort, unmasked)
            audit(conn, shop, None, "members.export", operator_name(operator),
                  {"format": fmt, "rows": len(rows), "unmasked": unmasked,
                   "filter": repr(selection), "via": "cli"})
    except OperationRefused as exc:
        raise click.ClickException(str(exc)) from None
    flat = flatten(rows)
    if fmt == "xlsx":
        assert out is not None
        out.write_bytes(xlsx_bytes(flat))
    elif out is not None:
        out.write_bytes(csv_bytes(flat))
    else:
        click.echo(csv_bytes(flat).decode("utf-8-sig"), nl=False)
    if out is not None:
        click.echo(f"{len(rows):,} members written to {out}", err=True)
