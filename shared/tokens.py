"""API tokens: who may do what, for which shops.

A token is `mf_` and 43 URL-safe characters (256 random bits), shown once when it is created;
only its SHA-256 digest is stored. A token is for a list of shops, or for every shop (a platform
token), and carries rights:

| right  | allows |
| ------ | ------ |
| read   | members, records, reports, campaigns, dead letters, the configuration |
| write  | manual levels, tags, blacklist and important marks, campaigns, re-driving letters |
| export | member lists as files |
| pii    | personal data unmasked (name, phone, address) |
| admin  | tokens and the shop configuration |
| ingest | `POST /v1/events` for the shop (storefront keys) |

No right implies another: a console operator gets `read` and maybe `write`, a storefront only
`ingest`. A token past its expiry or revoked is refused as if it did not exist (401).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from shared.audit import OperationRefused, audit

RIGHTS = ("read", "write", "export", "pii", "admin", "ingest")
PREFIX = "mf_"
_TOKEN = re.compile(r"mf_[A-Za-z0-9_-]{43}")
_DURATION = re.compile(r"(\d+)([dhm])")


@dataclass(frozen=True)
class Credential:
    """A verified token: its name (who acts, in the audit log), shops (None: every shop), rights."""

    token_id: int
    name: str
    shops: frozenset[str] | None
    rights: frozenset[str]

    def covers(self, shop_id: str) -> bool:
        return self.shops is None or shop_id in self.shops

    def may(self, shop_id: str, right: str) -> bool:
        return self.covers(shop_id) and right in self.rights


def parse_rights(text: str | Iterable[str]) -> tuple[str, ...]:
    """`read,write` -> ("read", "write"); an unknown right is refused by name."""
    items = text.split(",") if isinstance(text, str) else list(text)
    rights = [r.strip().lower() for r in items if r.strip()]
    unknown = [r for r in rights if r not in RIGHTS]
    if unknown:
        raise OperationRefused(f"rights: unknown {', '.join(map(repr, unknown))}; "
                               f"choose from {', '.join(RIGHTS)}")
    if not rights:
        raise OperationRefused(f"rights: name at least one of {', '.join(RIGHTS)}")
    return tuple(r for r in RIGHTS if r in rights)


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m` -> a timedelta (a token's lifetime)."""
    m = _DURATION.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise OperationRefused(f"expires_in: {text!r} is not a duration like 30d, 12h or 90m")
    n, unit = int(m.group(1)), m.group(2)
    return {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[unit]


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Created:
    token: str          # shown once, never stored
    token_id: int
    name: str
    shops: tuple[str, ...] | None
    rights: tuple[str, ...]
    expires_at: datetime | None


def create(conn: Connection, *, name: str, shops: Sequence[str] | None,
           rights: Sequence[str], expires_in: timedelta | None, operator: str) -> Created:
    """Make a token (audited in every shop it covers); returns it with the secret, once."""
    if not name.strip():
        raise OperationRefused("name: a token needs a name (it names who acted in the audit log)")
    if shops is not None:
        shops = tuple(sorted({s.strip() for s in shops if s.strip()}))
        if not shops:
            raise OperationRefused("shop: name at least one shop, or make a platform token")
    rights = parse_rights(rights)
    token = new_token()
    expires_at = datetime.now(UTC) + expires_in if expires_in is not None else None
    token_id = conn.exec_driver_sql(
        "INSERT INTO api_tokens (name, prefix, digest, shops, rights, created_by, expires_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (name.strip(), token[len(PREFIX):len(PREFIX) + 6], digest(token),
         list(shops) if shops is not None else None, list(rights), operator, expires_at),
    ).scalar_one()
    detail = {"token_id": token_id, "name": name.strip(), "rights": list(rights),
              "expires_at": expires_at.isoformat() if expires_at else None,
              "shops": list(shops) if shops is not None else "all"}
    for shop_id in shops if shops is not None else [None]:
        audit(conn, shop_id, None, "token.create", operator, detail)
    return Created(token, token_id, name.strip(), shops, rights, expires_at)


def verify(conn: Connection, token: str) -> Credential | None:
    """The credential of a live token, or None (unknown, malformed, expired or revoked)."""
    if not _TOKEN.fullmatch(token):
        return None
    row = conn.exec_driver_sql(
        "SELECT id, name, shops, rights, last_used_at < now() - interval '1 minute' "
        "OR last_used_at IS NULL AS stale FROM api_tokens WHERE digest = %s "
        "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        (digest(token),)).first()
    if row is None:
        return None
    if row.stale:   # "last used" to the minute: not a write per request
        conn.exec_driver_sql("UPDATE api_tokens SET last_used_at = now() WHERE id = %s",
                             (row.id,))
    return Credential(row.id, row.name, frozenset(row.shops) if row.shops is not None else None,
                      frozenset(row.rights))


def listing(conn: Connection, shop_id: str | None) -> list[dict[str, Any]]:
    """Tokens covering a shop (platform tokens included), or every token; never a secret."""
    where, params = ("WHERE shops IS NULL OR %s = ANY(shops)", (shop_id,)) if shop_id else ("", ())
    rows = conn.exec_driver_sql(
        "SELECT id, name, prefix, shops, rights, created_by, created_at, expires_at, revoked_at, "
        f"last_used_at FROM api_tokens {where} ORDER BY id", params).all()
    now = datetime.now(UTC)
    return [{
        "id": r.id, "name": r.name, "token": f"{PREFIX}{r.prefix}…",
        "shops": list(r.shops) if r.shops is not None else "all",
        "rights": list(r.rights), "created_by": r.created_by,
        "created_at": _iso(r.created_at), "expires_at": _iso(r.expires_at),
        "last_used_at": _iso(r.last_used_at),
        "status": "revoked" if r.revoked_at else
                  "expired" if r.expires_at and r.expires_at <= now else "active",
    } for r in rows]


def revoke(conn: Connection, token_id: int, *, operator: str, shop_id: str | None = None
           ) -> bool:
    """Revoke a token (audited). With `shop_id` (a shop's admin revoking), only a token for
    that shop alone: never a platform token or one that also covers other shops. Returns False
    if there was none to revoke."""
    scope = "" if shop_id is None else " AND shops IS NOT NULL AND shops <@ ARRAY[%s]::text[]"
    params: tuple[Any, ...] = (token_id,) if shop_id is None else (token_id, shop_id)
    row = conn.exec_driver_sql(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL"
        f"{scope} RETURNING name, shops", params).first()
    if row is None:
        return False
    for shop in row.shops if row.shops is not None else [None]:
        audit(conn, shop, None, "token.revoke", operator,
              {"token_id": token_id, "name": row.name})
    return True


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None
