"""The web console: server-rendered pages over the same use cases and checks as the API.

Sign-in takes an API token; it is kept in an HttpOnly, SameSite=Strict cookie scoped to
`/console`, checked on every page exactly as the API checks a bearer token (a revoked or expired
token signs the operator out), and each sign-in is audited. Pages are Jinja2 templates with
autoescaping on, so ids and names from events can never become markup.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import Connection

from memberflow.abc_report import NoData, customer_abc, pareto_png, product_abc
from memberflow.campaign_report import NoCampaigns, campaign_report, conversions_png
from memberflow.readmodel import (
    SORTS,
    campaign_history,
    count_members,
    level_history,
    member_records,
    tag_history,
)
from services.api.admin import MemberQuery, in_transaction
from services.api.auth import Access, authorize, engine_of
from services.campaigns import operations as campaign_ops
from services.tagging import operations as tagging_ops
from services.tiering import operations as tiering_ops
from services.tiering.rfm import DEFAULT_SEGMENTS, segment_names
from shared import tokens
from shared.audit import OperationRefused, audit
from shared.filters import MemberFilter
from shared.keys import verified
from shared.profiles import with_profiles
from shared.shops import all_shop_ids, shop_configs
from shared.tokens import Credential

COOKIE = "mf_console"
PAGE = 50
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


class SignIn(Exception):
    """No live token in the cookie: send the operator to the sign-in page."""


async def _who(request: Request) -> Credential:
    token = request.cookies.get(COOKIE, "")
    found = await verified(engine_of(request), token) if token else None
    if found is None:
        raise SignIn
    return found


async def _access(request: Request, shop_id: str, right: str = "read") -> Access:
    return await authorize(engine_of(request), await _who(request), shop_id, right)


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


def _query_filters(request: Request) -> tuple[MemberQuery, list[str], str]:
    """The members page's filters from its query string (the same model as the API's)."""
    q = request.query_params
    raw: dict[str, Any] = {
        "level": [v for v in q.getlist("level") if v != ""],
        "abc": [v for v in q.getlist("abc") if v != ""],
        "tag": [v.strip() for v in q.getlist("tag") if v.strip()],
        "rfm_segment": [v for v in q.getlist("rfm_segment") if v != ""],
    }
    for name in ("min_spend", "max_spend", "dormant_days", "max_p_alive", "min_expected_value"):
        if q.get(name, "").strip():
            raw[name] = q[name].strip()
    for name in ("important", "blacklisted"):
        if q.get(name) in ("true", "false"):
            raw[name] = q[name] == "true"
    members = [m.strip() for m in q.get("member", "").split(",") if m.strip()]
    sort = q.get("sort") or "member_id"
    return MemberQuery.model_validate(raw), members, sort


def router() -> APIRouter:
    console = APIRouter(prefix="/console", include_in_schema=False)

    @console.get("/login")
    async def login_page(request: Request) -> Response:
        return _page(request, "login.html", error=None)

    @console.post("/login")
    async def login(request: Request) -> Response:
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        engine = engine_of(request)

        def check() -> Credential | None:
            with engine.begin() as conn:
                found = tokens.verify(conn, token)
                if found is not None:
                    for shop in sorted(found.shops) if found.shops is not None else [None]:
                        audit(conn, shop, None, "console.login", f"token:{found.name}", {})
                return found

        who = await asyncio.to_thread(check) if token else None
        if who is None:
            return _page(request, "login.html", status=401,
                         error="That token is unknown, expired or revoked.")
        answer = RedirectResponse("/console/", status_code=303)
        answer.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/console",
                          secure=request.url.scheme == "https", max_age=12 * 3600)
        return answer

    @console.post("/logout")
    async def logout() -> Response:
        answer = RedirectResponse("/console/login", status_code=303)
        answer.delete_cookie(COOKIE, path="/console")
        return answer

    @console.get("/")
    async def home(request: Request) -> Response:
        who = await _who(request)

        def shops(conn: Connection) -> list[dict[str, Any]]:
            ids = sorted(who.shops) if who.shops is not None else all_shop_ids(conn)
            configs = shop_configs(conn, ids)
            return [{"shop_id": s, "name": configs[s][1].name if s in configs else s,
                     "members": count_members(conn, s)} for s in ids]

        listed = await in_transaction(request, shops)
        if len(listed) == 1:
            return RedirectResponse(f"/console/shops/{urllib.parse.quote(listed[0]['shop_id'])}"
                                    "/members", status_code=303)
        return _page(request, "home.html", who=who, shops=listed)

    @console.get("/shops/{shop_id}/members")
    async def members(request: Request, shop_id: str) -> Response:
        access = await _access(request, shop_id)
        try:
            filters, ids, sort = _query_filters(request)
            page = max(1, int(request.query_params.get("page", "1") or 1))
        except (ValidationError, ValueError) as exc:
            return _members_error(request, access, exc)
        selection = filters.selection(ids)

        def work(conn: Connection) -> dict[str, Any]:
            config = shop_configs(conn, [shop_id]).get(shop_id)
            total = count_members(conn, shop_id, selection)
            rows = member_records(conn, shop_id, selection, sort=sort, limit=PAGE,
                                  offset=(page - 1) * PAGE)
            return {"total": total, "rows": rows, "config": config[1] if config else None}

        try:
            found = await in_transaction(request, work)
        except OperationRefused as exc:
            return _members_error(request, access, exc)
        pages = max(1, math.ceil(found["total"] / PAGE))
        config = found["config"]
        return _page(request, "members.html", access=access, shop_name=_shop_name(config,
                                                                                   shop_id),
                     rows=found["rows"], total=found["total"], page=min(page, pages),
                     pages=pages, filters=filters, member_text=", ".join(ids), sort=sort,
                     sorts=list(SORTS), ladder=_ladder(config), tags=_tags(config),
                     segments=_segments(config), query=_without_page(request), error=None)

    @console.get("/shops/{shop_id}/members/{member_id}")
    async def member(request: Request, shop_id: str, member_id: str) -> Response:
        access = await _access(request, shop_id)
        done = CHANGES.get(request.query_params.get("done", ""))
        return await _member_page(request, access, member_id,
                                  notice=done[1] if done else None)

    @console.post("/shops/{shop_id}/members/{member_id}")
    async def change_member(request: Request, shop_id: str, member_id: str) -> Response:
        """One change from the member page's forms, by the same use cases as the API
        (audited with the signed-in token's name); then back to the page."""
        _same_origin(request)
        access = await _access(request, shop_id, "write")
        form = {k: v[0].strip() for k, v in urllib.parse.parse_qs(
            (await request.body()).decode("utf-8", "replace")).items()}
        what, reason = form.get("change", ""), form.get("reason", "")
        if what not in CHANGES:
            raise HTTPException(422, f"change: {what!r} is not one of {', '.join(CHANGES)}")
        topics = request.app.state.topics
        now = datetime.now(UTC)
        only = MemberFilter(member_ids=(member_id,))

        def work(conn: Connection) -> bool:
            if not member_records(conn, shop_id, only):
                return False
            if not reason:
                raise OperationRefused("reason: say why (it is recorded with the change)")
            if what == "level":
                level = form.get("level", "")
                if not level.isdigit():
                    raise OperationRefused(f"level: {level!r} is not a level number")
                tiering_ops.set_level(conn, topics.member_events, shop_id, only, int(level),
                                      access.operator, reason, now)
            elif what in ("tag-add", "tag-remove"):
                use = tagging_ops.add_to if what == "tag-add" else tagging_ops.remove
                use(conn, topics.tag_events, shop_id, only, form.get("tag", ""),
                    access.operator, reason, now)
            elif what.endswith("blacklist"):
                tiering_ops.set_blacklist(conn, shop_id, [member_id], what == "blacklist",
                                          access.operator, reason)
            else:
                tagging_ops.set_important(conn, shop_id, [member_id], what == "important",
                                          access.operator, reason)
            return True

        try:
            found = await in_transaction(request, work)
        except OperationRefused as exc:
            return await _member_page(request, access, member_id, error=str(exc), status=422)
        if not found:
            raise HTTPException(404, f"no member {member_id!r} in shop {shop_id!r}")
        return RedirectResponse(
            f"/console/shops/{urllib.parse.quote(shop_id)}/members/"
            f"{urllib.parse.quote(member_id)}?done={what}", status_code=303)

    @console.get("/shops/{shop_id}/levels")
    async def levels(request: Request, shop_id: str) -> Response:
        access = await _access(request, shop_id)
        found = await in_transaction(request, lambda conn: (
            tiering_ops.level_overview(conn, shop_id), shop_configs(conn, [shop_id])))
        rows, configs = found
        config = configs[shop_id][1] if shop_id in configs else None
        return _page(request, "levels.html", access=access, levels=rows,
                     shop_name=_shop_name(config, shop_id))

    @console.get("/shops/{shop_id}/tags")
    async def tags(request: Request, shop_id: str) -> Response:
        access = await _access(request, shop_id)
        rows, configs = await in_transaction(request, lambda conn: (
            tagging_ops.overview(conn, shop_id), shop_configs(conn, [shop_id])))
        config = configs[shop_id][1] if shop_id in configs else None
        return _page(request, "tags.html", access=access, tags=rows or [],
                     shop_name=_shop_name(config, shop_id))

    @console.get("/shops/{shop_id}/campaigns")
    async def campaigns(request: Request, shop_id: str) -> Response:
        access = await _access(request, shop_id)
        lateness = request.app.state.lateness

        def work(conn: Connection) -> dict[str, Any]:
            configs = shop_configs(conn, [shop_id])
            try:
                report = campaign_report(conn, shop_id, None, lateness)
                totals, models = report.totals(), report.models
            except NoCampaigns:
                totals, models = [], []
            return {"listed": campaign_ops.listing(conn, shop_id), "totals": totals,
                    "models": models,
                    "config": configs[shop_id][1] if shop_id in configs else None}

        found = await in_transaction(request, work)
        return _page(request, "campaigns.html", access=access, campaigns=found["listed"],
                     totals=found["totals"], models=found["models"],
                     shop_name=_shop_name(found["config"], shop_id))

    @console.get("/shops/{shop_id}/campaigns/effect.png")
    async def effect_chart(request: Request, shop_id: str) -> Response:
        await _access(request, shop_id)
        lateness = request.app.state.lateness

        def work(conn: Connection) -> bytes:
            return _png(conversions_png, campaign_report(conn, shop_id, None, lateness))

        try:
            png = await in_transaction(request, work)
        except NoCampaigns as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(png, media_type="image/png")

    @console.get("/shops/{shop_id}/reports")
    async def reports(request: Request, shop_id: str) -> Response:
        access = await _access(request, shop_id)

        def work(conn: Connection) -> dict[str, Any]:
            configs = shop_configs(conn, [shop_id])
            found: dict[str, Any] = {"config": configs[shop_id][1] if shop_id in configs
                                     else None, "customers": None, "products": None}
            try:
                found["customers"] = customer_abc(conn, shop_id)
                found["products"] = product_abc(conn, shop_id).to_dict()
            except NoData as exc:
                found["none_yet"] = str(exc)
            return found

        found = await in_transaction(request, work)
        return _page(request, "reports.html", access=access, customers=found["customers"],
                     products=found["products"], none_yet=found.get("none_yet", ""),
                     shop_name=_shop_name(found["config"], shop_id))

    @console.get("/shops/{shop_id}/reports/pareto.png")
    async def pareto_chart(request: Request, shop_id: str) -> Response:
        await _access(request, shop_id)

        def work(conn: Connection) -> bytes:
            return _png(pareto_png, product_abc(conn, shop_id))

        try:
            png = await in_transaction(request, work)
        except NoData as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(png, media_type="image/png")

    @console.get("/shops/{shop_id}/analysis/{name}")
    async def analysis_page(request: Request, shop_id: str, name: str) -> Response:
        """One customer-analysis report over the last 365 days (or ?days=N): its figures,
        its tables and its chart; the dormant list for ?days (default 180)."""
        access = await _access(request, shop_id)
        try:
            made = await _analysis(request, shop_id, name)
        except NoData as exc:
            return _page(request, "analysis.html", access=access, shop_name=shop_id,
                         report_name=name, reports=ANALYSES, report=None, none_yet=str(exc),
                         days="")
        return _page(request, "analysis.html", access=access, shop_name=shop_id,
                     report_name=name, reports=ANALYSES, report=made, none_yet=None,
                     days=request.query_params.get("days", ""))

    @console.get("/shops/{shop_id}/analysis/{name}/chart.png")
    async def analysis_chart(request: Request, shop_id: str, name: str) -> Response:
        await _access(request, shop_id)
        try:
            made = await _analysis(request, shop_id, name)
        except NoData as exc:
            raise HTTPException(404, str(exc)) from None
        drawn = await asyncio.to_thread(made.png_bytes)
        if drawn is None:
            raise HTTPException(404, f"the {name} report has no chart")
        return Response(drawn, media_type="image/png")

    return console


# What the member page's forms change, and what the page says once it is done.
CHANGES = {
    "level": ("set the level", "Level set."),
    "blacklist": ("put on the blacklist", "Put on the blacklist."),
    "unblacklist": ("take off the blacklist", "Taken off the blacklist."),
    "important": ("mark important", "Marked important."),
    "unimportant": ("take the important mark off", "Important mark taken off."),
    "tag-add": ("add the tag", "Tag added."),
    "tag-remove": ("remove the tag", "Tag removed."),
}


def _same_origin(request: Request) -> None:
    """A change must come from the console's own pages. The cookie is SameSite=Strict already;
    a browser's Origin naming another site is refused as well."""
    sent = request.headers.get("origin")
    if sent is not None and urllib.parse.urlsplit(sent).netloc != request.url.netloc:
        raise HTTPException(403, "changes come from the console's own pages only")


async def _member_page(request: Request, access: Access, member_id: str, *,
                       notice: str | None = None, error: str | None = None,
                       status: int = 200) -> Response:
    shop_id = access.shop_id

    def work(conn: Connection) -> dict[str, Any] | None:
        rows = member_records(conn, shop_id, MemberFilter(member_ids=(member_id,)))
        if not rows:
            return None
        rows = with_profiles(conn, shop_id, rows, access.may("pii"))
        config = shop_configs(conn, [shop_id]).get(shop_id)
        return {"member": rows[0], "config": config[1] if config else None,
                "levels": level_history(conn, shop_id, member_id),
                "tags": tag_history(conn, shop_id, member_id),
                "campaigns": campaign_history(conn, shop_id, member_id)}

    found = await in_transaction(request, work)
    if found is None:
        raise HTTPException(404, f"no member {member_id!r} in shop {shop_id!r}")
    config = found["config"]
    return _page(request, "member.html", status=status, access=access,
                 shop_name=_shop_name(config, shop_id), m=found["member"],
                 levels=found["levels"], tag_changes=found["tags"],
                 campaigns=found["campaigns"], level_names=_ladder(config),
                 tag_names=_tags(config), segments=_segments(config), notice=notice,
                 error=error)


def _png(draw: Callable[[Any, Path], None], report: Any) -> bytes:
    """A chart the report functions write to a file, as bytes to serve."""
    with tempfile.NamedTemporaryFile(suffix=".png") as out:
        draw(report, Path(out.name))
        return Path(out.name).read_bytes()


def _members_error(request: Request, access: Access, exc: Exception) -> HTMLResponse:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        why = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    else:
        why = str(exc)
    return _page(request, "members.html", status=422, access=access, shop_name=access.shop_id,
                 rows=[], total=0, page=1, pages=1, filters=MemberQuery(), member_text="",
                 sort="member_id", sorts=list(SORTS), ladder={}, tags={}, segments={},
                 query=_without_page(request), error=why)


def _without_page(request: Request) -> str:
    return urllib.parse.urlencode([(k, v) for k, v in request.query_params.multi_items()
                                   if k != "page"])


def _shop_name(config: Any, shop_id: str) -> str:
    return str(config.name) if config is not None and config.name else shop_id


def _ladder(config: Any) -> dict[int, str]:
    """Level names by number, as the shop's ladder names them (0: no level)."""
    if config is None or config.levels is None:
        return {}
    return {0: "no level"} | {i + 1: step.name for i, step in enumerate(config.levels.ladder)}


def _segments(config: Any) -> dict[str, str]:
    """RFM segment names by id, as the shop's map names them."""
    return segment_names(config.rfm.segments if config is not None else DEFAULT_SEGMENTS)


def _tags(config: Any) -> dict[str, str]:
    if config is None or config.tagging is None:
        return {}
    return {t.id: t.name for t in config.tagging.tags}


ANALYSES = {"levels": "Levels", "time": "Time", "amounts": "Amounts", "counts": "Counts",
            "growth": "Growth and churn", "rfm": "RFM", "coupons": "Coupons",
            "predicted": "Predicted value", "dormant": "Dormant members"}


async def _analysis(request: Request, shop_id: str, name: str) -> Any:
    from memberflow import analysis

    if name not in ANALYSES:
        raise HTTPException(404, f"no report {name!r}")
    text = request.query_params.get("days", "").strip()
    if text and not (text.isdigit() and 1 <= int(text) <= 3660):
        raise HTTPException(422, f"days: {text!r} is not a number of days from 1 to 3660")
    days = int(text) if text else None

    def work(conn: Connection) -> Any:
        shop = analysis.shop_of(conn, shop_id)
        if name == "dormant":
            return analysis.dormant_members(conn, shop, days or 180, limit=200)
        period = analysis.period_of(conn, shop, days=days, report=name)
        if name == "predicted":   # the 200 buyers worth most (the API and CLI list more)
            return analysis.predicted_value(conn, shop, period, limit=200)
        return analysis.BY_PERIOD[name](conn, shop, period)

    return await in_transaction(request, work)


async def sign_in_redirect(request: Request, exc: Exception) -> Response:
    return RedirectResponse("/console/login", status_code=303)
