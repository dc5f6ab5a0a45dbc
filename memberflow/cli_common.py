"""Pieces every command group shares: settings from options, connections, config loading."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from memberflow.database import open_database
from shared.audit import OperationRefused
from shared.config import Settings
from shared.db import make_engine, migrate
from shared.shopconfig import ConfigError, ShopConfig, load
from shared.shops import known_shops, shop_configs, shop_exists


def settings_from(kafka_: str | None = None, database_url: str | None = None,
              data_dir: Path | None = None, **extra: Any) -> Settings:
    """Environment settings with explicit command-line values on top."""
    overrides: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    if kafka_:
        overrides["kafka"] = kafka_
    if database_url:
        overrides["database_url"] = database_url
    if data_dir:
        overrides["data_dir"] = data_dir
    return Settings(**overrides)




@contextmanager
def connection(database_url: str | None, data_dir: Path | None, *, shop: str | None = None,
               create: bool = False) -> Iterator[Any]:
    """One transaction on the configured database. An embedded data dir that holds no state
    yet is an error (a mistyped --data-dir must not answer from an empty database), unless
    `create`; with `shop`, so is a shop the database does not know."""
    settings = settings_from(None, database_url, data_dir)
    if not create and settings.database_url is None and not (settings.data_dir / "pg").exists():
        raise click.ClickException(
            f"no memberflow state under {settings.data_dir}/ (run `memberflow up`, `run` or "
            "`demo` there first, or give the right --data-dir or MEMBERFLOW_DATA_DIR)")
    with open_database(settings) as (url, _):
        engine = make_engine(url, pool_size=1)
        try:
            migrate(engine)
            with engine.begin() as conn:
                if shop is not None and not shop_exists(conn, shop):
                    known = known_shops(conn)
                    raise click.ClickException(
                        f"no shop {shop!r} here" + (f" (shops: {', '.join(known[:10])}"
                                                    f"{', …' if len(known) > 10 else ''})"
                                                    if known else " (no shop has a "
                                                    "configuration or a member yet)"))
                yield conn
        finally:
            engine.dispose()


def load_config(path: Path) -> ShopConfig:
    try:
        return load(path)
    except ConfigError as exc:
        raise click.ClickException("invalid configuration\n  " + "\n  ".join(
            f"{exc.args[0].split(':', 1)[0]}: {p}" for p in exc.problems)) from None




def operator_name(given: str | None) -> str:
    """Who is acting: the --operator option, else the OS user."""
    return given or getpass.getuser()


R = TypeVar("R")


class _Rehearsed(Exception):
    """Raised inside a change's transaction to roll it back after seeing what it does."""

    def __init__(self, result: Any) -> None:
        self.result = result





def carry_out(change: Callable[[Any], R], describe: Callable[[R, bool], str], *,
              database_url: str | None, data_dir: Path | None, shop: str, dry_run: bool,
              yes: bool, bulk: bool) -> R | None:
    """Run an operator's change in one transaction, after showing what it will do when asked
    (`--dry-run`: rehearse and roll back) or when it reaches a filtered set or everyone
    (rehearse, show the counts, ask; `--yes` skips the question, and without a terminal to
    ask on, it is required). `describe(result, would)` says what happened or would."""
    if dry_run or (bulk and not yes):
        try:
            with connection(database_url, data_dir, shop=shop) as conn:
                raise _Rehearsed(change(conn))
        except _Rehearsed as rehearsal:
            click.echo(describe(rehearsal.result, True))
        if dry_run:
            return None
        if not sys.stdin.isatty():
            raise click.ClickException("this changes a filtered set of members: confirm with "
                                       "--yes (or look first with --dry-run)")
        click.confirm("Apply this change?", abort=True)
    with connection(database_url, data_dir, shop=shop) as conn:
        result = change(conn)
    click.echo(describe(result, False))
    return result


def refuse_unknown(shop: str, missing: list[str]) -> None:
    """Named members the shop does not have: the whole change is refused (nothing applied)."""
    if missing:
        shown = ", ".join(repr(m) for m in missing[:10]) + (", …" if len(missing) > 10 else "")
        raise OperationRefused(f"no member {shown} in shop {shop!r}: nothing was changed")


def shop_names(conn: Any, shop: str) -> tuple[dict[int, str], dict[str, str]]:
    """The shop's level names by number and tag names by id (for showing history)."""
    entry = shop_configs(conn, [shop]).get(shop)
    if entry is None:
        return {}, {}
    config = entry[1]
    levels = {0: "no level"} | ({n: step.name for n, step in
                                 enumerate(config.levels.ladder, start=1)}
                                if config.levels else {})
    return levels, {t.id: t.name for t in config.tagging.tags}


def with_broker(settings: Settings, work: Callable[[Any, Any], Awaitable[R]]) -> R:
    """Run `work(engine, producer)` against the configured database and broker (for commands
    that write events: re-drives, imports), and close both after."""
    from shared import kafka
    from shared.db import make_engine

    assert settings.kafka is not None
    bootstrap = settings.kafka

    async def run(engine: Any) -> R:
        producer = kafka.producer(bootstrap)
        await producer.start()
        try:
            return await work(engine, producer)
        finally:
            await producer.stop()

    with open_database(settings) as (url, _):
        engine = make_engine(url, pool_size=2)
        try:
            return asyncio.run(run(engine))
        finally:
            engine.dispose()
