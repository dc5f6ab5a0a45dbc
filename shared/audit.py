"""What operators do: refusals that change nothing, and the audit log of what they changed."""

from __future__ import annotations

import json
from typing import Any, Literal

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


def flag_members(conn: Connection, shop_id: str, member_ids: list[str],
                 flag: Literal["blacklisted", "important"], value: bool, operator: str,
                 reason: str) -> int:
    """Set an operator's mark on members (each change audited with the reason); returns how
    many members changed."""
    if not reason.strip():
        raise OperationRefused(f"a reason is required to change the {flag} mark")
    changed = [r[0] for r in conn.exec_driver_sql(
        f"UPDATE members SET {flag} = %s, updated_at = now() "
        f"WHERE shop_id = %s AND member_id = ANY(%b) AND {flag} <> %s RETURNING member_id",
        (value, shop_id, member_ids, value)).all()]
    action = {"blacklisted": "blacklist", "important": "important"}[flag]
    for member_id in sorted(changed):
        audit(conn, shop_id, member_id, f"{action}.{'add' if value else 'remove'}", operator,
              {"reason": reason})
    return len(changed)
