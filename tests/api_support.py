"""The HTTP application with the admin API and the storefront's reads on a real socket, over a
real database (no broker: none of them needs one; `POST /v1/events` is tested with the whole
stack), for tests that talk to it as a client would."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import urllib.error
import urllib.request
from typing import Any

from sqlalchemy import Engine

from memberflow.readmodel import event_fate, read_member
from services.api.app import install
from services.ingest.http import make_app
from shared.http import HttpServer
from shared.keys import CachedTokens
from shared.metrics import Metrics
from shared.topics import Topics


class Answer:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.raw = body
        self.headers = headers

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<{self.status} {self.raw[:300]!r}>"


class ApiServer:
    """`with ApiServer(engine) as api: api.call("GET", "/api/v1/me", token=t)`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ApiServer:
        self._thread.start()

        async def start() -> HttpServer:
            app = install(make_app(None, Metrics(),
                                   member_reader=functools.partial(read_member, self.engine),
                                   event_reader=functools.partial(event_fate, self.engine),
                                   keys=CachedTokens(self.engine, ttl_s=0)),
                          self.engine, Topics())
            return await HttpServer.start(app, "127.0.0.1", 0)

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.url = self.server.url
        return self

    def call(self, method: str, path: str, *, token: str | None = None, body: Any = None,
             headers: dict[str, str] | None = None) -> Answer:
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return Answer(r.status, r.read(), {k.lower(): v for k, v in r.headers.items()})
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.read(), {k.lower(): v for k, v in e.headers.items()})

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
