"""Readiness that tells the truth: the database and the broker must answer within a bound.

Every check returns within its bound, whatever the target does: a frozen PostgreSQL (SIGSTOP, a
full disk, a lock queue) or a broker that accepts connections but never answers is reported as
"no answer within 2.0s" instead of hanging the health endpoint, and a worker that stopped makes
the process not ready too.

A database check runs in a daemon thread of its own (a blocking driver call cannot be
cancelled), so a stuck one never holds up the event loop, the default executor or the exit of
the process; and at most one attempt per target is outstanding: checks that come while one is
in flight share its answer, and while one is stuck past its bound they report the timeout at
once rather than piling up threads. The broker check is a metadata request on the event loop,
cancelled at its bound.

    readiness = Readiness([Probe("database", database_check(engine)),
                           Probe("broker", broker_check(bootstrap))])
    await readiness({"tiering": True})
    # {"ready": false, "checks": {"database": {"ok": false, "detail": "no answer within 2.0s"},
    #                             "broker": {"ok": true, "seconds": 0.004},
    #                             "worker:tiering": {"ok": true}}}
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

TIMEOUT_S = 2.0

Result = dict[str, Any]  # {"ok": bool, "detail": str (when not ok), "seconds": float}
Check = Callable[[], Awaitable[Any]]


def _timeout(timeout_s: float, waited_s: float | None = None) -> Result:
    detail = f"no answer within {timeout_s}s"
    if waited_s is not None and waited_s > timeout_s:
        detail += f" (the check started {waited_s:.1f}s ago is still waiting)"
    return {"ok": False, "detail": detail}


def _failed(exc: BaseException) -> Result:
    text = str(exc).strip().splitlines()
    return {"ok": False, "detail": f"{type(exc).__name__}: {text[0][:200] if text else ''}"}


# ---------------------------------------------------------------------------------------------
# Checks that block (database drivers): one daemon thread per outstanding attempt and target


@dataclass
class _Flight:
    future: concurrent.futures.Future[None]
    started: float


_flights: dict[str, _Flight] = {}
_flights_lock = threading.Lock()


def _flight(key: str, fn: Callable[[], None]) -> _Flight:
    """The outstanding attempt for `key`, or a new one running `fn` in a daemon thread."""
    with _flights_lock:
        flight = _flights.get(key)
        if flight is not None and not flight.future.done():
            return flight
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()  # nobody can cancel it: it ends when fn does
        flight = _Flight(future, time.monotonic())
        _flights[key] = flight

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)

    # A daemon: a check stuck on a frozen server must not keep the process from exiting.
    threading.Thread(target=run, name=f"health-check {key.split('://')[0]}", daemon=True).start()
    return flight


def outstanding(key_prefix: str = "") -> int:
    """Attempts still running (for tests and for /livez-style introspection)."""
    with _flights_lock:
        return sum(1 for k, f in _flights.items()
                   if k.startswith(key_prefix) and not f.future.done())


async def _answer(flight: _Flight, timeout_s: float) -> Result:
    """Wait for `flight` until its bound (counted from when it started)."""
    remaining = flight.started + timeout_s - time.monotonic()
    if not flight.future.done():
        if remaining <= 0:
            return _timeout(timeout_s, time.monotonic() - flight.started)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        def done(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed by then
                loop.call_soon_threadsafe(wake)

        flight.future.add_done_callback(done)
        try:
            await asyncio.wait_for(waiter, remaining)
        except TimeoutError:
            return _timeout(timeout_s)
    exc = flight.future.exception()
    if exc is not None:
        return _failed(exc)
    return {"ok": True, "seconds": round(time.monotonic() - flight.started, 3)}


_DRIVER = re.compile(r"^postgres(?:ql)?\+\w+://")


def _plain_url(url: str) -> str:
    """A libpq URL (SQLAlchemy spellings like postgresql+psycopg:// accepted)."""
    return _DRIVER.sub("postgresql://", url)


def _select_one(target: Engine | str, timeout_s: float) -> None:
    ms = max(1, int(timeout_s * 1000))
    if isinstance(target, str):
        import psycopg

        # libpq counts connect_timeout in whole seconds, at least 2: the caller's bound is
        # what holds; this one ends the thread of a check stuck connecting.
        with psycopg.connect(_plain_url(target), autocommit=True,
                             connect_timeout=max(2, math.ceil(timeout_s)),
                             application_name="memberflow-health",
                             options=f"-c statement_timeout={ms} -c lock_timeout={ms}") as conn:
            conn.execute("SELECT 1").fetchone()
        return
    with target.connect() as conn:  # a pooled connection of the caller's engine
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
        conn.exec_driver_sql("SELECT 1").scalar()


def _database_key(target: Engine | str) -> str:
    if isinstance(target, str):
        return _plain_url(target)
    return _plain_url(target.url.render_as_string(hide_password=False))


async def check_database(target: Engine | str, timeout_s: float = TIMEOUT_S) -> Result:
    """`SELECT 1` on the database (an engine's pool, or a new connection to a URL), answered
    within `timeout_s`: {"ok": True, "seconds": ...} or {"ok": False, "detail": ...}."""
    key = _database_key(target)
    return await _answer(_flight(key, lambda: _select_one(target, timeout_s)), timeout_s)


# ---------------------------------------------------------------------------------------------
# The broker: a metadata request, cancelled at its bound


_broker_flights: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Task[None], float]] = {}


