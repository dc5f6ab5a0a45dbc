"""What operators do: refusals that change nothing, and the audit log of what they changed."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection


class OperationRefused(ValueError):
    """An operator request that cannot be carried out as asked; nothing was changed."""


def audit(conn: Connection, shop_id: str, member_id: str | None, action: str,
          operator: str, detail: dict[str, Any]) -> None:
    """Record an operator action in the caller's transaction."""
    conn.exec_driver_sql(
        "INSERT INTO audit_log (shop_id, member_id, action, detail, operator) "
        "VALUES (%s, %s, %s, %s::jsonb, %s)",
        (shop_id, member_id, action, json.dumps(detail, default=str), operator),
    )
