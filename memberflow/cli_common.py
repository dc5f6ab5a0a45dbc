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
def connection(database_url: str | None, data_dir: Path | None) -> Iterator[Any]:
    settings = settings_from(None, database_url, data_dir)
    with open_database(settings) as (url, _):
        engine = make_engine(url, pool_size=1)
        try:
            migrate(engine)
            with engine.begin() as conn:
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
