"""Historic orders from a spreadsheet become the events live orders make (pure part)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from memberflow.importing import ImportRefused
from memberflow.orders_import import order_events

SHANGHAI = ZoneInfo("Asia/Shanghai")
TAOBAO = (
    "订单编号,买家会员名,买家实际支付金额,订单创建时间,订单付款时间,确认收货时间,退款金额,商家编码,购买数量,单价\n"
    "T100,tb-ann,99.80,2026-03-01 10:00:00,2026-03-01 10:05:00,2026-03-05 18:00:00,0,"
    "SKU-1,2,49.90\n"
    "T101,tb-bob,200.00,2026-03-02 09:00:00,2026-03-02 09:01:00,2026-03-06 12:00:00,50.00,"
    "SKU-2,1,120.00\n"
    "T101,tb-bob,200.00,2026-03-02 09:00:00,2026-03-02 09:01:00,2026-03-06 12:00:00,50.00,"
    "SKU-3,1,80.00\n"
    "T102,tb-cid,30.00,2026-03-03 08:00:00,2026-03-03 08:00:30,,,SKU-1,1,30.00\n")


def events(text: str) -> list[dict[str, object]]:
    return [e for _, e in order_events("tea", "orders.csv", text.encode(), SHANGHAI)]


def test_a_taobao_export_becomes_placed_paid_completed_and_refunded_events() -> None:
    made = events(TAOBAO)
    assert [(e["event_id"], e["occurred_at"]) for e in made][:3] == [
        ("import:tea:T100:placed", "2026-03-01T10:00:00+08:00"),
        ("import:tea:T100:paid", "2026-03-01T10:05:00+08:00"),
        ("import:tea:T101:placed", "2026-03-02T09:00:00+08:00")]
    by_id = {e["event_id"]: e for e in made}
    assert by_id["import:tea:T101:placed"]["payload"]["items"] == [
        {"sku": "SKU-2", "qty": 1, "unit_price": "120.00"},
        {"sku": "SKU-3", "qty": 1, "unit_price": "80.00"}]
    assert by_id["import:tea:T101:refunded"]["payload"] == {"order_id": "T101",
                                                            "amount": "50.00"}
    assert by_id["import:tea:T101:refunded"]["occurred_at"] == "2026-03-06T12:00:00+08:00"
    assert "import:tea:T102:completed" not in by_id     # paid, never received
    assert len(made) == 9       # 3 + 4 + 2
    assert events(TAOBAO) == made                       # the same ids again: duplicates


def test_every_problem_is_named_by_line_and_column_and_nothing_is_made() -> None:
    bad = ("order_id,member_id,amount,paid_at,completed_at\n"
           "A1,m1,12.345,2026-03-01 10:00,2026-03-02 10:00\n"
           "A2,,10.00,yesterday,\n"
           "A3,m3,10.00,2026-03-01 10:00,2099-01-01 00:00\n")
    with pytest.raises(ImportRefused) as refused:
        events(bad)
    said = {(p.line, p.column) for p in refused.value.problems}
    assert said == {(2, "amount"), (3, "member_id"), (3, "paid_at"), (4, "completed_at")}


def test_a_file_that_cannot_make_trades_is_refused_whole() -> None:
    with pytest.raises(ImportRefused, match="no such column"):
        events("order_id,amount\nA1,1.00\n")
    with pytest.raises(ImportRefused, match="no paid or completed time"):
        events("order_id,member_id,amount,created_at\nA1,m1,1.00,2026-03-01 10:00\n")
    with pytest.raises(ImportRefused, match="differs from line 2"):
        events("order_id,member_id,amount,paid_at\nA1,m1,1.00,2026-03-01 10:00\n"
               "A1,m2,1.00,2026-03-01 10:00\n")
