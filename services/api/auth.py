"""Who is asking, and may they: bearer tokens checked against the shop in the path.

Every admin route names its shop in the path and the right it needs. The answer never tells a
caller about a shop their token does not cover:

- no token, a malformed, unknown, expired or revoked one: 401 (with `WWW-Authenticate`);
- a token for other shops, or a shop that does not exist: 404, the same answer either way;
- the shop is theirs but the token lacks the right: 403 naming the right.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Annotated
from uuid import uuid4

from fastapi import Depends, HTTPException, Path, Request
from sqlalchemy import Engine

from shared import tokens
from shared.keys import bearer, verified
from shared.shops import shop_exists
from shared.tokens import Credential

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Ids in paths and queries: as the event contract has them (1-128 characters, no control
# characters), so a NUL or an overlong id is a 422 naming the parameter.
ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
TEXT_PATTERN = r"^[^\x00]*$"


def request_id(request: Request) -> str:
    """The caller's X-Request-Id when it is a sane one, else a new id (set by the middleware)."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid4().hex[:16]


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def unauthorized(why: str) -> HTTPException:
    return HTTPException(401, why, headers={"WWW-Authenticate": 'Bearer realm="memberflow"'})


async def credential(request: Request) -> Credential:
    """The verified bearer token of the request, or 401."""
    header = request.headers.get("authorization", "")
    if not header:
        raise unauthorized("no token: send `Authorization: Bearer <token>` (memberflow tokens "
                           "create)")
    token = bearer(header)
    if token is None:
        raise unauthorized("Authorization must be `Bearer <token>`")
    found = await verified(engine_of(request), token)
    if found is None:
        raise unauthorized("token unknown, expired or revoked")
    return found


@dataclass(frozen=True)
class Access:
    """A request allowed to act on one shop: the shop, and who acts (the token's name)."""

    shop_id: str
    credential: Credential

    @property
    def operator(self) -> str:
        return f"token:{self.credential.name}"

    def may(self, right: str) -> bool:
        return self.credential.may(self.shop_id, right)


def no_shop(shop_id: str) -> HTTPException:
    return HTTPException(404, f"no shop {shop_id!r}")


async def authorize(engine: Engine, who: Credential, shop_id: str, *rights: str) -> Access:
    """The token must cover the shop, which must exist (404 either way), and hold every one of
    `rights` (403)."""
    if not who.covers(shop_id):
        raise no_shop(shop_id)

    def exists() -> bool:
        with engine.connect() as conn:
            return shop_exists(conn, shop_id)

    if not await asyncio.to_thread(exists):
        raise no_shop(shop_id)
    for right in rights:
        if right not in who.rights:
            raise HTTPException(403, f"this token lacks the {right!r} right for shop "
                                     f"{shop_id!r}")
    return Access(shop_id, who)


class Needs:
    """A dependency: the token must cover the path's shop, which must exist, with `right`."""

    def __init__(self, *rights: str) -> None:
        assert rights and all(r in tokens.RIGHTS for r in rights), rights
        self.rights = rights

    async def __call__(self, request: Request,
                       shop_id: Annotated[str, Path(pattern=ID_PATTERN)],
                       who: Annotated[Credential, Depends(credential)]) -> Access:
        return await authorize(engine_of(request), who, shop_id, *self.rights)


Reader = Annotated[Access, Depends(Needs("read"))]
Writer = Annotated[Access, Depends(Needs("write"))]
Exporter = Annotated[Access, Depends(Needs("export"))]
Admin = Annotated[Access, Depends(Needs("admin"))]
Eraser = Annotated[Access, Depends(Needs("write", "pii"))]
