"""HTTP: `POST /v1/events` (one event or a JSON array), `GET /v1/events/{event_id}` (what became
of an event), `GET /v1/shops/S/members/M` (a member's level, discount and class for the
storefront), /metrics, /healthz (readiness) and /livez.

The storefront's routes take a key (`Authorization: Bearer <token>`, see `shared.tokens`):
posting needs the `ingest` right for each event's shop (an event for a shop the key does not
cover is refused, alone, naming `shop_id`), reading needs `ingest` or `read` for the shop; a
missing or dead key is a 401, and what a key cannot see is a 404. Each key may send
`ingest_events_per_second` (429 with Retry-After beyond it).

Every answer tells the truth: 202 means the event is durable (archived, see
`services.ingest.handlers`); every refusal of an event is a 4xx naming the field and the
problem, and the refused input is parked as a dead letter; 503 means nothing was acknowledged
(database or broker not answering) and the request can be retried as it is; a 5xx other than
503 is a bug.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.ingest.handlers import Ingestor, Refused, Unavailable
from shared.events import JsonRejected, Problem, loads_json
from shared.keys import RateLimits, bearer
from shared.metrics import Metrics
from shared.tokens import Credential

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BATCH = 1000

Readiness = Callable[[], Awaitable[dict[str, Any]]]
MemberReader = Callable[[str, str], dict[str, Any] | None]
EventReader = Callable[[str], dict[str, Any] | None]
Keys = Callable[[str], Awaitable[Credential | None]]


class Json(JSONResponse):
    """Compact JSON, non-ASCII kept as it is (level and tag names are often Chinese)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def _error(status: int, message: str, **extra: Any) -> Json:
    headers = {"Retry-After": "5"} if status == 503 else None
    return Json({"error": message, **extra}, status_code=status, headers=headers)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    """The body, refusing (before reading it all) one over MAX_BODY_BYTES."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _TooLarge(f"<{declared} bytes>")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge("<body over the limit>")
        chunks.append(chunk)
    return b"".join(chunks)


async def _key(request: Request, keys: Keys) -> Credential | Response:
    """The request's live key, or the 401 to answer."""
    token = bearer(request.headers.get("authorization", ""))
    found = await keys(token) if token else None
    if found is None:
        why = ("token unknown, expired or revoked" if token else
               "no key: send `Authorization: Bearer <token>` (memberflow tokens create "
               "--rights ingest)")
        return Json({"error": why}, status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="memberflow"'})
    return found


def storefront_routes(ingestor: Ingestor | None, member_reader: MemberReader | None,
                      event_reader: EventReader | None, keys: Keys | None,
                      limits: RateLimits | None = None) -> APIRouter:
    """`POST /v1/events`, `GET /v1/events/{event_id}`, `GET /v1/shops/S/members/M`."""
    router = APIRouter(tags=["storefront"])
    if keys is None:
        assert ingestor is None and member_reader is None and event_reader is None, \
            "the storefront's routes need keys"
        return router

    if ingestor is not None:
        @router.post("/v1/events", status_code=202, summary="Send events (one or a JSON array)")
        async def post_events(request: Request) -> Response:
            """Validate, archive and relay; answers per event: accepted, or rejected with its
            reasons."""
            key = await _key(request, keys)
            if isinstance(key, Response):
                return key
            request_id = uuid4().hex[:12]
            try:
                return await _post_events(request, ingestor, key, limits, request_id,
                                          f"request {request_id}")
            except Unavailable as exc:
                log.warning("ingest unavailable: %s", exc)
                return _error(503, f"{exc}: send the request again (resending is safe: an "
                                   "event archived with the same body is answered as a "
                                   "duplicate)", request_id=request_id)

    if member_reader is not None:
        @router.get("/v1/shops/{shop_id}/members/{member_id}",
                    summary="A member's level, discount and class for the storefront")
        async def get_member(request: Request, shop_id: str, member_id: str) -> Response:
            key = await _key(request, keys)
            if isinstance(key, Response):
                return key
            allowed = _reads(key, shop_id)
            record = await asyncio.to_thread(member_reader, shop_id, member_id) \
                if allowed else None
            if record is None:
                return _error(404, f"no member {member_id!r} in shop {shop_id!r}")
            return Json(record)

    if event_reader is not None:
        @router.get("/v1/events/{event_id}", summary="What became of an event")
        async def get_event(request: Request, event_id: str) -> Response:
            """Archived (and whether too late for attribution), or its dead letters."""
            key = await _key(request, keys)
            if isinstance(key, Response):
                return key
            found = await asyncio.to_thread(event_reader, event_id)
            # Seen only by keys that cover every shop it names (a letter naming none: platform).
            shops = ({found["shop_id"]} if found and found["archived"] else set()) | {
                d["shop_id"] for d in (found or {}).get("dead_letters", ())}
            seen = found is not None and all(_reads(key, s) for s in shops)
            if not seen:
                return _error(404, f"no event {event_id[:128]!r} was accepted or rejected")
            return Json(found)

    return router


def _reads(key: Credential, shop_id: str | None) -> bool:
    """May this key see what the storefront's routes show of a shop (None: no shop named,
    which only a platform key sees)?"""
    if shop_id is None:
        return key.shops is None and bool({"ingest", "read"} & key.rights)
    return key.may(shop_id, "ingest") or key.may(shop_id, "read")


def _foreign(key: Credential, item: Any) -> Any:
    """The item, or it Refused when it names a shop this key may not send for."""
    shop = item.get("shop_id") if isinstance(item, dict) else None
    if isinstance(shop, str) and not key.may(shop, "ingest"):
        return Refused(item, (Problem("shop_id", f"this key may not send events for shop "
                                                 f"{shop[:128]!r}"),))
    return item


async def _post_events(request: Request, ingestor: Ingestor, key: Credential,
                       limits: RateLimits | None, request_id: str, ref: str) -> Response:
    try:
        body = await _read_body(request)
    except _TooLarge as exc:
        problem = Problem("", f"body larger than {MAX_BODY_BYTES} bytes; send smaller batches")
        await ingestor.park(ref, str(exc), [problem])
        return _error(413, str(problem), request_id=request_id)
    try:
        parsed: Any = loads_json(body)
    except JsonRejected as exc:
        await ingestor.park(ref, body, [exc.problem])
        return _error(400, f"body is not acceptable JSON: {exc.problem}",
                      request_id=request_id)
    except (ValueError, UnicodeDecodeError) as exc:
        problem = Problem("", f"body is not valid JSON ({str(exc)[:200]})")
        await ingestor.park(ref, body, [problem])
        return _error(400, str(problem), request_id=request_id)
    if isinstance(parsed, list):
        if len(parsed) > MAX_BATCH:
            problem = Problem("", f"batch of {len(parsed)} events is over the limit of {MAX_BATCH}")
            await ingestor.park(ref, body, [problem])
            return _error(413, str(problem), request_id=request_id)
        if not parsed:
            problem = Problem("", "empty batch")
            await ingestor.park(ref, body, [problem])
            return _error(400, str(problem), request_id=request_id)
    if limits is not None and (wait := limits.take(
            key.token_id, len(parsed) if isinstance(parsed, list) else 1)) is not None:
        return Json({"error": f"key {key.name!r} is over its rate of {limits.rate:g} events "
                              f"per second; retry after {math.ceil(wait)} s",
                     "request_id": request_id}, status_code=429,
                    headers={"Retry-After": str(math.ceil(wait))})
    if isinstance(parsed, list):
        verdicts = await ingestor.submit([(f"{ref} #{i}", _foreign(key, item))
                                          for i, item in enumerate(parsed)])
        accepted = sum(v.accepted for v in verdicts)
        return Json({
            "request_id": request_id,
            "accepted": accepted,
            "rejected": len(verdicts) - accepted,
            "results": [v.as_dict() | {"index": i} for i, v in enumerate(verdicts)],
        }, status_code=202 if accepted == len(verdicts) else 207 if accepted else 422)
    [verdict] = await ingestor.submit([(ref, _foreign(key, parsed))])
    status = 202 if verdict.accepted else 409 if verdict.status == "conflict" else 422
    return Json(verdict.as_dict() | {"request_id": request_id}, status_code=status)


def operations_routes(metrics_: Metrics, readiness: Readiness | None) -> APIRouter:
    """/metrics, /healthz (readiness) and /livez."""
    router = APIRouter(tags=["operations"])

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        # In a thread: gathering worker processes' metrics waits on their answers.
        body = await asyncio.to_thread(generate_latest, metrics_.exposed)
        return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @router.get("/healthz", summary="Readiness: the database and the broker answer")
    async def healthz() -> Response:
        if readiness is None:
            return Json({"ready": True, "checks": {}})
        state = await readiness()
        return Json(state, status_code=200 if state.get("ready") else 503)

    @router.get("/livez", summary="Liveness: the process answers")
    async def livez() -> Response:
        return Json({"alive": True})

    return router


def make_app(ingestor: Ingestor | None, metrics_: Metrics,
             member_reader: MemberReader | None = None,
             event_reader: EventReader | None = None,
             readiness: Readiness | None = None,
             routers: tuple[APIRouter, ...] = (), *, keys: Keys | None = None,
             limits: RateLimits | None = None) -> FastAPI:
    """The HTTP application; without an ingestor it serves only /metrics and the health checks.
    The storefront's routes need `keys`; `routers` adds more (the admin API)."""
    app = FastAPI(title="memberflow", version="1", openapi_url="/api/v1/openapi.json",
                  docs_url="/api/v1/docs", redoc_url=None)
    app.include_router(operations_routes(metrics_, readiness))
    app.include_router(storefront_routes(ingestor, member_reader, event_reader, keys, limits))
    for router in routers:
        app.include_router(router)
    return app
