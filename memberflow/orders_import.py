"""Importing a shop's historic orders from CSV or XLSX, into the same event path as live ones.

A row is an order (or, with `sku`, `qty` and `unit_price`, one line of an order: its rows share
the order id, member, times and total). Columns are found by name, in English or as Taobao's
order export names them:

| field        | names                                                   |
| ------------ | ------------------------------------------------------- |
| order_id     | order_id, 订单编号, 订单号                               |
| member_id    | member_id, 买家会员名, 会员ID                             |
| amount       | amount, 买家实际支付金额, 实付金额, 订单金额               |
| created_at   | created_at, 订单创建时间, 下单时间                         |
| paid_at      | paid_at, 订单付款时间, 付款时间                            |
| completed_at | completed_at, 确认收货时间, 交易成功时间, 完成时间          |
| refunded     | refunded, 退款金额                                        |
| refunded_at  | refunded_at, 退款时间 (default: completed_at, else paid_at) |
| region       | region, 省份, 收货地区                                    |
| sku, qty, unit_price | sku/商家编码, qty/购买数量, unit_price/单价          |

Times without a zone are the shop's local time (its configured time zone). Each order becomes
`order.placed` (when it has items), `order.paid`, `order.completed` and `order.refunded` events,
as far as its cells tell, with ids derived from the shop and order id: importing the same file
again submits the same events, which are answered as duplicates.

Every event is checked against the event contract before any is submitted; one problem and
nothing is submitted, each problem named by line and column.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from memberflow.importing import ImportRefused, Problem, find_columns, read_table
from shared.events import EventRejected, TimeBounds, validate

COLUMNS: dict[str, tuple[str, ...]] = {
    "order_id": ("order_id", "订单编号", "订单号"),
    "member_id": ("member_id", "买家会员名", "会员ID", "会员id"),
    "amount": ("amount", "买家实际支付金额", "实付金额", "订单金额"),
    "created_at": ("created_at", "订单创建时间", "下单时间"),
    "paid_at": ("paid_at", "订单付款时间", "付款时间"),
    "completed_at": ("completed_at", "确认收货时间", "交易成功时间", "完成时间"),
    "refunded": ("refunded", "退款金额"),
    "refunded_at": ("refunded_at", "退款时间"),
    "region": ("region", "省份", "收货地区"),
    "sku": ("sku", "商家编码"),
    "qty": ("qty", "购买数量", "宝贝数量"),
    "unit_price": ("unit_price", "单价", "价格"),
}
REQUIRED = ("order_id", "member_id", "amount")
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
                 "%Y-%m-%d", "%Y/%m/%d")


@dataclass
class Order:
    line: int
    cells: dict[str, str]
    items: list[dict[str, Any]] = field(default_factory=list)


def _time(text: str, zone: ZoneInfo) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        for form in _TIME_FORMATS:
            try:
                parsed = datetime.strptime(text, form)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"{text[:40]!r} is not a date and time like 2026-05-01 "
                             "14:30:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


def _iso(t: datetime) -> str:
    return t.isoformat()


def order_events(shop_id: str, file_name: str, data: bytes, zone: ZoneInfo,
                 bounds: TimeBounds | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(reference, event) for every event the file's orders make, in time order; raises
    ImportRefused naming every problem."""
    problems: list[Problem] = []
    orders: dict[str, Order] = {}
    columns: dict[str, str] | None = None
    table: Iterator[tuple[int, dict[str, str]]] = read_table(file_name, data)
    for line, raw in table:
        if columns is None:
            columns = find_columns(list(raw), COLUMNS)
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise ImportRefused([Problem(1, c, "no such column (see the accepted names)")
                                     for c in missing])
            if not any(c in columns for c in ("paid_at", "completed_at")):
                raise ImportRefused([Problem(1, "completed_at", "no paid or completed time "
                                             "column: nothing would count as a trade")])
        cells = {ours: raw.get(theirs, "").strip() for ours, theirs in columns.items()}
        order_id = cells["order_id"]
        if not order_id:
            problems.append(Problem(line, "order_id", "is empty"))
            continue
        for required in ("member_id", "amount"):
            if not cells[required]:
                problems.append(Problem(line, required, "is empty"))
        order = orders.get(order_id)
        if order is None:
            order = orders[order_id] = Order(line, cells)
        else:
            for same in ("member_id", "amount"):
                if cells[same] != order.cells[same]:
                    problems.append(Problem(line, same, f"differs from line {order.line} of "
                                                        f"order {order_id!r}"))
        if cells.get("sku"):
            try:
                order.items.append({"sku": cells["sku"], "qty": int(cells.get("qty") or "1"),
                                    "unit_price": str(Decimal(cells.get("unit_price") or
                                                              "x"))})
            except (ValueError, InvalidOperation):
                problems.append(Problem(line, "qty" if not (cells.get("qty") or "1").isdigit()
                                        else "unit_price", "is not a number"))
    if columns is None:
        raise ImportRefused([Problem(1, "", "the file has no rows")])
    events: list[tuple[datetime, str, dict[str, Any]]] = []
    for order_id, order in orders.items():
        events += _events_of(shop_id, order_id, order, zone, bounds, problems)
    if problems:
        raise ImportRefused(sorted(set(problems), key=lambda p: (p.line, p.column, p.problem)))
    events.sort(key=lambda e: e[0])
    return [(ref, event) for _, ref, event in events]


