"""Member lists as files: the columns, personal data masked unless allowed, CSV and XLSX."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from memberflow.readmodel import MEMBER_COLUMNS, member_records
from shared import profiles
from shared.filters import MemberFilter

EXPORT_COLUMNS = (*MEMBER_COLUMNS, *profiles.FIELDS)


def export_rows(conn: Connection, shop: str, selection: MemberFilter, sort: str,
                unmasked: bool) -> list[dict[str, Any]]:
    """The selected members with their personal data (masked unless `unmasked`)."""
    return profiles.with_profiles(conn, shop, member_records(conn, shop, selection, sort=sort),
                                  unmasked)


def flatten(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lists (tags) as one cell, `|` between their items."""
    return [{k: "|".join(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    """UTF-8 with a byte-order mark, so Excel reads Chinese names right."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(EXPORT_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8-sig")


MONEY = {"discount", "spend", "aov", "gross", "refunded", "p_alive", "expected_purchases",
         "expected_value"}   # and the model's figures: numbers
TIMES = {"first_purchase_at", "last_purchase_at"}


def _cell(column: str, value: Any) -> Any:
    """Money as a number, times as date-times (UTC), the rest (ids, phones) as text."""
    if value is None or value == "":
        return None
    if column in MONEY:
        return Decimal(value)
    if column in TIMES:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).replace(tzinfo=None)
    return value


def xlsx_bytes(rows: list[dict[str, Any]]) -> bytes:
    """Headers in words (times in UTC), money as numbers, purchase times as date-times."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("members")
    sheet.append([c.replace("_", " ") + (" (UTC)" if c in TIMES else "")
                  for c in EXPORT_COLUMNS])
    for r in rows:
        sheet.append([_cell(c, r.get(c)) for c in EXPORT_COLUMNS])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
