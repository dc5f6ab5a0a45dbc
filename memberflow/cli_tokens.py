"""`memberflow tokens ...`: API tokens for operators, storefronts and platforms."""

from __future__ import annotations

import json
from pathlib import Path

import click

from memberflow.cli_common import connection, operator_name
from memberflow.cli_options import db_opt, dir_opt
from shared import tokens
from shared.audit import OperationRefused


@click.group("tokens")
def tokens_group() -> None:
    """API tokens: create (shown once), list, revoke."""


@tokens_group.command("create")
@click.option("--shop", "shops", multiple=True, metavar="SHOP",
              help="a shop the token is for (repeat for several)")
@click.option("--all-shops", is_flag=True, help="a platform token: every shop, present and future")
@click.option("--rights", required=True, metavar="R1,R2",
              help=f"comma-separated, from: {', '.join(tokens.RIGHTS)}")
@click.option("--name", help="who holds it, as the audit log will name them (default: SHOP-RIGHTS)")
@click.option("--expires-in", metavar="30d|12h|90m", help="lifetime (default: until revoked)")
@click.option("--operator", help="who creates it (recorded; default: the OS user)")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@db_opt
@dir_opt
def tokens_create(shops: tuple[str, ...], all_shops: bool, rights: str, name: str | None,
                  expires_in: str | None, operator: str | None, fmt: str,
                  database_url: str | None, data_dir: Path | None) -> None:
    """Make a token; it is printed once (the last line), and only its digest is kept."""
    if bool(shops) == all_shops:
        raise click.UsageError("name the shops with --shop, or give --all-shops (not both)")
    try:
        wanted = tokens.parse_rights(rights)
        lifetime = tokens.parse_duration(expires_in) if expires_in else None
        with connection(database_url, data_dir, create=True) as conn:
            created = tokens.create(
                conn, name=name or f"{'+'.join(shops) or 'platform'}-{'-'.join(wanted)}",
                shops=None if all_shops else shops, rights=wanted, expires_in=lifetime,
                operator=operator_name(operator))
    except OperationRefused as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps({
            "id": created.token_id, "name": created.name,
            "shops": list(created.shops) if created.shops is not None else "all",
            "rights": list(created.rights),
            "expires_at": created.expires_at.isoformat() if created.expires_at else None,
            "token": created.token}))
        return
    click.echo(f"token {created.token_id} {created.name!r} for "
               f"{', '.join(created.shops) if created.shops else 'every shop'}: "
               f"{', '.join(created.rights)}"
               + (f", expires {created.expires_at:%Y-%m-%d %H:%M} UTC"
                  if created.expires_at else ""), err=True)
    click.echo("shown once; send it as `Authorization: Bearer <token>`:", err=True)
    click.echo(created.token)


@tokens_group.command("list")
@click.option("--shop", help="only tokens that cover this shop")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@db_opt
@dir_opt
def tokens_list(shop: str | None, fmt: str, database_url: str | None,
                data_dir: Path | None) -> None:
    """Tokens, without their secrets."""
    with connection(database_url, data_dir) as conn:
        rows = tokens.listing(conn, shop)
    if fmt == "json":
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("no tokens" + (f" for shop {shop}" if shop else ""))
        return
    click.echo(f"{'id':>4}  {'name':<24} {'token':<12} {'status':<8} {'shops':<20} rights")
    for r in rows:
        shops = r["shops"] if isinstance(r["shops"], str) else ",".join(r["shops"])
        click.echo(f"{r['id']:>4}  {r['name'][:24]:<24} {r['token']:<12} {r['status']:<8} "
                   f"{shops[:20]:<20} {','.join(r['rights'])}")


@tokens_group.command("revoke")
@click.argument("token_id", type=int)
@click.option("--operator", help="who revokes it (recorded; default: the OS user)")
@db_opt
@dir_opt
def tokens_revoke(token_id: int, operator: str | None, database_url: str | None,
                  data_dir: Path | None) -> None:
    """Revoke a token by its id (from `tokens list`); it is refused from then on."""
    with connection(database_url, data_dir) as conn:
        done = tokens.revoke(conn, token_id, operator=operator_name(operator))
    if not done:
        raise click.ClickException(f"no active token {token_id}")
    click.echo(f"token {token_id} revoked")
