"""Member records as operators and the storefront read them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from shared.money import CENT, from_cents

MEMBER_COLUMNS = ("member_id", "completed_trades", "spend", "aov", "gross", "refunded",
                  "first_purchase_at", "last_purchase_at", "region")


def member_records(conn: Connection, shop_id: str) -> list[dict[str, Any]]:
    """Every member of one shop, by member id; money as two-decimal strings, times in UTC."""
    rows = conn.execute(
        text("SELECT member_id, completed_trades, spend_cents, gross_cents, refunded_cents, "
             "first_purchase_at, last_purchase_at, region FROM members "
             "WHERE shop_id = :shop ORDER BY member_id"),
        {"shop": shop_id},
    ).all()
    return [
        {
            "member_id": r.member_id,
            "completed_trades": r.completed_trades,
            "spend": str(from_cents(r.spend_cents)),
            # Average order value: net spend per completed trade.
            "aov": str((from_cents(r.spend_cents) / r.completed_trades).quantize(CENT))
            if r.completed_trades else "0.00",
            "gross": str(from_cents(r.gross_cents)),
            "refunded": str(from_cents(r.refunded_cents)),
            "first_purchase_at": _iso(r.first_purchase_at),
            "last_purchase_at": _iso(r.last_purchase_at),
            "region": r.region,
        }
        for r in rows
    ]


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None
