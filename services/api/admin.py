"""Admin routes under `/api/v1`: what an operator reads and does, one shop at a time.

Each route states the right it needs (`Reader`, `Writer`, `Exporter`, `Admin`; see
`services.api.auth`) and calls the same use case as the CLI. Writes and exports are audited
with the token's name, the client's address and the request id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import Connection

from memberflow.exporting import csv_bytes, export_rows, flatten, xlsx_bytes
from memberflow.importing import ImportRefused, import_members
from memberflow.readmodel import (
    campaign_history,
    count_members,
    level_history,
    member_records,
    tag_history,
)
from services.api.auth import (
    ID_PATTERN,
    TEXT_PATTERN,
    Admin,
    Eraser,
    Exporter,
    Reader,
    Writer,
    credential,
    engine_of,
)
from services.ingest.redrive import redrive
from services.tagging.operations import set_important
from services.tiering import operations as tiering_ops
from shared import deadletter, tokens
from shared.audit import audit
from shared.filters import MemberFilter
from shared.profiles import erase as erase_profile
from shared.profiles import with_profiles
from shared.tokens import Credential

T = TypeVar("T")
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
MemberId = Annotated[str, PathParam(pattern=ID_PATTERN)]
MAX_PAGE = 500
MAX_IMPORT_BYTES = 64 * 2**20
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class RequestRefused(Exception):
    """A request whose input has several problems: 422 with each of them."""

    def __init__(self, message: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.problems = problems


async def in_transaction(request: Request, work: Callable[[Connection], T]) -> T:
    """Run a use case in one transaction, in a thread (the drivers block)."""
    engine = engine_of(request)

    def run() -> T:
        with engine.begin() as conn:
            return work(conn)

    return await asyncio.to_thread(run)


# --- models (the OpenAPI document is derived from them) -------------------------------------


class Member(BaseModel):
    member_id: str
    level: int
    level_name: str | None
    discount: str = Field(description="price factor of the next order, e.g. \"0.95\"")
    blacklisted: bool
    important: bool
    abc_class: str | None
    tags: list[str]
    completed_trades: int
    spend: str = Field(description="net spend, two decimals")
    aov: str
    gross: str
    refunded: str
    first_purchase_at: str | None
    last_purchase_at: str | None
    region: str | None
    rfm_segment: str | None = Field(None, description="RFM segment id; none: no purchase in "
                                                      "the shop's RFM period")
    rfm_r: int | None = None
    rfm_f: int | None = None
    rfm_m: int | None = None
    p_alive: str | None = Field(None, description="predicted probability of being active")
    expected_purchases: str | None = Field(None, description="predicted purchases over the "
                                                             "shop's horizon")
    expected_value: str | None = Field(None, description="predicted value over the horizon")
    name: str | None = Field(None, description="personal data: masked unless the token has pii")
    phone: str | None = Field(None, description="personal data: masked unless the token has pii")
    address: str | None = Field(None,
                                description="personal data: masked unless the token has pii")


class MemberPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[Member]


class MemberRecord(Member):
    level_history: list[dict[str, Any]]
    tag_history: list[dict[str, Any]]
    campaign_history: list[dict[str, Any]]


class Marked(BaseModel):
    reason: str = Field(min_length=1, max_length=500, pattern=TEXT_PATTERN,
                        description="why (recorded)")


class MarkResult(BaseModel):
    member_id: str
    changed: bool


class MemberQuery(BaseModel):
    """The same conditions as `GET members` (all must hold)."""

    level: list[int] = Field(default_factory=list)
    abc: list[Literal["A", "B", "C", "none"]] = Field(default_factory=list)
    min_spend: Decimal | None = None
    max_spend: Decimal | None = None
    dormant_days: int | None = Field(None, ge=1)
    tag: list[Id] = Field(default_factory=list)
    important: bool | None = None
    blacklisted: bool | None = None
    rfm_segment: list[Id] = Field(default_factory=list,
                                  description='RFM segment ids (any of them); "none": no '
                                              "purchase in the RFM period")
    max_p_alive: Decimal | None = Field(None, ge=0, le=1, decimal_places=4)
    min_expected_value: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=2)

    def selection(self, member_ids: list[str] | tuple[str, ...] = ()) -> MemberFilter:
        return MemberFilter(member_ids=tuple(member_ids), levels=tuple(self.level),
                            abc_classes=tuple(self.abc), min_spend=self.min_spend,
                            max_spend=self.max_spend, dormant_days=self.dormant_days,
                            blacklisted=self.blacklisted, tags=tuple(self.tag),
                            important=self.important, rfm_segments=tuple(self.rfm_segment),
                            max_p_alive=self.max_p_alive,
                            min_expected_value=self.min_expected_value)


class LevelSet(BaseModel):
    level: int = Field(ge=0)
    reason: str = Field(min_length=1, max_length=500, pattern=TEXT_PATTERN)
    members: list[Id] = Field(default_factory=list, max_length=10_000,
                               description="member ids; or a filter")
    filter: MemberQuery | None = None
    everyone: bool = Field(False, description="every member of the shop (when no filter)")


class ManualOutcome(BaseModel):
    selected: int
    changed: int
    skipped_blacklisted: int = 0
    missing: list[str]


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=TEXT_PATTERN)
    rights: list[str] = Field(min_length=1)
    expires_in: str | None = Field(None, description="30d, 12h or 90m; none: until revoked")


class TokenOut(BaseModel):
    id: int
    name: str
    rights: list[str]
    expires_at: str | None
    token: str = Field(description="shown once; only its digest is kept")


class Me(BaseModel):
    name: str
    shops: list[str] | Literal["all"]
    rights: list[str]


# --- query parameters ------------------------------------------------------------------------


def member_query(
    level: Annotated[list[int], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
    abc: Annotated[list[Literal["A", "B", "C", "none"]], Query()] = [],  # noqa: B006
    min_spend: Annotated[Decimal | None, Query(max_digits=14, decimal_places=2)] = None,
    max_spend: Annotated[Decimal | None, Query(max_digits=14, decimal_places=2)] = None,
    dormant_days: Annotated[int | None, Query(ge=1, le=36_500)] = None,
    tag: Annotated[list[Id], Query()] = [],  # noqa: B006
    important: bool | None = None,
    blacklisted: bool | None = None,
    rfm_segment: Annotated[list[Id], Query()] = [],  # noqa: B006
    max_p_alive: Annotated[Decimal | None, Query(ge=0, le=1, decimal_places=4)] = None,
    min_expected_value: Annotated[Decimal | None,
                                  Query(ge=0, max_digits=14, decimal_places=2)] = None,
) -> MemberQuery:
    return MemberQuery(level=level, abc=abc, min_spend=min_spend, max_spend=max_spend,
                       dormant_days=dormant_days, tag=tag, important=important,
                       blacklisted=blacklisted, rfm_segment=rfm_segment,
                       max_p_alive=max_p_alive, min_expected_value=min_expected_value)


Filters = Annotated[MemberQuery, Depends(member_query)]
Sort = Annotated[str, Query(description="member_id, level, spend, completed_trades, "
                                        "first_purchase_at, last_purchase_at, abc_class, "
                                        "rfm_segment, p_alive or expected_value; "
                                        "a leading - sorts descending", max_length=32)]


def _imported(done: Any) -> dict[str, Any]:
    return {"rows": done.rows, "imported_before": done.already,
            "members_created": done.members_created,
            "profiles_changed": done.profiles_changed, "regions_set": done.regions_set,
            "levels_changed": done.levels_changed, "tags_added": done.tags_added,
            "erased_not_restored": done.erased_skipped}


def _refusal(exc: ImportRefused) -> tuple[str, list[dict[str, Any]]]:
    return str(exc).split(":", 1)[0], [{"line": p.line, "field": p.column, "problem": p.problem}
                                       for p in exc.problems]


async def _streamed(run: Callable[[Callable[[int], None] | None], Awaitable[Any]]
                    ) -> AsyncIterator[bytes]:
    """An import's progress as it checks the rows, then its outcome, a JSON line each."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def progress(rows: int) -> None:    # called from the import's thread
        loop.call_soon_threadsafe(lines.put_nowait, {"checked": rows})

    task = asyncio.ensure_future(run(progress))
    task.add_done_callback(lambda _: lines.put_nowait(None))
    while (line := await lines.get()) is not None:
        yield json.dumps(line).encode() + b"\n"
    try:
        last: dict[str, Any] = {"imported": _imported(task.result())}
    except ImportRefused as exc:
        error, problems = _refusal(exc)
        last = {"refused": {"error": error, "problems": problems}}
    yield json.dumps(last, ensure_ascii=False).encode() + b"\n"


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1")

    @api.get("/me", response_model=Me, tags=["access"])
    async def me(who: Annotated[Credential, Depends(credential)]) -> Me:
        """The token's name, shops and rights (what the console shows after sign-in)."""
        return Me(name=who.name, shops=sorted(who.shops) if who.shops is not None else "all",
                  rights=sorted(who.rights))

    # --- members -------------------------------------------------------------------------

    @api.get("/shops/{shop_id}/members", response_model=MemberPage, tags=["members"])
    async def list_members(request: Request, access: Reader, filters: Filters,
                           member: Annotated[list[Id], Query()] = [],  # noqa: B006
                           sort: Sort = "member_id",
                           limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
                           offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        """Members matching every given filter, a page at a time, with the total."""
        selection = filters.selection(member)

        def work(conn: Connection) -> dict[str, Any]:
            return {"total": count_members(conn, access.shop_id, selection), "limit": limit,
                    "offset": offset,
                    "items": with_profiles(conn, access.shop_id, member_records(
                        conn, access.shop_id, selection, sort=sort, limit=limit,
                        offset=offset), access.may("pii"))}

        return await in_transaction(request, work)

    @api.get("/shops/{shop_id}/members.{fmt}", tags=["members"], response_class=Response,
             responses={200: {"content": {"text/csv": {}, XLSX: {}}}})
    async def export_members(request: Request, access: Exporter, filters: Filters,
                             fmt: Literal["csv", "xlsx"],
                             member: Annotated[list[Id], Query()] = [],  # noqa: B006
                             sort: Sort = "member_id") -> Response:
        """The filtered member list as CSV or XLSX (needs `export`; personal data masked
        unless the token has `pii`; audited)."""
        selection = filters.selection(member)
        unmasked = access.may("pii")

        def work(conn: Connection) -> list[dict[str, Any]]:
            rows = export_rows(conn, access.shop_id, selection, sort, unmasked)
            audit(conn, access.shop_id, None, "members.export", access.operator,
                  {"format": fmt, "rows": len(rows), "unmasked": unmasked,
                   "filter": repr(selection)})
            return rows

        flat = flatten(await in_transaction(request, work))
        body, media = ((xlsx_bytes(flat), XLSX) if fmt == "xlsx"
                       else (csv_bytes(flat), "text/csv; charset=utf-8"))
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return Response(body, media_type=media, headers={
            "Content-Disposition":
                f'attachment; filename="{access.shop_id}-members-{stamp}.{fmt}"'})

    @api.post("/shops/{shop_id}/members/import", tags=["members"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "text/csv": {"schema": {"type": "string"}},
                  XLSX: {"schema": {"type": "string", "format": "binary"}}}}})
    async def import_file(request: Request, access: Writer,
                          file_name: Annotated[str, Query(
                              pattern=r"^[^/\\]{1,200}\.(csv|xlsx|CSV|XLSX)$",
                              description="the file's name (its extension says its format)")]
                          ) -> Any:
        """Import customers from a CSV or XLSX body: all rows or none, every problem named by
        line and column (422); the same file again changes nothing (audited).

        With `Accept: application/x-ndjson` the answer streams instead: a line
        `{"checked": N}` every 10,000 rows, then one last line, `{"imported": {...}}` or
        `{"refused": {"error": ..., "problems": [...]}}` (nothing imported)."""
        data = await request.body()
        if len(data) > MAX_IMPORT_BYTES:
            raise HTTPException(413, f"body: larger than {MAX_IMPORT_BYTES // 2**20} MiB; "
                                     "split the file")
        topics = request.app.state.topics

        def run(progress: Callable[[int], None] | None) -> Awaitable[Any]:
            return in_transaction(request, lambda conn: import_members(
                conn, topics, access.shop_id, file_name, data, access.operator, progress))

        if "application/x-ndjson" in request.headers.get("accept", ""):
            return StreamingResponse(_streamed(run), media_type="application/x-ndjson")
        try:
            done = await run(None)
        except ImportRefused as exc:
            raise RequestRefused(*_refusal(exc)) from None
        return _imported(done)

    @api.delete("/shops/{shop_id}/members/{member_id}/personal-data", tags=["members"])
    async def erase(request: Request, access: Eraser, member_id: MemberId,
                    reason: Annotated[str, Query(min_length=1, max_length=500,
                                                 pattern=TEXT_PATTERN)]
                    ) -> dict[str, Any]:
        """Erase a member's personal data for good (needs `write` and `pii`; audited). Their
        figures stay under the member id; no import or replay brings the data back."""
        done = await in_transaction(request, lambda conn: erase_profile(
            conn, access.shop_id, member_id, access.operator, reason))
        if not done:
            raise HTTPException(404, f"no member {member_id!r} in shop {access.shop_id!r}")
        return {"member_id": member_id, "erased": True}

    @api.get("/shops/{shop_id}/members/{member_id}", response_model=MemberRecord,
             tags=["members"])
    async def get_member(request: Request, access: Reader, member_id: MemberId) -> dict[str, Any]:
        """A member's record: figures, level and how they got it, tags with their causes."""

        def work(conn: Connection) -> dict[str, Any] | None:
            rows = member_records(conn, access.shop_id, MemberFilter(member_ids=(member_id,)))
            if not rows:
                return None
            rows = with_profiles(conn, access.shop_id, rows, access.may("pii"))
            return rows[0] | {"level_history": level_history(conn, access.shop_id, member_id),
                              "tag_history": tag_history(conn, access.shop_id, member_id),
                              "campaign_history": campaign_history(conn, access.shop_id,
                                                                   member_id)}

        found = await in_transaction(request, work)
        if found is None:
            raise HTTPException(404, f"no member {member_id!r} in shop {access.shop_id!r}")
        return found

    def mark(flag: Literal["blacklisted", "important"], value: bool) -> Any:
        async def route(request: Request, access: Writer, member_id: MemberId,
                        body: Marked) -> MarkResult:
            def work(conn: Connection) -> int | None:
                if not member_records(conn, access.shop_id,
                                      MemberFilter(member_ids=(member_id,))):
                    return None
                if flag == "blacklisted":
                    return tiering_ops.set_blacklist(conn, access.shop_id, [member_id], value,
                                                     access.operator, body.reason)
                return set_important(conn, access.shop_id, [member_id], value,
                                     access.operator, body.reason)

            changed = await in_transaction(request, work)
            if changed is None:
                raise HTTPException(404, f"no member {member_id!r} in shop {access.shop_id!r}")
            return MarkResult(member_id=member_id, changed=bool(changed))
        return route

    marks: tuple[tuple[Literal["blacklisted", "important"], str], ...] = (
        ("blacklisted", "blacklist"), ("important", "important"))
    for flag, path in marks:
        api.add_api_route(f"/shops/{{shop_id}}/members/{{member_id}}/{path}",
                          mark(flag, True), methods=["PUT"], response_model=MarkResult,
                          tags=["members"], summary=f"Put a member on the {path} (audited)")
        api.add_api_route(f"/shops/{{shop_id}}/members/{{member_id}}/{path}",
                          mark(flag, False), methods=["DELETE"], response_model=MarkResult,
                          tags=["members"], summary=f"Take a member off the {path} (audited)")

    @api.get("/shops/{shop_id}/blacklist", tags=["members"])
    async def blacklist(request: Request, access: Reader) -> list[dict[str, Any]]:
        """Blacklisted members, with who put them there, when and why."""
        return await in_transaction(request, lambda conn: tiering_ops.blacklisted(
            conn, access.shop_id))

    @api.post("/shops/{shop_id}/levels", response_model=ManualOutcome, tags=["levels"])
    async def set_levels(request: Request, access: Writer, body: LevelSet) -> ManualOutcome:
        """Set members' level by hand (up or down; audited). Name the members, give a filter,
        or `everyone: true`."""
        query = body.filter or MemberQuery()
        selection = query.selection(body.members)
        if selection.empty and not body.everyone:
            raise HTTPException(422, "members: name the members, give a filter, or set "
                                     "everyone to true")
        topic = request.app.state.topics.member_events

        def work(conn: Connection) -> tiering_ops.ManualResult:
            return tiering_ops.set_level(conn, topic, access.shop_id, selection, body.level,
                                         access.operator, body.reason, datetime.now(UTC))

        result = await in_transaction(request, work)
        return ManualOutcome(selected=result.selected, changed=result.changed,
                             skipped_blacklisted=result.skipped_blacklisted,
                             missing=result.missing)

    # --- dead letters and the audit log ----------------------------------------------------

    @api.get("/shops/{shop_id}/dead-letters", tags=["dead letters"])
    async def dead_letters(request: Request, access: Reader,
                           status: Literal["parked", "redriven"] | None = None,
                           limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
                           before_id: Annotated[int | None, Query(ge=1)] = None
                           ) -> dict[str, Any]:
        """The shop's dead letters, newest first, with reasons and the total."""
        return await in_transaction(request, lambda conn: deadletter.listing(
            conn, shop_id=access.shop_id, status=status, limit=limit, before_id=before_id))

    @api.post("/shops/{shop_id}/dead-letters/{letter_id}/redrive", tags=["dead letters"],
              openapi_extra={"requestBody": {"required": False, "content": {
                  "application/json": {"schema": {"type": "object"}}}}})
    async def redrive_letter(request: Request, access: Writer, letter_id: int
                             ) -> dict[str, Any]:
        """Submit a parked input again, as it was or corrected (the body: the corrected event
        as JSON); accepted, the letter is marked redriven (audited)."""
        def owned(conn: Connection) -> bool:
            return conn.exec_driver_sql(
                "SELECT 1 FROM dead_letters WHERE id = %s AND shop_id = %s",
                (letter_id, access.shop_id)).first() is not None

        if not await in_transaction(request, owned):
            raise HTTPException(404, f"no dead letter {letter_id} in shop {access.shop_id!r}")
        producer = getattr(request.app.state, "producer", None)
        if producer is None:
            raise HTTPException(503, "this process has no broker to re-drive to")
        body = await request.body()
        [done] = await redrive(engine_of(request), producer, request.app.state.settings,
                               [letter_id], access.operator, body or None)
        if done.verdict is None:
            raise HTTPException(409, f"dead letter {letter_id}: {done.why_not}")
        answer: dict[str, Any] = {"letter_id": letter_id, "redriven": done.verdict.accepted}
        return answer | done.verdict.as_dict()

    @api.get("/shops/{shop_id}/audit", tags=["access"])
    async def audit_log(request: Request, access: Admin,
                        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                        before_id: Annotated[int | None, Query(ge=1)] = None
                        ) -> list[dict[str, Any]]:
        """Who did what to this shop, when and from where, newest first."""
        def work(conn: Connection) -> list[dict[str, Any]]:
            rows = conn.exec_driver_sql(
                "SELECT id, member_id, action, detail, operator, address, request_id, at "
                "FROM audit_log WHERE shop_id = %s AND (%s::bigint IS NULL OR id < %s) "
                "ORDER BY id DESC LIMIT %s",
                (access.shop_id, before_id, before_id, limit)).all()
            return [{"id": r.id, "member_id": r.member_id, "action": r.action,
                     "detail": r.detail, "operator": r.operator, "address": r.address,
                     "request_id": r.request_id, "at": r.at.isoformat()} for r in rows]
        return await in_transaction(request, work)

    # --- tokens ----------------------------------------------------------------------------

    @api.get("/shops/{shop_id}/tokens", tags=["access"])
    async def list_tokens(request: Request, access: Admin) -> list[dict[str, Any]]:
        """Tokens that reach this shop (platform tokens included); never their secrets."""
        return await in_transaction(request, lambda conn: tokens.listing(conn, access.shop_id))

    @api.post("/shops/{shop_id}/tokens", response_model=TokenOut, status_code=201,
              tags=["access"])
    async def create_token(request: Request, access: Admin, body: TokenIn) -> TokenOut:
        """A token for this shop only (audited). It can hold no right the caller lacks."""
        wanted = tokens.parse_rights(body.rights)
        beyond = sorted(set(wanted) - access.credential.rights)
        if beyond:
            raise HTTPException(403, f"rights: this token cannot grant {', '.join(beyond)}, "
                                     "which it does not hold")
        lifetime = tokens.parse_duration(body.expires_in) if body.expires_in else None
        created = await in_transaction(request, lambda conn: tokens.create(
            conn, name=body.name, shops=[access.shop_id], rights=wanted, expires_in=lifetime,
            operator=access.operator))
        return TokenOut(id=created.token_id, name=created.name, rights=list(created.rights),
                        expires_at=created.expires_at.isoformat() if created.expires_at
                        else None, token=created.token)

    @api.delete("/shops/{shop_id}/tokens/{token_id}", tags=["access"])
    async def revoke_token(request: Request, access: Admin, token_id: int) -> dict[str, Any]:
        """Revoke a token of this shop alone (audited); a platform token is revoked from the
        command line."""
        done = await in_transaction(request, lambda conn: tokens.revoke(
            conn, token_id, operator=access.operator, shop_id=access.shop_id))
        if not done:
            raise HTTPException(404, f"no active token {token_id} for shop {access.shop_id!r} "
                                     "alone")
        return {"id": token_id, "revoked": True}

    return api
