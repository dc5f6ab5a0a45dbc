"""What operators do: refusals that change nothing, and the audit log of what they changed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection


class OperationRefused(ValueError):
    """An operator request that cannot be carried out as asked; nothing was changed."""


@dataclass(frozen=True)
class Origin:
    """Where an operator's request came from: the client's address and the request's id."""

    address: str | None = None
    request_id: str | None = None


# Set by the HTTP API for the request being served (copied into the threads it runs use cases
# in); the CLI leaves it empty.
_origin: ContextVar[Origin | None] = ContextVar("audit_origin", default=None)


@contextlib.contextmanager
def origin(address: str | None, request_id: str | None) -> Iterator[None]:
    """Audit entries written inside come from this address and request."""
    reset = _origin.set(Origin(address, request_id))
    try:
        yield
    finally:
        _origin.reset(reset)


def audit(conn: Connection, shop_id: str | None, member_id: str | None, action: str,
          operator: str, detail: dict[str, Any]) -> None:
    """Record an operator action in the caller's transaction (the log is append-only: the
    database refuses to change or delete an entry). `shop_id` None: an action over every shop
    (a platform token's creation)."""
    where = _origin.get() or Origin()
    address, request_id = where.address, where.request_id
    conn.exec_driver_sql(
        "INSERT INTO audit_log (shop_id, member_id, action, detail, operator, address, "
        "request_id) VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s)",
        (shop_id, member_id, action, json.dumps(detail, default=str, ensure_ascii=False),
         operator, address, request_id),
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
