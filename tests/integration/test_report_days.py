"""Days as the operator means them, against the real PostgreSQL (and broker, for the pipeline):

- `report abc-products --from D1 --to D2` counts every order completed from 00:00:00 of D1 to
  the end of D2, in the shop's time zone, and says which zone and bounds it used;
- `--dormant-days N` is the tag rules' `days_since_last_purchase >= N` (24-hour days), whatever
  the database session's time zone;
- `config check` and `config apply` print the zone in effect and say when it is the default.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from memberflow.readmodel import member_records
from memberflow.runtime import Stack
from services.tagging.rules import MemberFacts, compile_rule
from shared.db import make_engine
from shared.filters import MemberFilter
from tests.e2e.test_cli import mf
from tests.support import pipeline

SHOP = "days-shop"
DEFAULT_LINE = "time zone: Asia/Shanghai (the default; set `timezone:` to change it)"


def _event(n: int, type_: str, at: datetime, payload: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": f"days-{n:03d}-{type_}", "type": type_, "schema_version": 1,
            "shop_id": SHOP, "member_id": f"m{n}", "occurred_at": at.isoformat(),
            "payload": payload}


def _trade(n: int, sku: str, completed: str) -> list[dict[str, Any]]:
    """One order of one item `sku` for 10.00, completed at `completed` (ISO-8601)."""
    at = datetime.fromisoformat(completed)
    order = {"order_id": f"o-{sku}", "amount": "10.00"}
    return [
        _event(n, "order.placed", at - timedelta(hours=2),
               {**order, "items": [{"sku": sku, "qty": 1, "unit_price": "10.00"}]}),
        _event(n, "order.paid", at - timedelta(hours=1), order),
        _event(n, "order.completed", at, order),
    ]


# Completion times on the shop's clock face (Asia/Shanghai, UTC+8) and in UTC.
TRADES = {
    "before-first": "2026-02-28T23:59:59+08:00",   # the last second before shop day 03-01
    "first-midnight": "2026-03-01T00:00:00+08:00",  # the first instant of shop day 03-01
    "last-evening": "2026-03-02T23:59:59+08:00",    # the last second of shop day 03-02
    "after-last": "2026-03-03T00:00:00+08:00",      # the first instant of shop day 03-03
    "utc-late": "2026-03-02T20:00:00Z",             # UTC day 03-02, but shop day 03-03
    "clock": "2026-03-10T00:00:00+08:00",           # the newest event: the shop's clock
}


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(f"shop_id: {SHOP}\nname: Days shop\n{extra}")
    return path


def test_config_check_prints_the_time_zone_and_says_when_it_is_the_default(
        tmp_path: Path) -> None:
    checked = mf("config", "check", str(_config(tmp_path)), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert f"valid configuration for shop {SHOP}" in checked.stdout
    assert DEFAULT_LINE in checked.stdout

    named = mf("config", "check", str(_config(tmp_path, "timezone: America/New_York\n")),
               cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    assert "time zone: America/New_York\n" in named.stdout
    assert "the default" not in named.stdout

    # Naming the default zone is a choice too: then it is not reported as the default.
    explicit = mf("config", "check", str(_config(tmp_path, "timezone: Asia/Shanghai\n")),
                  cwd=tmp_path)
    assert "time zone: Asia/Shanghai\n" in explicit.stdout
    assert "the default" not in explicit.stdout


def _products(url: str, tmp_path: Path, *options: str, fmt: str = "json"
              ) -> tuple[dict[str, Any] | list[dict[str, str]], str]:
    out = mf("report", "abc-products", "--shop", SHOP, "--database-url", url,
             "--format", fmt, *options, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout) if fmt == "json" else list(csv.DictReader(
        io.StringIO(out.stdout)))
    return doc, out.stderr


def _skus(doc: Any) -> set[str]:
    return {r["sku"] for r in (doc["items"] if isinstance(doc, dict) else doc)}


def test_product_report_days_are_the_shops_whole_days(stack: Stack, tmp_path: Path) -> None:
    url = stack.database_url
    applied = mf("config", "apply", str(_config(tmp_path)), "--database-url", url, cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert "applied as version 1" in applied.stdout and DEFAULT_LINE in applied.stdout
    pipeline(stack, [e for n, (sku, at) in enumerate(TRADES.items())
                     for e in _trade(n, sku, at)])

    # Two shop days: from 00:00:00 of the first (included) to 00:00:00 after the last (not).
    doc, said = _products(url, tmp_path, "--from", "2026-03-01", "--to", "2026-03-02")
    assert isinstance(doc, dict)
    assert _skus(doc) == {"first-midnight", "last-evening"}
    assert doc["timezone"] == "Asia/Shanghai"
    assert (doc["from"], doc["to"]) == ("2026-02-28T16:00:00Z", "2026-03-02T16:00:00Z")
    period = doc["period"]
    assert (period["kind"], period["first_day"], period["last_day"]) == (
        "days", "2026-03-01", "2026-03-02")
    assert (period["from"], period["includes_from"], period["to"], period["includes_to"]) == (
        "2026-03-01T00:00:00+08:00", True, "2026-03-03T00:00:00+08:00", False)
    assert ("period: orders completed from 2026-03-01 00:00:00+08:00 up to, not including, "
            "2026-03-03 00:00:00+08:00: the shop's days 2026-03-01 to 2026-03-02 "
            "(time zone Asia/Shanghai)") in said

    # --from alone: from that shop day through the day of the shop's clock.
    rows, said = _products(url, tmp_path, "--from", "2026-03-03", fmt="csv")
    assert _skus(rows) == {"after-last", "utc-late", "clock"}
    assert "the shop's days 2026-03-03 to 2026-03-10 (time zone Asia/Shanghai)" in said

    # --to with --days: that many shop days ending with the day given.
    doc, _ = _products(url, tmp_path, "--to", "2026-03-01", "--days", "1")
    assert _skus(doc) == {"first-midnight"}
    doc, _ = _products(url, tmp_path, "--from", "2026-02-28", "--days", "1")
    assert _skus(doc) == {"before-first"}

    # --days alone keeps its meaning: the N x 24 hours up to and including the shop's clock.
    doc, said = _products(url, tmp_path, "--days", "7")
    assert isinstance(doc, dict)
    assert _skus(doc) == {"utc-late", "clock"}  # after-last is exactly 7 x 24 h before: out
    assert (doc["period"]["kind"], doc["period"]["rolling_days"]) == ("rolling", 7)
    assert (doc["period"]["from"], doc["period"]["includes_from"], doc["period"]["to"],
            doc["period"]["includes_to"]) == (
        "2026-03-03T00:00:00+08:00", False, "2026-03-10T00:00:00+08:00", True)
    assert "the 7 x 24 hours up to the shop's clock (time zone Asia/Shanghai)" in said

    refused = mf("report", "abc-products", "--shop", SHOP, "--database-url", url,
                 "--from", "2026-03-02", "--to", "2026-03-01", cwd=tmp_path)
    assert refused.returncode == 2 and "before the first" in refused.stderr

    # The days follow the configured zone: in UTC the same dates are other instants.
    utc = mf("config", "apply", str(_config(tmp_path, "timezone: UTC\n")), "--database-url",
             url, cwd=tmp_path)
    assert utc.returncode == 0, utc.stderr
    assert "time zone: UTC\n" in utc.stdout and "the default" not in utc.stdout
    doc, said = _products(url, tmp_path, "--from", "2026-03-01", "--to", "2026-03-02")
    assert isinstance(doc, dict)
    assert _skus(doc) == {"last-evening", "after-last", "utc-late"}
    assert (doc["timezone"], doc["period"]["from"]) == ("UTC", "2026-03-01T00:00:00+00:00")


# Dormancy around daylight saving changes in New York: N calendar days there are N x 24 hours
# minus one (spring) or plus one (autumn) across the change.
SPRING = datetime(2026, 3, 10, 12, tzinfo=UTC)   # US clocks went forward on 2026-03-08
AUTUMN = datetime(2026, 11, 3, 12, tzinfo=UTC)   # and back on 2026-11-01
WEEK = timedelta(days=7)
LAST_PURCHASE: dict[str, dict[str, datetime | None]] = {
    "spring": {
        "never": None,
        "bar-1m": SPRING - WEEK - timedelta(minutes=1),
        "at-bar": SPRING - WEEK,                     # exactly 7 x 24 hours: dormant
        "bar+1us": SPRING - WEEK + timedelta(microseconds=1),
        "bar+30m": SPRING - WEEK + timedelta(minutes=30),
        "bar+1h": SPRING - WEEK + timedelta(hours=1),  # 7 New York days before the clock
        "recent": SPRING - timedelta(hours=1),
    },
    "autumn": {
        "never": None,
        "bar-1h": AUTUMN - WEEK - timedelta(hours=1),  # 7 New York days before the clock
        "bar-30m": AUTUMN - WEEK - timedelta(minutes=30),
        "at-bar": AUTUMN - WEEK,
        "bar+1us": AUTUMN - WEEK + timedelta(microseconds=1),
        "recent": AUTUMN - timedelta(days=1),
    },
}
CLOCKS = {"spring": SPRING, "autumn": AUTUMN}
DORMANT_7 = {"spring": ["at-bar", "bar-1m", "never"],
             "autumn": ["at-bar", "bar-1h", "bar-30m", "never"]}


@pytest.mark.parametrize("session_zone", ["UTC", "America/New_York", "Asia/Shanghai"])
def test_dormant_days_are_24_hour_days_in_every_session_time_zone(
        database_url: str, session_zone: str) -> None:
    engine = make_engine(database_url)
    try:
        for shop, members in LAST_PURCHASE.items():
            # The pipeline clock is one for every shop: each scenario sets it in turn.
            with engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM stream_clocks")
                conn.exec_driver_sql(
                    "INSERT INTO stream_clocks (consumer, topic, partition, clock) "
                    "VALUES ('tiering', 'orders', 0, %s)", (CLOCKS[shop],))
                for member, last in members.items():
                    conn.exec_driver_sql(
                        "INSERT INTO members (shop_id, member_id, completed_trades, "
                        "last_purchase_at) VALUES (%s, %s, %s, %s)",
                        (shop, member, 0 if last is None else 1, last))
            rule = compile_rule("days_since_last_purchase >= 7")
            with engine.connect() as conn:
                conn.exec_driver_sql(f"SET TIME ZONE '{session_zone}'")
                listed = [r["member_id"] for r in
                          member_records(conn, shop, MemberFilter(dormant_days=7))]
                # The tag rule's own verdict (Python), plus members who never bought.
                oracle = sorted(m for m, last in members.items() if last is None or rule.holds(
                    MemberFacts(completed_trades=1, last_purchase_at=last), CLOCKS[shop]))
                assert sorted(listed) == oracle == DORMANT_7[shop], (session_zone, shop)
    finally:
        engine.dispose()
