"""Readiness that tells the truth: the database and the broker must answer within a bound.

A check that does not answer in time is reported as such ("no answer within 2.0s") instead of
hanging the health endpoint; a frozen PostgreSQL (SIGSTOP, a full disk, a lock queue) or an
unreachable broker makes the process not ready, and a worker that stopped makes it not ready
too. At most one probe per target runs at a time: while one is still stuck, later checks say so
at once rather than piling up threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import Engine

TIMEOUT_S = 2.0


class Probe:
    """One target's check, bounded in time, never more than one outstanding."""

    def __init__(self, name: str, check: Callable[[], Awaitable[None]],
                 timeout_s: float = TIMEOUT_S) -> None:
        self.name = name
        self.check = check
        self.timeout_s = timeout_s
        self._running: asyncio.Task[None] | None = None
        self._since = 0.0

    async def __call__(self) -> dict[str, Any]:
        if self._running is not None and not self._running.done():
            stuck = time.monotonic() - self._since
            return {"ok": False, "detail": f"no answer for {stuck:.1f}s (still waiting)"}
        self._since = time.monotonic()
        self._running = asyncio.ensure_future(self.check())
        try:
            await asyncio.wait_for(asyncio.shield(self._running), self.timeout_s)
        except TimeoutError:
            return {"ok": False, "detail": f"no answer within {self.timeout_s}s"}
        except Exception as exc:  # the answer is the failure: report it, never raise
            return {"ok": False, "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}
        return {"ok": True, "seconds": round(time.monotonic() - self._since, 3)}


def database_check(engine: Engine, timeout_s: float = TIMEOUT_S) -> Callable[[], Awaitable[None]]:
    """`SELECT 1` on a pooled connection, given up by the server after `timeout_s` too."""
    ms = int(timeout_s * 1000)

    def run() -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SET statement_timeout = {ms}")
            conn.exec_driver_sql("SELECT 1").scalar()

    async def check() -> None:
        await asyncio.to_thread(run)
    return check


def broker_check(bootstrap: str, timeout_s: float = TIMEOUT_S) -> Callable[[], Awaitable[None]]:
    """A metadata request to the broker."""
    async def check() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap,
                                    request_timeout_ms=int(timeout_s * 1000))
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()
    return check


class Readiness:
    """Named probes plus worker liveness, as one JSON-able answer."""

    def __init__(self, probes: list[Probe]) -> None:
        self.probes = probes

    async def __call__(self, workers: Mapping[str, bool]) -> dict[str, Any]:
        results = await asyncio.gather(*(p() for p in self.probes))
        checks: dict[str, Any] = {p.name: r for p, r in zip(self.probes, results, strict=True)}
        for name, alive in sorted(workers.items()):
            checks[f"worker:{name}"] = {"ok": alive} if alive else {
                "ok": False, "detail": "stopped"}
        return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}
