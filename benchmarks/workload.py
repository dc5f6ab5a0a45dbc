"""What the benchmarks share: a realistic order stream with its expected totals, and test servers.

Imported by `pipeline.py` and `consumer_paths.py` (run as scripts from the repository root, so
this directory is on `sys.path`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from shared.db import make_engine, migrate
from shared.embedded import EmbeddedDatabase
from shared.events import decode

REPO = Path(__file__).resolve().parent.parent
SHOP = "bench-shop"
REGIONS = ("Shanghai", "Beijing", "Shenzhen", "Hangzhou", "Chengdu", "Wuhan")


@dataclass(frozen=True)
class Totals:
    """What the members table must show once every event is applied."""

    members: int
    completed_trades: int
    spend_cents: int


@dataclass(frozen=True)
class Workload:
    lines: list[bytes]              # one JSON event per line, as a JSONL history holds them
    wire: list[tuple[bytes, bytes]]  # (key, value) exactly as the Ingestor produces them
    expected: Totals

    def __len__(self) -> int:
        return len(self.lines)

    def items(self) -> Iterator[tuple[str, Any]]:
        """(ref, raw line) pairs, the shape `services.ingest.replay.replay` takes."""
        return ((f"line {i}", line) for i, line in enumerate(self.lines, start=1))


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def order_events(n: int, members: int, seed: int = 2026) -> list[dict[str, Any]]:
    """N order events in event-time order: every order is placed; ~90% complete, ~8% of those
    are then (partly) refunded. Members are drawn with a long tail, as in a real shop."""
    rng = random.Random(seed)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    timed: list[tuple[datetime, dict[str, Any]]] = []
    order_no = 0
    while len(timed) < n + n // 20:  # a little spare; the latest events are cut off below
        order_no += 1
        # A third of the orders come from the most loyal 2% of members.
        loyal = rng.random() < 0.33
        member = f"m{rng.randrange(max(1, members // 50) if loyal else members):06d}"
        order_id = f"o{order_no:08d}"
        items = [(f"SKU-{rng.randrange(800):04d}", rng.randint(1, 3), rng.randint(390, 59900))
                 for _ in range(rng.randint(1, 4))]  # sku, qty, unit price in cents
        amount = sum(qty * cents for _, qty, cents in items)
        placed_at = start + timedelta(seconds=order_no * 11 + rng.randrange(10))
        envelope = {"schema_version": 1, "shop_id": SHOP, "member_id": member}
        timed.append((placed_at, {
            **envelope, "type": "order.placed", "occurred_at": placed_at,
            "payload": {"order_id": order_id, "amount": _money(amount),
                        "region": rng.choice(REGIONS),
                        "items": [{"sku": sku, "qty": qty, "unit_price": _money(cents)}
                                  for sku, qty, cents in items]}}))
        if rng.random() < 0.9:
            done_at = placed_at + timedelta(minutes=rng.randint(5, 3 * 24 * 60))
            timed.append((done_at, {
                **envelope, "type": "order.completed", "occurred_at": done_at,
                "payload": {"order_id": order_id, "amount": _money(amount)}}))
            if rng.random() < 0.08:
                refund_at = done_at + timedelta(hours=rng.randint(1, 240))
                timed.append((refund_at, {
                    **envelope, "type": "order.refunded", "occurred_at": refund_at,
                    "payload": {"order_id": order_id,
                                "amount": _money(rng.randint(1, amount))}}))
    timed.sort(key=lambda te: te[0])
    events = []
    for k, (at, event) in enumerate(timed[:n]):
        event["event_id"] = f"ev-{k:08d}"
        event["occurred_at"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        events.append(event)
    return events


def expected_totals(events: list[dict[str, Any]]) -> Totals:
    """An independent oracle: members touched, completed orders, spend net of refunds."""
    members = {e["member_id"] for e in events}
    completed: dict[str, int] = {}
    refunds: dict[str, int] = {}
    for e in events:
        cents = int(Decimal(e["payload"]["amount"]) * 100)
        if e["type"] == "order.completed":
            completed.setdefault(e["payload"]["order_id"], cents)
        elif e["type"] == "order.refunded":
            refunds[e["payload"]["order_id"]] = refunds.get(e["payload"]["order_id"], 0) + cents
    spend = sum(amount - min(refunds.get(o, 0), amount) for o, amount in completed.items())
    return Totals(len(members), len(completed), spend)


def workload(n: int, members: int) -> Workload:
    events = order_events(n, members)
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    wire = []
    for line in lines:
        event = decode(line)
        wire.append((event.key, event.to_json()))
    return Workload(lines, wire, expected_totals(events))


def member_totals(engine: Engine) -> Totals:
    with engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT count(*), coalesce(sum(completed_trades), 0), coalesce(sum(spend_cents), 0) "
            "FROM members WHERE shop_id = %s", (SHOP,)).one()
    return Totals(int(row[0]), int(row[1]), int(row[2]))


def stored_positions_total(engine: Engine, consumer: str) -> int:
    """Records a consumer has applied (positions start at 0 on a fresh database)."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_positions WHERE consumer = %s",
            (consumer,)).scalar_one())