def _events_of(shop_id: str, order_id: str, order: Order, zone: ZoneInfo,
               bounds: TimeBounds | None, problems: list[Problem]
               ) -> list[tuple[datetime, str, dict[str, Any]]]:
    c = order.cells
    times: dict[str, datetime] = {}
    for name in ("created_at", "paid_at", "completed_at", "refunded_at"):
        if c.get(name):
            try:
                times[name] = _time(c[name], zone)
            except ValueError as exc:
                problems.append(Problem(order.line, name, str(exc)))
    out: list[tuple[datetime, str, dict[str, Any], str]] = []
    base = {"schema_version": 1, "shop_id": shop_id, "member_id": c["member_id"]}
    amount = c["amount"]

    def add(kind: str, at: datetime, payload: dict[str, Any], column: str) -> None:
        event = {**base, "event_id": f"import:{shop_id}:{order_id}:{kind.split('.')[1]}",
                 "type": kind, "occurred_at": _iso(at), "payload": payload}
        out.append((at, f"line {order.line}", event, column))

    if "created_at" in times and order.items:
        payload: dict[str, Any] = {"order_id": order_id, "items": order.items,
                                   "amount": amount}
        if c.get("region"):
            payload["region"] = c["region"]
        add("order.placed", times["created_at"], payload, "created_at")
    if "paid_at" in times:
        add("order.paid", times["paid_at"], {"order_id": order_id, "amount": amount},
            "paid_at")
    if "completed_at" in times:
        add("order.completed", times["completed_at"], {"order_id": order_id,
                                                       "amount": amount}, "completed_at")
    refunded = c.get("refunded", "")
    if refunded and refunded not in ("0", "0.00", "0.0"):
        at = times.get("refunded_at") or times.get("completed_at") or times.get("paid_at")
        if at is None:
            problems.append(Problem(order.line, "refunded_at", "a refund needs a time (a "
                                                               "refund, completed or paid "
                                                               "time)"))
        else:
            add("order.refunded", at, {"order_id": order_id, "amount": refunded},
                "refunded")
    checked: list[tuple[datetime, str, dict[str, Any]]] = []
    for at, ref, event, column in out:
        try:
            validate(event, bounds=bounds)
        except EventRejected as exc:
            for p in exc.problems:
                field_ = p.field.removeprefix("payload.")
                named = {"amount": "amount" if event["type"] != "order.refunded" else "refunded",
                         "member_id": "member_id", "order_id": "order_id",
                         "occurred_at": column}.get(field_.split("[")[0], field_)
                problems.append(Problem(order.line, named, p.problem))
            continue
        checked.append((at, ref, event))
    return checked


def group_lines(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """How many events of each type (for the report)."""
    counts: dict[str, int] = defaultdict(int)
    for _, event in rows:
        counts[event["type"]] += 1
    return dict(counts)
