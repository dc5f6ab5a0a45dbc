"""Database engines and migrations. Only bootstrap code calls these; importing connects nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlalchemy_url(url: str) -> str:
    """Pin the psycopg 3 driver whatever spelling of a PostgreSQL URL was given."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(
            f"database URL must be PostgreSQL (postgresql://...), got {parsed.get_backend_name()!r}"
        )
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 5, name: str = "memberflow") -> Engine:
    """An engine on psycopg 3. The caller owns it and disposes of it.

    Its sessions carry `name` as their application name, so `pg_stat_activity` says which part
    of memberflow each connection serves (e.g. "memberflow tiering")."""
    # Sessions in UTC, so timestamps read back the same whatever the server's zone.
    return create_engine(sqlalchemy_url(url), pool_size=pool_size, pool_pre_ping=True,
                         connect_args={"options": "-c TimeZone=UTC", "application_name": name})


# The newest migration. A schema already there is recognised with one query, without loading
# alembic (a command-line read then starts in a fraction of the time); a test checks that this
# names alembic's head.
HEAD = "0011"


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; serialised by an advisory lock)."""
    with engine.connect() as conn:
        if _has_version_table(conn) and conn.exec_driver_sql(
                "SELECT version_num FROM alembic_version").scalar() == HEAD:
            return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        # Several workers may start at once against one database: one migrates, others wait.
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7210001)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _has_version_table(conn: Any) -> bool:
    return bool(conn.exec_driver_sql("SELECT to_regclass('alembic_version') IS NOT NULL")
                .scalar())
