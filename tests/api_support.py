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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from memberflow.configure import apply_shop_config
from memberflow.readmodel import event_fate, read_member
from services.api.app import install
from services.ingest.http import make_app
from shared.http import HttpServer
from shared.keys import CachedTokens
from shared.metrics import Metrics
from shared.shopconfig import parse
from shared.topics import Topics

TEA, COFFEE = "tea", "coffee"
LADDER = {"basis": "amount", "ladder": [
    {"name": "银卡", "threshold": "100.00", "discount": "0.98"},
    {"name": "金卡", "threshold": "500.00", "discount": "0.95"}]}
# member, level, spend (cents), trades, last purchase, blacklisted
TEA_MEMBERS = [("m1", 2, 80_000, 8, "2026-05-01"), ("m2", 1, 15_000, 2, "2026-03-01"),
               ("m3", 0, 2_000, 1, "2025-11-01"), ("m4", 0, 0, 0, None)]


def tea_config(rule: str = "spend >= 600", levels_note: str = "") -> str:
    """The tea shop's configuration as a YAML file (Chinese names, a rule and a manual tag)."""
    return (f"# {levels_note}\n" if levels_note else "") + f"""shop_id: tea
name: 茶馆
levels:
  basis: amount
  ladder:
    - {{name: 银卡, threshold: "100.00", discount: "0.98"}}
    - {{name: 金卡, threshold: "500.00", discount: "0.95"}}
tagging:
  tags:
    - {{id: vip-tea, name: 贵宾茶客}}
    - {{id: big-tea, name: 大茶客}}
    - {{id: tea-club, name: 茶友会}}
  rules:
    - {{id: r-big-tea, tag: big-tea, when: "{rule}"}}
"""


def seed_two_shops(engine: Engine) -> None:
    """Two configured shops; tea's level names are Chinese; members written as the workers
    leave them (the admin routes read state, they do not make it)."""
    now = datetime(2026, 5, 2, tzinfo=UTC)
    with engine.begin() as conn:
        for shop, name in ((TEA, "茶馆"), (COFFEE, "Coffee")):
            apply_shop_config(conn, Topics(), parse({
                "shop_id": shop, "name": name, "levels": LADDER,
                "tagging": {"tags": [{"id": "vip-tea", "name": "贵宾茶客"}]}}), "test", now)
        rows = [(TEA, m, lvl, spend, spend, n, last) for m, lvl, spend, n, last in TEA_MEMBERS]
        rows.append((COFFEE, "c1", 1, 30_000, 30_000, 3, "2026-04-01"))
        for row in rows:
            conn.exec_driver_sql(
                "INSERT INTO members (shop_id, member_id, level, spend_cents, gross_cents, "
                "completed_trades, last_purchase_at, first_purchase_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", (*row, row[-1]))
        conn.exec_driver_sql("INSERT INTO member_tags (shop_id, member_id, tag_id, cause, since) "
                             "VALUES ('tea', 'm1', 'vip-tea', 'manual', now()), "
                             "('tea', 'm2', 'vip-tea', 'manual', now())")


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

    def __init__(self, engine: Engine, outgoing: Path | None = None) -> None:
        self.engine = engine
        self.outgoing = outgoing
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ApiServer:
        self._thread.start()

        async def start() -> HttpServer:
            app = install(make_app(None, Metrics(),
                                   member_reader=functools.partial(read_member, self.engine),
                                   event_reader=functools.partial(event_fate, self.engine),
                                   keys=CachedTokens(self.engine, ttl_s=0)),
                          self.engine, Topics(), outgoing=self.outgoing)
            return await HttpServer.start(app, "127.0.0.1", 0)

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)
        self.url = self.server.url
        return self

    def call(self, method: str, path: str, *, token: str | None = None, body: Any = None,
             headers: dict[str, str] | None = None) -> Answer:
        """`body`: JSON, or bytes sent as they are (a file upload)."""
        sent = dict(headers or {})
        data = None
        if isinstance(body, bytes):
            data = body
            sent.setdefault("Content-Type", "application/octet-stream")
        elif body is not None:
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
