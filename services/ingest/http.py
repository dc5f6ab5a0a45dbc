"""HTTP: `POST /v1/events` (one event or a JSON array), `GET /v1/events/{event_id}` (what became
of an event), `GET /v1/shops/S/members/M` (a member's level, discount and class for the
storefront), /metrics, /healthz (readiness) and /livez.

Every answer tells the truth: 202 means the event is durable (archived, see
`services.ingest.handlers`); every refusal is a 4xx naming the field and the problem, and the
refused input is parked as a dead letter; 503 means nothing was acknowledged (database or broker
not answering) and the request can be retried as it is; a 5xx other than 503 is a bug.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.ingest.handlers import Ingestor, Unavailable
from shared.events import JsonRejected, Problem, loads_json
from shared.metrics import Metrics

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BATCH = 1000

INGESTOR = web.AppKey("ingestor", Ingestor)
METRICS = web.AppKey("metrics", Metrics)
Readiness = Callable[[], Awaitable[dict[str, Any]]]
READINESS: web.AppKey[Readiness] = web.AppKey("readiness")
MemberReader = Callable[[str, str], dict[str, Any] | None]
READER: web.AppKey[MemberReader] = web.AppKey("member_reader")
EventReader = Callable[[str], dict[str, Any] | None]
EVENTS: web.AppKey[EventReader] = web.AppKey("event_reader")


def _error(status: int, message: str, **extra: Any) -> web.Response:
    headers = {"Retry-After": "5"} if status == 503 else None
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


async def post_events(request: web.Request) -> web.Response:
    """Validate, archive and relay; answers per event: accepted, or rejected with its reasons."""
    ingestor = request.app[INGESTOR]
    request_id = uuid4().hex[:12]
    ref = f"request {request_id}"
    try:
        return await _post_events(request, ingestor, request_id, ref)
    except Unavailable as exc:
        log.warning("ingest unavailable: %s", exc)
        return _error(503, f"{exc}: send the request again (resending is safe: an event "
                           "archived with the same body is answered as a duplicate)",
                      request_id=request_id)


async def _post_events(request: web.Request, ingestor: Ingestor, request_id: str,
                       ref: str) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        problem = Problem("", f"body larger than {MAX_BODY_BYTES} bytes; send smaller batches")
        await ingestor.park(ref, f"<{request.content_length} bytes>", [problem])
        return _error(413, str(problem), request_id=request_id)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        problem = Problem("", f"body larger than {MAX_BODY_BYTES} bytes; send smaller batches")
        await ingestor.park(ref, "<body over the limit>", [problem])
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
        verdicts = await ingestor.submit([(f"{ref} #{i}", item) for i, item in enumerate(parsed)])
        accepted = sum(v.accepted for v in verdicts)
        return web.json_response({
            "request_id": request_id,
            "accepted": accepted,
            "rejected": len(verdicts) - accepted,
            "results": [v.as_dict() | {"index": i} for i, v in enumerate(verdicts)],
        }, status=202 if accepted == len(verdicts) else 207 if accepted else 422)
    [verdict] = await ingestor.submit([(ref, parsed)])
    status = 202 if verdict.accepted else 409 if verdict.status == "conflict" else 422
    return web.json_response(verdict.as_dict() | {"request_id": request_id}, status=status)


async def metrics(request: web.Request) -> web.Response:
    # In a thread: gathering worker processes' metrics waits on their answers.
    body = await asyncio.to_thread(generate_latest, request.app[METRICS].exposed)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    """Readiness: 200 only when the database and the broker answered within their bounds."""
    check = request.app.get(READINESS)
    if check is None:
        return web.json_response({"ready": True, "checks": {}})
    state = await check()
    return web.json_response(state, status=200 if state.get("ready") else 503)


async def livez(request: web.Request) -> web.Response:
    """Liveness: the process answers (readiness is /healthz)."""
    return web.json_response({"alive": True})


async def get_member(request: web.Request) -> web.Response:
    """A member's record for the storefront: level, next-order discount, ABC class, figures."""
    shop_id, member_id = request.match_info["shop_id"], request.match_info["member_id"]
    record = await asyncio.to_thread(request.app[READER], shop_id, member_id)
    if record is None:
        return web.json_response({"error": f"no member {member_id!r} in shop {shop_id!r}"},
                                 status=404)
    return web.json_response(record)


async def get_event(request: web.Request) -> web.Response:
    """What became of an event: archived (and whether too late for attribution), dead letters."""
    event_id = request.match_info["event_id"]
    found = await asyncio.to_thread(request.app[EVENTS], event_id)
    if found is None:
        return web.json_response({"error": f"no event {event_id[:128]!r} was accepted or "
                                           "rejected"}, status=404)
    return web.json_response(found)


def make_app(ingestor: Ingestor | None, metrics_: Metrics,
             member_reader: MemberReader | None = None,
             event_reader: EventReader | None = None,
             readiness: Readiness | None = None) -> web.Application:
    """The HTTP application; without an ingestor it serves only /metrics and the health checks."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[METRICS] = metrics_
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    if readiness is not None:
        app[READINESS] = readiness
    if ingestor is not None:
        app[INGESTOR] = ingestor
        app.router.add_post("/v1/events", post_events)
    if member_reader is not None:
        app[READER] = member_reader
        app.router.add_get("/v1/shops/{shop_id}/members/{member_id}", get_member)
    if event_reader is not None:
        app[EVENTS] = event_reader
        app.router.add_get("/v1/events/{event_id}", get_event)
    return app
