"""Storing shop configurations, versioned, with every applied version kept for audit."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import Connection, text

from shared.shopconfig import ShopConfig


def shop_configs(conn: Connection, shop_ids: Sequence[str], *, share_lock: bool = False
                 ) -> dict[str, tuple[int, ShopConfig]]:
    """The applied configuration (version, config) of each listed shop that has one.

    `share_lock` holds the rows until the transaction ends, so a configuration being applied
    waits for work that runs on the current one (and that work never mixes two versions).
    """
    rows = conn.exec_driver_sql(
        "SELECT shop_id, config_version, config FROM shops WHERE shop_id = ANY(%b) ORDER BY "
        "shop_id" + (" FOR SHARE" if share_lock else ""),
        (list(shop_ids),),
    ).all()
    return {r[0]: (int(r[1]), ShopConfig.model_validate(r[2])) for r in rows}


def config_versions(conn: Connection, shop_ids: Sequence[str], *, share_lock: bool = False
                    ) -> dict[str, int]:
    """The applied configuration version of each listed shop that has one (see shop_configs)."""
    rows = conn.exec_driver_sql(
        "SELECT shop_id, config_version FROM shops WHERE shop_id = ANY(%b) ORDER BY shop_id"
        + (" FOR SHARE" if share_lock else ""),
        (list(shop_ids),),
    ).all()
    return {r[0]: int(r[1]) for r in rows}


def shop_exists(conn: Connection, shop_id: str) -> bool:
    """A shop is known once it has a configuration or a member."""
    return bool(conn.exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM shops WHERE shop_id = %s) "
        "OR EXISTS (SELECT 1 FROM members WHERE shop_id = %s)", (shop_id, shop_id)).scalar())


def known_shops(conn: Connection) -> list[str]:
    """Every shop with a configuration or a member (for telling an operator what exists)."""
    return [r[0] for r in conn.exec_driver_sql(
        "SELECT shop_id FROM shops UNION SELECT DISTINCT shop_id FROM members ORDER BY 1")]


def all_shop_ids(conn: Connection) -> list[str]:
    """Every shop with a configuration."""
    return [r[0] for r in conn.exec_driver_sql("SELECT shop_id FROM shops ORDER BY shop_id")]


class ConfigCache:
    """Shop configurations for a worker: parsed once per version, however many batches ask.

    Parsing validates the whole file (every tag rule compiled), which is too slow to repeat for
    every batch; a version number is cheap to read and tells when a shop's file changed.
    """

    def __init__(self) -> None:
        self._configs: dict[str, tuple[int, ShopConfig]] = {}

    def get(self, conn: Connection, shop_ids: Collection[str], *, share_lock: bool = False
            ) -> dict[str, tuple[int, ShopConfig]]:
        """The applied configuration (version, config) of each listed shop that has one."""
        versions = config_versions(conn, sorted(shop_ids), share_lock=share_lock)
        stale = [s for s, v in versions.items()
                 if s not in self._configs or self._configs[s][0] != v]
        self._configs.update(shop_configs(conn, stale))
        return {s: self._configs[s] for s in versions if s in self._configs}


def apply_config(conn: Connection, config: ShopConfig, applied_by: str
                 ) -> tuple[int, bool, ShopConfig | None]:
    """Store the configuration; returns (version, changed, the configuration it replaced).

    An identical configuration is a no-op (changed is False).
    """
    doc = config.model_dump(mode="json")
    row = conn.execute(
        text("SELECT config, config_version FROM shops WHERE shop_id = :s FOR UPDATE"),
        {"s": config.shop_id},
    ).first()
    if row is not None and row.config == doc:
        return int(row.config_version), False, config
    old = ShopConfig.model_validate(row.config) if row is not None else None
    version = (int(row.config_version) if row else 0) + 1
    conn.execute(
        text("INSERT INTO shops (shop_id, name, config, config_version) "
             "VALUES (:s, :n, CAST(:c AS jsonb), :v) ON CONFLICT (shop_id) DO UPDATE SET "
             "name = excluded.name, config = excluded.config, "
             "config_version = excluded.config_version, updated_at = now()"),
        {"s": config.shop_id, "n": config.name, "c": config.model_dump_json(), "v": version},
    )
    conn.execute(
        text("INSERT INTO shop_config_history (shop_id, version, config, applied_by) "
             "VALUES (:s, :v, CAST(:c AS jsonb), :by)"),
        {"s": config.shop_id, "v": version, "c": config.model_dump_json(), "by": applied_by},
    )
    return version, True, old
