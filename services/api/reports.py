"""The customer analysis (`memberflow.analysis`) under `/api/v1/shops/{shop}/reports/...`:
each report as JSON, and as CSV, XLSX or its PNG chart at `.csv`, `.xlsx`, `.png`.

The same functions as `memberflow report ...`; the period is `days`, or `from`/`to` shop days,
else the 365 days up to the shop's clock. The dormant list names members: reading it needs
`read`, downloading it `export` (audited, as a member export is).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy import Connection

from memberflow import analysis
from memberflow.abc_report import BadPeriod, NoData, Period
from services.api.admin import XLSX, RequestRefused, in_transaction
from services.api.auth import Access, Reader
from shared.audit import audit

Build = Callable[[Connection, analysis.Shop, Period], analysis.Analysis]
Format = Literal["csv", "xlsx", "png"]
TYPES = {"csv": "text/csv; charset=utf-8", "xlsx": XLSX, "png": "image/png"}


def _refused(exc: Exception) -> Exception:
    if isinstance(exc, NoData):
        return HTTPException(404, str(exc))
    return RequestRefused(str(exc), [{"field": "query", "problem": str(exc)}])


async def _made(request: Request, access: Access, name: str, build: Build, days: int | None,
                first_day: date | None, last_day: date | None) -> analysis.Analysis:
    def work(conn: Connection) -> analysis.Analysis:
        shop = analysis.shop_of(conn, access.shop_id)
        return build(conn, shop, analysis.period_of(conn, shop, first_day, last_day, days,
                                                    name))
    try:
        return await in_transaction(request, work)
    except (NoData, BadPeriod, ValueError) as exc:
        raise _refused(exc) from None


def _file(report: analysis.Analysis, fmt: str) -> Response:
    if fmt == "csv":
        body = report.csv_text().encode("utf-8-sig")   # a BOM: spreadsheets read it as UTF-8
    elif fmt == "xlsx":
        body = report.xlsx_bytes()
    else:
        drawn = report.png_bytes()
        if drawn is None:
            raise HTTPException(404, f"the {report.report} report has no chart")
        body = drawn
    name = f"{report.shop_id}-{report.report}.{fmt}"
    return Response(body, media_type=TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


Days = Annotated[int | None, Query(ge=1, le=3660, description="N x 24 hours to the clock")]
FirstDay = Annotated[date | None, Query(alias="from", description="first shop day")]
LastDay = Annotated[date | None, Query(alias="to", description="last shop day")]
DormantDays = Annotated[int | None, Query(ge=1, le=36_500,
                                          description="no purchase for this many days")]
Cycle = Annotated[int | None, Query(ge=1, le=3650, description="or: the use cycle ...")]
Multiple = Annotated[Decimal | None, Query(gt=0, le=100, max_digits=6, decimal_places=2,
                                           description="... times this (default 2)")]
Limit = Annotated[int, Query(ge=1, le=100_000)]


def _edges(text: str | None, name: str) -> list[Decimal] | None:
    if not text:
        return None
    try:
        return analysis.parse_edges(text)
    except ValueError as exc:
        raise RequestRefused(str(exc), [{"field": name, "problem": str(exc)}]) from None


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["reports"])

    def add(name: str, summary: str, build: Callable[..., Build]) -> None:
        """The JSON route and the file route of one report; `build` takes the report's own
        query parameters (FastAPI reads them from its signature) and returns the builder."""
        async def as_json(request: Request, access: Reader, days: Days = None,
                          first_day: FirstDay = None, last_day: LastDay = None,
                          **extra: Any) -> dict[str, Any]:
            made = await _made(request, access, name, build(**extra), days, first_day,
                               last_day)
            return made.to_dict()

        async def as_file(request: Request, access: Reader, fmt: Format, days: Days = None,
                          first_day: FirstDay = None, last_day: LastDay = None,
                          **extra: Any) -> Response:
            made = await _made(request, access, name, build(**extra), days, first_day,
                               last_day)
            return _file(made, fmt)

        for route in (as_json, as_file):
            setattr(route, "__signature__", _with_params(route, build))  # noqa: B010
        path = f"/shops/{{shop_id}}/reports/{name}"
        api.add_api_route(path, as_json, methods=["GET"], summary=summary)
        api.add_api_route(path + ".{fmt}", as_file, methods=["GET"], response_class=Response,
                          summary=summary + " (CSV, XLSX or the PNG chart)")

    add("levels", "Per level: members, trades, revenue and share, AOV, discount; level changes",
        lambda: analysis.level_analysis)
    add("time", "Trades by day of week x hour and by month, in the shop's time zone",
        lambda: analysis.time_analysis)
    add("counts", "Buyers by number of completed trades; the repeat rate",
        lambda: analysis.count_analysis)
    add("rfm", "Buyers' RFM scores and segments (the shop's map), and the R x F grid",
        lambda: analysis.rfm_analysis)
    add("coupons", "Suggested coupons (Y off X) from the order values, and how",
        lambda: analysis.coupon_analysis)

    def amounts(order_buckets: Annotated[str | None, Query(
                    max_length=500, description="bucket edges, e.g. 50,100,200")] = None,
                spend_buckets: Annotated[str | None, Query(max_length=500)] = None) -> Build:
        orders, spend = _edges(order_buckets, "order_buckets"), _edges(spend_buckets,
                                                                        "spend_buckets")
        return lambda conn, shop, period: analysis.amount_analysis(conn, shop, period, orders,
                                                                   spend)

    add("amounts", "Order values and buyers' spend in buckets, mean, median, percentiles",
        amounts)

    def predicted(horizon: Annotated[int | None, Query(
                      ge=1, le=3650, description="default: the shop's rfm: horizon_days")] = None,
                  max_p_alive: Annotated[Decimal | None, Query(ge=0, le=1, max_digits=4,
                                                               decimal_places=3)] = None,
                  min_spend: Annotated[Decimal | None, Query(ge=0, max_digits=14,
                                                             decimal_places=2)] = None,
                  limit: Annotated[int, Query(ge=1, le=100_000)] = 1000) -> Build:
        return lambda conn, shop, period: analysis.predicted_value(
            conn, shop, period, horizon, max_p_alive, min_spend, limit)

    add("predicted", "Per buyer: probability still active, expected purchases and value "
        "(BG/NBD, Gamma-Gamma)", predicted)

    def growth(unit: Literal["month", "week"] = "month",
               dormant_after: Annotated[int, Query(ge=1, le=36_500)] = 180,
               lost_after: Annotated[int, Query(ge=2, le=36_500)] = 365) -> Build:
        return lambda conn, shop, period: analysis.growth_analysis(
            conn, shop, period, unit, dormant_after, lost_after)

    add("growth", "Per month or week: new, active, returning; dormant and lost at its end",
        growth)

    async def dormant(request: Request, access: Access, days: int | None,
                      cycle_days: int | None, multiple: Decimal | None,
                      limit: int) -> analysis.Analysis:
        try:
            n = analysis.dormant_days(days, cycle_days, multiple)
        except ValueError as exc:
            raise _refused(exc) from None

        def work(conn: Connection) -> analysis.Analysis:
            return analysis.dormant_members(conn, analysis.shop_of(conn, access.shop_id), n,
                                            limit)
        try:
            return await in_transaction(request, work)
        except NoData as exc:
            raise _refused(exc) from None

    @api.get("/shops/{shop_id}/reports/dormant")
    async def dormant_json(request: Request, access: Reader, days: DormantDays = None,
                           cycle_days: Cycle = None, multiple: Multiple = None,
                           limit: Limit = 1000) -> dict[str, Any]:
        """Members who bought and have not for N days (or the use cycle times a multiple),
        biggest spenders first, with how to tag or target them in one step."""
        return (await dormant(request, access, days, cycle_days, multiple, limit)).to_dict()

    @api.get("/shops/{shop_id}/reports/dormant.{fmt}", response_class=Response)
    async def dormant_file(request: Request, access: Reader, fmt: Literal["csv", "xlsx"],
                           days: DormantDays = None, cycle_days: Cycle = None,
                           multiple: Multiple = None, limit: Limit = 1000) -> Response:
        """The dormant list as CSV or XLSX (a member export: needs `export`; audited)."""
        if not access.may("export"):
            raise HTTPException(403, "this token lacks the right: export")
        made = await dormant(request, access, days, cycle_days, multiple, limit)
        await in_transaction(request, lambda conn: audit(
            conn, access.shop_id, None, "members.export", access.operator,
            {"report": "dormant", "format": fmt, "rows": len(made.tables[
                "dormant_members"].rows), **made.summary}))
        return _file(made, fmt)

    return api


def _with_params(route: Callable[..., Any], build: Callable[..., Any]) -> Any:
    """The route's signature with the builder's own query parameters in place of `**extra`."""
    own = [p for p in inspect.signature(route).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    extra = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
             for p in inspect.signature(build).parameters.values()]
    return inspect.Signature([*own, *extra])
