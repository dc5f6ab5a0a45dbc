"""Members' personal data (name, phone, address): stored apart, shown masked unless allowed.

Masking keeps what an operator needs to recognise a customer on the phone and nothing more:

| field   | stored               | shown masked     |
| ------- | -------------------- | ---------------- |
| phone   | 13812345678          | 138****5678      |
| name    | 张三丰 / Ann Lee      | 张** / A******   |
| address | 上海市浦东新区xx路1号   | 上海市浦东新****  |

A phone keeps its first three and last four digits (shorter numbers keep the last two only), a
name its first character, an address its first six characters (the province and city, which
the region already tells). Personal data is only ever unmasked for a credential with `pii`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from shared.audit import audit

FIELDS = ("name", "phone", "address")


def mask_phone(phone: str) -> str:
    digits = len(phone)
    if digits >= 11:
        return phone[:3] + "*" * (digits - 7) + phone[-4:]
    if digits > 4:
        return "*" * (digits - 2) + phone[-2:]
    return "*" * digits


def mask_name(name: str) -> str:
    return name[:1] + "*" * max(1, len(name) - 1) if name else name


def mask_address(address: str) -> str:
    return address[:6] + "****" if len(address) > 6 else "****" if address else address


MASKS = {"name": mask_name, "phone": mask_phone, "address": mask_address}


def shown(profile: dict[str, Any], unmasked: bool) -> dict[str, Any]:
    """A profile's personal fields as a caller may see them."""
    if unmasked:
        return {f: profile.get(f) for f in FIELDS}
    return {f: MASKS[f](v) if (v := profile.get(f)) else v for f in FIELDS}


def profiles(conn: Connection, shop_id: str, member_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Stored personal data of these members (erased ones say so)."""
    rows = conn.exec_driver_sql(
        "SELECT member_id, name, phone, address, erased_at FROM member_profiles "
        "WHERE shop_id = %s AND member_id = ANY(%s)", (shop_id, member_ids)).all()
    return {r.member_id: {"name": r.name, "phone": r.phone, "address": r.address,
                          "erased": r.erased_at is not None} for r in rows}


def with_profiles(conn: Connection, shop_id: str, rows: list[dict[str, Any]],
                  unmasked: bool) -> list[dict[str, Any]]:
    """Member records with their personal data added, masked unless `unmasked`."""
    found = profiles(conn, shop_id, [r["member_id"] for r in rows])
    empty = {f: None for f in FIELDS}
    return [r | (shown(found[r["member_id"]], unmasked) if r["member_id"] in found else empty)
            for r in rows]


def erase(conn: Connection, shop_id: str, member_id: str, operator: str, reason: str) -> bool:
    """Remove a member's personal data for good (audited): the profile is emptied and marked
    erased, so neither an import nor a replay brings it back (events carry no personal data).
    Figures stay under the member id, which is the shop's pseudonymous key. Returns False if
    the shop has no such member."""
    exists = conn.exec_driver_sql(
        "SELECT 1 FROM members WHERE shop_id = %s AND member_id = %s FOR UPDATE",
        (shop_id, member_id)).first()
    if exists is None:
        return False
    conn.exec_driver_sql(
        "INSERT INTO member_profiles AS p (shop_id, member_id, source, erased_at) "
        "VALUES (%s, %s, 'erasure', now()) ON CONFLICT (shop_id, member_id) DO UPDATE "
        "SET name = NULL, phone = NULL, address = NULL, erased_at = coalesce(p.erased_at, now()), "
        "updated_at = now()", (shop_id, member_id))
    audit(conn, shop_id, member_id, "member.erase", operator, {"reason": reason})
    return True
