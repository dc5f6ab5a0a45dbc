"""The customer analysis reports on a small shop worked by hand, fed through the real pipeline
(broker, archiver and tiering workers, PostgreSQL), then read as the CLI and the API read them.

The shop (Asia/Shanghai; 银卡 from 100.00 net spend, 金卡 from 500.00); its clock ends at
2026-07-01 00:00 +08:00, so the default period is 2025-07-01 00:00 (excluded) to then:

| member | completed trades (shop time, amount)                          | net   | level |
| ------ | ------------------------------------------------------------- | ----- | ----- |
| a      | Sat 2026-01-10 10:00 300.00; Sun 2026-03-15 10:30 300.00      | 600   | 2     |
| b      | Mon 2026-06-01 20:00 80.00, 30.00 of it refunded              | 50    | 0     |
| c      | Sat 2026-06-20 09:00 120.00                                   | 120   | 1     |
| d      | Sun 2025-06-01 10:00 200.00 (before the period)               | 200   | 1     |
| e      | Sun 2026-02-01 12:00 and 18:00, Wed 2026-04-01 12:00, 40.00 each | 120 | 1     |
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from sqlalchemy import Engine

from memberflow import analysis, coupons
from memberflow.configure import apply_shop_config
from memberflow.readmodel import member_records
from memberflow.runtime import Stack
from services.campaigns.config import Target
from services.tiering import rfm, scores_store
from shared import tokens
from shared.db import make_engine
from shared.filters import MemberFilter
from shared.shopconfig import parse
from tests.api_support import ApiServer
from tests.e2e.test_cli import mf
from tests.support import pipeline, read_topic, unique_by_id

SHOP = "ana"
CLOCK = datetime.fromisoformat("2026-07-01T00:00:00+08:00")
TRADES = {  # member: [(completed at, amount, refunded)]
    "a": [("2026-01-10T10:00:00+08:00", "300.00", None),
          ("2026-03-15T10:30:00+08:00", "300.00", None)],
    "b": [("2026-06-01T20:00:00+08:00", "80.00", "30.00")],
    "c": [("2026-06-20T09:00:00+08:00", "120.00", None)],
    "d": [("2025-06-01T10:00:00+08:00", "200.00", None)],
    "e": [("2026-02-01T12:00:00+08:00", "40.00", None), ("2026-02-01T18:00:00+08:00", "40.00",
                                                          None),
          ("2026-04-01T12:00:00+08:00", "40.00", None)],
}


def events() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for member, trades in TRADES.items():
        for i, (at, amount, refunded) in enumerate(trades):
            done = datetime.fromisoformat(at)
            order = {"order_id": f"{member}-{i}", "amount": amount}

            def event(kind: str, when: datetime, payload: dict[str, Any],
                      member: str = member, i: int = i) -> dict[str, Any]:
                return {"event_id": f"{member}-{i}-{kind}", "type": kind, "schema_version": 1,
                        "shop_id": SHOP, "member_id": member, "occurred_at": when.isoformat(),
                        "payload": payload}
            out += [event("order.placed", done - timedelta(hours=1), {
                        **order, "items": [{"sku": "tea", "qty": 1, "unit_price": amount}]}),
                    event("order.completed", done, order)]
            if refunded:
                out.append(event("order.refunded", done + timedelta(days=1),
                                 {"order_id": order["order_id"], "amount": refunded}))
    return out


@pytest.fixture
def engine(stack: Stack) -> Iterator[Engine]:
    engine = make_engine(stack.database_url, pool_size=2)
    with engine.begin() as conn:
        apply_shop_config(conn, stack.topics, parse({
            "shop_id": SHOP, "name": "茶室", "levels": {"basis": "amount", "ladder": [
                {"name": "银卡", "threshold": "100.00", "discount": "0.98"},
                {"name": "金卡", "threshold": "500.00", "discount": "0.95"}]},
            "tagging": {"tags": [{"id": "win-back", "name": "挽回"},
                                 {"id": "call", "name": "电话回访"}], "rules": [
                {"id": "r-win-back", "tag": "win-back", "when": 'rfm_segment == "at-risk"'}]}}),
            "test", datetime(2025, 1, 1, tzinfo=UTC))
    report = pipeline(stack, events(), workers=("archiver", "tiering", "tagging"), as_of=CLOCK)
    assert report.accepted == len(events()) and not report.rejected
    yield engine
    engine.dispose()


def build(engine: Engine, make: Any, **period: Any) -> analysis.Analysis:
    with engine.connect() as conn:
        shop = analysis.shop_of(conn, SHOP)
        built: analysis.Analysis = make(conn, shop, analysis.period_of(conn, shop, **period))
        return built


def test_every_report_on_the_hand_worked_shop(engine: Engine, tmp_path: Path) -> None:
    levels = build(engine, analysis.level_analysis)
    assert levels.period.to_dict()["from"] == "2025-07-01T00:00:00+08:00"
    assert [(r["level"], r["level_name"], r["members"], r["buyers"], r["completed_trades"],
             r["revenue"], r["revenue_share_pct"], r["aov"], r["discount"])
            for r in levels.tables["levels"].rows] == [
        (0, "no level", 1, 1, 1, "50.00", "5.62", "50.00", "1.00"),
        (1, "银卡", 3, 2, 4, "240.00", "26.97", "60.00", "0.98"),
        (2, "金卡", 1, 1, 2, "600.00", "67.42", "300.00", "0.95")]
    assert levels.tables["levels"].totals == {
        "level": "total", "members": 5, "buyers": 4, "completed_trades": 7,
        "revenue": "890.00", "revenue_share_pct": "100.00", "aov": "127.14"}
    # d's level change (2025-06) is before the period; a rose twice.
    assert [(r["month"], r["cause"], r["up"], r["down"]) for r in
            levels.tables["level_changes"].rows] == [
        ("2026-01", "auto", 1, 0), ("2026-03", "auto", 1, 0), ("2026-04", "auto", 1, 0),
        ("2026-06", "auto", 1, 0)]

    time = build(engine, analysis.time_analysis)
    heat = {r["day_of_week"]: r for r in time.tables["weekday_hour"].rows}
    assert (heat["Sat"]["h10"], heat["Sat"]["h09"], heat["Sun"]["h10"], heat["Sun"]["h12"],
            heat["Sun"]["h18"], heat["Mon"]["h20"], heat["Wed"]["h12"]) == (1,) * 7
    assert sum(r["trades"] for r in heat.values()) == 7
    # From the first month with a trade to the last, May with none; the period's months are
    # all whole, so May is the slack one.
    assert [(m["month"], m["whole"], m["completed_trades"], m["revenue"]) for m in
            time.tables["months"].rows] == [
        ("2026-01", True, 1, "300.00"), ("2026-02", True, 2, "80.00"),
        ("2026-03", True, 1, "300.00"), ("2026-04", True, 1, "40.00"),
        ("2026-05", True, 0, "0.00"), ("2026-06", True, 2, "170.00")]
    assert (time.summary["peak_month"], time.summary["slack_month"]) == ("2026-06", "2026-05")
    # Up to 2026-06-25, June is cut short: it is shown, but the seasons are judged on whole
    # months, so its two trades do not make it the peak (February's two do).
    cut = build(engine, analysis.time_analysis, first_day=date(2026, 1, 1),
                last_day=date(2026, 6, 25))
    assert [(m["month"], m["whole"], m["completed_trades"]) for m in
            cut.tables["months"].rows][-2:] == [("2026-05", True, 0), ("2026-06", False, 2)]
    assert (cut.summary["peak_month"], cut.summary["slack_month"]) == ("2026-02", "2026-05")

    counts = build(engine, analysis.count_analysis)
    assert [(r["completed_trades"], r["buyers"]) for r in counts.tables["trade_counts"].rows] == [
        ("1", 2), ("2", 1), ("3", 1), ("4-5", 0), ("6-10", 0), ("11+", 0)]
    assert counts.summary["repeat_rate_pct"] == "50.00"

    with engine.connect() as conn:
        shop = analysis.shop_of(conn, SHOP)
        amounts = analysis.amount_analysis(conn, shop, analysis.period_of(conn, shop),
                                           [Decimal(50), Decimal(100), Decimal(200)])
    assert [(r["bucket"], r["orders"], r["sum"]) for r in
            amounts.tables["order_values"].rows] == [
        ("0-50", 3, "120.00"), ("50-100", 1, "80.00"), ("100-200", 1, "120.00"),
        ("200+", 2, "600.00")]
    assert (amounts.summary["aov"], amounts.summary["median_order_value"]) == ("127.14", "80.00")
    assert amounts.summary["spend_buckets"] == "100,200,300,400,500,600,700,800"
    spend = {r["bucket"]: r["buyers"] for r in amounts.tables["buyer_spend"].rows}
    assert (spend["0-100"], spend["100-200"], spend["600-700"]) == (1, 2, 1)

    growth = build(engine, analysis.growth_analysis)
    months = {r["month"]: r for r in growth.tables["growth"].rows}
    assert (min(months), max(months), len(months)) == ("2025-07", "2026-06", 12)
    assert all(r["whole"] for r in months.values())
    assert [(m, r["new"], r["active"], r["returning"]) for m, r in months.items()
            if r["active"]] == [("2026-01", 1, 1, 0), ("2026-02", 1, 1, 0),
                                ("2026-03", 0, 1, 1), ("2026-04", 0, 1, 1),
                                ("2026-06", 2, 2, 0)]
    # d bought 2025-06-01 10:00: dormant (180 days) from the end of 2025-11, still not lost
    # (365 days) at the end of 2026-05 (364.6 days), lost at the end of 2026-06.
    assert [m for m, r in months.items() if r["dormant"]] == [
        "2025-11", "2025-12", "2026-01", "2026-02", "2026-03", "2026-04", "2026-05"]
    assert [m for m, r in months.items() if r["lost"]] == ["2026-06"]

    with engine.connect() as conn:
        shop = analysis.shop_of(conn, SHOP)
        dormant = analysis.dormant_members(
            conn, shop, analysis.dormant_days(None, 45, Decimal(2)))
    assert [(r["member_id"], r["days_since_last_purchase"]) for r in
            dormant.tables["dormant_members"].rows] == [("a", 107), ("d", 394), ("e", 90)]
    assert dormant.summary["campaign_target"] == {"dormant_days": 90, "min_spend": "0.01"}

    segmented = build(engine, analysis.rfm_analysis)
    # R days 107 (a), 29 (b), 10 (c), 90 (e); F days 2, 1, 1, 2; M per day 300, 50, 120, 60.
    # Tiering's scores are as of the shop's clock: the report reads them from the records.
    assert segmented.summary == {"buyers": 4, "recency_edges_days": "29, 90, 107",
                           "frequency_edges_days": "1, 2",
                           "monetary_edges": "50.00, 60.00, 120.00",
                           "scores": "kept in the members' records by tiering, as of "
                                     "2026-07-01T00:00:00+08:00"}
    afresh = build(engine, lambda conn, shop, period: analysis.rfm_analysis(
        conn, shop, period, kept=False))
    assert afresh.summary["scores"] == "computed for this report"
    assert afresh.tables == segmented.tables
    # So do the levels and amounts reports (each buyer's trades and spend): the same answers.
    for make in (analysis.level_analysis, analysis.amount_analysis):
        assert build(engine, lambda conn, shop, period, make=make: make(
            conn, shop, period, kept=False)).tables == build(engine, make).tables
    assert [(r["segment"], r["buyers"], r["spend"]) for r in segmented.tables["segments"].rows] == [
        ("new", 1, "120.00"), ("potential", 1, "50.00"), ("at-risk", 1, "120.00"),
        ("lost", 1, "600.00")]
    assert [[row[f"f{f}"] for f in range(1, 5)] for row in
            segmented.tables["recency_frequency"].rows] == [[1, 0, 0, 0], [1, 0, 0, 0],
                                                      [0, 1, 0, 0], [0, 1, 0, 0]]

    with engine.connect() as conn:
        shop = analysis.shop_of(conn, SHOP)
        suggested = analysis.coupon_analysis(conn, shop, analysis.period_of(conn, shop))
    assert [s["coupon"] for s in suggested.tables["suggestions"].rows] == [
        s.label for s in coupons.suggest({300: 2, 80: 1, 120: 1, 40: 3})]

    # Five buyers are far too few to fit the predicted-value models: refused, saying so.
    with engine.connect() as conn, pytest.raises(analysis.NoData,
                                                 match="at least 200 buyers"):
        shop = analysis.shop_of(conn, SHOP)
        analysis.predicted_value(conn, shop, analysis.period_of(conn, shop))

    # Shop days instead: February alone.
    february = build(engine, analysis.count_analysis, first_day=datetime(2026, 2, 1).date(),
                     last_day=datetime(2026, 2, 28).date())
    assert february.summary == {"buyers": 1, "repeat_buyers": 1, "repeat_rate_pct": "100.00"}

    # Every format, as an operator opens it.
    text = levels.csv_text()
    assert "total,,5,4,7,890.00,100.00,127.14," in text and "# level_changes" in text
    book = load_workbook(io.BytesIO(growth.xlsx_bytes()))
    sheet = book["growth"]
    assert [c.value for c in sheet[1]][:5] == ["month", "from", "to", "whole", "new"]
    assert isinstance(sheet["B2"].value, datetime)
    for report in (levels, time, counts, amounts, growth, segmented, suggested):
        chart = tmp_path / f"{report.report}.png"
        assert report.png(chart) and chart.read_bytes()[:4] == b"\x89PNG"


def test_the_reports_from_the_command_line_and_the_api(stack: Stack, engine: Engine,
                                                       tmp_path: Path) -> None:
    url = ["--database-url", stack.database_url]
    out = mf("report", "counts", "--shop", SHOP, *url, "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["summary"]["repeat_rate_pct"] == "50.00"
    out = mf("report", "dormant", "--shop", SHOP, "--cycle-days", "45", *url, "--format", "csv",
             cwd=tmp_path)
    assert out.returncode == 0 and "\na,2,金卡," in out.stdout, out.stderr
    bad = mf("report", "amounts", "--shop", SHOP, "--order-buckets", "100,50", *url,
             cwd=tmp_path)
    assert bad.returncode == 2 and "rising order" in bad.stderr
    xlsx = mf("report", "levels", "--shop", SHOP, *url, "--format", "xlsx", cwd=tmp_path)
    assert xlsx.returncode == 2 and "--out" in xlsx.stderr
    none = mf("report", "levels", "--shop", SHOP, *url, "--from", "2024-01-01", "--to",
              "2024-01-31", "--format", "csv", cwd=tmp_path)
    assert none.returncode == 0 and "total,,5,0,0,0.00,,0.00," in none.stdout

    with engine.begin() as conn:
        reader = tokens.create(conn, name="analyst", shops=[SHOP], rights=["read"],
                               expires_in=None, operator="test").token
        exporter = tokens.create(conn, name="exporter", shops=[SHOP], rights=["read", "export"],
                                 expires_in=None, operator="test").token
    with ApiServer(engine) as api:
        base = f"/api/v1/shops/{SHOP}/reports"
        growth = api.call("GET", f"{base}/growth?unit=week&days=30", token=reader)
        assert growth.status == 200 and growth.json["summary"]["unit"] == "week"
        png = api.call("GET", f"{base}/time.png", token=reader)
        assert png.status == 200 and png.raw[:4] == b"\x89PNG"
        assert api.call("GET", f"{base}/amounts?order_buckets=x", token=reader).status == 422
        assert api.call("GET", f"{base}/levels?from=2026-02-01&to=2026-01-01",
                        token=reader).status == 422
        assert api.call("GET", f"{base}/dormant.csv?days=90", token=reader).status == 403
        listed = api.call("GET", f"{base}/dormant.csv?days=90", token=exporter)
        assert listed.status == 200 and "\na,2,金卡," in listed.text
        # The console shows each report with its chart.
        cookie = {"Cookie": f"mf_console={reader}"}
        page = api.call("GET", f"/console/shops/{SHOP}/analysis/rfm", headers=cookie)
        assert page.status == 200 and 'id="table-segments"' in page.text
        assert "Potential" in page.text and "29, 90, 107" in page.text
        chart = api.call("GET", f"/console/shops/{SHOP}/analysis/rfm/chart.png", headers=cookie)
        assert chart.status == 200 and chart.raw[:4] == b"\x89PNG"
        dormant = api.call("GET", f"/console/shops/{SHOP}/analysis/dormant?days=90",
                           headers=cookie)
        assert f'href="/console/shops/{SHOP}/members/a"' in dormant.text
        # Too few buyers to predict: the page says so and how many it needs.
        predicted = api.call("GET", f"/console/shops/{SHOP}/analysis/predicted", headers=cookie)
        assert predicted.status == 200 and "at least 200 buyers" in predicted.text
        assert api.call("GET", f"/console/shops/{SHOP}/analysis/nope",
                        headers=cookie).status == 404
        assert api.call("GET", f"/console/shops/{SHOP}/analysis/time?days=x",
                        headers=cookie).status == 422
    with engine.connect() as conn:
        exported = conn.exec_driver_sql(
            "SELECT operator FROM audit_log WHERE action = 'members.export'").scalars().all()
    assert exported == ["token:exporter"]


# Each buyer's scores and segment as the RFM report above works them out (default map).
STORED = {"a": (1, 2, 4, "lost"), "b": (3, 1, 1, "potential"), "c": (4, 1, 3, "new"),
          "e": (2, 2, 2, "at-risk")}


def stored_scores(engine: Engine) -> dict[str, tuple[int, int, int, str]]:
    with engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.exec_driver_sql(
            "SELECT member_id, r_score, f_score, m_score, segment FROM member_rfm "
            "WHERE shop_id = %s", (SHOP,))}


def test_each_members_rfm_segment_is_kept_published_and_filters(
        stack: Stack, engine: Engine, tmp_path: Path) -> None:
    # Tiering scored every buyer of the period as of the shop's clock (d bought before it).
    assert stored_scores(engine) == STORED
    with engine.connect() as conn:
        shop_row = conn.exec_driver_sql(
            "SELECT rfm_computed_as_of, predicted_as_of, predicted_note FROM abc_shops "
            "WHERE shop_id = %s", (SHOP,)).one()
    assert shop_row[0] == shop_row[1] == CLOCK
    # Too few buyers for the models: no predictions, and the shop's note says why.
    assert "at least 200 buyers" in shop_row[2]
    published = [m for m in unique_by_id(read_topic(stack, stack.topics.member_events))
                 if m["type"] == "member.rfm_changed"]
    assert {m["member_id"]: (m["payload"]["r_score"], m["payload"]["f_score"],
                             m["payload"]["m_score"], m["payload"]["new_segment"])
            for m in published} == STORED
    assert all(m["payload"]["old_segment"] is None and m["payload"]["period_days"] == 365
               for m in published)
    # The tag rule on the segment tagged the one member at risk.
    with engine.connect() as conn:
        tagged = conn.exec_driver_sql(
            "SELECT member_id FROM member_tags WHERE shop_id = %s AND tag_id = 'win-back'",
            (SHOP,)).scalars().all()
    assert tagged == ["e"]

    # A filter in every place that selects members: the list (CLI and API), manual tagging,
    # a campaign's target.
    url = ["--database-url", stack.database_url]
    listed = mf("members", "list", "--shop", SHOP, "--rfm-segment", "at-risk", "--rfm-segment",
                "lost", *url, "--format", "csv", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["a", "e"]
    assert ",rfm_segment,rfm_r,rfm_f,rfm_m,p_alive," in lines[0]
    assert ",lost,1,2,4,,," in lines[1]
    nobody = mf("members", "list", "--shop", SHOP, "--rfm-segment", "none", *url, cwd=tmp_path)
    assert [m["member_id"] for m in json.loads(nobody.stdout)] == ["d"]
    tag = mf("tags", "add", "call", "--shop", SHOP, "--rfm-segment", "lost",
             "--reason", "call the lost buyers", "--yes", *url, cwd=tmp_path)
    assert tag.returncode == 0, tag.stderr
    with engine.connect() as conn:
        manual = conn.exec_driver_sql(
            "SELECT member_id FROM member_tags WHERE shop_id = %s AND tag_id = 'call' "
            "AND cause = 'manual'", (SHOP,)).scalars().all()
    assert manual == ["a"]
    target = Target.model_validate({"rfm_segments": ["at-risk"]})
    with engine.connect() as conn:
        assert [r["member_id"] for r in member_records(conn, SHOP, target.filter())] == ["e"]
        # Nobody has a prediction here, so a predicted-value filter selects nobody.
        assert member_records(conn, SHOP, MemberFilter(max_p_alive=Decimal("1"))) == []
    with engine.begin() as conn:
        reader = tokens.create(conn, name="analyst", shops=[SHOP], rights=["read"],
                               expires_in=None, operator="test").token
    with ApiServer(engine) as api:
        page = api.call("GET", f"/api/v1/shops/{SHOP}/members?rfm_segment=new", token=reader)
        assert page.status == 200, page.text
        assert [(m["member_id"], m["rfm_segment"], m["rfm_r"], m["rfm_m"])
                for m in page.json["items"]] == [("c", "new", 4, 3)]
        worst = api.call("GET", f"/api/v1/shops/{SHOP}/members?sort=rfm_segment&limit=2",
                         token=reader)
        assert [m["rfm_segment"] for m in worst.json["items"]] == ["at-risk", "lost"]
        assert api.call("GET", f"/api/v1/shops/{SHOP}/members?max_p_alive=2",
                        token=reader).status == 422
        # The console filters and shows them as the operator reads them.
        cookie = {"Cookie": f"mf_console={reader}"}
        page = api.call("GET", f"/console/shops/{SHOP}/members?rfm_segment=at-risk",
                        headers=cookie)
        assert page.status == 200 and '<td class="rfm">At risk</td>' in page.text
        assert page.text.count('class="member"') == 1 and ">e</a>" in page.text
        one = api.call("GET", f"/console/shops/{SHOP}/members/c", headers=cookie)
        assert 'id="rfm">New <span class="muted">R4 F1 M3</span>' in one.text
        bad = api.call("GET", f"/console/shops/{SHOP}/members?max_p_alive=x", headers=cookie)
        assert bad.status == 422 and "max_p_alive" in bad.text


def test_the_shop_edits_its_segment_map(stack: Stack, engine: Engine) -> None:
    with engine.begin() as conn:
        apply_shop_config(conn, stack.topics, parse({
            "shop_id": SHOP, "name": "茶室", "rfm": {"segments": [
                {"id": "big", "name": "大客户", "m": "4"},
                {"id": "recent", "name": "近期", "r": "3-4"}]}}), "test", datetime.now(UTC))
    segmented = build(engine, analysis.rfm_analysis)
    assert [(r["segment"], r["name"], r["buyers"]) for r in segmented.tables["segments"].rows] == [
        ("big", "大客户", 1), ("recent", "近期", 2), ("others", "others", 1)]
    # The kept scores were made with the old map: not read.
    assert segmented.summary["scores"] == "computed for this report"
    # The new map makes the stored segments stale (the predictions, same period, stay), and the
    # next recompute names the members by it.
    with engine.begin() as conn:
        assert conn.exec_driver_sql(
            "SELECT rfm_dirty, predicted_as_of FROM abc_shops WHERE shop_id = %s",
            (SHOP,)).one() == (True, CLOCK)
        shop = analysis.shop_of(conn, SHOP)
        scores_store.recompute_rfm(conn, SHOP, shop.zone, CLOCK, shop.config.rfm, CLOCK)
    assert {m: s[3] for m, s in stored_scores(engine).items()} == {
        "a": "big", "b": "recent", "c": "recent", "e": "others"}
    with pytest.raises(ValueError, match="not a score"):
        parse({"shop_id": SHOP, "name": "x", "rfm": {"segments": [
            {"id": "bad", "name": "x", "r": "5"}]}})


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(-400, 400), min_size=1, max_size=40))
def test_the_sql_scores_as_the_documented_rule(database_url: str, values: list[int]) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(rfm.scored_sql(
                "SELECT i AS member_id, x AS r, x AS f, x AS m "
                "FROM unnest(%(xs)s::bigint[]) WITH ORDINALITY AS u(x, i)"),
                {"xs": values}).all()
    finally:
        engine.dispose()
    found = rfm.edges(values)
    assert sorted(set(rows[0].f_edges)) == found
    assert {(r.member_id, r.f_score) for r in rows} == {
        (i, rfm.score(x, found)) for i, x in enumerate(values, start=1)}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(-5_000, 50_000), min_size=1, max_size=60),
       st.lists(st.integers(1, 600), min_size=1, max_size=5, unique=True))
def test_histogram_figures_are_postgresqls(database_url: str, values: list[int],
                                           edges: list[int]) -> None:
    """The amounts report reads values as a histogram and works out percentiles and buckets
    itself: the same as PostgreSQL's percentile_cont and width_bucket over the values."""
    rising = [Decimal(e) for e in sorted(edges)]
    fractions = [*analysis.PERCENTILES, Decimal("0.95")]
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            found = conn.exec_driver_sql(
                "SELECT percentile_cont(%(q)s::float8[]) WITHIN GROUP (ORDER BY v) "
                "FROM unnest(%(v)s::bigint[]) v", {"q": [float(q) for q in fractions],
                                                  "v": values}).scalar_one()
            buckets = dict(conn.exec_driver_sql(
                "SELECT width_bucket(v, %(e)s::bigint[]), count(*) FROM unnest(%(v)s::bigint[]) v "
                "GROUP BY 1", {"e": [int(e * 100) for e in rising], "v": values}).tuples().all())
    finally:
        engine.dispose()
    hist = analysis.Histogram.of(list(Counter(values).items()))
    mine = hist.percentiles(fractions)
    assert [float(x) for x in mine] == pytest.approx(found, abs=1e-6)
    assert [n for _, n, _ in hist.bucketed(rising)] == [
        buckets.get(i, 0) for i in range(len(rising) + 1)]