@contextlib.contextmanager
def postgres(root: Path) -> Iterator[EmbeddedDatabase]:
    db = EmbeddedDatabase(root / "pg").start()
    try:
        yield db
    finally:
        db.stop()


def fresh_database(db: EmbeddedDatabase, name: str) -> tuple[str, Engine]:
    """A new, migrated database and an engine on it (the caller disposes of the engine)."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    url = db.create_database(name)
    engine = make_engine(url, pool_size=2)
    migrate(engine)
    return url, engine


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM), in MiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_by_session(db: EmbeddedDatabase) -> dict[str, float]:
    """PostgreSQL's CPU seconds so far by whom it served: memberflow names its sessions after
    the worker they serve ("memberflow tiering"; plain "memberflow" is ingest)."""
    out: dict[str, float] = {}
    with psycopg.connect(db.url, autocommit=True) as conn:
        for pid, name in conn.execute("SELECT pid, application_name FROM pg_stat_activity "
                                      "WHERE application_name LIKE 'memberflow%'"):
            key = f"  PostgreSQL for {name.removeprefix('memberflow ') or 'ingest'}"
            out[key] = out.get(key, 0.0) + (cpu_seconds(pid) or 0.0)
    return out


def child_env(**settings: str) -> dict[str, str]:
    """This environment without inherited MEMBERFLOW_* settings, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return {**env, **settings}


def start_process(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM (the workers stop cleanly on it), then SIGKILL after the grace period."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def wait_until(condition: Callable[[], Awaitable[bool]], *, deadline_s: float, what: str,
                     interval_s: float = 0.1,
                     alive: subprocess.Popen[bytes] | None = None) -> float:
    """Poll until `condition()` holds; returns the perf_counter time at which it did."""
    end = time.monotonic() + deadline_s
    while True:
        if await condition():
            return time.perf_counter()
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"process exited with {alive.returncode} while waiting for {what}")
        if time.monotonic() > end:
            raise TimeoutError(f"no {what} after {deadline_s:.0f}s")
        await asyncio.sleep(interval_s)


async def batch_metrics(port: int, timed: bool = False) -> dict[str, tuple[int, float, float]]:
    """Per worker: batches applied, events in them, seconds spent applying them (with `timed`:
    rounds of timed work, 0, seconds spent in them)."""
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    prefix = "memberflow_timed_work_seconds" if timed else "memberflow_batch_seconds"
    names = {f"{prefix}_sum": "memberflow_batch_seconds_sum",
             f"{prefix}_count": "memberflow_batch_seconds_count",
             "memberflow_batch_events_sum": "memberflow_batch_events_sum"}
    sums: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names and not (timed and sample.name.startswith("memberflow_batch")):
                sums[(sample.labels["worker"], names[sample.name])] = sample.value
    return {w: (int(sums.get((w, "memberflow_batch_seconds_count"), 0)),
                sums.get((w, "memberflow_batch_events_sum"), 0.0),
                sums.get((w, "memberflow_batch_seconds_sum"), 0.0))
            for w in sorted({w for w, _ in sums})}
