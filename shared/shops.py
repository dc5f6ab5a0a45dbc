"""Storing shop configurations, versioned, with every applied version kept for audit."""

from __future__ import annotations

from sqlalchemy import Connection, text

from shared.shopconfig import ShopConfig


def apply_config(conn: Connection, config: ShopConfig, applied_by: str) -> tuple[int, bool]:
    """Store the configuration; returns (version, changed). An identical config is a no-op."""
    doc = config.model_dump(mode="json")
    row = conn.execute(
        text("SELECT config, config_version FROM shops WHERE shop_id = :s FOR UPDATE"),
        {"s": config.shop_id},
    ).first()
    if row is not None and row.config == doc:
        return int(row.config_version), False
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
    return version, True
