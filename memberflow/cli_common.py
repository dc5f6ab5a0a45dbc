"""Pieces every command group shares: settings from options, connections, config loading."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from memberflow.runtime import open_database
from shared.config import Settings
from shared.db import make_engine, migrate
from shared.shopconfig import ConfigError, ShopConfig, load
from shared.shops import known_shops, shop_exists


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


kafka_opt = click.option("--kafka", "kafka_", metavar="HOST:PORT",
                         help="Kafka bootstrap servers (default: $MEMBERFLOW_KAFKA, else embedded)")
db_opt = click.option("--database-url", metavar="URL",
                      help="PostgreSQL URL (default: $MEMBERFLOW_DATABASE_URL, else embedded)")
dir_opt = click.option("--data-dir", type=click.Path(path_type=Path),
                       help="where the embedded database lives (default: .memberflow)")


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
