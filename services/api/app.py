"""The admin API wired into the HTTP application: state, errors as JSON, request ids.

Every answer names the problem as JSON: `{"error": "...", "problems": [{"field", "problem"}]}`
for input that fails validation (the field as `query.limit` or `body.reason`), `{"error": ...}`
otherwise. Every response carries `X-Request-Id` (the caller's, when it sent a sane one), and
the audit entries a request writes name that id and the client's address.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import admin, console, operate, reports
from services.api.auth import request_id
from services.ingest.http import Json
from shared.audit import OperationRefused, origin
from shared.topics import Topics

log = logging.getLogger(__name__)


class RequestOrigin:
    """ASGI middleware: a request id for every request, echoed in `X-Request-Id`, and the audit
    origin (address, request id) set for whatever the request runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Not on the storefront's routes: they write no audit entries and run hot.
        if scope["type"] != "http" or not scope["path"].startswith(("/api/", "/console")):
            await self.app(scope, receive, send)
            return
        rid = request_id(Request(scope))
        client = scope.get("client")
        address = client[0] if client else None

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        with origin(address, rid):
            await self.app(scope, receive, send_with_id)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


async def _validation(request: Request, exc: Exception) -> Json:
    """Input that fails validation: as FastAPI parses the request, or a model's checks after
    (a filter, say). The first problem is the error; all of them are listed."""
    assert isinstance(exc, RequestValidationError | ValidationError)
    problems = [{"field": _field(e.get("loc", ())), "problem": e.get("msg", "invalid")}
                for e in exc.errors()]
    first = problems[0] if problems else {"field": "", "problem": "invalid"}
    return Json({"error": f"{first['field']}: {first['problem']}", "problems": problems},
                status_code=422)


async def _unstorable(request: Request, exc: Exception) -> Json:
    """A value PostgreSQL refuses to store or compare (a NUL, say): the input's fault. The
    edges check what they know; this is the net under them."""
    log.warning("input the database refused on %s: %s", request.url.path, exc)
    return Json({"error": "a value in the request cannot be stored (e.g. a NUL character)"},
                status_code=422)


async def _http(request: Request, exc: HTTPException) -> Response:
    if request.url.path.startswith("/console"):
        return console.templates.TemplateResponse(
            request, "error.html", {"status": exc.status_code, "message": exc.detail},
            status_code=exc.status_code)
    return Json({"error": exc.detail}, status_code=exc.status_code,
                headers=getattr(exc, "headers", None))


async def _refused(request: Request, exc: Exception) -> Json:
    problems = getattr(exc, "problems", None)
    return Json({"error": str(exc), **({"problems": problems} if problems else {})},
                status_code=422)


def install(app: FastAPI, engine: Engine, topics: Topics,
            lateness: timedelta = timedelta(hours=24), outgoing: Path | None = None) -> FastAPI:
    """Add the admin API and the console to the HTTP application. `outgoing`: where campaign
    messages are written when sent (the file sender); without it, sending is refused."""
    app.state.engine = engine
    app.state.topics = topics
    app.state.lateness = lateness
    app.state.outgoing = outgoing
    app.include_router(admin.router())
    app.include_router(operate.router())
    app.include_router(reports.router())
    app.include_router(console.router())
    app.add_exception_handler(console.SignIn, console.sign_in_redirect)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(OperationRefused, _refused)
    app.add_exception_handler(admin.RequestRefused, _refused)
    app.add_exception_handler(ValidationError, _validation)
    app.add_exception_handler(DataError, _unstorable)
    app.add_middleware(RequestOrigin)
    return app
