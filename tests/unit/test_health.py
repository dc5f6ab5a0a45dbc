"""Health checks answer within their bound, never pile up, and say what is wrong."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shared import health
from shared.health import Probe, Readiness, check_broker, check_database


def timed(coro: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = asyncio.run(coro)
    return result, time.monotonic() - started


class Hang:
    """A check that hangs until released, counting how often it was started."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.started += 1
        await self.release.wait()


def test_a_hanging_check_is_not_ready_within_its_bound_and_is_not_started_again() -> None:
    hang = Hang()
    probe = Probe("database", hang, timeout_s=0.2)
    readiness = Readiness([probe])

    async def scenario() -> list[tuple[dict[str, Any], float]]:
        answers = []
        for _ in range(3):
            started = time.monotonic()
            answers.append((await readiness({"tiering": True}), time.monotonic() - started))
        hang.release.set()
        while probe._running is not None and not probe._running.done():
            await asyncio.sleep(0)  # the stuck run finishes
        started = time.monotonic()
        answers.append((await readiness({"tiering": True}), time.monotonic() - started))
        return answers

    answers = asyncio.run(scenario())
    first, took = answers[0]
    assert first == {"ready": False, "checks": {
        "database": {"ok": False, "detail": "no answer within 0.2s"},
        "worker:tiering": {"ok": True}}}
    assert 0.15 < took < 1.0
    # While the first run is stuck, later checks say so at once instead of starting another.
    for answer, took in answers[1:3]:
        assert answer["ready"] is False
        assert "still waiting" in answer["checks"]["database"]["detail"]
        assert took < 0.15
    assert hang.started == 2  # the stuck one, and a new one once it had ended
    last, _ = answers[3]
    assert last["ready"] is True
    json.dumps(last)


def test_checks_that_fail_and_workers_that_stopped_make_it_not_ready() -> None:
    async def broken() -> None:
        raise ConnectionRefusedError("connection refused")

    async def fine() -> dict[str, Any]:
        return {"ok": True}

    readiness = Readiness({"database": fine, "broker": broken}, timeout_s=0.5)
    answer = asyncio.run(readiness({"tagging": False, "tiering": True}))
    assert answer == {"ready": False, "checks": {
        "database": {"ok": True},
        "broker": {"ok": False, "detail": "ConnectionRefusedError: connection refused"},
        "worker:tagging": {"ok": False, "detail": "stopped"},
        "worker:tiering": {"ok": True}}}
    assert asyncio.run(Readiness({"database": fine})())["ready"] is True


def test_a_probe_survives_being_used_from_another_event_loop() -> None:
    hang = Hang()
    probe = Probe("x", hang, timeout_s=0.1)
    assert asyncio.run(probe())["ok"] is False
    hang.release = asyncio.Event()  # the first loop is gone, and its stuck run with it

    async def released() -> dict[str, Any]:
        hang.release.set()
        return await probe()

    assert asyncio.run(released())["ok"] is True


@pytest.fixture
def stuck_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """`SELECT 1` blocks (as on a frozen server) until `release` is set."""
    state: dict[str, Any] = {"calls": 0, "release": threading.Event()}

    def select_one(target: Any, timeout_s: float) -> None:
        state["calls"] += 1
        if not state["release"].wait(30):
            raise TimeoutError("never released")

    monkeypatch.setattr(health, "_select_one", select_one)
    yield state
    state["release"].set()


def test_a_frozen_database_is_reported_in_time_without_piling_up_threads(
        stuck_database: dict[str, Any]) -> None:
    url = "postgresql://u@/frozen?host=/nowhere"
    threads = threading.active_count()

    async def many() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(check_database(url, 0.3) for _ in range(5))))

    answers, took = timed(many())
    assert all(a == {"ok": False, "detail": "no answer within 0.3s"} for a in answers)
    assert 0.25 < took < 1.2
    again, took = timed(check_database(url, 0.3))
    assert "still waiting" in again["detail"] and took < 0.15
    assert stuck_database["calls"] == 1
    assert health.outstanding(url) == 1
    assert threading.active_count() <= threads + 1

    stuck_database["release"].set()
    deadline = time.monotonic() + 5
    while health.outstanding(url) and time.monotonic() < deadline:
        time.sleep(0.01)
    answer, _ = timed(check_database(url, 0.3))
    assert answer["ok"] is True
    assert stuck_database["calls"] == 2


def test_an_unreachable_database_fails_fast_with_the_reason(tmp_path: Any) -> None:
    answer, took = timed(check_database(f"postgresql+psycopg://u@/db?host={tmp_path}", 2.0))
    assert answer["ok"] is False
    assert "OperationalError" in answer["detail"]
    assert took < 2.0


def test_a_broker_that_is_not_there_fails_within_the_bound() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens
    answer, took = timed(check_broker(f"127.0.0.1:{port}", 0.5))
    assert answer["ok"] is False
    assert took < 1.5


def test_a_broker_that_accepts_but_never_answers_is_not_ready_within_the_bound() -> None:
    async def scenario() -> tuple[dict[str, Any], float, dict[str, Any], float]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # reads the request, never answers
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            started = time.monotonic()
            both = await asyncio.gather(check_broker(f"127.0.0.1:{port}", 0.4),
                                        check_broker(f"127.0.0.1:{port}", 0.4))
            took = time.monotonic() - started
            started = time.monotonic()
            later = await check_broker(f"127.0.0.1:{port}", 0.4)
            return both[0], took, later, time.monotonic() - started

    first, took, later, took_later = asyncio.run(scenario())
    assert first == {"ok": False, "detail": "no answer within 0.4s"}
    assert took < 1.5
    assert later["ok"] is False and took_later < 1.5  # a new attempt, bounded as well


def test_observing_a_batch_at_once_is_exactly_observing_each_value() -> None:
    from shared.metrics import Metrics, observe_all

    one, many = Metrics(), Metrics()
    values = [0.0, 0.0005, 0.001, 0.0011, 0.3, 0.25, 2.5, 31.0, 1e9, 0.07]
    for v in values:
        one.event_lag_seconds.labels("w").observe(v)
    observe_all(many.event_lag_seconds.labels("w"), values)
    observe_all(many.event_lag_seconds.labels("w"), [])

    def samples(m: Metrics) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name, s.labels, s.value) for f in m.registry.collect()
                if f.name == "memberflow_event_age_seconds" for s in f.samples
                if not s.name.endswith("_created")]
    assert samples(one) == samples(many)
