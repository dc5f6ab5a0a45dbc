"""HTTP: `POST /v1/events` (one event or a JSON array), `GET /v1/shops/S/members/M` (a
member's level, discount and class for the storefront), /metrics and /healthz."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.ingest.handlers import Ingestor
from shared.events import Problem, loads_json
from shared.metrics import Metrics

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BATCH = 1000

INGESTOR = web.AppKey("ingestor", Ingestor)
METRICS = web.AppKey("metrics", Metrics)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def post_events(request: web.Request) -> web.Response:
    """Validate and produce; answers per event: accepted, or rejected with its reasons."""
    ingestor = request.app[INGESTOR]
    request_id = uuid4().hex[:12]
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        await (await ingestor.park(f"request {request_id}", f"<{request.content_length} bytes>",
                                   [Problem("", f"body larger than {MAX_BODY_BYTES} bytes")]))
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes; send smaller batches")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes; send smaller batches")
    try:
        parsed: Any = loads_json(body)
    except (ValueError, UnicodeDecodeError) as exc:
        problem = Problem("", f"body is not valid JSON ({exc})")
        await (await ingestor.park(f"request {request_id}", body, [problem]))
        return _error(400, str(problem))
    if isinstance(parsed, list):
        if len(parsed) > MAX_BATCH:
            problem = Problem("", f"batch of {len(parsed)} events is over the limit of {MAX_BATCH}")
            await (await ingestor.park(f"request {request_id}", body, [problem]))
            return _error(413, str(problem))
        if not parsed:
            return _error(400, "empty batch")
        verdicts = await ingestor.submit(
            [(f"request {request_id} #{i}", item) for i, item in enumerate(parsed)])
        accepted = sum(v.accepted for v in verdicts)
        return web.json_response({
            "request_id": request_id,
            "accepted": accepted,
            "rejected": len(verdicts) - accepted,
            "results": [v.as_dict() | {"index": i} for i, v in enumerate(verdicts)],
        })
    [verdict] = await ingestor.submit([(f"request {request_id}", parsed)])
    return web.json_response(verdict.as_dict() | {"request_id": request_id},
                             status=202 if verdict.accepted else 422)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


MemberReader = Callable[[str, str], dict[str, Any] | None]
READER: web.AppKey[MemberReader] = web.AppKey("member_reader")


async def get_member(request: web.Request) -> web.Response:
    """A member's record for the storefront: level, next-order discount, ABC class, figures."""
    shop_id, member_id = request.match_info["shop_id"], request.match_info["member_id"]
    record = await asyncio.to_thread(request.app[READER], shop_id, member_id)
    if record is None:
        return web.json_response({"error": f"no member {member_id!r} in shop {shop_id!r}"},
                                 status=404)
    return web.json_response(record)


def make_app(ingestor: Ingestor | None, metrics_: Metrics,
             member_reader: MemberReader | None = None) -> web.Application:
    """The HTTP application; without an ingestor it serves only /metrics and /healthz."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[METRICS] = metrics_
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if ingestor is not None:
        app[INGESTOR] = ingestor
        app.router.add_post("/v1/events", post_events)
    if member_reader is not None:
        app[READER] = member_reader
        app.router.add_get("/v1/shops/{shop_id}/members/{member_id}", get_member)
    return app