async def _metadata(bootstrap: str, timeout_s: float) -> None:
    from aiokafka.client import AIOKafkaClient

    async with asyncio.timeout(timeout_s):
        client = AIOKafkaClient(bootstrap_servers=bootstrap,
                                request_timeout_ms=max(1, int(timeout_s * 1000)))
        try:
            await client.bootstrap()  # connect, then a MetadataRequest
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(client.close()), 1.0)


async def check_broker(bootstrap: str, timeout_s: float = TIMEOUT_S) -> Result:
    """A metadata request to the broker, answered within `timeout_s`."""
    loop = asyncio.get_running_loop()
    held = _broker_flights.get(bootstrap)
    if held is not None and held[0] is loop and not held[1].done():
        task, started = held[1], held[2]
    else:
        task, started = loop.create_task(_metadata(bootstrap, timeout_s)), time.monotonic()
        _broker_flights[bootstrap] = (loop, task, started)
    remaining = started + timeout_s - time.monotonic()
    try:
        if remaining <= 0 and not task.done():
            return _timeout(timeout_s, time.monotonic() - started)
        await asyncio.wait_for(asyncio.shield(task), max(remaining, 0.0))
    except TimeoutError:
        return _timeout(timeout_s)
    except Exception as exc:  # the answer is the failure: report it, never raise
        return _failed(exc)
    return {"ok": True, "seconds": round(time.monotonic() - started, 3)}


# ---------------------------------------------------------------------------------------------
# Named probes and the readiness answer


def database_check(target: Engine | str, timeout_s: float = TIMEOUT_S) -> Check:
    """A `Probe` check of the database (see `check_database`)."""
    async def check() -> Result:
        return await check_database(target, timeout_s)
    return check


def broker_check(bootstrap: str, timeout_s: float = TIMEOUT_S) -> Check:
    """A `Probe` check of the broker (see `check_broker`)."""
    async def check() -> Result:
        return await check_broker(bootstrap, timeout_s)
    return check


class Probe:
    """One named check, answered within `timeout_s` whatever the check does, never more than
    one of its runs outstanding.

    The check may return a result (a dict with "ok"), return anything else (ok) or raise (not
    ok, the exception is the detail).
    """

    def __init__(self, name: str, check: Check, timeout_s: float = TIMEOUT_S) -> None:
        self.name = name
        self.check = check
        self.timeout_s = timeout_s
        self._running: asyncio.Task[Any] | None = None
        self._since = 0.0

    async def __call__(self) -> Result:
        loop = asyncio.get_running_loop()
        running = self._running
        if running is None or running.done() or running.get_loop() is not loop:
            self._since = time.monotonic()
            running = self._running = loop.create_task(self._run())
        remaining = self._since + self.timeout_s - time.monotonic()
        if remaining <= 0 and not running.done():
            return _timeout(self.timeout_s, time.monotonic() - self._since)
        try:
            result: Result = await asyncio.wait_for(asyncio.shield(running),
                                                    max(remaining, 0.0))
        except TimeoutError:
            return _timeout(self.timeout_s)
        return result

    async def _run(self) -> Result:
        started = time.monotonic()
        try:
            answer = await self.check()
        except Exception as exc:  # the answer is the failure: report it, never raise
            return _failed(exc)
        if isinstance(answer, dict) and "ok" in answer:
            return answer
        return {"ok": True, "seconds": round(time.monotonic() - started, 3)}


class Readiness:
    """Named probes plus worker liveness, as one JSON-able answer:
    {"ready": bool, "checks": {name: {"ok": bool, "detail": ...}, "worker:NAME": ...}}."""

    def __init__(self, probes: Sequence[Probe] | Mapping[str, Check],
                 timeout_s: float = TIMEOUT_S) -> None:
        if isinstance(probes, Mapping):
            probes = [Probe(name, check, timeout_s) for name, check in probes.items()]
        self.probes = list(probes)

    async def __call__(self, workers: Mapping[str, bool] | None = None) -> dict[str, Any]:
        results = await asyncio.gather(*(p() for p in self.probes))
        checks: dict[str, Any] = {p.name: r for p, r in zip(self.probes, results, strict=True)}
        for name, alive in sorted((workers or {}).items()):
            checks[f"worker:{name}"] = {"ok": True} if alive else {
                "ok": False, "detail": "stopped"}
        return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}
